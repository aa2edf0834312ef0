//! The tower layer that puts [`Auth`] in front of a face: the gRPC routes
//! and the HTTP router (MCP included) take the same layer, differing only
//! in how a refusal is said — a gRPC status (RESOURCE_EXHAUSTED carrying
//! `google.rpc.RetryInfo`), or an HTTP status with `WWW-Authenticate`,
//! `Retry-After` and `x-ratelimit-*` headers.

use std::{
    convert::Infallible,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::body::Body;
use futures::{FutureExt as _, future::BoxFuture};
use http::{HeaderValue, Request, Response, StatusCode, header};
use prost::Message as _;
use tonic::Code;
use tower_service::Service;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{Auth, AuthError, scope};

/// Which face a layer guards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Face {
    Grpc,
    Http,
}

/// Authentication, scopes and rate limits for one face.
#[derive(Clone, Debug)]
pub struct AuthLayer {
    auth: Arc<Auth>,
    face: Face,
    outcomes: prometheus::IntCounterVec,
}

impl AuthLayer {
    pub fn new(auth: Arc<Auth>, face: Face, outcomes: prometheus::IntCounterVec) -> Self {
        Self {
            auth,
            face,
            outcomes,
        }
    }
}

impl<S> tower_layer::Layer<S> for AuthLayer {
    type Service = AuthService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthService {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AuthService<S> {
    inner: S,
    layer: AuthLayer,
}

/// The token a request presents: `authorization: Bearer …` or `x-api-key`.
fn token(headers: &http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, rest) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
    #[prost(message, repeated, tag = "3")]
    details: Vec<prost_types::Any>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RetryInfo {
    #[prost(message, optional, tag = "1")]
    retry_delay: Option<prost_types::Duration>,
}

/// RESOURCE_EXHAUSTED with `google.rpc.RetryInfo`, as gRPC clients read it.
pub fn exhausted_status(message: String, retry_after: Duration) -> tonic::Status {
    let info = RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: retry_after.as_secs() as i64,
            nanos: retry_after.subsec_nanos() as i32,
        }),
    };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: message.clone(),
        details: vec![prost_types::Any {
            type_url: "type.googleapis.com/google.rpc.RetryInfo".into(),
            value: info.encode_to_vec(),
        }],
    };
    tonic::Status::with_details(
        Code::ResourceExhausted,
        message,
        details.encode_to_vec().into(),
    )
}

/// Whole seconds to wait, at least 1 (for `Retry-After`).
fn retry_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// The gRPC status of a refusal.
pub fn grpc_status(e: &AuthError) -> tonic::Status {
    match e {
        AuthError::Unauthenticated(_) => tonic::Status::unauthenticated(e.to_string()),
        AuthError::PermissionDenied { .. } => tonic::Status::permission_denied(e.to_string()),
        AuthError::RateLimited { retry_after, .. } => exhausted_status(e.to_string(), *retry_after),
    }
}

/// The HTTP answer to a refusal, in OpenAI's error shape.
pub fn http_response(e: &AuthError, presented: bool) -> Response<Body> {
    let (status, code) = match e {
        AuthError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "invalid_api_key"),
        AuthError::PermissionDenied { .. } => (StatusCode::FORBIDDEN, "insufficient_scope"),
        AuthError::RateLimited { .. } => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_exceeded"),
    };
    let kind = match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        _ => "rate_limit_error",
    };
    let body = serde_json::json!({"error": {
        "message": e.to_string(), "type": kind, "code": code, "param": null,
    }});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    match e {
        AuthError::Unauthenticated(_) => {
            let v = if presented {
                "Bearer realm=\"mlmesh\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"mlmesh\""
            };
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(v));
        }
        AuthError::PermissionDenied { scope, .. } => {
            if let Ok(v) = HeaderValue::from_str(&format!(
                "Bearer realm=\"mlmesh\", error=\"insufficient_scope\", scope=\"{scope}\""
            )) {
                h.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        AuthError::RateLimited {
            retry_after, limit, ..
        } => {
            let secs = retry_secs(*retry_after).max(1);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            h.insert("x-ratelimit-limit", HeaderValue::from(*limit));
            h.insert("x-ratelimit-remaining", HeaderValue::from(0u32));
            h.insert("x-ratelimit-reset", HeaderValue::from(secs));
        }
    }
    r
}

