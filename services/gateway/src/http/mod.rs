//! The HTTP/JSON face of the gateway (axum), for people and tools that do
//! not speak gRPC. `POST /v1/embeddings` follows OpenAI's embeddings API so
//! its client libraries work unchanged; errors are
//! `{"error": {"message", "type", "code", "param"}}` with the HTTP status
//! matching the gRPC status the same failure gets over gRPC. A caller's
//! deadline comes in a `grpc-timeout` header, as grpc-gateway reads it.

// Handlers short-circuit with a finished error `Response` (`?`); boxing it
// would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

mod collections;
mod documents;
mod oip;
mod openai;
pub(crate) mod pipelines;
mod registry;
mod stream;

use std::{future::Future, sync::Arc, time::Instant};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::de::DeserializeOwned;
use serde_json::{Value as Json, json};
use tonic::Code;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{core::Core, error::GatewayError};

/// The HTTP status a gRPC code maps to (as grpc-gateway maps them).
pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// OpenAI's error `type` for an HTTP status.
fn error_type(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 | 409 | 413 | 415 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        408 | 504 => "timeout_error",
        _ => "server_error",
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An error answer in OpenAI's shape.
fn error_response(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Response {
    json_response(
        status,
        &json!({"error": {
            "message": message,
            "type": error_type(status),
            "code": code,
            "param": param,
        }}),
    )
}

fn gateway_error(e: &GatewayError) -> Response {
    let code = e.code();
    let name = if e.is_model_not_found() {
        "model_not_found".to_owned()
    } else {
        mlmesh_runtime::code_name(code).to_ascii_lowercase()
    };
    error_response(status_of(code), &name, &e.to_string(), e.field())
}

/// Reads a JSON body of at most `limit` bytes into `T`.
async fn read_json<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, Response> {
    let body = to_bytes(req.into_body(), limit).await.map_err(|e| {
        let e = e.into_inner();
        if mlmesh_runtime::http::is_body_timeout(e.as_ref()) {
            return error_response(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                &e.to_string(),
                None,
            );
        }
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!(
                "request body is larger than the limit of {limit} bytes (http.max_body_bytes)"
            ),
            None,
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("invalid JSON body: {e}"),
            None,
        )
    })
}

#[derive(Clone)]
struct App {
    core: Arc<Core>,
}

/// Runs one API call: trace span (parented on the caller's `traceparent`),
/// admission, deadline, metrics, error mapping.
async fn handle<F, Fut>(app: &App, route: &'static str, headers: &HeaderMap, f: F) -> Response
where
    F: FnOnce(Arc<Core>, crate::downstream::Deadline) -> Fut,
    Fut: Future<Output = Result<Response, Response>>,
{
    handle_with(app, route, headers, gateway_error, f).await
}

/// [`handle`], with gateway errors (admission) answered by `render`.
async fn handle_with<F, Fut>(
    app: &App,
    route: &'static str,
    headers: &HeaderMap,
    render: fn(&GatewayError) -> Response,
    f: F,
) -> Response
where
    F: FnOnce(Arc<Core>, crate::downstream::Deadline) -> Fut,
    Fut: Future<Output = Result<Response, Response>>,
{
    let started = Instant::now();
    let span = mlmesh_runtime::call_span!(
        "http.server",
        otel.name = route,
        otel.kind = "server",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
        enduser.id = tracing::field::Empty,
    );
    if let Some(c) = crate::auth::current_caller() {
        span.record("enduser.id", c.name.as_str());
    }
    if mlmesh_runtime::telemetry::call_spans() {
        let _ = span.set_parent(mlmesh_runtime::propagation::extract(headers));
    }
    // HTTP callers may send a deadline as grpc-gateway reads it: a
    // `grpc-timeout` header (`500m`, `2S`).
    let caller = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::grpc::parse_timeout);
    let core = Arc::clone(&app.core);
    let call = async move {
        match core.admit() {
            Ok(_admitted) => {
                let deadline = core.deadline(caller);
                f(Arc::clone(&core), deadline).await.unwrap_or_else(|e| e)
            }
            Err(e) => render(&e),
        }
    }
    .instrument(span.clone());
    let resp = mlmesh_runtime::propagation::within_callers_trace(headers, call).await;
    span.record("http.response.status_code", resp.status().as_u16());
    // The trace this call is part of, for a caller (the console's
    // playground) to look up in its tracing backend.
    let mut resp = resp;
    if let Some(v) = mlmesh_runtime::propagation::trace_id(&span)
        .and_then(|t| http::HeaderValue::from_str(&t).ok())
    {
        resp.headers_mut().insert("x-trace-id", v);
    }
    app.core
        .metrics
        .call("http", route, resp.status().as_str(), started);
    resp
}

/// [`handle`] for a call with a JSON body of type `T`.
async fn handle_json<T, F, Fut>(app: &App, route: &'static str, req: Request, f: F) -> Response
where
    T: DeserializeOwned,
    F: FnOnce(Arc<Core>, crate::downstream::Deadline, T) -> Fut,
    Fut: Future<Output = Result<Response, Response>>,
{
    let headers = req.headers().clone();
    let limit = app.core.settings().http.max_body_bytes;
    handle(app, route, &headers, |core, deadline| async move {
        let body: T = read_json(req, limit).await?;
        f(core, deadline, body).await
    })
    .await
}

/// OpenAI's `usage` object (embeddings have no completion tokens).
fn usage(prompt_tokens: u64) -> Json {
    json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens})
}

