//! The console's short in-process history: each replica's status, sampled
//! at a fixed interval, turned into figures per interval — calls per
//! second, the share that failed, p50 and p99 (interpolated inside the
//! histogram's buckets, as Prometheus' `histogram_quantile` does) — and
//! kept in a ring of bounded length per replica. Pure: the sampler feeds it
//! observations, the API reads snapshots.

use std::collections::{BTreeMap, VecDeque};

use mlmesh_proto::mesh::v1::StatusResponse;
use serde::Serialize;

/// At most this many replicas are tracked (a discovered pool can be large;
/// the console is for people, and memory must stay bounded).
pub const MAX_REPLICAS: usize = 1024;

/// One interval's figures of one replica.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Point {
    /// End of the interval, milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub up: bool,
    /// Calls finished per second.
    pub rate: f64,
    /// Share of those calls that failed (`None`: no calls).
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub resident_bytes: u64,
}

/// The figures of the interval from `a` to `b`, `secs` long. A restarted
/// process (another start time, or counters that went down) starts from
/// zero.
pub fn between(a: Option<&StatusResponse>, b: &StatusResponse, secs: f64) -> Point {
    let a = a.filter(|a| {
        a.started_unix_ms == b.started_unix_ms
            && a.requests_total <= b.requests_total
            && a.latency_count <= b.latency_count
            && a.latency_bounds_seconds == b.latency_bounds_seconds
    });
    let calls = b.requests_total - a.map_or(0, |a| a.requests_total);
    let errors = b
        .errors_total
        .saturating_sub(a.map_or(0, |a| a.errors_total));
    let count = b.latency_count - a.map_or(0, |a| a.latency_count);
    let cumulative: Vec<u64> = b
        .latency_cumulative
        .iter()
        .enumerate()
        .map(|(i, c)| {
            c.saturating_sub(
                a.and_then(|a| a.latency_cumulative.get(i).copied())
                    .unwrap_or(0),
            )
        })
        .collect();
    let q = |q: f64| quantile(&b.latency_bounds_seconds, &cumulative, count, q).map(|s| s * 1e3);
    Point {
        at_ms: 0,
        up: true,
        rate: if secs > 0.0 { calls as f64 / secs } else { 0.0 },
        error_rate: (calls > 0).then(|| errors.min(calls) as f64 / calls as f64),
        p50_ms: q(0.5),
        p99_ms: q(0.99),
        resident_bytes: b.resident_bytes,
    }
}

/// The `q` quantile of `count` observations whose cumulative counts per
/// upper bound are `cumulative`: linear inside the bucket it falls in
/// (from the previous bound, or 0); past the last bound, the last bound.
pub fn quantile(bounds: &[f64], cumulative: &[u64], count: u64, q: f64) -> Option<f64> {
    if count == 0 || bounds.is_empty() || bounds.len() != cumulative.len() {
        return None;
    }
    let rank = q * count as f64;
    let mut below = 0u64;
    let mut lower = 0.0;
    for (&upper, &c) in bounds.iter().zip(cumulative) {
        if c as f64 >= rank {
            let inside = c.saturating_sub(below);
            if inside == 0 {
                return Some(upper);
            }
            let f = (rank - below as f64) / inside as f64;
            return Some(lower + (upper - lower) * f.clamp(0.0, 1.0));
        }
        below = c;
        lower = upper;
    }
    bounds.last().copied()
}

/// One replica's ring.
#[derive(Debug, Default)]
struct Replica {
    last: Option<StatusResponse>,
    last_at_ms: i64,
    points: VecDeque<Point>,
}

/// Every tracked replica, by (service, address).
#[derive(Debug)]
pub struct History {
    keep: usize,
    replicas: BTreeMap<(String, String), Replica>,
}

impl History {
    pub fn new(keep: usize) -> Self {
        Self {
            keep: keep.max(2),
            replicas: BTreeMap::new(),
        }
    }

    /// Records one observation at `at_ms`; returns the point it made.
    /// Replicas beyond [`MAX_REPLICAS`] are not tracked (`None`).
    pub fn record(
        &mut self,
        service: &str,
        address: &str,
        at_ms: i64,
        status: Option<&StatusResponse>,
    ) -> Option<Point> {
        let key = (service.to_owned(), address.to_owned());
        if !self.replicas.contains_key(&key) && self.replicas.len() >= MAX_REPLICAS {
            return None;
        }
        let r = self.replicas.entry(key).or_default();
        let mut point = match status {
            Some(s) => {
                let secs = if r.last.is_some() {
                    (at_ms - r.last_at_ms).max(0) as f64 / 1e3
                } else {
                    0.0
                };
                let mut p = between(r.last.as_ref(), s, secs);
                if r.last.is_none() {
                    // A first sight has no interval: no rate yet.
                    p.rate = 0.0;
                    p.error_rate = None;
                    p.p50_ms = None;
                    p.p99_ms = None;
                }
                r.last = Some(s.clone());
                p
            }
            None => {
                r.last = None;
                Point::default()
            }
        };
        point.at_ms = at_ms;
        r.last_at_ms = at_ms;
        if r.points.len() == self.keep {
            r.points.pop_front();
        }
        r.points.push_back(point);
        Some(point)
    }

