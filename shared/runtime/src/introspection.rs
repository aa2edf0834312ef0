//! `mlmesh.mesh.v1.Introspection`: what every server says about itself —
//! release, start time, the services it serves, whether it is serving, and
//! its cumulative call figures — served by [`crate::GrpcServer`] beside
//! `grpc.health.v1`, so the gateway's console can show every replica of
//! the mesh from one place without scraping a metrics port it may not
//! reach.
//!
//! The figures come from the service's own metrics registry: every
//! service's `Registrar` prefixes its metrics with `mlmesh_<service>`, and
//! its own calls are the `<prefix>_requests_total` counter (a `code` or
//! `outcome` label naming the status: gRPC's `OK`, or for the gateway's
//! HTTP face a 2xx/3xx status, is success) and `<prefix>_request_duration_seconds`
//! histogram with the shortest prefix (longer ones, such as the gateway's
//! `downstream_` pair, are calls it makes, not calls it serves).

use std::{
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use mlmesh_proto::mesh::v1::{
    Sample, SamplesRequest, SamplesResponse, StatusRequest, StatusResponse,
    introspection_server::{Introspection, IntrospectionServer},
};
use prometheus::Registry;

/// When this process started serving, as first asked (the server records
/// it when it is created).
pub fn started() -> SystemTime {
    static STARTED: OnceLock<SystemTime> = OnceLock::new();
    *STARTED.get_or_init(SystemTime::now)
}

/// The service behind [`Introspection`].
#[derive(Clone)]
pub struct Status {
    registry: Registry,
    services: Arc<Vec<String>>,
    serving: Arc<AtomicBool>,
}

impl Status {
    pub fn new(registry: Registry, services: Vec<String>, serving: Arc<AtomicBool>) -> Self {
        Self {
            registry,
            services: Arc::new(services),
            serving,
        }
    }

    pub fn into_server(self) -> IntrospectionServer<Self> {
        IntrospectionServer::new(self)
    }

    /// The answer, from the registry as it is now.
    pub fn snapshot(&self) -> StatusResponse {
        let mut out = StatusResponse {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_unix_ms: started()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            services: self.services.as_ref().clone(),
            serving: self.serving.load(Ordering::Relaxed),
            resident_bytes: resident_bytes().unwrap_or(0),
            ..Default::default()
        };
        calls(&self.registry.gather(), &mut out);
        out
    }
}

#[tonic::async_trait]
impl Introspection for Status {
    async fn status(
        &self,
        _: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(self.snapshot()))
    }

    async fn samples(
        &self,
        request: tonic::Request<SamplesRequest>,
    ) -> Result<tonic::Response<SamplesResponse>, tonic::Status> {
        let names = request.into_inner().families;
        if names.len() > MAX_FAMILIES {
            return Err(tonic::Status::invalid_argument(format!(
                "families: {} names; at most {MAX_FAMILIES}",
                names.len()
            )));
        }
        Ok(tonic::Response::new(samples(
            &self.registry.gather(),
            &names,
        )))
    }
}

/// Families one Samples call may name.
pub const MAX_FAMILIES: usize = 64;
/// Samples one answer holds at most.
pub const MAX_SAMPLES: usize = 10_000;

/// The samples of the families in `names`, in exposition form.
fn samples(families: &[prometheus::proto::MetricFamily], names: &[String]) -> SamplesResponse {
    use prometheus::proto::MetricType;
    let mut out = SamplesResponse::default();
    let push = |out: &mut SamplesResponse, name: String, labels, value| {
        if out.samples.len() == MAX_SAMPLES {
            out.truncated = true;
            return;
        }
        out.samples.push(Sample {
            name,
            labels,
            value,
        });
    };
    for f in families
        .iter()
        .filter(|f| names.iter().any(|n| n == f.name()))
    {
        for m in f.get_metric() {
            let labels: std::collections::HashMap<String, String> = m
                .get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect();
            match f.get_field_type() {
                MetricType::COUNTER => {
                    push(
                        &mut out,
                        f.name().to_owned(),
                        labels,
                        m.get_counter().get_value(),
                    );
                }
                MetricType::GAUGE => {
                    push(
                        &mut out,
                        f.name().to_owned(),
                        labels,
                        m.get_gauge().get_value(),
                    );
                }
                MetricType::HISTOGRAM => {
                    let h = m.get_histogram();
                    for b in h.get_bucket() {
                        let mut l = labels.clone();
                        l.insert("le".into(), b.upper_bound().to_string());
                        push(
                            &mut out,
                            format!("{}_bucket", f.name()),
                            l,
                            b.cumulative_count() as f64,
                        );
                    }
                    let mut l = labels.clone();
                    l.insert("le".into(), "+Inf".into());
                    push(
                        &mut out,
                        format!("{}_bucket", f.name()),
                        l,
                        h.get_sample_count() as f64,
                    );
                    push(
                        &mut out,
                        format!("{}_sum", f.name()),
                        labels.clone(),
                        h.get_sample_sum(),
                    );
                    push(
                        &mut out,
                        format!("{}_count", f.name()),
                        labels,
                        h.get_sample_count() as f64,
                    );
                }
                _ => {}
            }
        }
    }
    out
}

const REQUESTS: &str = "_requests_total";
const DURATION: &str = "_request_duration_seconds";

