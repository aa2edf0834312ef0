//! The load generator of `mlmesh bench model`: any async call driven
//! closed-loop (N callers, each sending its next call when the last one
//! answers) or open-loop (arrivals at a constant rate or a Poisson process,
//! whatever the answers do), with
//!
//! - latency into HDR histograms (microseconds, 3 significant digits);
//!   open-loop latency is measured from each call's *intended* start, so a
//!   stalled server is not hidden by the generator waiting for it
//!   (coordinated omission);
//! - a warm-up that is not measured, then fixed windows, each with its
//!   throughput and percentiles;
//! - a stop rule: at least `min_windows` windows, then stop once the
//!   bootstrap confidence interval of the mean window throughput is
//!   narrower than `ci_width` (relative half-width) — or at `max_time`.
//!
//! The in-flight calls of an open-loop run are bounded (`max_in_flight`):
//! past it, arrivals wait for a slot and their wait counts in latency.

pub mod report;

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use hdrhistogram::Histogram;
// tokio's clock: real in a run, paused (exact) in the tests.
use mlmesh_validate::{SplitMix, bootstrap_mean};
use tokio::time::Instant;

/// One call: `Ok` or the reason it failed.
pub type CallFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
/// What makes calls.
pub type Caller = Arc<dyn Fn() -> CallFuture + Send + Sync>;

/// How calls are issued.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Load {
    /// `concurrency` callers, each with one call outstanding.
    Closed { concurrency: usize },
    /// `rate` calls per second, evenly spaced or with exponential gaps.
    Open {
        rate: f64,
        poisson: bool,
        max_in_flight: usize,
    },
}

/// When a run stops.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    #[serde(serialize_with = "seconds")]
    pub warmup: Duration,
    #[serde(serialize_with = "seconds")]
    pub window: Duration,
    pub min_windows: usize,
    #[serde(serialize_with = "seconds")]
    pub max_time: Duration,
    /// Stop when the interval's half-width is at most this fraction of the
    /// mean window throughput.
    pub ci_width: f64,
    pub confidence: f64,
    pub seed: u64,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Default for Plan {
    fn default() -> Self {
        Self {
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(1),
            min_windows: 5,
            max_time: Duration::from_secs(60),
            ci_width: 0.02,
            confidence: 0.95,
            seed: 1,
        }
    }
}

/// Why a plan or load is refused.
#[derive(Debug, thiserror::Error)]
#[error("{field}: {why}")]
pub struct PlanError {
    pub field: &'static str,
    pub why: String,
}

impl Plan {
    pub fn check(&self, load: &Load) -> Result<(), PlanError> {
        let bad = |field, why: &str| {
            Err(PlanError {
                field,
                why: why.to_owned(),
            })
        };
        if self.window < Duration::from_millis(50) {
            return bad("window", "at least 50 ms");
        }
        if self.min_windows < 2 || self.min_windows > 10_000 {
            return bad("min_windows", "between 2 and 10000");
        }
        if self.max_time < self.window * self.min_windows as u32 {
            return bad("max_time", "shorter than min_windows windows");
        }
        if !(self.ci_width > 0.0 && self.ci_width < 1.0) {
            return bad("ci_width", "strictly between 0 and 1");
        }
        if !(self.confidence > 0.5 && self.confidence < 1.0) {
            return bad("confidence", "strictly between 0.5 and 1");
        }
        match *load {
            Load::Closed { concurrency } if !(1..=10_000).contains(&concurrency) => {
                bad("concurrency", "between 1 and 10000")
            }
            Load::Open { rate, .. } if !(rate > 0.0 && rate <= 1e6) => {
                bad("rate", "above 0 and at most 1,000,000 per second")
            }
            Load::Open { max_in_flight, .. } if !(1..=100_000).contains(&max_in_flight) => {
                bad("max_in_flight", "between 1 and 100000")
            }
            _ => Ok(()),
        }
    }
}

/// One measured window.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Window {
    pub ok: u64,
    pub errors: u64,
    pub throughput: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
}

/// A run at one load.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Run {
    pub load: Load,
    pub windows: Vec<Window>,
    /// Mean window throughput (calls/s) and its interval.
    pub throughput: f64,
    pub throughput_low: f64,
    pub throughput_high: f64,
    /// Whether the interval got narrow enough before `max_time`.
    pub stable: bool,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub ok: u64,
    pub errors: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Latency distribution over the whole measured run: (percentile,
    /// microseconds), for plots.
    pub distribution: Vec<(f64, u64)>,
    pub measured_secs: f64,
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits; values above are clamped.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant, valid bounds")
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

struct Shared {
    window: Mutex<(Histogram<u64>, Tally)>,
    measuring: AtomicBool,
    stop: AtomicBool,
}

impl Shared {
    fn record(&self, latency: Duration, r: Result<(), String>) {
        if !self.measuring.load(Ordering::Relaxed) {
            return;
        }
        let Ok(mut w) = self.window.lock() else {
            return;
        };
        match r {
            Ok(()) => {
                let us = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, 600_000_000);
                let _ = w.0.record(us);
                w.1.ok += 1;
            }
            Err(e) => {
                w.1.errors += 1;
                if w.1.first_error.is_none() {
                    w.1.first_error = Some(e);
                }
            }
        }
    }
}

