//! The mesh console: a web page at `/ui` (plain HTML, CSS and JavaScript
//! embedded in the binary, see `assets`) over read APIs anyone may call with
//! the `observe` scope:
//!
//! - `GET /v1/mesh`: every service and replica now — up, serving,
//!   release, uptime, calls per second, error share, p50/p99, memory;
//! - `GET /v1/mesh/events`: the same as server-sent events, one per
//!   sample;
//! - `GET /v1/mesh/history[?service=S]`: each replica's figures over the
//!   last `console.history_samples` samples, with the PromQL that charts
//!   the same over the long term in Grafana.
//!
//! One sampler task asks every replica for its
//! `mlmesh.mesh.v1.Introspection` status each `console.sample_interval_ms`
//! and publishes one pre-serialized snapshot; every open console's event
//! stream sends that same string, so ten consoles cost what one does.

mod assets;
pub mod history;
mod routes;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde_json::{Value as Json, json};
use tokio::sync::{Semaphore, watch};

use self::history::{History, Point};
use crate::{
    core::{Core, mesh::Observation},
    settings::console::ConsoleSettings,
};

pub use routes::{routes, with_prefix};

/// Event streams open at once across all consoles; more are refused (503)
/// rather than queued.
pub const MAX_STREAMS: usize = 64;

/// The sampler's state, shared with the routes.
pub struct Console {
    core: Arc<Core>,
    settings: ConsoleSettings,
    history: Mutex<History>,
    latest: watch::Sender<Arc<str>>,
    streams: Arc<Semaphore>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Console {
    pub fn new(core: Arc<Core>) -> Arc<Self> {
        let settings = core.settings().console.clone();
        let (latest, _) = watch::channel(Arc::<str>::from("null"));
        Arc::new(Self {
            history: Mutex::new(History::new(settings.history_samples)),
            settings,
            core,
            latest,
            streams: Arc::new(Semaphore::new(MAX_STREAMS)),
        })
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.settings.sample_interval_ms)
    }

    /// Samples the mesh until `stop` completes.
    pub async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(stop);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => self.sample().await,
            }
        }
    }

    /// One round: every replica asked, the history extended, the snapshot
    /// published.
    pub async fn sample(&self) {
        let observations = self.core.observe_mesh().await;
        let at = now_ms();
        let points: Vec<Option<Point>> = {
            let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
            let points = observations
                .iter()
                .map(|o| h.record(o.service, &o.address, at, o.status.as_ref().ok()))
                .collect();
            // A replica gone from its pool for two history spans is dropped.
            let span = self.interval().as_millis() as i64 * self.settings.history_samples as i64;
            h.forget_older_than(at - 2 * span);
            points
        };
        let snapshot = self.snapshot_json(at, &observations, &points);
        self.latest.send_replace(Arc::from(snapshot.to_string()));
    }

    /// The services in display order: the gateway, then its pools.
    fn services(&self) -> Vec<&'static str> {
        std::iter::once("gateway")
            .chain(self.core.pools().into_iter().map(|(p, _)| p.service()))
            .collect()
    }

    fn snapshot_json(
        &self,
        at: i64,
        observations: &[Observation],
        points: &[Option<Point>],
    ) -> Json {
        let services: Vec<Json> = self
            .services()
            .into_iter()
            .map(|name| {
                let replicas: Vec<Json> = observations
                    .iter()
                    .zip(points)
                    .filter(|(o, _)| o.service == name)
                    .map(|(o, p)| replica_json(at, o, p.as_ref()))
                    .collect();
                let up = replicas.iter().filter(|r| r["up"] == true).count();
                let rate: f64 = replicas.iter().filter_map(|r| r["rate"].as_f64()).sum();
                json!({
                    "name": name,
                    "replicas": replicas,
                    "up": up,
                    "rate": rate,
                })
            })
            .collect();
        let edges: Vec<Json> = self
            .services()
            .into_iter()
            .skip(1)
            .map(|s| json!(["gateway", s]))
            .collect();
        json!({
            "sampled_at_ms": at,
            "interval_ms": self.settings.sample_interval_ms,
            "services": services,
            "edges": edges,
        })
    }

    /// The latest snapshot (sampling once if none was taken yet).
    pub async fn current(&self) -> Arc<str> {
        let s = self.latest.borrow().clone();
        if &*s != "null" {
            return s;
        }
        self.sample().await;
        self.latest.borrow().clone()
    }

    /// Each replica's points, for `service` or all.
    pub fn history_json(&self, service: Option<&str>) -> Json {
        let series = self
            .history
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .series(service);
        let series: Vec<Json> = series
            .into_iter()
            .map(|(s, a, points)| json!({"service": s, "address": a, "points": points}))
            .collect();
        let promql: serde_json::Map<String, Json> = self
            .services()
            .into_iter()
            .filter(|s| service.is_none_or(|want| want == *s))
            .map(|s| (s.to_owned(), promql(s)))
            .collect();
        let services: Vec<&str> = self
            .services()
            .into_iter()
            .filter(|s| service.is_none_or(|want| want == *s))
            .collect();
        json!({
            "interval_ms": self.settings.sample_interval_ms,
            "services": services,
            "series": series,
            "promql": promql,
        })
    }
}

fn replica_json(at: i64, o: &Observation, p: Option<&Point>) -> Json {
    match &o.status {
        Ok(s) => json!({
            "address": o.address,
            "up": true,
            "serving": s.serving,
            "version": s.version,
            "uptime_secs": ((at - s.started_unix_ms).max(0) / 1000),
            "services": s.services,
            "rate": p.map(|p| p.rate),
            "error_rate": p.and_then(|p| p.error_rate),
            "p50_ms": p.and_then(|p| p.p50_ms),
            "p99_ms": p.and_then(|p| p.p99_ms),
            "resident_bytes": s.resident_bytes,
            "requests_total": s.requests_total,
            "errors_total": s.errors_total,
        }),
        Err(e) => json!({
            "address": o.address,
            "up": false,
            "serving": false,
            "error": e,
        }),
    }
}

/// The metric name prefix each service's `Registrar` uses.
fn metric_prefix(service: &str) -> &'static str {
    match service {
        "gateway" => "mlmesh_gateway",
        "embedding" => "mlmesh_embedding",
        "vector-search" => "mlmesh_vector",
        "inference" => "mlmesh_inference",
        "registry" => "mlmesh_registry",
        _ => "mlmesh",
    }
}

/// The same charts over Prometheus, for Grafana.
fn promql(service: &str) -> Json {
    let p = metric_prefix(service);
    // Inference labels its status `outcome`; the others `code` (the
    // gateway's HTTP face with the HTTP status).
    let status = if service == "inference" {
        "outcome"
    } else {
        "code"
    };
    json!({
        "rate": format!("sum(rate({p}_requests_total[1m]))"),
        "error_rate": format!(
            "sum(rate({p}_requests_total{{{status}!~\"OK|2..|3..\"}}[1m])) / sum(rate({p}_requests_total[1m]))"
        ),
        "p50_ms": format!(
            "1000 * histogram_quantile(0.5, sum by (le) (rate({p}_request_duration_seconds_bucket[1m])))"
        ),
        "p99_ms": format!(
            "1000 * histogram_quantile(0.99, sum by (le) (rate({p}_request_duration_seconds_bucket[1m])))"
        ),
        // The services export no process metrics; on Kubernetes the
        // kubelet's cAdvisor has the containers' memory.
        "resident_bytes": format!(
            "sum by (pod) (container_memory_working_set_bytes{{container=\"{service}\"}})"
        ),
    })
}
