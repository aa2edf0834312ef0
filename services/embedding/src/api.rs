//! The tonic implementation of `mlmesh.embedding.v1.EmbeddingService`:
//! translates between protobuf and the engine, records per-method metrics,
//! and nothing else.

use std::{pin::Pin, sync::Arc, time::Instant};

use futures::{Stream, StreamExt as _};
use mlmesh_proto::embedding::v1::{self as pb, embedding_service_server::EmbeddingService};
use tonic::{Request, Response, Status, Streaming};

use crate::{
    convert::{embed_response, timings, truncation, usage},
    engine::{EmbedParams, Engine},
    error::EmbedError,
    metrics::Metrics,
};

/// The gRPC face of an [`Engine`].
#[derive(Clone)]
pub struct EmbeddingApi {
    engine: Arc<Engine>,
    metrics: Metrics,
    /// The transport's request size limit, reported by Info.
    max_request_bytes: usize,
}

impl EmbeddingApi {
    pub fn new(engine: Arc<Engine>, metrics: Metrics, max_request_bytes: usize) -> Self {
        Self {
            engine,
            metrics,
            max_request_bytes,
        }
    }

    /// Records a call's outcome and duration.
    fn observe<T>(&self, method: &str, start: Instant, result: &Result<T, Status>) {
        let code = match result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics.rpc.record(method, code, start.elapsed());
    }

    async fn embed_one(&self, req: pb::EmbedRequest) -> Result<pb::EmbedResponse, Status> {
        let start = Instant::now();
        let params = EmbedParams {
            model: req.model,
            normalize: req.normalize.unwrap_or(true),
            truncate: truncation(req.truncate, req.truncation_direction)?,
            dimensions: req.dimensions,
        };
        let out = self.engine.embed(req.inputs, &params).await?;
        Ok(embed_response(out, start))
    }
}

/// Counts a call whose caller went away before the answer (its future
/// dropped: the client cancelled or reset the stream) as CANCELLED, so
/// cancellations from upstream are visible here.
struct Unfinished<'a> {
    api: Option<&'a EmbeddingApi>,
    method: &'static str,
    start: Instant,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if let Some(api) = self.api {
            api.observe::<()>(
                self.method,
                self.start,
                &Err(Status::cancelled("the caller went away")),
            );
        }
    }
}

type EmbedStream = Pin<Box<dyn Stream<Item = Result<pb::EmbedResponse, Status>> + Send>>;

#[tonic::async_trait]
impl EmbeddingService for EmbeddingApi {
    #[tracing::instrument(name = "embed.request", skip_all, fields(inputs = req.get_ref().inputs.len(), model = %req.get_ref().model))]
    async fn embed(
        &self,
        req: Request<pb::EmbedRequest>,
    ) -> Result<Response<pb::EmbedResponse>, Status> {
        let start = Instant::now();
        let mut unfinished = Unfinished {
            api: Some(self),
            method: "Embed",
            start,
        };
        let result = self.embed_one(req.into_inner()).await;
        unfinished.api = None;
        self.observe("Embed", start, &result);
        result.map(Response::new)
    }

    type EmbedStreamStream = EmbedStream;

    async fn embed_stream(
        &self,
        req: Request<Streaming<pb::EmbedRequest>>,
    ) -> Result<Response<Self::EmbedStreamStream>, Status> {
        let api = self.clone();
        let concurrency = self.engine.settings.stream_concurrency;
        let responses = req
            .into_inner()
            .map(move |item| {
                let api = api.clone();
                async move {
                    let start = Instant::now();
                    let result = match item {
                        Ok(r) => api.embed_one(r).await,
                        Err(status) => Err(status),
                    };
                    api.observe("EmbedStream", start, &result);
                    result
                }
            })
            // Up to `concurrency` requests in flight, answered in order.
            .buffered(concurrency)
            // The first error ends the stream, carrying that request's status.
            .scan(false, |failed, r| {
                let out = if *failed {
                    None
                } else {
                    *failed = r.is_err();
                    Some(r)
                };
                futures::future::ready(out)
            });
        Ok(Response::new(Box::pin(responses)))
    }

