//! `inference.GRPCInferenceService` served by the gateway: each call's
//! message bytes are forwarded undecoded to an inference replica
//! ([`Core::forward_inference`]) and its answer returned as it came, so a
//! Triton client pointed at the gateway works unchanged.
//!
//! A hand-written tower service rather than the generated server: the
//! generated one decodes every message into its type, which forwarding
//! does not need. Compression (gzip, deflate), the request size limit and
//! admission are the same as for the gateway's own service.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use futures::{FutureExt as _, StreamExt as _, future::BoxFuture};
use tonic::{
    Request, Response, Status, Streaming,
    body::Body,
    codec::{CompressionEncoding, EnabledCompressionEncodings},
    server::{Grpc, NamedService, StreamingService, UnaryService},
};

use super::{grpc_timeout, serve};
use crate::{
    core::{Core, InferenceMethod, RawStream},
    error::GatewayError,
    passthrough::Passthrough,
};

/// The forwarding service, mounted beside the gateway's own.
#[derive(Clone, Debug)]
pub struct InferenceProxy {
    core: Arc<Core>,
    max_request_bytes: usize,
}

impl InferenceProxy {
    pub fn new(core: Arc<Core>, max_request_bytes: usize) -> Self {
        Self {
            core,
            max_request_bytes,
        }
    }
}

impl NamedService for InferenceProxy {
    const NAME: &'static str = "inference.GRPCInferenceService";
}

impl tower_service::Service<http::Request<Body>> for InferenceProxy {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let core = Arc::clone(&self.core);
        let max = self.max_request_bytes;
        async move {
            let Some(m) = InferenceMethod::from_path(req.uri().path()) else {
                return Ok(Status::unimplemented(format!(
                    "{} is not a method of inference.GRPCInferenceService",
                    req.uri().path()
                ))
                .into_http());
            };
            // The common case, a plain unary call: relayed as it is (see
            // `relay`). Compressed requests and shadowed services take the
            // codec path: the message has to be read there.
            let identity = req
                .headers()
                .get("grpc-encoding")
                .is_none_or(|e| e == "identity");
            if m.forwarding == crate::core::Forwarding::Idempotent
                && identity
                && core.shadows.is_empty()
            {
                return Ok(relay(core, m, req, max).await);
            }
            let mut encodings = EnabledCompressionEncodings::default();
            encodings.enable(CompressionEncoding::Gzip);
            encodings.enable(CompressionEncoding::Deflate);
            let mut grpc = Grpc::new(Passthrough)
                .apply_compression_config(encodings, encodings)
                .apply_max_message_size_config(Some(max), Some(usize::MAX));
            Ok(match m.forwarding {
                crate::core::Forwarding::Stream => grpc.streaming(Stream { core, m }, req).await,
                _ => grpc.unary(Unary { core, m }, req).await,
            })
        }
        .boxed()
    }
}

/// One unary call relayed without a codec: the request body read (bounded
/// by `max` before anything is kept) and checked to be one uncompressed
/// gRPC message, then [`Core::relay_inference`] under the same admission,
/// deadline and metrics as every gateway call ([`serve`]).
async fn relay(
    core: Arc<Core>,
    m: &'static InferenceMethod,
    req: http::Request<Body>,
    max: usize,
) -> http::Response<Body> {
    use http_body_util::BodyExt as _;
    let (parts, body) = req.into_parts();
    let md = tonic::metadata::MetadataMap::from_headers(parts.headers);
    let frame = match http_body_util::Limited::new(body, max.saturating_add(5))
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Status::resource_exhausted(mlmesh_runtime::limits::too_large_message(max))
                .into_http();
        }
        Err(e) => return Status::cancelled(format!("reading the request failed: {e}")).into_http(),
    };
    if let Err(why) = one_message(&frame) {
        return Status::internal(format!("the request is not one gRPC message: {why}")).into_http();
    }
    match serve(&core, m.name, &md, |c, d| async move {
        c.relay_inference(m, frame, d).await
    })
    .await
    {
        Ok(resp) => resp.map(Body::new),
        Err(status) => status.into_http(),
    }
}

/// A unary request body is exactly one message: the flag byte 0 (not
/// compressed: compressed calls do not come here), a big-endian length,
/// and that many bytes.
fn one_message(frame: &[u8]) -> Result<(), String> {
    let Some((&[flag, a, b, c, d], message)) = frame.split_first_chunk::<5>() else {
        return Err(format!(
            "{} bytes, shorter than a message prefix",
            frame.len()
        ));
    };
    if flag != 0 {
        return Err("the compressed flag is set but no grpc-encoding was sent".into());
    }
    let declared = u32::from_be_bytes([a, b, c, d]) as usize;
    if declared != message.len() {
        return Err(format!(
            "the prefix declares {declared} bytes, the body carries {}",
            message.len()
        ));
    }
    Ok(())
}

