//! Prometheus metrics of the registry (prefix `mlmesh_registry_`), each
//! created and registered in one call and served on `/metrics`: RPCs in the
//! kit's scheme (`mlmesh_runtime::metrics::RpcMetrics`), bytes in and out,
//! commits, alias moves, watchers and housekeeping.

use mlmesh_runtime::metrics::{Registrar, RpcMetrics};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

/// All registry metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// `requests_total{method, code}`, `request_duration_seconds{method}`.
    pub rpc: RpcMetrics,
    /// Deprecated: `calls_total{method, outcome}`, the registry's name for
    /// `requests_total{method, code}` before the services shared one
    /// scheme; still counted for dashboards built on it, removed in the
    /// next release.
    pub calls: IntCounterVec,
    pub uploads_started: IntCounter,
    pub versions_committed: IntCounter,
    pub upload_bytes: IntCounter,
    /// Staged bytes hashed again on resume (0 while checkpoints hold).
    pub upload_rehashed_bytes: IntCounter,
    pub download_bytes: IntCounter,
    pub alias_moves: IntCounter,
    pub watchers: IntGauge,
    /// Stored contents removed after their grace period.
    pub blobs_removed: IntCounter,
    /// Uploads dropped because they expired.
    pub uploads_expired: IntCounter,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let r = Registrar::new("registry")?;
        Ok(Self {
            rpc: RpcMetrics::new(&r)?,
            calls: r.counter_vec(
                "calls_total",
                "Deprecated (use requests_total): registry calls by method and outcome",
                &["method", "outcome"],
            )?,
            uploads_started: r.counter("uploads_started_total", "Uploads started")?,
            versions_committed: r.counter("versions_committed_total", "Versions committed")?,
            upload_bytes: r.counter("upload_bytes_total", "File bytes received")?,
            upload_rehashed_bytes: r.counter(
                "upload_rehashed_bytes_total",
                "Staged bytes hashed again when an upload resumed without a usable hash checkpoint",
            )?,
            download_bytes: r.counter("download_bytes_total", "File bytes sent")?,
            alias_moves: r.counter("alias_moves_total", "Alias moves (rollbacks included)")?,
            watchers: r.gauge("watchers", "Watch streams open now")?,
            blobs_removed: r.counter(
                "blobs_removed_total",
                "Stored contents removed after their grace period",
            )?,
            uploads_expired: r.counter("uploads_expired_total", "Uploads dropped as expired")?,
            registry: r.registry(),
        })
    }
}
