//! Prometheus metrics of the gateway, registered in its own registry
//! (served on `/metrics` by the runtime crate).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
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
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("mlmesh_gateway".into()), None)?;
        let secs = exponential_buckets(0.0001, 2.0, 18)?; // 100 µs … 13 s
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new(
                    "requests_total",
                    "Gateway calls by protocol, method and status code",
                ),
                &["protocol", "method", "code"],
            )?,
            request_seconds: HistogramVec::new(
                HistogramOpts::new("request_duration_seconds", "Gateway call duration")
                    .buckets(secs.clone()),
                &["protocol", "method"],
            )?,
            in_flight: IntGauge::new("in_flight", "Gateway calls being served")?,
            downstream_calls: IntCounterVec::new(
                Opts::new(
                    "downstream_requests_total",
                    "Calls to downstream services by service, method and status code",
                ),
                &["service", "method", "code"],
            )?,
            downstream_seconds: HistogramVec::new(
                HistogramOpts::new(
                    "downstream_request_duration_seconds",
                    "Downstream call duration, per attempt",
                )
                .buckets(secs.clone()),
                &["service", "method"],
            )?,
            retries: IntCounterVec::new(
                Opts::new("downstream_retries_total", "Retries on another replica"),
                &["service"],
            )?,
            replicas: IntGaugeVec::new(
                Opts::new(
                    "downstream_replicas",
                    "Replicas that may get new calls, by downstream service",
                ),
                &["service"],
            )?,
            ejections: IntCounterVec::new(
                Opts::new(
                    "downstream_ejections_total",
                    "Replicas taken out of rotation after UNAVAILABLE",
                ),
                &["service", "replica"],
            )?,
            chunks_ingested: IntCounterVec::new(
                Opts::new("chunks_ingested_total", "Chunks stored by Ingest"),
                &["collection"],
            )?,
            pipeline_runs: IntCounterVec::new(
                Opts::new("pipeline_runs_total", "Pipeline runs by outcome"),
                &["pipeline", "code"],
            )?,
            pipeline_seconds: HistogramVec::new(
                HistogramOpts::new("pipeline_duration_seconds", "Pipeline run duration")
                    .buckets(secs),
                &["pipeline"],
            )?,
            pipeline_steps: IntCounterVec::new(
                Opts::new(
                    "pipeline_steps_total",
                    "Pipeline step calls by the model version that answered and outcome",
                ),
                &["pipeline", "step", "model", "version", "outcome"],
            )?,
            auth: IntCounterVec::new(
                Opts::new(
                    "auth_requests_total",
                    "Calls by caller and authentication outcome",
                ),
                &["caller", "outcome"],
            )?,
            registry,
        };
        m.registry.register(Box::new(m.requests.clone()))?;
        m.registry.register(Box::new(m.request_seconds.clone()))?;
        m.registry.register(Box::new(m.in_flight.clone()))?;
        m.registry.register(Box::new(m.downstream_calls.clone()))?;
        m.registry
            .register(Box::new(m.downstream_seconds.clone()))?;
        m.registry.register(Box::new(m.retries.clone()))?;
        m.registry.register(Box::new(m.ejections.clone()))?;
        m.registry.register(Box::new(m.replicas.clone()))?;
        m.registry.register(Box::new(m.chunks_ingested.clone()))?;
        m.registry.register(Box::new(m.pipeline_runs.clone()))?;
        m.registry.register(Box::new(m.pipeline_seconds.clone()))?;
        m.registry.register(Box::new(m.pipeline_steps.clone()))?;
        m.registry.register(Box::new(m.auth.clone()))?;
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
