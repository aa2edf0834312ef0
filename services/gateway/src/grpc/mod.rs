//! The gRPC faces of the gateway: `mlmesh.gateway.v1.Gateway` here and
//! `inference.GRPCInferenceService` in [`inference`]; each call goes through
//! admission, the caller's deadline and metrics ([`serve`]), then [`Core`].

pub mod inference;

use std::{
    collections::HashMap,
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use mlmesh_proto::{embedding::v1 as emb, gateway::v1 as gw, gateway::v1::gateway_server::Gateway};
use tonic::{Request, Response, Status, metadata::MetadataMap};

use crate::{
    core::{Core, PipelineRun},
    downstream::Deadline,
    error::GatewayError,
    tensor::{self, Tensor},
};

/// The caller's `grpc-timeout` (`100m`, `5S`, …), when it sent one.
pub fn grpc_timeout(md: &MetadataMap) -> Option<Duration> {
    parse_timeout(md.get("grpc-timeout")?.to_str().ok()?)
}

/// A `grpc-timeout` value: digits then a unit, H M S m u n.
pub fn parse_timeout(v: &str) -> Option<Duration> {
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[derive(Clone, Debug)]
pub struct GatewayApi {
    core: Arc<Core>,
}

impl GatewayApi {
    pub fn new(core: Arc<Core>) -> Self {
        Self { core }
    }

    async fn serve<T, F, Fut>(
        &self,
        method: &'static str,
        md: &MetadataMap,
        f: F,
    ) -> Result<Response<T>, Status>
    where
        F: FnOnce(Arc<Core>, Deadline) -> Fut,
        Fut: Future<Output = Result<T, GatewayError>>,
    {
        serve(&self.core, method, md, f).await.map(Response::new)
    }
}

/// Runs one gRPC call: admission, the caller's deadline, metrics and the
/// error's status. Shared by every service the gateway serves.
pub(crate) async fn serve<T, F, Fut>(
    core: &Arc<Core>,
    method: &'static str,
    md: &MetadataMap,
    f: F,
) -> Result<T, Status>
where
    F: FnOnce(Arc<Core>, Deadline) -> Fut,
    Fut: Future<Output = Result<T, GatewayError>>,
{
    let started = Instant::now();
    let m = &core.metrics;
    let result = match core.admit() {
        Ok(_admitted) => {
            let deadline = core.deadline(grpc_timeout(md));
            f(Arc::clone(core), deadline).await
        }
        Err(e) => Err(e),
    };
    let code = result
        .as_ref()
        .map_or_else(GatewayError::code, |_| tonic::Code::Ok);
    m.call("grpc", method, mlmesh_runtime::code_name(code), started);
    result.map_err(|e| {
        if matches!(e.code(), tonic::Code::Internal | tonic::Code::Unavailable) {
            let caller = crate::auth::current_caller().map(|c| c.name.clone());
            tracing::warn!(method, caller, error = %e, "call failed");
        }
        e.into()
    })
}

#[tonic::async_trait]
impl Gateway for GatewayApi {
    async fn embed(
        &self,
        request: Request<emb::EmbedRequest>,
    ) -> Result<Response<emb::EmbedResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("Embed", &md, |c, d| async move { c.embed(r, d).await })
            .await
    }

    async fn create_collection(
        &self,
        request: Request<gw::CreateCollectionRequest>,
    ) -> Result<Response<gw::Collection>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("CreateCollection", &md, |c, d| async move {
            c.create_collection(r, d).await
        })
        .await
    }

    async fn delete_collection(
        &self,
        request: Request<gw::DeleteCollectionRequest>,
    ) -> Result<Response<gw::DeleteCollectionResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("DeleteCollection", &md, |c, d| async move {
            c.delete_collection(&r.name, d).await?;
            Ok(gw::DeleteCollectionResponse {})
        })
        .await
    }

    async fn add_text_index(
        &self,
        request: Request<gw::AddTextIndexRequest>,
    ) -> Result<Response<gw::AddTextIndexResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("AddTextIndex", &md, |c, d| async move {
            c.add_text_index(&r.name, d).await
        })
        .await
    }

    async fn list_collections(
        &self,
        request: Request<gw::ListCollectionsRequest>,
    ) -> Result<Response<gw::ListCollectionsResponse>, Status> {
        let md = request.metadata().clone();
        self.serve("ListCollections", &md, |c, d| async move {
            Ok(gw::ListCollectionsResponse {
                collections: c.list_collections(d).await?,
            })
        })
        .await
    }

    async fn get_collection(
        &self,
        request: Request<gw::GetCollectionRequest>,
    ) -> Result<Response<gw::Collection>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("GetCollection", &md, |c, d| async move {
            c.get_collection(&r.name, d).await
        })
        .await
    }

    async fn ingest(
        &self,
        request: Request<gw::IngestRequest>,
    ) -> Result<Response<gw::IngestResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("Ingest", &md, |c, d| async move { c.ingest(r, d).await })
            .await
    }

    async fn search(
        &self,
        request: Request<gw::SearchRequest>,
    ) -> Result<Response<gw::SearchResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("Search", &md, |c, d| async move { c.search(r, d).await })
            .await
    }

    async fn rag_query(
        &self,
        request: Request<gw::RagQueryRequest>,
    ) -> Result<Response<gw::RagQueryResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve(
            "RagQuery",
            &md,
            |c, d| async move { c.rag_query(r, d).await },
        )
        .await
    }

    async fn run_pipeline(
        &self,
        request: Request<gw::RunPipelineRequest>,
    ) -> Result<Response<gw::RunPipelineResponse>, Status> {
        let (md, _, r) = request.into_parts();
        self.serve("RunPipeline", &md, |c, d| async move {
            let mut inputs: HashMap<String, Tensor> = r
                .inputs
                .into_iter()
                .map(|(k, t)| {
                    let datatype = tensor::datatype(&t.datatype, &format!("inputs.{k}.datatype"))?;
                    let t = Tensor {
                        datatype,
                        shape: t.shape,
                        raw: t.raw.into(),
                    };
                    Ok((k, t))
                })
                .collect::<Result<_, GatewayError>>()?;
            for (k, t) in r.texts {
                if inputs.insert(k.clone(), Tensor::texts(&t.values)).is_some() {
                    return Err(GatewayError::invalid(
                        format!("texts.{k}"),
                        "given in both inputs and texts",
                    ));
                }
            }
            let run = c
                .run_pipeline(&r.pipeline, inputs, &r.sticky_key, d)
                .await?;
            Ok(run_to_pb(r.pipeline, run))
        })
        .await
    }

    async fn list_pipelines(
        &self,
        request: Request<gw::ListPipelinesRequest>,
    ) -> Result<Response<gw::ListPipelinesResponse>, Status> {
        let md = request.metadata().clone();
        self.serve("ListPipelines", &md, |c, _| async move {
            Ok(gw::ListPipelinesResponse {
                pipelines: c
                    .pipelines()
                    .iter()
                    .map(|(name, p)| gw::PipelineInfo {
                        name: name.clone(),
                        description: p.description.clone(),
                        inputs: p.inputs.clone(),
                        outputs: p.outputs.keys().cloned().collect(),
                        steps: p.steps.iter().map(|s| s.name().to_owned()).collect(),
                    })
                    .collect(),
            })
        })
        .await
    }
}