/// Fills the call figures of `out` from gathered metric families.
fn calls(families: &[prometheus::proto::MetricFamily], out: &mut StatusResponse) {
    let prefix = families
        .iter()
        .filter_map(|f| f.name().strip_suffix(REQUESTS))
        .filter(|p| {
            families
                .iter()
                .any(|f| f.name().strip_suffix(DURATION) == Some(p))
        })
        .min_by_key(|p| p.len());
    let Some(prefix) = prefix else { return };
    for f in families {
        let name = f.name();
        if name.strip_suffix(REQUESTS) == Some(prefix) {
            for m in f.get_metric() {
                let n = m.get_counter().get_value() as u64;
                out.requests_total += n;
                let failed = m
                    .get_label()
                    .iter()
                    .any(|l| matches!(l.name(), "code" | "outcome") && !succeeded(l.value()));
                if failed {
                    out.errors_total += n;
                }
            }
        } else if name.strip_suffix(DURATION) == Some(prefix) {
            for m in f.get_metric() {
                let h = m.get_histogram();
                out.latency_count += h.get_sample_count();
                out.latency_sum_seconds += h.get_sample_sum();
                let buckets = h.get_bucket();
                if out.latency_bounds_seconds.is_empty() {
                    out.latency_bounds_seconds = buckets.iter().map(|b| b.upper_bound()).collect();
                    out.latency_cumulative = vec![0; buckets.len()];
                }
                // Every label set of one histogram has the same bounds.
                for (sum, b) in out.latency_cumulative.iter_mut().zip(buckets) {
                    *sum += b.cumulative_count();
                }
            }
        }
    }
}

/// A status label of a call that did not fail: gRPC's `OK`, or an HTTP
/// status of 2xx or 3xx (the gateway counts its HTTP face by status).
fn succeeded(code: &str) -> bool {
    code == "OK" || (code.len() == 3 && matches!(code.as_bytes()[0], b'2' | b'3'))
}

/// The process's resident set, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::metrics::{Registrar, RpcMetrics};

    #[test]
    fn the_services_own_calls_are_counted_and_calls_it_makes_are_not() {
        let r = Registrar::new("demo").expect("registry");
        let rpc = RpcMetrics::new(&r).expect("rpc");
        // A pair with a longer prefix: calls this service makes downstream.
        let downstream = r
            .counter_vec("downstream_requests_total", "made", &["code"])
            .expect("counter");
        r.histogram_vec(
            "downstream_request_duration_seconds",
            "made",
            &["code"],
            vec![1.0],
        )
        .expect("histogram");
        downstream.with_label_values(&["OK"]).inc_by(100);
        rpc.record("Get", tonic::Code::Ok, Duration::from_micros(150));
        rpc.record("Get", tonic::Code::Ok, Duration::from_millis(3));
        rpc.record("Put", tonic::Code::NotFound, Duration::from_millis(3));
        let s = Status::new(
            r.registry(),
            vec!["demo.v1.Demo".into()],
            Arc::new(AtomicBool::new(true)),
        )
        .snapshot();
        assert_eq!((s.requests_total, s.errors_total), (3, 1));
        assert_eq!(s.latency_count, 3);
        assert_eq!(
            s.latency_bounds_seconds.len(),
            s.latency_cumulative.len(),
            "one count per bound"
        );
        // 100 µs, 200 µs, …: one call under 200 µs, all three under 6.4 ms.
        let under = |secs: f64| {
            s.latency_bounds_seconds
                .iter()
                .zip(&s.latency_cumulative)
                .find(|(b, _)| (**b - secs).abs() < 1e-9)
                .map(|(_, c)| *c)
        };
        assert_eq!(under(0.0002), Some(1));
        assert_eq!(under(0.0064), Some(3));
        assert!(s.serving && s.services == ["demo.v1.Demo"]);
        assert!(s.started_unix_ms > 0 && s.resident_bytes > 0);
    }

    #[test]
    fn http_statuses_count_like_grpc_codes() {
        assert!(succeeded("OK") && succeeded("200") && succeeded("304"));
        assert!(!succeeded("NotFound") && !succeeded("404") && !succeeded("503"));
        assert!(!succeeded("2") && !succeeded("2000"));
    }

    #[test]
    fn named_families_come_back_as_samples() {
        let r = Registry::new();
        let g =
            prometheus::IntGaugeVec::new(prometheus::Opts::new("x_queue_depth", "q"), &["model"])
                .expect("gauge");
        r.register(Box::new(g.clone())).expect("register");
        g.with_label_values(&["iris"]).set(3);
        let h = prometheus::Histogram::with_opts(
            prometheus::HistogramOpts::new("x_batch_size", "b").buckets(vec![1.0, 4.0]),
        )
        .expect("histogram");
        r.register(Box::new(h.clone())).expect("register");
        h.observe(2.0);
        h.observe(9.0);
        let s = samples(
            &r.gather(),
            &["x_queue_depth".into(), "x_batch_size".into(), "nope".into()],
        );
        assert!(!s.truncated);
        let find = |name: &str, le: Option<&str>| {
            s.samples
                .iter()
                .find(|x| {
                    x.name == name
                        && le.is_none_or(|le| x.labels.get("le").map(String::as_str) == Some(le))
                })
                .map(|x| x.value)
        };
        assert_eq!(find("x_queue_depth", None), Some(3.0));
        assert_eq!(find("x_batch_size_bucket", Some("1")), Some(0.0));
        assert_eq!(find("x_batch_size_bucket", Some("4")), Some(1.0));
        assert_eq!(find("x_batch_size_bucket", Some("+Inf")), Some(2.0));
        assert_eq!(find("x_batch_size_count", None), Some(2.0));
        assert_eq!(find("x_batch_size_sum", None), Some(11.0));
    }

    #[test]
    fn a_registry_without_call_metrics_reports_none() {
        let r = Registrar::new("bare").expect("registry");
        r.counter("things_total", "x").expect("counter");
        let s = Status::new(r.registry(), vec![], Arc::new(AtomicBool::new(false))).snapshot();
        assert_eq!((s.requests_total, s.latency_count), (0, 0));
        assert!(s.latency_bounds_seconds.is_empty() && !s.serving);
    }
}
