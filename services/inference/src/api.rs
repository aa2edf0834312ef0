//! The tonic implementation of `inference.GRPCInferenceService`: requests
//! decoded and checked against the served model (`convert`), queued on
//! the model's scheduler, answered in `raw_output_contents`.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::{Stream, StreamExt as _};
use mlmesh_proto::inference::{self as pb, grpc_inference_service_server::GrpcInferenceService};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;

use crate::{
    convert::{decode_inputs, duration, param_u64, tensor_meta},
    error::InferError,
    metrics::Metrics,
    models::{Io, Lease, ModelManager},
    scheduler::Job,
};

/// Protocol extensions this server implements (ServerMetadata).
pub const EXTENSIONS: &[&str] = &[
    "model_repository",
    "model_configuration",
    "statistics",
    "schedule_policy",
];

#[derive(Clone)]
pub struct InferenceApi {
    models: Arc<ModelManager>,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    stream_concurrency: usize,
}

impl InferenceApi {
    pub fn new(
        models: Arc<ModelManager>,
        metrics: Metrics,
        ready: Arc<AtomicBool>,
        stream_concurrency: usize,
    ) -> Self {
        Self {
            models,
            metrics,
            ready,
            stream_concurrency,
        }
    }

    /// One inference call, end to end, with metrics, in an `infer.request`
    /// span (its children: `infer.queue`, `infer.batch_run`).
    async fn infer(
        &self,
        req: pb::ModelInferRequest,
    ) -> Result<pb::ModelInferResponse, InferError> {
        let span = mlmesh_runtime::call_span!("infer.request", model = %req.model_name);
        self.infer_inner(req).instrument(span).await
    }

    async fn infer_inner(
        &self,
        req: pb::ModelInferRequest,
    ) -> Result<pb::ModelInferResponse, InferError> {
        let start = Instant::now();
        let lease = match self
            .models
            .acquire(&req.model_name, &req.model_version)
            .await
        {
            Ok(l) => l,
            Err(e) => {
                self.count(&req.model_name, "", Some(&e));
                return Err(e);
            }
        };
        let result = run(&lease, req).await;
        let v = &lease.version;
        let version = v.version.to_string();
        let elapsed = start.elapsed();
        let ns = elapsed.as_nanos() as u64;
        match &result {
            Ok(_) => {
                v.stats.success_count.fetch_add(1, Ordering::Relaxed);
                v.stats.success_ns.fetch_add(ns, Ordering::Relaxed);
                self.count(&v.model, &version, None);
            }
            Err(e) => {
                v.stats.fail_count.fetch_add(1, Ordering::Relaxed);
                v.stats.fail_ns.fetch_add(ns, Ordering::Relaxed);
                self.count(&v.model, &version, Some(e));
            }
        }
        self.metrics
            .request_seconds
            .with_label_values(&[&v.model, &version])
            .observe(elapsed.as_secs_f64());
        result
    }

    fn count(&self, model: &str, version: &str, e: Option<&InferError>) {
        let outcome = e.map_or("OK", |e| mlmesh_runtime::code_name(e.code()));
        // Unknown names would grow the label set without bound.
        let model = if matches!(e, Some(InferError::UnknownModel { .. })) {
            "<unknown>"
        } else {
            model
        };
        self.metrics
            .requests
            .with_label_values(&[model, version, outcome])
            .inc();
    }
}

/// Runs one request on a leased version.
async fn run(
    lease: &Lease,
    mut req: pb::ModelInferRequest,
) -> Result<pb::ModelInferResponse, InferError> {
    let v = &lease.version;
    let (inputs, rows) = decode_inputs(&mut req, v)?;
    // Requested outputs, checked before any work.
    let wanted: Vec<&Io> = if req.outputs.is_empty() {
        v.outputs.iter().collect()
    } else {
        req.outputs
            .iter()
            .map(|o| {
                v.outputs.iter().find(|s| s.name == o.name).ok_or_else(|| {
                    InferError::invalid(format!(
                        "requested output {:?} is not an output of model {:?}; its outputs are {:?}",
                        o.name,
                        v.model,
                        v.outputs.iter().map(|s| &s.name).collect::<Vec<_>>()
                    ))
                })
            })
            .collect::<Result<_, _>>()?
    };
    let policy = v.scheduler.policy();
    let priority = param_u64(&req.parameters, "priority")?.unwrap_or(0);
    let timeout = match param_u64(&req.parameters, "timeout")? {
        Some(us) if us > 0 && policy.allow_timeout_override => Some(Duration::from_micros(us)),
        _ => policy.default_timeout,
    };
    let (tx, rx) = oneshot::channel();
    let span = tracing::Span::current();
    let queue_span =
        mlmesh_runtime::call_span!("infer.queue", model = %v.model, version = v.version);
    v.scheduler.submit(Job {
        inputs,
        rows,
        priority,
        timeout,
        enqueued: Instant::now(),
        reply: tx,
        span,
        queue_span: Some(queue_span),
    })?;
    let done = rx.await.map_err(|_| InferError::ShuttingDown)??;
    tracing::debug!(
        model = %v.model,
        version = v.version,
        queue_us = done.queued.as_micros() as u64,
        compute_us = done.compute.as_micros() as u64,
        "inferred"
    );
    let batched = v.max_batch_size > 0;
    let mut resp = pb::ModelInferResponse {
        model_name: v.model.clone(),
        model_version: v.version.to_string(),
        id: req.id,
        ..Default::default()
    };
    for io in wanted {
        let t = done
            .outputs
            .iter()
            .find(|t| t.name == io.name)
            .ok_or_else(|| InferError::Run {
                model: v.model.clone(),
                reason: format!("the model did not produce output {:?}", io.name),
            })?;
        // A reshaped output is returned in the config's dims.
        let shape: Vec<i64> = if io.reshape.is_some() {
            let dims = io.shape.get(usize::from(batched)..).unwrap_or_default();
            let lead = if batched {
                vec![rows as i64]
            } else {
                Vec::new()
            };
            lead.into_iter().chain(dims.iter().copied()).collect()
        } else {
            t.shape.clone()
        };
        resp.outputs
            .push(pb::model_infer_response::InferOutputTensor {
                name: t.name.clone(),
                datatype: t.data.dtype().name().to_owned(),
                shape,
                ..Default::default()
            });
        resp.raw_output_contents.push(t.data.to_raw().into());
    }
    Ok(resp)
}

