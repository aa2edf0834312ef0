//! Prometheus metrics of the gateway, each created and registered in one call in its own registry
//! (served on `/metrics` by the runtime crate).

use mlmesh_runtime::metrics::Registrar;
use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry, exponential_buckets,
};

/// All gateway metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Gateway calls by protocol (grpc / http), method and status code name.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
    /// Calls being served now.
    pub in_flight: IntGauge,
    /// Downstream calls by service, method and status code name (one per
    /// attempt).
    pub downstream_calls: IntCounterVec,
    pub downstream_seconds: HistogramVec,
    /// Attempts repeated on another replica after UNAVAILABLE.
    pub retries: IntCounterVec,
    /// Times a replica was taken out of rotation after UNAVAILABLE.
    pub ejections: IntCounterVec,
    /// Replicas each downstream pool calls now (fixed, or as discovered).
    pub replicas: IntGaugeVec,
    /// Chunks stored by Ingest, by collection.
    pub chunks_ingested: IntCounterVec,
    /// Pipeline runs by pipeline and status code.
    pub pipeline_runs: IntCounterVec,
    pub pipeline_seconds: HistogramVec,
    /// Calls made by pipeline steps, by the model (version) that answered
    /// and outcome (`ok`, `fallback` when a fallback answered, else the
    /// code). Bounded: pipelines and their models are declared in settings.
    pub pipeline_steps: IntCounterVec,
    /// Authentication outcomes by caller (an API key's name, `jwt:<tier>`,
    /// or `unauthenticated`): bounded by the settings.
    pub auth: IntCounterVec,
    /// Shadow calls by primary model and outcome (`agree`, `disagree`,
    /// `error`, `skipped`): bounded by the rules in settings.
    pub shadow_calls: IntCounterVec,
    /// The largest absolute difference of a shadow's answer from the
    /// primary's, per compared call.
    pub shadow_drift: HistogramVec,
    pub shadow_seconds: HistogramVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registrar::new("gateway")?;
        let secs = exponential_buckets(0.0001, 2.0, 18)?; // 100 µs … 13 s
        let m = Self {
            requests: r.counter_vec(
                "requests_total",
                "Gateway calls by protocol, method and status code",
                &["protocol", "method", "code"],
            )?,
            request_seconds: r.histogram_vec(
                "request_duration_seconds",
                "Gateway call duration",
                &["protocol", "method"],
                secs.clone(),
            )?,
            in_flight: r.gauge("in_flight", "Gateway calls being served")?,
            downstream_calls: r.counter_vec(
                "downstream_requests_total",
                "Calls to downstream services by service, method and status code",
                &["service", "method", "code"],
            )?,
            downstream_seconds: r.histogram_vec(
                "downstream_request_duration_seconds",
                "Downstream call duration, per attempt",
                &["service", "method"],
                secs.clone(),
            )?,
            retries: r.counter_vec(
                "downstream_retries_total",
                "Retries on another replica",
                &["service"],
            )?,
            replicas: r.gauge_vec(
                "downstream_replicas",
                "Replicas that may get new calls, by downstream service",
                &["service"],
            )?,
            ejections: r.counter_vec(
                "downstream_ejections_total",
                "Replicas taken out of rotation after UNAVAILABLE",
                &["service", "replica"],
            )?,
            chunks_ingested: r.counter_vec(
                "chunks_ingested_total",
                "Chunks stored by Ingest",
                &["collection"],
            )?,
            pipeline_runs: r.counter_vec(
                "pipeline_runs_total",
                "Pipeline runs by outcome",
                &["pipeline", "code"],
            )?,
            pipeline_seconds: r.histogram_vec(
                "pipeline_duration_seconds",
                "Pipeline run duration",
                &["pipeline"],
                secs.clone(),
            )?,
            shadow_calls: r.counter_vec(
                "shadow_calls_total",
                "Shadow calls by primary model and outcome",
                &["model", "outcome"],
            )?,
            shadow_drift: r.histogram_vec(
                "shadow_drift",
                "Largest absolute difference of a shadow's answer from the primary's",
                &["model"],
                exponential_buckets(1e-9, 10.0, 12)?,
            )?,
            shadow_seconds: r.histogram_vec(
                "shadow_duration_seconds",
                "Shadow call duration",
                &["model"],
                secs,
            )?,
            pipeline_steps: r.counter_vec(
                "pipeline_steps_total",
                "Pipeline step calls by the model version that answered and outcome",
                &["pipeline", "step", "model", "version", "outcome"],
            )?,
            auth: r.counter_vec(
                "auth_requests_total",
                "Calls by caller and authentication outcome",
                &["caller", "outcome"],
            )?,
            registry: r.registry(),
        };
        Ok(m)
    }

    /// Counts one call of any face: `protocol` (`grpc`, `http`, `mcp`),
    /// `method` (a bounded name), its `code` and how long it took.
    pub fn call(&self, protocol: &str, method: &str, code: &str, started: std::time::Instant) {
        self.requests
            .with_label_values(&[protocol, method, code])
            .inc();
        self.request_seconds
            .with_label_values(&[protocol, method])
            .observe(started.elapsed().as_secs_f64());
    }
}