/// A finished run as the gRPC answer.
pub fn run_to_pb(pipeline: String, run: PipelineRun) -> gw::RunPipelineResponse {
    gw::RunPipelineResponse {
        pipeline,
        outputs: run
            .outputs
            .into_iter()
            .map(|(k, t)| {
                (
                    k,
                    gw::Tensor {
                        datatype: t.datatype.name().to_owned(),
                        shape: t.shape,
                        raw: t.raw.to_vec(),
                    },
                )
            })
            .collect(),
        steps: run
            .steps
            .into_iter()
            .map(|s| gw::StepResult {
                step: s.step,
                service: s.service.to_owned(),
                model: s.model,
                model_version: s.version,
                fallback: s.fallback,
                arm: s.arm,
                started_us: s.started.as_micros() as u64,
                duration_us: s.duration.as_micros() as u64,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        let mut md = MetadataMap::new();
        for (v, d) in [
            ("250m", Duration::from_millis(250)),
            ("3S", Duration::from_secs(3)),
            ("2M", Duration::from_secs(120)),
            ("1H", Duration::from_secs(3600)),
            ("500u", Duration::from_micros(500)),
            ("7n", Duration::from_nanos(7)),
        ] {
            md.insert("grpc-timeout", v.parse().expect("ascii"));
            assert_eq!(grpc_timeout(&md), Some(d), "{v}");
        }
        md.insert("grpc-timeout", "12x".parse().expect("ascii"));
        assert_eq!(grpc_timeout(&md), None);
    }
}
