//! Prometheus metrics of the registry, in its own registry (served on
//! `/metrics`): calls by method and outcome, bytes in and out, commits,
//! alias moves, watchers and housekeeping.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// All registry metrics; cheap to clone (handles into one registry).
#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Calls by gRPC method and outcome (a status code name).
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
        let registry = Registry::new_custom(Some("mlmesh_registry".into()), None)?;
        let counter = |name: &str, help: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let calls = IntCounterVec::new(
            Opts::new("calls_total", "Registry calls by method and outcome"),
            &["method", "outcome"],
        )?;
        registry.register(Box::new(calls.clone()))?;
        let watchers = IntGauge::new("watchers", "Watch streams open now")?;
        registry.register(Box::new(watchers.clone()))?;
        Ok(Self {
            calls,
            uploads_started: counter("uploads_started_total", "Uploads started")?,
            versions_committed: counter("versions_committed_total", "Versions committed")?,
            upload_bytes: counter("upload_bytes_total", "File bytes received")?,
            upload_rehashed_bytes: counter(
                "upload_rehashed_bytes_total",
                "Staged bytes hashed again when an upload resumed without a usable hash checkpoint",
            )?,
            download_bytes: counter("download_bytes_total", "File bytes sent")?,
            alias_moves: counter("alias_moves_total", "Alias moves (rollbacks included)")?,
            watchers,
            blobs_removed: counter(
                "blobs_removed_total",
                "Stored contents removed after their grace period",
            )?,
            uploads_expired: counter("uploads_expired_total", "Uploads dropped as expired")?,
            registry,
        })
    }
}
