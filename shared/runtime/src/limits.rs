//! Request-size errors as the gRPC spec has them.
//!
//! tonic answers a request over `max_decoding_message_size` with OUT_OF_RANGE;
//! the gRPC status-code spec says a message larger than the configured
//! maximum is RESOURCE_EXHAUSTED, and that is what clients retry-classify
//! on. [`MessageLimitLayer`] rewrites that one (trailers-only) answer and
//! names the setting to change.

use std::task::{Context, Poll};

use futures::future::BoxFuture;
use http::{HeaderValue, Request, Response};
use tower_layer::Layer;
use tower_service::Service;

const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

#[derive(Clone, Copy, Debug)]
pub struct MessageLimitLayer {
    pub max_request_bytes: usize,
}

impl<S> Layer<S> for MessageLimitLayer {
    type Service = MessageLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MessageLimit {
            inner,
            max: self.max_request_bytes,
        }
    }
}

#[derive(Clone, Debug)]
pub struct MessageLimit<S> {
    inner: S,
    max: usize,
}

impl<S, B, RB> Service<Request<B>> for MessageLimit<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let max = self.max;
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            let h = resp.headers();
            let too_large = h.get("grpc-status").is_some_and(|v| v == "11")
                && h.get("grpc-message")
                    .and_then(|m| m.to_str().ok())
                    .is_some_and(|m| percent_decode(m).starts_with(TONIC_TOO_LARGE));
            if too_large {
                let msg = too_large_message(max);
                let h = resp.headers_mut();
                h.insert("grpc-status", HeaderValue::from_static("8"));
                if let Ok(v) = HeaderValue::from_str(&percent_encode(&msg)) {
                    h.insert("grpc-message", v);
                }
            }
            Ok(resp)
        })
    }
}

/// What a caller is told when its message exceeds `server.max_request_bytes`
/// (here and wherever a request body is read without tonic's decoder).
pub fn too_large_message(max: usize) -> String {
    format!("request message is larger than the limit of {max} bytes (server.max_request_bytes)")
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// grpc-message encoding: printable ASCII except '%' as is, the rest %XX.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|c| {
            if (0x20..=0x7e).contains(&c) && c != b'%' {
                (c as char).to_string()
            } else {
                format!("%{c:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_message_round_trip() {
        let m = "100% größer";
        assert_eq!(percent_decode(&percent_encode(m)), m);
        assert_eq!(percent_decode("Error%2C decoded"), "Error, decoded");
    }
}