impl<S> Service<Request<Body>> for AuthService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let need = match self.layer.face {
            Face::Grpc => scope::for_grpc(req.uri().path()).map(Some),
            Face::Http => scope::for_http(req.method(), req.uri().path()),
        };
        // Take the service that was polled ready; leave a clone behind.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let Some(need) = need else {
            return inner.call(req).boxed();
        };
        let layer = self.layer.clone();
        async move {
            let presented = token(req.headers()).map(str::to_owned);
            let checked = async {
                let t = presented.as_deref().ok_or_else(|| {
                    AuthError::Unauthenticated(
                        "no credentials: send `authorization: Bearer <API key or JWT>` or `x-api-key: <API key>`"
                            .into(),
                    )
                })?;
                let caller = layer.auth.authenticate(t).await?;
                if let Some(s) = need
                    && !caller.scopes.contains(&s)
                {
                    return Err(AuthError::PermissionDenied {
                        caller: caller.name.clone(),
                        label: caller.label.clone(),
                        scope: s.as_str(),
                        has: caller.scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                    });
                }
                let standing = layer
                    .auth
                    .limits
                    .admit(&caller)
                    .and_then(|s| Ok((s, layer.auth.limits.hold(&caller)?)))
                    .map_err(|e| (caller.label.clone(), e));
                Ok((caller, standing))
            }
            .await;
            let (caller, (standing, slot)) = match checked {
                Ok((caller, Ok(standing))) => (caller, standing),
                Ok((_, Err((label, e)))) => return Ok(layer.refuse(&label, &e, true)),
                Err(e) => {
                    let label = match &e {
                        AuthError::PermissionDenied { label, .. } => label.clone(),
                        _ => "unauthenticated".into(),
                    };
                    return Ok(layer.refuse(&label, &e, presented.is_some()));
                }
            };
            layer.outcomes.with_label_values(&[&caller.label, "ok"]).inc();
            layer.auth.saw(&caller);
            tracing::Span::current().set_attribute("enduser.id", caller.name.clone());
            // Also on the request, for handlers that leave this task (MCP).
            let mut req = req;
            req.extensions_mut().insert(Arc::clone(&caller));
            let mut resp = super::scoped(caller, inner.call(req)).await?;
            if layer.face == Face::Http
                && let Some(s) = standing
            {
                let h = resp.headers_mut();
                h.insert("x-ratelimit-limit", HeaderValue::from(s.limit));
                h.insert("x-ratelimit-remaining", HeaderValue::from(s.remaining));
            }
            // The caller's slot lives as long as the answer: to the end of
            // a stream, or until the client goes away.
            if let Some(slot) = slot {
                resp = resp.map(|b| Body::new(Holding { body: b, _slot: slot }));
            }
            Ok(resp)
        }
        .boxed()
    }
}

/// A response body that keeps a permit until it is dropped.
struct Holding {
    body: Body,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl http_body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl AuthLayer {
    fn refuse(&self, label: &str, e: &AuthError, presented: bool) -> Response<Body> {
        let outcome = match e {
            AuthError::Unauthenticated(_) => "unauthenticated",
            AuthError::PermissionDenied { .. } => "permission_denied",
            AuthError::RateLimited { .. } => "rate_limited",
        };
        self.outcomes.with_label_values(&[label, outcome]).inc();
        tracing::info!(caller = label, outcome, reason = %e, "call refused");
        match self.face {
            Face::Grpc => grpc_status(e).into_http(),
            Face::Http => http_response(e, presented),
        }
    }
}
