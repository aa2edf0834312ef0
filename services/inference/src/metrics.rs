//! Prometheus metrics of the inference service, per model and version,
//! each created and registered in one call in the service's own registry (served on `/metrics`).

use mlmesh_runtime::metrics::Registrar;
use prometheus::{
    HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Registry, exponential_buckets,
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
    /// `inference.memory_budget_mb` in bytes (0: none), so a reader of the
    /// metrics (the console) can set loaded memory against it.
    pub memory_budget: IntGauge,
    /// Load duration, warm-up included.
    pub load_seconds: HistogramVec,
    /// Registry syncs (pull + load of the version an alias names) by
    /// model and outcome (success, failure).
    pub registry_syncs: IntCounterVec,
    /// The registry version each registry-sourced model serves.
    pub registry_version: IntGaugeVec,
    pub registry_evidence: IntGaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registrar::new("inference")?;
        let secs = exponential_buckets(0.000_025, 2.0, 20)?; // 25 µs … 13 s
        let mv = &["model", "version"];
        let requests = r.counter_vec(
            "requests_total",
            "Inference requests by model, version and outcome",
            &["model", "version", "outcome"],
        )?;
        let request_seconds = r.histogram_vec(
            "request_duration_seconds",
            "Inference request duration, server side",
            mv,
            secs.clone(),
        )?;
        let queue_seconds = r.histogram_vec(
            "queue_duration_seconds",
            "Time a request waited for its model run",
            mv,
            secs.clone(),
        )?;
        let compute_seconds = r.histogram_vec(
            "compute_duration_seconds",
            "Duration of one model run (a batch)",
            mv,
            secs.clone(),
        )?;
        let batch_size = r.histogram_vec(
            "batch_size",
            "Rows per model run",
            mv,
            exponential_buckets(1.0, 2.0, 12)?,
        )?;
        let queue_depth = r.gauge_vec("queue_depth", "Requests waiting for a model run", mv)?;
        let loaded_bytes = r.gauge_vec(
            "model_loaded_bytes",
            "Memory a loaded model takes, measured at load",
            &["model"],
        )?;
        let loads = r.counter_vec(
            "model_loads_total",
            "Model loads by outcome",
            &["model", "outcome"],
        )?;
        let unloads = r.counter_vec("model_unloads_total", "Model unloads", &["model"])?;
        let evictions = r.counter_vec(
            "model_evictions_total",
            "Models unloaded to stay within the memory budget",
            &["model"],
        )?;
        let memory_budget = r.gauge(
            "memory_budget_bytes",
            "Most memory loaded models may take together (inference.memory_budget_mb); 0: no budget",
        )?;
        let load_seconds = r.histogram_vec(
            "model_load_duration_seconds",
            "Model load duration, warm-up included",
            &["model"],
            secs,
        )?;
        let registry_syncs = r.counter_vec(
            "registry_syncs_total",
            "Switches to the version a registry alias names, by outcome",
            &["model", "outcome"],
        )?;
        let registry_version = r.gauge_vec(
            "registry_version",
            "Registry version served, per registry-sourced model",
            &["model"],
        )?;
        let registry_evidence = r.gauge_vec(
            "registry_evidence",
            "Newest passing validation evidence (registry id) of the served version's manifest, per registry-sourced model; 0: none",
            &["model"],
        )?;
        Ok(Self {
            registry: r.registry(),
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
            memory_budget,
            load_seconds,
            registry_syncs,
            registry_version,
            registry_evidence,
        })
    }
}
