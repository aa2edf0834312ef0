//! Prometheus metrics of the embedding service (prefix `mlmesh_embedding_`),
//! each created and registered in one call (served on `/metrics` by the
//! runtime crate). RPC metrics follow the kit's scheme
//! (`mlmesh_runtime::metrics::RpcMetrics`).

use mlmesh_runtime::metrics::{Registrar, RpcMetrics, duration_buckets};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec, Registry, exponential_buckets};

/// All embedding metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `requests_total{method, code}`, `request_duration_seconds{method}`.
    pub rpc: RpcMetrics,
    pub queue_seconds: HistogramVec,
    pub inference_seconds: HistogramVec,
    pub batch_size: HistogramVec,
    /// Padded tokens per model run (inputs × longest input).
    pub batch_tokens: HistogramVec,
    /// Tokens embedded (after truncation, no padding).
    pub tokens: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    /// Inputs admitted and not yet answered (tokenizing, queued or running).
    pub inputs_in_flight: IntGaugeVec,
    /// Inputs dropped from the queue because their caller left.
    pub dropped_inputs: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registrar::new("embedding")?;
        let model = &["model"];
        Ok(Self {
            rpc: RpcMetrics::new(&r)?,
            queue_seconds: r.histogram_vec(
                "queue_duration_seconds",
                "Time an input waited for its model run",
                model,
                duration_buckets(),
            )?,
            inference_seconds: r.histogram_vec(
                "inference_duration_seconds",
                "Duration of one model run",
                model,
                duration_buckets(),
            )?,
            batch_size: r.histogram_vec(
                "batch_size",
                "Inputs per model run",
                model,
                exponential_buckets(1.0, 2.0, 10)?,
            )?,
            batch_tokens: r.histogram_vec(
                "batch_tokens",
                "Padded tokens per model run",
                model,
                exponential_buckets(8.0, 2.0, 14)?,
            )?,
            tokens: r.counter_vec("tokens_total", "Tokens embedded", model)?,
            queue_depth: r.gauge_vec(
                "queue_depth",
                "Inputs waiting in the batching queue",
                model,
            )?,
            inputs_in_flight: r.gauge_vec(
                "inputs_in_flight",
                "Inputs admitted and not yet answered",
                model,
            )?,
            dropped_inputs: r.counter_vec(
                "dropped_inputs_total",
                "Queued inputs dropped because the caller cancelled or timed out",
                model,
            )?,
            registry: r.registry(),
        })
    }
}