    /// Forgets replicas not seen since `before_ms` (gone from their pool).
    pub fn forget_older_than(&mut self, before_ms: i64) {
        self.replicas.retain(|_, r| r.last_at_ms >= before_ms);
    }

    /// The points of every replica of `service` (all services if `None`).
    pub fn series(&self, service: Option<&str>) -> Vec<(String, String, Vec<Point>)> {
        self.replicas
            .iter()
            .filter(|((s, _), _)| service.is_none_or(|want| want == s))
            .map(|((s, a), r)| (s.clone(), a.clone(), r.points.iter().copied().collect()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(started: i64, calls: u64, errors: u64, cumulative: &[u64]) -> StatusResponse {
        StatusResponse {
            started_unix_ms: started,
            requests_total: calls,
            errors_total: errors,
            latency_bounds_seconds: vec![0.001, 0.002, 0.004, 0.008],
            latency_cumulative: cumulative.to_vec(),
            latency_count: calls,
            resident_bytes: 7,
            ..Default::default()
        }
    }

    #[test]
    fn quantiles_interpolate_inside_the_bucket_like_prometheus() {
        // 100 calls: 50 under 1 ms, 40 in (1, 2], 10 in (2, 4].
        let b = [0.001, 0.002, 0.004, 0.008];
        let c = [50, 90, 100, 100];
        assert_eq!(quantile(&b, &c, 100, 0.5), Some(0.001));
        // Rank 99: the 9th of 10 in (2, 4] ms → 2 + 2 × 0.9 ms.
        let p99 = quantile(&b, &c, 100, 0.99).expect("p99");
        assert!((p99 - 0.0038).abs() < 1e-12, "{p99}");
        // Rank 25: half way into the first bucket, from 0.
        assert_eq!(quantile(&b, &c, 100, 0.25), Some(0.0005));
        assert_eq!(quantile(&b, &c, 0, 0.5), None);
        // Past the last bound: the last bound.
        assert_eq!(quantile(&b, &[0, 0, 0, 0], 5, 0.5), Some(0.008));
    }

    #[test]
    fn intervals_are_deltas_and_a_restart_starts_from_zero() {
        let a = status(1, 100, 10, &[50, 90, 100, 100]);
        let b = status(1, 300, 10, &[250, 290, 300, 300]);
        let p = between(Some(&a), &b, 2.0);
        assert_eq!(p.rate, 100.0);
        assert_eq!(p.error_rate, Some(0.0));
        assert_eq!(p.p50_ms, Some(0.5)); // rank 100 of the 200 under 1 ms
        // The process restarted: b's figures alone.
        let restarted = status(2, 40, 4, &[40, 40, 40, 40]);
        let p = between(Some(&b), &restarted, 2.0);
        assert_eq!((p.rate, p.error_rate), (20.0, Some(0.1)));
    }

    #[test]
    fn rings_are_bounded_and_a_down_replica_is_a_gap() {
        let mut h = History::new(3);
        for (i, calls) in [0u64, 10, 20, 30, 40].into_iter().enumerate() {
            let s = status(1, calls, 0, &[calls; 4]);
            h.record("embedding", "a:1", i as i64 * 1000, Some(&s));
        }
        h.record("embedding", "a:1", 5000, None);
        let s = status(1, 60, 0, &[60; 4]);
        let after = h
            .record("embedding", "a:1", 6000, Some(&s))
            .expect("tracked");
        assert_eq!(after.rate, 0.0, "no interval right after a gap");
        let series = h.series(Some("embedding"));
        let points = &series[0].2;
        assert_eq!(points.len(), 3);
        assert_eq!(
            points.iter().map(|p| (p.at_ms, p.up)).collect::<Vec<_>>(),
            [(4000, true), (5000, false), (6000, true)]
        );
        assert_eq!(points[0].rate, 10.0);
        h.forget_older_than(7000);
        assert!(h.series(None).is_empty());
    }

    #[test]
    fn replicas_beyond_the_cap_are_not_tracked() {
        let mut h = History::new(2);
        let s = status(1, 1, 0, &[1; 4]);
        for i in 0..MAX_REPLICAS {
            assert!(
                h.record("inference", &format!("r{i}"), 0, Some(&s))
                    .is_some()
            );
        }
        assert!(h.record("inference", "one-more", 0, Some(&s)).is_none());
        assert!(h.record("inference", "r0", 1000, Some(&s)).is_some());
    }
}
