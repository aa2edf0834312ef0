//! Logs and traces: `tracing` to stdout (pretty or JSON) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set, spans
//! exported over OTLP/gRPC with `service.name` from `OTEL_SERVICE_NAME` (the
//! binary's name otherwise). Trace context travels as W3C `traceparent`.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

use crate::settings::{LogFormat, TelemetrySettings};

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("invalid `telemetry.log_level` {value:?}: {reason}")]
    Filter { value: String, reason: String },
    #[error("cannot build the OTLP exporter: {0}")]
    Exporter(String),
    #[error("a global tracing subscriber is already installed: {0}")]
    AlreadyInstalled(String),
}

/// Flushes and stops trace export when dropped; keep it alive in `main`.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown()
        {
            eprintln!("telemetry: flushing spans failed: {e}");
        }
    }
}

/// Whether per-call spans are made (see [`call_spans`]).
static CALL_SPANS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether this process makes a span per call (`grpc.server`,
/// `grpc.client`, the services' own per-call spans).
///
/// Only when traces are exported: nothing else reads them, and making one
/// costs real time on a hop whose whole budget is tens of microseconds (the
/// subscriber's registry, the log layer formatting every field; measured on
/// the gateway's forwarding path: about a fifth of its CPU per call,
/// docs/benchmarks.md#gateway-vs-nginx-and-haproxy). Without export the
/// caller's trace context still travels on unchanged: see
/// [`crate::propagation`]. Use [`crate::call_span!`] for such spans.
pub fn call_spans() -> bool {
    CALL_SPANS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Turns per-call spans on: [`init`] does when it installs the OTLP layer;
/// a test that installs its own OpenTelemetry layer calls it too.
pub fn enable_call_spans() {
    CALL_SPANS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// An `info` span made only when [`call_spans`] is on; otherwise
/// `Span::none()`, which costs nothing to make, enter or record into.
#[macro_export]
macro_rules! call_span {
    ($($arg:tt)*) => {
        if $crate::telemetry::call_spans() {
            ::tracing::info_span!($($arg)*)
        } else {
            ::tracing::Span::none()
        }
    };
}

/// True when the standard OTLP endpoint variables ask for trace export.
pub fn otlp_enabled() -> bool {
    [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|k| std::env::var(k).is_ok_and(|v| !v.trim().is_empty()))
        && std::env::var("OTEL_SDK_DISABLED").map_or(true, |v| v != "true")
}

/// Installs the global subscriber. Must run inside the tokio runtime (the
/// OTLP gRPC exporter spawns onto it). `default_service` names the service
/// when `OTEL_SERVICE_NAME` is unset.
pub fn init(
    default_service: &str,
    settings: &TelemetrySettings,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(&v),
        _ => EnvFilter::try_new(&settings.log_level),
    }
    .map_err(|e| TelemetryError::Filter {
        value: settings.log_level.clone(),
        reason: e.to_string(),
    })?;

    let fmt = match settings.log_format {
        LogFormat::Pretty => tracing_subscriber::fmt::layer().with_target(true).boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };

    // Propagation works whether or not we export: a service that does not
    // export still passes its caller's trace on to the next hop.
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let (otel, provider) = if otlp_enabled() {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let mut resource = Resource::builder();
        if std::env::var("OTEL_SERVICE_NAME").is_err() {
            resource = resource.with_service_name(default_service.to_owned());
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        let tracer = provider.tracer(default_service.to_owned());
        opentelemetry::global::set_tracer_provider(provider.clone());
        enable_call_spans();
        (
            Some(tracing_opentelemetry::layer().with_tracer(tracer)),
            Some(provider),
        )
    } else {
        (None, None)
    };

    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .try_init()
        .map_err(|e| TelemetryError::AlreadyInstalled(e.to_string()))?;
    Ok(TelemetryGuard { provider })
}
