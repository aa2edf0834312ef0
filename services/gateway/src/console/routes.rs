//! The console's HTTP routes: the page's files and the mesh read APIs, and
//! the path-prefix rewrite that lets the whole HTTP face live under an
//! ingress prefix.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{RawQuery, Request, State},
    http::{HeaderValue, StatusCode, Uri, header},
    middleware::Next,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
    routing::get,
};
use futures::{StreamExt as _, stream};

use super::{Console, assets};

/// How often an idle event stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The console's routes (empty when `console.enabled` is off).
pub fn routes(console: Option<Arc<Console>>) -> Router {
    let Some(console) = console else {
        return Router::new();
    };
    Router::new()
        .route("/ui", get(assets::redirect))
        .route("/ui/", get(assets::index))
        .route("/ui/{file}", get(assets::file))
        .route("/v1/mesh", get(mesh))
        .route("/v1/mesh/events", get(events))
        .route("/v1/mesh/history", get(history))
        .with_state(console)
}

fn json(body: String) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn mesh(State(c): State<Arc<Console>>) -> Response {
    json(c.current().await.to_string())
}

/// `?service=S` (service names need no decoding; an unknown one has no
/// series).
async fn history(State(c): State<Arc<Console>>, RawQuery(q): RawQuery) -> Response {
    let service = q
        .as_deref()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("service="));
    json(c.history_json(service).to_string())
}

/// One event per sample (the current one first), until the client goes.
async fn events(State(c): State<Arc<Console>>) -> Response {
    let Ok(permit) = Arc::clone(&c.streams).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            format!(
                "{} console event streams are open already; close one or retry",
                super::MAX_STREAMS
            ),
        )
            .into_response();
    };
    let first = c.current().await;
    let mut rx = c.latest.subscribe();
    rx.mark_unchanged();
    let rest = stream::unfold((rx, permit), |(mut rx, permit)| async move {
        rx.changed().await.ok()?;
        let s = rx.borrow_and_update().clone();
        Some((s, (rx, permit)))
    });
    let all = stream::iter([first])
        .chain(rest)
        .map(|s| Ok::<_, Infallible>(Event::default().event("mesh").data(&*s)));
    let mut r = Sse::new(all)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// `router` served under `prefix` as well: a request whose path starts
/// with it is routed as if it did not (so an ingress may strip the prefix
/// or pass it on).
pub fn with_prefix(router: Router, prefix: String) -> Router {
    if prefix.is_empty() {
        return router;
    }
    let prefix: Arc<str> = Arc::from(prefix);
    Router::new()
        .fallback_service(router)
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| {
                let prefix = Arc::clone(&prefix);
                async move { next.run(strip(req, &prefix)).await }
            },
        ))
}

fn strip(mut req: Request, prefix: &str) -> Request {
    let path = req.uri().path();
    let rest = match path.strip_prefix(prefix) {
        Some("") => "/",
        Some(r) if r.starts_with('/') => r,
        _ => return req,
    };
    let pq = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = pq.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_after(prefix: &str, uri: &str) -> String {
        let req = Request::builder()
            .uri(uri)
            .body(axum::body::Body::empty())
            .expect("request");
        strip(req, prefix).uri().to_string()
    }

    #[test]
    fn the_prefix_is_stripped_only_as_a_whole_segment() {
        assert_eq!(path_after("/mlmesh", "/mlmesh/ui/"), "/ui/");
        assert_eq!(path_after("/mlmesh", "/mlmesh"), "/");
        assert_eq!(
            path_after("/mlmesh", "/mlmesh/v1/mesh/history?service=embedding"),
            "/v1/mesh/history?service=embedding"
        );
        assert_eq!(path_after("/mlmesh", "/mlmeshx/ui/"), "/mlmeshx/ui/");
        assert_eq!(path_after("/mlmesh", "/v1/mesh"), "/v1/mesh");
    }
}