fn ok(v: &Json) -> Result<Response, Response> {
    Ok(json_response(StatusCode::OK, v))
}

fn err(e: GatewayError) -> Response {
    gateway_error(&e)
}

fn invalid(field: &str, reason: impl Into<String>) -> Response {
    err(GatewayError::invalid(field, reason))
}

/// The shadow rules' figures so far (`core::shadow`).
async fn shadow_report(State(app): State<App>) -> Response {
    json_response(StatusCode::OK, &app.core.shadows.report())
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

/// Ready or not, per service, with counts of serving replicas. Open to
/// anyone (probes carry no credentials), so it never names replica
/// addresses: those are for the operator's metrics and logs.
async fn readyz(State(app): State<App>) -> Response {
    let checks = app.core.readiness().await;
    let mut services = serde_json::Map::new();
    let mut ready = true;
    for (pool, _) in app.core.pools() {
        let mine: Vec<_> = checks.iter().filter(|c| c.0 == pool.service()).collect();
        let any = mine.iter().any(|c| c.2 == "SERVING");
        // The registry serves the console and model APIs, not the data
        // path: its absence is reported, not a reason to stop traffic.
        let required = pool.service() != "registry";
        ready &= any || !required;
        services.insert(
            pool.service().to_owned(),
            json!({
                "ready": any,
                "required": required,
                "replicas": mine.len(),
                "serving": mine.iter().filter(|c| c.2 == "SERVING").count(),
            }),
        );
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"status": if ready { "ready" } else { "unavailable" }, "services": services}),
    )
}

async fn not_found(req: Request<Body>) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {} {}", req.method(), req.uri().path()),
        None,
    )
}

/// A request that changes state must say its body is JSON: a browser page
/// can send a cross-site POST without asking first only as a form or
/// `text/plain`, so with auth off nothing can be forged from a browser
/// (and with auth on, a cookie-less API is not exposed to CSRF either).
/// One rule for every route, MCP's included: 415 otherwise.
async fn require_json(req: Request, next: axum::middleware::Next) -> Response {
    let changes_state = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    // Only requests with a body: an empty one cannot be read as anything
    // (and a bodiless DELETE needs a preflight cross-site anyway).
    let h = req.headers();
    let has_body = h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0");
    if changes_state && has_body && !json {
        return error_response(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "this route takes a JSON body: send Content-Type: application/json",
            None,
        );
    }
    next.run(req).await
}

/// The HTTP API's routes.
pub fn router(core: Arc<Core>, mcp: Option<crate::mcp::McpService>) -> Router {
    let mut r = Router::new();
    if let Some(m) = mcp {
        r = r.route_service("/mcp", m);
    }
    r.route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/similarity", post(openai::similarity))
        .route(
            "/v1/collections",
            post(collections::create_collection).get(collections::list_collections),
        )
        .route(
            "/v1/collections/{name}",
            get(collections::get_collection).delete(collections::delete_collection),
        )
        .route("/v1/collections/{name}/documents", post(documents::ingest))
        .route(
            "/v1/collections/{name}/text-index",
            post(collections::add_text_index),
        )
        .route("/v1/collections/{name}/search", post(documents::search))
        .route("/v1/collections/{name}/browse", post(documents::browse))
        .route("/v1/rag/query", post(documents::rag_query))
        .merge(oip::routes())
        .merge(registry::routes())
        .route("/v1/pipelines", get(pipelines::list))
        .route("/v1/pipelines/{name}", post(pipelines::run))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/shadow", get(shadow_report))
        .route("/v1/models/{id}", get(openai::get_model))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .layer(axum::middleware::from_fn(require_json))
        .with_state(App { core })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(status_of(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
