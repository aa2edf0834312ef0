//! Prometheus metrics of the embedding service, registered in the
//! service's own registry (served on `/metrics` by the runtime crate).

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, exponential_buckets,
};

/// All embedding metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by method and gRPC status code name.
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
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
        let registry = Registry::new_custom(Some("mlmesh_embedding".into()), None)?;
        let secs = exponential_buckets(0.0001, 2.0, 18)?; // 100 µs … 13 s
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "gRPC requests by method and status code"),
            &["method", "code"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Request duration, server side")
                .buckets(secs.clone()),
            &["method"],
        )?;
        let queue_seconds = HistogramVec::new(
            HistogramOpts::new(
                "queue_duration_seconds",
                "Time an input waited for its model run",
            )
            .buckets(secs.clone()),
            &["model"],
        )?;
        let inference_seconds = HistogramVec::new(
            HistogramOpts::new("inference_duration_seconds", "Duration of one model run")
                .buckets(secs),
            &["model"],
        )?;
        let batch_size = HistogramVec::new(
            HistogramOpts::new("batch_size", "Inputs per model run")
                .buckets(exponential_buckets(1.0, 2.0, 10)?),
            &["model"],
        )?;
        let batch_tokens = HistogramVec::new(
            HistogramOpts::new("batch_tokens", "Padded tokens per model run")
                .buckets(exponential_buckets(8.0, 2.0, 14)?),
            &["model"],
        )?;
        let tokens = IntCounterVec::new(Opts::new("tokens_total", "Tokens embedded"), &["model"])?;
        let queue_depth = IntGaugeVec::new(
            Opts::new("queue_depth", "Inputs waiting in the batching queue"),
            &["model"],
        )?;
        let inputs_in_flight = IntGaugeVec::new(
            Opts::new("inputs_in_flight", "Inputs admitted and not yet answered"),
            &["model"],
        )?;
        let dropped_inputs = IntCounterVec::new(
            Opts::new(
                "dropped_inputs_total",
                "Queued inputs dropped because the caller cancelled or timed out",
            ),
            &["model"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(queue_seconds.clone()))?;
        registry.register(Box::new(inference_seconds.clone()))?;
        registry.register(Box::new(batch_size.clone()))?;
        registry.register(Box::new(batch_tokens.clone()))?;
        registry.register(Box::new(tokens.clone()))?;
        registry.register(Box::new(queue_depth.clone()))?;
        registry.register(Box::new(inputs_in_flight.clone()))?;
        registry.register(Box::new(dropped_inputs.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            queue_seconds,
            inference_seconds,
            batch_size,
            batch_tokens,
            tokens,
            queue_depth,
            inputs_in_flight,
            dropped_inputs,
        })
    }
}