type InferStream = Pin<Box<dyn Stream<Item = Result<pb::ModelStreamInferResponse, Status>> + Send>>;

#[tonic::async_trait]
impl GrpcInferenceService for InferenceApi {
    async fn server_live(
        &self,
        _: Request<pb::ServerLiveRequest>,
    ) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse {
            ready: self.ready.load(Ordering::Acquire),
        }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        let ready = self.models.try_acquire(&r.name, &r.version).is_ok();
        Ok(Response::new(pb::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(pb::ServerMetadataResponse {
            name: "mlmesh-inference".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            extensions: EXTENSIONS.iter().map(|s| (*s).to_owned()).collect(),
        }))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let lease = self.models.acquire(&r.name, &r.version).await?;
        let v = &lease.version;
        Ok(Response::new(pb::ModelMetadataResponse {
            name: v.model.clone(),
            versions: lease
                .served
                .versions
                .keys()
                .map(|k| k.to_string())
                .collect(),
            platform: lease.served.config.platform.clone(),
            inputs: v.inputs.iter().map(tensor_meta).collect(),
            outputs: v.outputs.iter().map(tensor_meta).collect(),
        }))
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        Ok(Response::new(self.infer(req.into_inner()).await?))
    }

    type ModelStreamInferStream = InferStream;

    async fn model_stream_infer(
        &self,
        req: Request<Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<Self::ModelStreamInferStream>, Status> {
        let this = self.clone();
        let n = self.stream_concurrency;
        let out = req
            .into_inner()
            .map(move |item| {
                let this = this.clone();
                async move {
                    match item {
                        Ok(r) => Ok(match this.infer(r).await {
                            Ok(resp) => pb::ModelStreamInferResponse {
                                error_message: String::new(),
                                infer_response: Some(resp),
                            },
                            // A failed request is answered; the stream goes on.
                            Err(e) => pb::ModelStreamInferResponse {
                                error_message: e.to_string(),
                                infer_response: None,
                            },
                        }),
                        Err(status) => Err(status),
                    }
                }
            })
            .buffered(n);
        Ok(Response::new(Box::pin(out)))
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let lease = self.models.acquire(&r.name, &r.version).await?;
        Ok(Response::new(pb::ModelConfigResponse {
            config: Some(lease.served.config.clone()),
        }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let loaded = self.models.loaded();
        if !r.name.is_empty() && !loaded.iter().any(|s| s.name == r.name) {
            // Names the model and what is loaded.
            self.models.try_acquire(&r.name, &r.version)?;
        }
        let mut stats = Vec::new();
        for s in loaded
            .iter()
            .filter(|s| r.name.is_empty() || s.name == r.name)
        {
            for (ver, v) in &s.versions {
                if !r.version.is_empty() && r.version != ver.to_string() {
                    continue;
                }
                let st = &v.stats;
                let l = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
                let batches = st.batches.lock().unwrap_or_else(|p| p.into_inner());
                stats.push(pb::ModelStatistics {
                    name: s.name.clone(),
                    version: ver.to_string(),
                    last_inference: l(&st.last_inference_ms),
                    inference_count: l(&st.inference_count),
                    execution_count: l(&st.execution_count),
                    inference_stats: Some(pb::InferStatistics {
                        success: duration(l(&st.success_count), l(&st.success_ns)),
                        fail: duration(l(&st.fail_count), l(&st.fail_ns)),
                        queue: duration(l(&st.queue_count), l(&st.queue_ns)),
                        compute_input: duration(0, 0),
                        compute_infer: duration(l(&st.compute_count), l(&st.compute_ns)),
                        compute_output: duration(0, 0),
                        cache_hit: None,
                        cache_miss: None,
                    }),
                    batch_stats: batches
                        .iter()
                        .map(|(&size, &(count, ns))| pb::InferBatchStatistics {
                            batch_size: size,
                            compute_input: duration(0, 0),
                            compute_infer: duration(count, ns),
                            compute_output: duration(0, 0),
                        })
                        .collect(),
                });
            }
        }
        if !r.version.is_empty() && stats.is_empty() {
            self.models.try_acquire(&r.name, &r.version)?;
        }
        Ok(Response::new(pb::ModelStatisticsResponse {
            model_stats: stats,
        }))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        let models = self
            .models
            .index(r.ready)
            .into_iter()
            .map(|e| pb::repository_index_response::ModelIndex {
                name: e.name,
                version: e.version,
                state: e.state,
                reason: e.reason,
            })
            .collect();
        Ok(Response::new(pb::RepositoryIndexResponse { models }))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let r = req.into_inner();
        if !r.parameters.is_empty() {
            tracing::warn!(model = %r.model_name, keys = ?r.parameters.keys().collect::<Vec<_>>(), "load parameters (config/file overrides) are not supported and were ignored");
        }
        self.models.load(&r.model_name).await?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let r = req.into_inner();
        self.models.unload(&r.model_name)?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }
}
