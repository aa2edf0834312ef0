//! Prometheus metrics of the vector-search service (prefix `mlmesh_vector_`),
//! each created and registered in one call and served on `/metrics`. RPC
//! metrics follow the kit's scheme (`mlmesh_runtime::metrics::RpcMetrics`).

use mlmesh_runtime::metrics::{Registrar, RpcMetrics};
use prometheus::{
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry, exponential_buckets,
};

/// All vector-search metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `requests_total{method, code}`, `request_duration_seconds{method}`.
    pub rpc: RpcMetrics,
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
        let r = Registrar::new("vector")?;
        let secs = exponential_buckets(0.00005, 2.0, 20)?; // 50 µs … 26 s
        let collection = &["collection"];
        Ok(Self {
            rpc: RpcMetrics::new(&r)?,
            search_seconds: r.histogram_vec(
                "search_duration_seconds",
                "Search and SearchBatch duration",
                collection,
                secs.clone(),
            )?,
            upsert_seconds: r.histogram_vec(
                "upsert_duration_seconds",
                "Upsert duration, until the points are durable",
                collection,
                secs,
            )?,
            upserted_points: r.counter_vec(
                "upserted_points_total",
                "Points written by Upsert",
                collection,
            )?,
            points: r.gauge_vec("points", "Points stored per collection", collection)?,
            in_flight: r.gauge("in_flight", "Calls doing storage work now")?,
            optimizations: r.counter(
                "optimizations_total",
                "Optimisation passes that merged segments or built an index",
            )?,
            compactions: r.counter(
                "compactions_total",
                "Collections rewritten into a fresh shard to drop the engine's write-ahead log",
            )?,
            registry: r.registry(),
        })
    }
}