/// Runs `caller` at `load` until `plan` says stop.
pub async fn run(caller: Caller, load: Load, plan: &Plan) -> Result<Run, PlanError> {
    plan.check(&load)?;
    let shared = Arc::new(Shared {
        window: Mutex::new((histogram(), Tally::default())),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
    });
    let drivers = match load {
        Load::Closed { concurrency } => (0..concurrency)
            .map(|_| {
                let (c, s) = (Arc::clone(&caller), Arc::clone(&shared));
                tokio::spawn(async move {
                    while !s.stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let r = c().await;
                        s.record(t.elapsed(), r);
                    }
                })
            })
            .collect::<Vec<_>>(),
        Load::Open {
            rate,
            poisson,
            max_in_flight,
        } => {
            let (c, s) = (Arc::clone(&caller), Arc::clone(&shared));
            let mut rng = SplitMix::new(plan.seed);
            vec![tokio::spawn(async move {
                let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
                let mut next = tokio::time::Instant::now();
                while !s.stop.load(Ordering::Relaxed) {
                    tokio::time::sleep_until(next).await;
                    let intended = next;
                    let gap = if poisson {
                        -rng.unit().ln() / rate
                    } else {
                        1.0 / rate
                    };
                    next += Duration::from_secs_f64(gap);
                    let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
                        break;
                    };
                    let (c, s) = (Arc::clone(&c), Arc::clone(&s));
                    tokio::spawn(async move {
                        let r = c().await;
                        // From the intended start: time spent waiting for a
                        // slot or behind a late generator counts.
                        s.record(intended.elapsed(), r);
                        drop(permit);
                    });
                }
            })]
        }
    };

    tokio::time::sleep(plan.warmup).await;
    let take = || -> (Histogram<u64>, Tally) {
        shared
            .window
            .lock()
            .map(|mut w| std::mem::replace(&mut *w, (histogram(), Tally::default())))
            .unwrap_or_else(|_| (histogram(), Tally::default()))
    };
    take();
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    let mut all = histogram();
    let mut windows = Vec::new();
    let mut tally = Tally::default();
    let mut interval = None;
    let mut stable = false;
    let mut mark = Instant::now();
    loop {
        tokio::time::sleep(plan.window).await;
        let (h, t) = take();
        let secs = mark.elapsed().as_secs_f64();
        mark = Instant::now();
        let _ = all.add(&h);
        tally.ok += t.ok;
        tally.errors += t.errors;
        if tally.first_error.is_none() {
            tally.first_error = t.first_error;
        }
        windows.push(Window {
            ok: t.ok,
            errors: t.errors,
            throughput: t.ok as f64 / secs.max(1e-9),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
        });
        if windows.len() >= plan.min_windows {
            let tp: Vec<f64> = windows.iter().map(|w| w.throughput).collect();
            if let Ok(i) = bootstrap_mean(&tp, plan.confidence, 1000, plan.seed) {
                let half = (i.high - i.low) / 2.0;
                interval = Some(i);
                if i.estimate > 0.0 && half / i.estimate <= plan.ci_width {
                    stable = true;
                    break;
                }
            }
        }
        if started.elapsed() + plan.window > plan.max_time {
            break;
        }
    }
    shared.stop.store(true, Ordering::Relaxed);
    shared.measuring.store(false, Ordering::Relaxed);
    for d in drivers {
        d.abort();
    }
    let (estimate, low, high) = interval.map_or((0.0, 0.0, 0.0), |i| (i.estimate, i.low, i.high));
    let distribution = [
        0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.99, 100.0,
    ]
    .iter()
    .map(|&p| (p, all.value_at_percentile(p)))
    .collect();
    Ok(Run {
        load,
        throughput: estimate,
        throughput_low: low,
        throughput_high: high,
        stable,
        p50_us: all.value_at_quantile(0.50),
        p90_us: all.value_at_quantile(0.90),
        p99_us: all.value_at_quantile(0.99),
        p999_us: all.value_at_quantile(0.999),
        max_us: all.max(),
        ok: tally.ok,
        errors: tally.errors,
        first_error: tally.first_error,
        distribution,
        measured_secs: started.elapsed().as_secs_f64(),
        windows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeper(ms: u64) -> Caller {
        Arc::new(move || {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            })
        })
    }

    fn quick() -> Plan {
        Plan {
            warmup: Duration::from_millis(100),
            window: Duration::from_millis(100),
            min_windows: 3,
            max_time: Duration::from_secs(2),
            ci_width: 0.5,
            ..Plan::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_throughput_follows_concurrency() {
        let r = run(sleeper(10), Load::Closed { concurrency: 4 }, &quick())
            .await
            .expect("run");
        // 4 callers × 100 calls/s each, on a paused (exact) clock.
        assert!((r.throughput - 400.0).abs() < 40.0, "{r:?}");
        assert!(r.stable);
        assert!(r.p50_us >= 10_000 && r.p50_us < 11_000, "{}", r.p50_us);
        assert_eq!(r.errors, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_the_wait_of_a_stalled_server() {
        // One slot, calls of 50 ms, 100 arrivals/s: the server can do 20/s,
        // so the queue grows and latency from the intended start grows with
        // it, far beyond the 50 ms a closed loop would report.
        let load = Load::Open {
            rate: 100.0,
            poisson: false,
            max_in_flight: 1,
        };
        let r = run(sleeper(50), load, &quick()).await.expect("run");
        assert!(r.p99_us > 200_000, "coordinated omission corrected: {r:?}");
        assert!(r.throughput < 25.0, "{r:?}");
    }

    #[test]
    fn bad_plans_name_the_field() {
        let mut p = quick();
        p.ci_width = 0.0;
        let e = p
            .check(&Load::Closed { concurrency: 1 })
            .expect_err("width");
        assert_eq!(e.field, "ci_width");
        let e = quick()
            .check(&Load::Closed { concurrency: 0 })
            .expect_err("c");
        assert_eq!(e.field, "concurrency");
        let e = quick()
            .check(&Load::Open {
                rate: -1.0,
                poisson: true,
                max_in_flight: 1,
            })
            .expect_err("rate");
        assert_eq!(e.field, "rate");
    }
}
