//! Metrics created and registered in one call, and the RPC metrics every
//! service records under one naming scheme.
//!
//! A service's metrics live in its own Prometheus registry, prefixed
//! `mlmesh_<service>_` (served on `/metrics` by [`crate::GrpcServer`]).
//! Every constructor of [`Registrar`] registers what it creates, so a
//! metric declared but never registered (which Prometheus reports by
//! silently leaving it out) cannot happen.
//!
//! RPC metrics ([`RpcMetrics`]), the same in every service:
//! - `mlmesh_<service>_requests_total{method, code}`: calls by gRPC method
//!   name (`Embed`) and status code name (`OK`, `INVALID_ARGUMENT`);
//! - `mlmesh_<service>_request_duration_seconds{method}`: server-side
//!   duration, 100 µs … 13 s buckets.

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    exponential_buckets,
};

/// Creates metrics in one service's registry and registers each at once.
#[derive(Clone)]
pub struct Registrar {
    registry: Registry,
}

impl Registrar {
    /// A registry whose metrics are named `mlmesh_<service>_…`.
    pub fn new(service: &str) -> Result<Self, prometheus::Error> {
        Ok(Self {
            registry: Registry::new_custom(Some(format!("mlmesh_{service}")), None)?,
        })
    }

    /// The registry, for `/metrics`.
    pub fn registry(&self) -> Registry {
        self.registry.clone()
    }

    fn add<M: prometheus::core::Collector + Clone + 'static>(
        &self,
        m: M,
    ) -> Result<M, prometheus::Error> {
        self.registry.register(Box::new(m.clone()))?;
        Ok(m)
    }

    pub fn counter(&self, name: &str, help: &str) -> Result<IntCounter, prometheus::Error> {
        self.add(IntCounter::new(name, help)?)
    }

    pub fn counter_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntCounterVec, prometheus::Error> {
        self.add(IntCounterVec::new(Opts::new(name, help), labels)?)
    }

    pub fn gauge(&self, name: &str, help: &str) -> Result<IntGauge, prometheus::Error> {
        self.add(IntGauge::new(name, help)?)
    }

    pub fn gauge_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
    ) -> Result<IntGaugeVec, prometheus::Error> {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels)?)
    }

    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: Vec<f64>,
    ) -> Result<HistogramVec, prometheus::Error> {
        self.add(HistogramVec::new(
            HistogramOpts::new(name, help).buckets(buckets),
            labels,
        )?)
    }
}

/// Duration buckets of RPC metrics: 100 µs doubling to 13 s.
pub fn duration_buckets() -> Vec<f64> {
    exponential_buckets(0.0001, 2.0, 18).unwrap_or_default()
}

/// `requests_total{method, code}` and `request_duration_seconds{method}`.
#[derive(Clone)]
pub struct RpcMetrics {
    pub requests: IntCounterVec,
    pub request_seconds: HistogramVec,
}

impl RpcMetrics {
    pub fn new(r: &Registrar) -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: r.counter_vec(
                "requests_total",
                "gRPC requests by method and status code",
                &["method", "code"],
            )?,
            request_seconds: r.histogram_vec(
                "request_duration_seconds",
                "Request duration, server side",
                &["method"],
                duration_buckets(),
            )?,
        })
    }

    /// Counts one call of `method` that ended with `code` after `elapsed`.
    pub fn record(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        self.requests
            .with_label_values(&[method, crate::code_name(code)])
            .inc();
        self.request_seconds
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_created_is_registered_and_named_by_service() {
        let r = Registrar::new("demo").expect("registry");
        let rpc = RpcMetrics::new(&r).expect("rpc metrics");
        let c = r.counter("things_total", "Things").expect("counter");
        rpc.record("Get", tonic::Code::NotFound, Duration::from_millis(3));
        c.inc();
        let names: Vec<String> = r
            .registry()
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        assert!(names.contains(&"mlmesh_demo_requests_total".to_owned()));
        assert!(names.contains(&"mlmesh_demo_request_duration_seconds".to_owned()));
        assert!(names.contains(&"mlmesh_demo_things_total".to_owned()));
        // A second metric of the same name is refused at creation.
        assert!(r.counter("things_total", "Again").is_err());
    }
}
