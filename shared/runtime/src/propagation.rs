//! W3C trace-context propagation over gRPC metadata, as tower layers.
//!
//! [`ServerTraceLayer`] wraps a server: each call gets a `grpc.server` span
//! whose parent is the caller's `traceparent`. [`ClientTraceLayer`] wraps a
//! client channel: each call carries the current span's context onward. With
//! both in place, one trace follows a request across every mlmesh hop.
//!
//! When this process exports no traces it makes no per-call spans
//! ([`crate::telemetry::call_spans`]); then the caller's `traceparent` and
//! `tracestate` are kept, as they came, for the rest of the call (a task
//! local) and sent on with every downstream call made while serving it, so
//! a trace still crosses this hop to the next one that does export.

use std::task::{Context, Poll};

use http::{HeaderMap, HeaderName, HeaderValue, Request};
use opentelemetry::propagation::{Extractor, Injector};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The caller's trace headers, kept for the call when no spans are made
/// (opaque; see [`within_callers_trace`]).
#[derive(Clone, Debug)]
pub struct CallerTrace {
    parent: HeaderValue,
    state: Option<HeaderValue>,
}

tokio::task_local! {
    static CALLER_TRACE: CallerTrace;
}

/// The trace headers a caller sent, to keep for its call; `None` when it
/// sent none or when spans are made (they carry the context then).
pub fn callers_trace(headers: &HeaderMap) -> Option<CallerTrace> {
    if crate::telemetry::call_spans() {
        return None;
    }
    Some(CallerTrace {
        parent: headers.get(&TRACEPARENT)?.clone(),
        state: headers.get(&TRACESTATE).cloned(),
    })
}

/// Runs `call` with `caller`'s trace headers kept for the downstream calls
/// made within it (see [`inject`]).
pub fn within<F>(
    caller: Option<CallerTrace>,
    call: F,
) -> futures::future::Either<F, tokio::task::futures::TaskLocalFuture<CallerTrace, F>>
where
    F: std::future::Future,
{
    match caller {
        Some(c) => futures::future::Either::Right(CALLER_TRACE.scope(c, call)),
        None => futures::future::Either::Left(call),
    }
}

/// Runs `call` so that downstream calls made within it carry the trace
/// `headers` name: under the caller's trace headers (no spans made), or as
/// it is (spans made, [`ServerTraceLayer`] / the HTTP face parent them).
pub fn within_callers_trace<F>(
    headers: &HeaderMap,
    call: F,
) -> futures::future::Either<F, tokio::task::futures::TaskLocalFuture<CallerTrace, F>>
where
    F: std::future::Future,
{
    within(callers_trace(headers), call)
}

/// Writes the trace context of the call being served into `headers`: the
/// current span's, or the caller's headers as they came.
pub fn inject(headers: &mut HeaderMap) {
    if crate::telemetry::call_spans() {
        inject_current(headers);
        return;
    }
    let _ = CALLER_TRACE.try_with(|c| {
        headers.insert(TRACEPARENT, c.parent.clone());
        if let Some(s) = &c.state {
            headers.insert(TRACESTATE, s.clone());
        }
    });
}

/// The trace context a caller sent in `headers` (empty when none).
pub fn extract(headers: &HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|p| p.extract(&HeaderExtractor(headers)))
}

/// Writes the current span's trace context into `headers`.
pub fn inject_current(headers: &mut HeaderMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(headers))
    });
}

/// The trace `span` belongs to, as 32 hex digits; `None` when tracing
/// assigns no ids (no OpenTelemetry layer).
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    use opentelemetry::trace::TraceContextExt as _;
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// Server side: one span per call, parented on the caller's `traceparent`.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerTraceLayer;

impl<S> Layer<S> for ServerTraceLayer {
    type Service = ServerTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ServerTrace { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ServerTrace<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ServerTrace<S>
where
    S: Service<Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if !crate::telemetry::call_spans() {
            let caller = callers_trace(req.headers());
            return Box::pin(within(caller, self.inner.call(req)));
        }
        let path = req.uri().path();
        // `/pkg.Service/Method` → rpc.service, rpc.method (OTel semantic conventions).
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or((path, ""));
        let span = tracing::info_span!(
            "grpc.server",
            otel.name = %path.trim_start_matches('/'),
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %service,
            rpc.method = %method,
        );
        let parent = extract(req.headers());
        // An error only means no OTel layer is installed: nothing to link.
        let _ = span.set_parent(parent);
        Box::pin(self.inner.call(req).instrument(span))
    }
}

/// Client side: every outgoing call carries the current trace context.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTraceLayer;

impl<S> Layer<S> for ClientTraceLayer {
    type Service = ClientTrace<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ClientTrace { inner }
    }
}

#[derive(Clone, Debug)]
pub struct ClientTrace<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for ClientTrace<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        inject(req.headers_mut());
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TraceContextExt;
    use opentelemetry_sdk::propagation::TraceContextPropagator;

    #[tokio::test]
    async fn without_spans_the_callers_trace_headers_travel_on() {
        // No OpenTelemetry layer in unit tests: no per-call spans.
        assert!(!crate::telemetry::call_spans());
        let mut incoming = HeaderMap::new();
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        incoming.insert("traceparent", parent.parse().expect("ascii"));
        incoming.insert("tracestate", "vendor=opaque".parse().expect("ascii"));
        let sent = within_callers_trace(&incoming, async {
            // What a downstream call made while serving carries.
            let mut out = HeaderMap::new();
            inject(&mut out);
            out
        })
        .await;
        assert_eq!(sent.get("traceparent"), incoming.get("traceparent"));
        assert_eq!(sent.get("tracestate"), incoming.get("tracestate"));
        // Outside a call, or for a caller that sent none, nothing is invented.
        let mut out = HeaderMap::new();
        inject(&mut out);
        assert!(out.is_empty());
        let none = within_callers_trace(&HeaderMap::new(), async {
            let mut out = HeaderMap::new();
            inject(&mut out);
            out
        })
        .await;
        assert!(none.is_empty());
    }

    #[test]
    fn extracts_a_w3c_traceparent() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let cx = extract(&headers);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(sc.span_id().to_string(), "00f067aa0ba902b7");
    }
}
