//! Prometheus metrics of the inference service, per model and version,
//! registered in the service's own registry (served on `/metrics`).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, exponential_buckets,
};

/// All inference metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Inference requests by model, version and outcome (a status code name).
    pub requests: IntCounterVec,
    /// Request duration, server side, by model and version.
    pub request_seconds: HistogramVec,
    pub queue_seconds: HistogramVec,
    pub compute_seconds: HistogramVec,
    /// Rows per model run.
    pub batch_size: HistogramVec,
    pub queue_depth: IntGaugeVec,
    /// Memory measured at load, by model.
    pub loaded_bytes: IntGaugeVec,
    /// Loads by model and outcome (success, failure).
    pub loads: IntCounterVec,
    pub unloads: IntCounterVec,
    /// Unloads forced by the memory budget.
    pub evictions: IntCounterVec,
    /// Load duration, warm-up included.
    pub load_seconds: HistogramVec,
    /// Registry syncs (pull + load of the version an alias names) by
    /// model and outcome (success, failure).
    pub registry_syncs: IntCounterVec,
    /// The registry version each registry-sourced model serves.
    pub registry_version: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("mlmesh_inference".into()), None)?;
        let secs = exponential_buckets(0.000_025, 2.0, 20)?; // 25 µs … 13 s
        let mv = &["model", "version"];
        let requests = IntCounterVec::new(
            Opts::new(
                "requests_total",
                "Inference requests by model, version and outcome",
            ),
            &["model", "version", "outcome"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "request_duration_seconds",
                "Inference request duration, server side",
            )
            .buckets(secs.clone()),
            mv,
        )?;
        let queue_seconds = HistogramVec::new(
            HistogramOpts::new(
                "queue_duration_seconds",
                "Time a request waited for its model run",
            )
            .buckets(secs.clone()),
            mv,
        )?;
        let compute_seconds = HistogramVec::new(
            HistogramOpts::new(
                "compute_duration_seconds",
                "Duration of one model run (a batch)",
            )
            .buckets(secs.clone()),
            mv,
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("batch_size", "Rows per model run")
                .buckets(exponential_buckets(1.0, 2.0, 12)?),
            mv,
        )?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("queue_depth", "Requests waiting for a model run"),
            mv,
        )?;
        let loaded_bytes = IntGaugeVec::new(
            Opts::new(
                "model_loaded_bytes",
                "Memory a loaded model takes, measured at load",
            ),
            &["model"],
        )?;
        let loads = IntCounterVec::new(
            Opts::new("model_loads_total", "Model loads by outcome"),
            &["model", "outcome"],
        )?;
        let unloads = IntCounterVec::new(
            Opts::new("model_unloads_total", "Model unloads"),
            &["model"],
        )?;
        let evictions = IntCounterVec::new(
            Opts::new(
                "model_evictions_total",
                "Models unloaded to stay within the memory budget",
            ),
            &["model"],
        )?;
        let load_seconds = HistogramVec::new(
            HistogramOpts::new(
                "model_load_duration_seconds",
                "Model load duration, warm-up included",
            )
            .buckets(secs),
            &["model"],
        )?;
        let registry_syncs = IntCounterVec::new(
            Opts::new(
                "registry_syncs_total",
                "Switches to the version a registry alias names, by outcome",
            ),
            &["model", "outcome"],
        )?;
        let registry_version = IntGaugeVec::new(
            Opts::new(
                "registry_version",
                "Registry version served, per registry-sourced model",
            ),
            &["model"],
        )?;
        registry.register(Box::new(registry_syncs.clone()))?;
        registry.register(Box::new(registry_version.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(queue_seconds.clone()))?;
        registry.register(Box::new(compute_seconds.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(loaded_bytes.clone()))?;
        registry.register(Box::new(loads.clone()))?;
        registry.register(Box::new(unloads.clone()))?;
        registry.register(Box::new(evictions.clone()))?;
        registry.register(Box::new(load_seconds.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            queue_seconds,
            compute_seconds,
            batch_size,
            queue_depth,
            loaded_bytes,
            loads,
            unloads,
            evictions,
            load_seconds,
            registry_syncs,
            registry_version,
        })
    }
}