    #[tracing::instrument(name = "embed.similarity", skip_all, fields(texts = req.get_ref().texts.len()))]
    async fn similarity(
        &self,
        req: Request<pb::SimilarityRequest>,
    ) -> Result<Response<pb::SimilarityResponse>, Status> {
        let start = Instant::now();
        let result = async {
            let req = req.into_inner();
            if req.texts.is_empty() {
                return Err(EmbedError::EmptyBatch { field: "texts" }.into());
            }
            let n = req.texts.len();
            let mut inputs = Vec::with_capacity(n + 1);
            inputs.push(req.source);
            inputs.extend(req.texts);
            self.engine.check_batch("texts", inputs.len())?;
            let params = EmbedParams {
                model: req.model,
                normalize: true,
                truncate: truncation(req.truncate, req.truncation_direction)?,
                dimensions: None,
            };
            // The engine sees one list; name the request's own fields.
            let out = self
                .engine
                .embed(inputs, &params)
                .await
                .map_err(|e| match e {
                    EmbedError::InputTooLong {
                        index: Some(i),
                        tokens,
                        max,
                        model,
                        ..
                    } => EmbedError::InputTooLong {
                        field: if i == 0 { "source" } else { "texts" },
                        index: i.checked_sub(1),
                        tokens,
                        max,
                        model,
                    },
                    other => other,
                })?;
            let (source, others) = out
                .vectors
                .split_first()
                .ok_or_else(|| Status::internal("no source vector"))?;
            let scores = others
                .iter()
                .map(|v| v.iter().zip(source).map(|(a, b)| a * b).sum::<f32>())
                .collect();
            Ok(pb::SimilarityResponse {
                scores,
                usage: Some(usage(&out)),
                timings: Some(timings(&out, start)),
                model: out.model,
            })
        }
        .await;
        self.observe("Similarity", start, &result);
        result.map(Response::new)
    }

    async fn tokenize(
        &self,
        req: Request<pb::TokenizeRequest>,
    ) -> Result<Response<pb::TokenizeResponse>, Status> {
        let start = Instant::now();
        let result = async {
            let req = req.into_inner();
            let truncate = truncation(req.truncate, req.truncation_direction)?;
            let (model, encs) = self
                .engine
                .tokenize(req.inputs, &req.model, truncate)
                .await?;
            let inputs = encs
                .into_iter()
                .map(|(enc, original)| pb::TokenizedInput {
                    truncated: original > enc.len(),
                    original_length: u32::try_from(original).unwrap_or(u32::MAX),
                    tokens: enc
                        .get_ids()
                        .iter()
                        .zip(enc.get_tokens())
                        .zip(enc.get_offsets())
                        .zip(enc.get_special_tokens_mask())
                        .map(|(((&id, text), &(s, e)), &special)| pb::Token {
                            id,
                            text: text.clone(),
                            start: u32::try_from(s).unwrap_or(u32::MAX),
                            end: u32::try_from(e).unwrap_or(u32::MAX),
                            special: special == 1,
                        })
                        .collect(),
                })
                .collect();
            Ok(pb::TokenizeResponse { inputs, model })
        }
        .await;
        self.observe("Tokenize", start, &result);
        result.map(Response::new)
    }

    async fn info(
        &self,
        _req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let s = &self.engine.settings;
        let to32 = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let models = self
            .engine
            .models()
            .map(|(m, is_default)| pb::ModelInfo {
                name: m.folder.name.clone(),
                dimension: to32(m.folder.dimension),
                max_input_tokens: to32(m.folder.max_tokens),
                pooling: m.folder.pooling.as_str().into(),
                dtype: m.folder.dtype.clone(),
                is_default,
                path: m.folder.dir.display().to_string(),
            })
            .collect();
        Ok(Response::new(pb::InfoResponse {
            models,
            max_client_batch: to32(s.max_client_batch),
            max_batch_size: to32(s.max_batch_size),
            max_batch_tokens: to32(s.max_batch_tokens),
            max_queued_inputs: to32(s.max_queued_inputs),
            max_request_bytes: self.max_request_bytes as u64,
            version: env!("CARGO_PKG_VERSION").into(),
        }))
    }
}
