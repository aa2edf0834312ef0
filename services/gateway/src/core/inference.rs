//! Inference through the gateway: the inference service's
//! `inference.GRPCInferenceService` (the Open Inference Protocol as Triton
//! publishes it), balanced over its replicas.
//!
//! Two ways in: [`Core::forward_inference`] passes a gRPC call's message
//! bytes through undecoded (the gRPC face, so tritonclient pointed at the
//! gateway sees the inference service's own answers), and the typed calls
//! below serve the HTTP face and pipelines. Model loads and unloads go to
//! every replica, so the mesh agrees on what it serves.

use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, stream::BoxStream};
use http::uri::PathAndQuery;
use mlmesh_proto::inference as pb;
use mlmesh_runtime::client::StreamingBody;
use tonic::{Request, Status, Streaming};
use tracing::Instrument as _;

use super::{Core, Result, req};
use crate::{
    downstream::{Deadline, DownstreamError, Pool, rpc, rpc::MAX_RESPONSE_BYTES},
    error::GatewayError,
    passthrough::Passthrough,
};

/// How the gateway forwards one method.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Forwarding {
    /// To one replica; retried on another after UNAVAILABLE.
    Idempotent,
    /// To every replica (model load and unload).
    Broadcast,
    /// A bidirectional stream, to one replica for its whole life.
    Stream,
}

/// One method of `inference.GRPCInferenceService`.
#[derive(Debug)]
pub struct InferenceMethod {
    /// The method's name (`ModelInfer`), for metrics.
    pub name: &'static str,
    /// Its gRPC path.
    pub path: &'static str,
    pub forwarding: Forwarding,
}

macro_rules! methods {
    ($($name:literal => $fw:ident),* $(,)?) => {
        /// Every method of the service, as the gateway forwards it.
        pub const METHODS: &[InferenceMethod] = &[$(InferenceMethod {
            name: $name,
            path: concat!("/inference.GRPCInferenceService/", $name),
            forwarding: Forwarding::$fw,
        }),*];
    };
}

methods! {
    "ServerLive" => Idempotent,
    "ServerReady" => Idempotent,
    "ModelReady" => Idempotent,
    "ServerMetadata" => Idempotent,
    "ModelMetadata" => Idempotent,
    "ModelInfer" => Idempotent,
    "ModelStreamInfer" => Stream,
    "ModelConfig" => Idempotent,
    "ModelStatistics" => Idempotent,
    "RepositoryIndex" => Idempotent,
    "RepositoryModelLoad" => Broadcast,
    "RepositoryModelUnload" => Broadcast,
}

impl InferenceMethod {
    /// The method a request path names, if the service has it.
    pub fn from_path(path: &str) -> Option<&'static Self> {
        METHODS.iter().find(|m| m.path == path)
    }

    fn path_and_query(&self) -> PathAndQuery {
        PathAndQuery::from_static(self.path)
    }
}

/// The answers of a forwarded stream, as undecoded messages.
pub type RawStream = BoxStream<'static, std::result::Result<Bytes, Status>>;

impl Core {
    /// The inference pool, or UNIMPLEMENTED when this gateway has none.
    pub(super) fn inference_pool(&self) -> Result<&Pool> {
        if self.settings.downstream.inference.is_empty() {
            return Err(GatewayError::NotConfigured {
                service: "inference",
                key: "downstream.inference",
            });
        }
        Ok(&self.inference)
    }

