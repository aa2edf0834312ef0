//! Prometheus metrics of the vector-search service (prefix `mlmesh_vector_`),
//! registered in the service's own registry and served on `/metrics`.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

/// All vector-search metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests by method and gRPC status code name.
    pub requests: IntCounterVec,
    /// Duration of every call, by method.
    pub request_seconds: HistogramVec,
    /// Search calls (Search and SearchBatch), by collection.
    pub search_seconds: HistogramVec,
    /// Upsert calls, by collection: until the points are durable.
    pub upsert_seconds: HistogramVec,
    /// Points written by Upsert, by collection.
    pub upserted_points: IntCounterVec,
    /// Points per collection (refreshed after writes and by the maintenance loop).
    pub points: IntGaugeVec,
    /// Calls doing storage work now.
    pub in_flight: IntGauge,
    /// Optimisation passes that changed something (merges, HNSW builds).
    pub optimizations: IntCounter,
    /// Collections rewritten into a fresh shard to drop the engine's log.
    pub compactions: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new_custom(Some("mlmesh_vector".into()), None)?;
        let secs = exponential_buckets(0.00005, 2.0, 20)?; // 50 µs … 26 s
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "gRPC requests by method and status code"),
            &["method", "code"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new("request_duration_seconds", "Request duration, server side")
                .buckets(secs.clone()),
            &["method"],
        )?;
        let search_seconds = HistogramVec::new(
            HistogramOpts::new("search_duration_seconds", "Search and SearchBatch duration")
                .buckets(secs.clone()),
            &["collection"],
        )?;
        let upsert_seconds = HistogramVec::new(
            HistogramOpts::new(
                "upsert_duration_seconds",
                "Upsert duration, until the points are durable",
            )
            .buckets(secs),
            &["collection"],
        )?;
        let upserted_points = IntCounterVec::new(
            Opts::new("upserted_points_total", "Points written by Upsert"),
            &["collection"],
        )?;
        let points = IntGaugeVec::new(
            Opts::new("points", "Points stored per collection"),
            &["collection"],
        )?;
        let in_flight = IntGauge::new("in_flight", "Calls doing storage work now")?;
        let optimizations = IntCounter::new(
            "optimizations_total",
            "Optimisation passes that merged segments or built an index",
        )?;
        let compactions = IntCounter::new(
            "compactions_total",
            "Collections rewritten into a fresh shard to drop the engine's write-ahead log",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(search_seconds.clone()))?;
        registry.register(Box::new(upsert_seconds.clone()))?;
        registry.register(Box::new(upserted_points.clone()))?;
        registry.register(Box::new(points.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(optimizations.clone()))?;
        registry.register(Box::new(compactions.clone()))?;
        Ok(Self {
            registry,
            requests,
            request_seconds,
            search_seconds,
            upsert_seconds,
            upserted_points,
            points,
            in_flight,
            optimizations,
            compactions,
        })
    }
}
