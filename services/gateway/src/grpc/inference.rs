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
            let caller = grpc_timeout(&md);
            // The caller's messages until its side ends or fails.
            let inbound = inbound
                .take_while(|r| std::future::ready(r.is_ok()))
                .filter_map(|r| std::future::ready(r.ok()));
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
            Ok(Response::new(answers.boxed()))
        }
        .boxed()
    }
}