    /// Forwards one unary call's message bytes and returns the answer's.
    pub async fn forward_inference(
        &self,
        m: &'static InferenceMethod,
        body: Bytes,
        deadline: Deadline,
    ) -> Result<Bytes> {
        let pool = self.inference_pool()?;
        if m.forwarding == Forwarding::Broadcast {
            // Loads and unloads change what the mesh serves: audited.
            use prost::Message as _;
            let target = pb::RepositoryModelLoadRequest::decode(body.clone())
                .map(|r| r.model_name)
                .unwrap_or_default();
            let r = self.broadcast(pool, m, body, deadline).await;
            let action = if m.name == "RepositoryModelLoad" {
                "model.load"
            } else {
                "model.unload"
            };
            self.audit.outcome(action, target, "", &r);
            return r;
        }
        let start = std::time::Instant::now();
        let resp = pool
            .call(m.path, deadline, true, |ch, remaining| {
                let body = body.clone();
                async move {
                    let mut g =
                        tonic::client::Grpc::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES);
                    g.ready().await.map_err(|e| {
                        Status::unavailable(format!("inference replica not ready: {e}"))
                    })?;
                    g.unary(req(body, remaining), m.path_and_query(), Passthrough)
                        .await
                }
            })
            .await?;
        if m.name == "ModelInfer" {
            self.shadows.offer_raw(&body, &resp, start.elapsed());
        }
        Ok(resp)
    }

    /// Relays one unary call as it is: `frame` (the caller's one gRPC
    /// message, with its 5-byte prefix) goes to a replica as the request
    /// body, and the replica's answer comes back as HTTP/2 response —
    /// headers, data and trailers, streamed through unchanged.
    ///
    /// The same p2c, retries, deadline and client span as
    /// [`Self::forward_inference`], without a gRPC codec on either side:
    /// nothing is decoded, buffered or encoded again on the way back. A
    /// trailers-only error (how gRPC servers answer a failed call) is read
    /// from the response headers, so UNAVAILABLE is still retried on another
    /// replica and every other status still reaches the caller as the
    /// replica said it.
    pub async fn relay_inference(
        &self,
        m: &'static InferenceMethod,
        frame: Bytes,
        deadline: Deadline,
    ) -> Result<http::Response<mlmesh_runtime::client::RecvBody>> {
        use tower_service::Service as _;
        let pool = self.inference_pool()?;
        let resp = pool
            .call(m.path, deadline, true, |mut ch, remaining| {
                let frame = frame.clone();
                async move {
                    let mut rq = http::Request::new(tonic::body::Body::new(
                        http_body_util::Full::new(frame),
                    ));
                    *rq.method_mut() = http::Method::POST;
                    *rq.uri_mut() = http::Uri::from_static(m.path);
                    let h = rq.headers_mut();
                    h.insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/grpc"),
                    );
                    h.insert(http::header::TE, http::HeaderValue::from_static("trailers"));
                    if let Ok(v) = http::HeaderValue::from_str(&grpc_timeout(remaining)) {
                        h.insert("grpc-timeout", v);
                    }
                    let resp = ch.call(rq).await?;
                    if let Some(status) = tonic::Status::from_header_map(resp.headers())
                        && status.code() != tonic::Code::Ok
                    {
                        return Err(status);
                    }
                    Ok(tonic::Response::new(resp))
                }
            })
            .await?;
        Ok(resp)
    }

    /// Sends `body` to every replica at once; the first failure (naming its
    /// replica) fails the call. The answers are alike (empty messages).
    async fn broadcast(
        &self,
        pool: &Pool,
        m: &'static InferenceMethod,
        body: Bytes,
        deadline: Deadline,
    ) -> Result<Bytes> {
        let replicas = pool.channels();
        if replicas.is_empty() {
            return Err(DownstreamError::Unavailable {
                service: "inference",
                tried: String::new(),
                message: "no ready replicas".into(),
            }
            .into());
        }
        let token = self.inference_admin.as_ref();
        let calls = replicas.into_iter().map(|(addr, ch)| {
            let body = body.clone();
            let span = mlmesh_runtime::call_span!(
                "grpc.client",
                otel.name = m.path,
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.method = m.name,
                peer.service = "inference",
                server.address = %addr,
            );
            async move {
                let remaining = deadline.remaining();
                let mut g = tonic::client::Grpc::new(ch);
                let r = match tokio::time::timeout(remaining, async {
                    g.ready()
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    let mut r = req(body, remaining);
                    if let Some(t) = token {
                        t.attach(r.metadata_mut());
                    }
                    g.unary(r, m.path_and_query(), Passthrough).await
                })
                .await
                {
                    Ok(r) => r,
                    Err(_) => Err(Status::deadline_exceeded("deadline exceeded")),
                };
                r.map(tonic::Response::into_inner)
                    .map_err(|s| Status::new(s.code(), format!("replica {addr}: {}", s.message())))
            }
            .instrument(span)
        });
        let mut last = Bytes::new();
        for r in futures::future::join_all(calls).await {
            last = r.map_err(|status| DownstreamError::Status {
                service: "inference",
                status,
            })?;
        }
        Ok(last)
    }

    /// Opens a forwarded `ModelStreamInfer` on one replica: `inbound` are
    /// the caller's messages; the answer is the replica's stream. The
    /// caller's own timeout (if any) bounds the whole stream; `deadline`
    /// bounds opening it.
    pub async fn forward_inference_stream(
        &self,
        m: &'static InferenceMethod,
        inbound: impl Stream<Item = Bytes> + Send + 'static,
        caller_timeout: Option<Duration>,
        deadline: Deadline,
    ) -> Result<Streaming<Bytes>> {
        let pool = self.inference_pool()?;
        let mut inbound = Some(inbound);
        let resp = pool
            .call(m.path, deadline, false, move |ch, _| {
                let inbound = inbound.take();
                async move {
                    let inbound = inbound.ok_or_else(|| Status::internal("stream already sent"))?;
                    let mut g =
                        tonic::client::Grpc::new(ch).max_decoding_message_size(MAX_RESPONSE_BYTES);
                    g.ready().await.map_err(|e| {
                        Status::unavailable(format!("inference replica not ready: {e}"))
                    })?;
                    let mut rq = Request::new(inbound);
                    rq.extensions_mut().insert(StreamingBody);
                    if let Some(t) = caller_timeout {
                        rq.set_timeout(t);
                    }
                    g.streaming(rq, m.path_and_query(), Passthrough).await
                }
            })
            .await?;
        Ok(resp)
    }

    /// One inference, typed.
    pub async fn model_infer(
        &self,
        r: pb::ModelInferRequest,
        deadline: Deadline,
    ) -> Result<pb::ModelInferResponse> {
        let pool = self.inference_pool()?;
        // Only a sampled call keeps a copy of its request for the shadow.
        let Some(ticket) = self.shadows.ticket(&r.model_name) else {
            return Ok(pool.unary(&rpc::MODEL_INFER, deadline, r).await?);
        };
        let start = std::time::Instant::now();
        let resp = pool.unary(&rpc::MODEL_INFER, deadline, r.clone()).await?;
        self.shadows.offer(ticket, r, &resp, start.elapsed());
        Ok(resp)
    }

    /// A model's inputs and outputs.
    pub async fn model_metadata(
        &self,
        name: &str,
        version: &str,
        deadline: Deadline,
    ) -> Result<pb::ModelMetadataResponse> {
        let pool = self.inference_pool()?;
        let r = pb::ModelMetadataRequest {
            name: name.into(),
            version: version.into(),
        };
        Ok(pool.unary(&rpc::MODEL_METADATA, deadline, r).await?)
    }

    /// Whether a model (version) is ready on the replica asked.
    pub async fn model_ready(&self, name: &str, version: &str, deadline: Deadline) -> Result<bool> {
        let pool = self.inference_pool()?;
        let r = pb::ModelReadyRequest {
            name: name.into(),
            version: version.into(),
        };
        Ok(pool.unary(&rpc::MODEL_READY, deadline, r).await?.ready)
    }

    /// Whether the inference service is live (`ready = false`) or ready.
    pub async fn inference_server_ok(&self, ready: bool, deadline: Deadline) -> Result<bool> {
        let pool = self.inference_pool()?;
        if ready {
            Ok(pool
                .unary(&rpc::SERVER_READY, deadline, pb::ServerReadyRequest {})
                .await?
                .ready)
        } else {
            Ok(pool
                .unary(&rpc::SERVER_LIVE, deadline, pb::ServerLiveRequest {})
                .await?
                .live)
        }
    }

    /// The inference service's name, version and protocol extensions.
    pub async fn inference_server_metadata(
        &self,
        deadline: Deadline,
    ) -> Result<pb::ServerMetadataResponse> {
        let pool = self.inference_pool()?;
        Ok(pool
            .unary(
                &rpc::SERVER_METADATA,
                deadline,
                pb::ServerMetadataRequest {},
            )
            .await?)
    }

    /// The models the inference service has ready (empty when the gateway
    /// has no inference service).
    pub async fn inference_models(
        &self,
        deadline: Deadline,
    ) -> Result<Vec<pb::repository_index_response::ModelIndex>> {
        let Ok(pool) = self.inference_pool() else {
            return Ok(Vec::new());
        };
        Ok(pool
            .unary(
                &rpc::REPOSITORY_INDEX,
                deadline,
                pb::RepositoryIndexRequest {
                    repository_name: String::new(),
                    ready: true,
                },
            )
            .await?
            .models)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_has_a_path_and_loads_go_everywhere() {
        let m = InferenceMethod::from_path("/inference.GRPCInferenceService/ModelInfer")
            .expect("ModelInfer");
        assert_eq!(m.name, "ModelInfer");
        assert_eq!(m.forwarding, Forwarding::Idempotent);
        for name in ["RepositoryModelLoad", "RepositoryModelUnload"] {
            let p = format!("/inference.GRPCInferenceService/{name}");
            assert_eq!(
                InferenceMethod::from_path(&p).map(|m| m.forwarding),
                Some(Forwarding::Broadcast)
            );
        }
        assert!(InferenceMethod::from_path("/inference.GRPCInferenceService/Nope").is_none());
        assert_eq!(METHODS.len(), 12);
    }
}

/// A `grpc-timeout` value for `d`: at most 8 digits, in the finest unit
/// that fits (the gRPC over HTTP/2 spec's form).
fn grpc_timeout(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, per) in [
        ("n", 1u128),
        ("u", 1_000),
        ("m", 1_000_000),
        ("S", 1_000_000_000),
        ("M", 60_000_000_000),
    ] {
        let v = nanos / per;
        if v < 100_000_000 {
            return format!("{}{unit}", v.max(1));
        }
    }
    format!("{}H", (nanos / 3_600_000_000_000).clamp(1, 99_999_999))
}

#[cfg(test)]
mod relay_tests {
    use super::*;

    #[test]
    fn grpc_timeouts_fit_in_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_nanos(500)), "500n");
        assert_eq!(grpc_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(grpc_timeout(Duration::from_secs(30)), "30000000u");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(grpc_timeout(Duration::ZERO), "1n");
        for s in [1u64, 99, 100, 86_400, 10_000_000] {
            let t = grpc_timeout(Duration::from_secs(s));
            assert!(t.len() <= 9, "{t}");
            let back = crate::grpc::parse_timeout(&t).expect("parses");
            assert!(back <= Duration::from_secs(s), "{t} is longer than {s} s");
        }
    }
}