struct Unary {
    core: Arc<Core>,
    m: &'static InferenceMethod,
}

impl UnaryService<Bytes> for Unary {
    type Response = Bytes;
    type Future = BoxFuture<'static, Result<Response<Bytes>, Status>>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let core = Arc::clone(&self.core);
        let m = self.m;
        async move {
            let (md, _, body) = request.into_parts();
            serve(&core, m.name, &md, |c, d| async move {
                c.forward_inference(m, body, d).await
            })
            .await
            .map(Response::new)
        }
        .boxed()
    }
}

struct Stream {
    core: Arc<Core>,
    m: &'static InferenceMethod,
}

impl StreamingService<Bytes> for Stream {
    type Response = Bytes;
    type ResponseStream = RawStream;
    type Future = BoxFuture<'static, Result<Response<RawStream>, Status>>;

    /// The stream holds its admission slot until it ends: a long stream is
    /// one call in flight for its whole life.
    fn call(&mut self, request: Request<Streaming<Bytes>>) -> Self::Future {
        let core = Arc::clone(&self.core);
        let m = self.m;
        async move {
            let started = Instant::now();
            let (md, _, inbound) = request.into_parts();
            let d = &core.settings().downstream;
            // Never unbounded: the caller's deadline, or the setting's.
            let caller = grpc_timeout(&md)
                .or(Some(std::time::Duration::from_secs(d.stream_timeout_secs)));
            let idle = std::time::Duration::from_secs(d.stream_idle_timeout_secs);
            // Each message after the first (which the auth layer counted
            // as the call) counts against the caller's rate limit; one over
            // ends the caller's side, and the stream answers
            // RESOURCE_EXHAUSTED once the replica has answered the rest.
            let refused: Arc<std::sync::Mutex<Option<Status>>> = Arc::default();
            let limiter = core.auth.clone().zip(crate::auth::current_caller());
            let r = Arc::clone(&refused);
            let inbound = inbound
                .take_while(|r| std::future::ready(r.is_ok()))
                .filter_map(|r| std::future::ready(r.ok()))
                .enumerate()
                .take_while(move |(i, _)| {
                    let ok = match (&limiter, *i) {
                        (Some((auth, caller)), 1..) => match auth.limits.admit(caller) {
                            Ok(_) => true,
                            Err(e) => {
                                if let Ok(mut slot) = r.lock() {
                                    *slot = Some(crate::auth::layer::grpc_status(&e));
                                }
                                false
                            }
                        },
                        _ => true,
                    };
                    std::future::ready(ok)
                })
                .map(|(_, m)| m);
            let opened = match core.admit() {
                Ok(admitted) => core
                    .forward_inference_stream(m, inbound, caller, core.deadline(caller))
                    .await
                    .map(|s| (admitted, s)),
                Err(e) => Err(e),
            };
            let code = opened
                .as_ref()
                .map_or_else(GatewayError::code, |_| tonic::Code::Ok);
            core.metrics
                .call("grpc", m.name, mlmesh_runtime::code_name(code), started);
            let (admitted, answers) = opened.map_err(Status::from)?;
            let answers = answers.map(move |item| {
                let _held = &admitted;
                item
            });
            // No answer for `idle`: the stream ends (a caller that opened
            // it and went quiet holds nothing forever).
            let answers = futures::stream::unfold((answers.boxed(), false), move |(mut s, done)| async move {
                if done {
                    return None;
                }
                match tokio::time::timeout(idle, s.next()).await {
                    Ok(Some(item)) => Some((item, (s, false))),
                    Ok(None) => None,
                    Err(_) => Some((
                        Err(Status::deadline_exceeded(format!(
                            "no answer on this stream for {} s (downstream.stream_idle_timeout_secs)",
                            idle.as_secs()
                        ))),
                        (s, true),
                    )),
                }
            });
            let tail = futures::stream::once(async move {
                refused.lock().ok().and_then(|mut s| s.take())
            })
            .filter_map(|s| std::future::ready(s.map(Err)));
            Ok(Response::new(answers.chain(tail).boxed()))
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::one_message;

    #[test]
    fn only_one_uncompressed_message_is_relayed() {
        let mut ok = vec![0, 0, 0, 0, 3];
        ok.extend_from_slice(b"abc");
        assert!(one_message(&ok).is_ok());
        assert!(one_message(&[0, 0, 0, 0, 0]).is_ok(), "an empty message");
        assert!(one_message(&[]).is_err());
        assert!(one_message(&[0, 0, 0]).is_err());
        let mut compressed = ok.clone();
        compressed[0] = 1;
        assert!(
            one_message(&compressed)
                .expect_err("compressed")
                .contains("compressed")
        );
        let mut two = ok.clone();
        two.extend_from_slice(&ok);
        assert!(
            one_message(&two)
                .expect_err("two messages")
                .contains("declares 3")
        );
        assert!(one_message(&ok[..6]).is_err(), "truncated");
    }
}
