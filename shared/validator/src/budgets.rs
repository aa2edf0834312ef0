//! What serving a version costs, against the suite's budgets: time from
//! starting the serving process to ready, its resident memory once loaded
//! (and the difference from the champion's), and p99 latency at a given
//! concurrency. Latency is measured in rounds that alternate candidate and
//! champion on the same machine, so a noisy neighbour slows both.

use std::time::{Duration, Instant};

use futures::{StreamExt as _, future::BoxFuture, stream};
use mlmesh_validate::{checks::CheckResult, suite::Budgets};

/// A served version as the budgets see it, whatever serves it.
pub trait Costed: Send + Sync {
    /// From starting the serving process to ready.
    fn load_time(&self) -> Duration;
    /// Its resident memory, in MB, when it can be read.
    fn rss_mb(&self) -> Option<f64>;
    /// The call of example `i` (examples in turn, `i` may pass their
    /// count).
    fn call(&self, i: usize) -> BoxFuture<'_, Result<(), tonic::Status>>;
}

/// A borrowed version costs what it does.
impl<T: Costed + ?Sized> Costed for &T {
    fn load_time(&self) -> Duration {
        (**self).load_time()
    }

    fn rss_mb(&self) -> Option<f64> {
        (**self).rss_mb()
    }

    fn call(&self, i: usize) -> BoxFuture<'_, Result<(), tonic::Status>> {
        (**self).call(i)
    }
}

/// Rounds the latency calls are split into (each version takes a turn per
/// round).
const ROUNDS: usize = 10;

/// The budget checks for `candidate` (and, when given, the comparison with
/// `champion`).
pub async fn measure(
    b: &Budgets,
    candidate: &dyn Costed,
    champion: Option<&dyn Costed>,
) -> Vec<CheckResult> {
    let mut out = Vec::new();
    let load_ms = candidate.load_time().as_secs_f64() * 1000.0;
    let mut r = CheckResult::new(
        "budget load",
        b.load_ms.is_none_or(|m| load_ms <= m),
        format!(
            "ready {load_ms:.0} ms after the serving process started{}",
            b.load_ms
                .map(|m| format!(" (at most {m} ms)"))
                .unwrap_or_default()
        ),
    );
    r.figures.insert("load_ms".into(), load_ms);
    if let Some(c) = champion {
        r.figures.insert(
            "champion_load_ms".into(),
            c.load_time().as_secs_f64() * 1000.0,
        );
    }
    out.push(r);

    let rss = candidate.rss_mb();
    let champion_rss = champion.and_then(|c| c.rss_mb());
    let mut r = match rss {
        Some(mb) => CheckResult::new(
            "budget memory",
            b.rss_mb.is_none_or(|m| mb <= m),
            format!(
                "{mb:.1} MB resident once loaded{}{}",
                champion_rss
                    .map(|c| format!(" ({:+.1} MB against the champion)", mb - c))
                    .unwrap_or_default(),
                b.rss_mb
                    .map(|m| format!(" (at most {m} MB)"))
                    .unwrap_or_default()
            ),
        ),
        None => CheckResult::new(
            "budget memory",
            b.rss_mb.is_none(),
            "resident memory cannot be read on this system",
        ),
    };
    if let Some(mb) = rss {
        r.figures.insert("rss_mb".into(), mb);
    }
    if let Some(c) = champion_rss {
        r.figures.insert("champion_rss_mb".into(), c);
    }
    out.push(r);

    let per_round = b.requests.div_ceil(ROUNDS);
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let mut failed = 0usize;
    for _ in 0..ROUNDS {
        failed += burst(candidate, per_round, b.concurrency, &mut ours).await;
        if let Some(c) = champion {
            failed += burst(c, per_round, b.concurrency, &mut theirs).await;
        }
    }
    let p99 = percentile(&mut ours, 0.99);
    let p50 = percentile(&mut ours, 0.50);
    let champion_p99 = (!theirs.is_empty()).then(|| percentile(&mut theirs, 0.99));
    let ratio = champion_p99.map(|c| p99 / c.max(1e-9));
    let passed = failed == 0
        && b.p99_ms.is_none_or(|m| p99 <= m)
        && match (b.p99_ratio, ratio) {
            (Some(max), Some(r)) => r <= max,
            _ => true,
        };
    let mut detail = format!(
        "p99 {p99:.2} ms, p50 {p50:.2} ms over {} calls at concurrency {}",
        ours.len(),
        b.concurrency
    );
    if let (Some(c), Some(r)) = (champion_p99, ratio) {
        detail.push_str(&format!(
            "; champion p99 {c:.2} ms (ratio {r:.2}), interleaved in {ROUNDS} rounds"
        ));
    }
    if let Some(m) = b.p99_ms {
        detail.push_str(&format!("; at most {m} ms"));
    }
    if let Some(m) = b.p99_ratio {
        detail.push_str(&format!("; at most {m}× the champion"));
    }
    if failed > 0 {
        detail.push_str(&format!("; {failed} calls failed"));
    }
    let mut r = CheckResult::new("budget latency", passed, detail);
    r.figures.insert("p99_ms".into(), p99);
    r.figures.insert("p50_ms".into(), p50);
    if let Some(c) = champion_p99 {
        r.figures.insert("champion_p99_ms".into(), c);
    }
    out.push(r);
    out
}

/// `n` calls (the suite's examples in turn) with `concurrency` in flight;
/// each call's milliseconds pushed to `into`; how many failed.
async fn burst(s: &dyn Costed, n: usize, concurrency: usize, into: &mut Vec<f64>) -> usize {
    let results: Vec<Result<Duration, tonic::Status>> = stream::iter(0..n)
        .map(|i| async move {
            let t = Instant::now();
            s.call(i).await.map(|()| t.elapsed())
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut failed = 0;
    for r in results {
        match r {
            Ok(d) => into.push(d.as_secs_f64() * 1000.0),
            Err(_) => failed += 1,
        }
    }
    failed
}

/// The `q` quantile (nearest rank) of `v`; 0 when empty.
fn percentile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

#[cfg(test)]
mod tests {
    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&mut v, 0.99), 99.0);
        assert_eq!(super::percentile(&mut v, 0.5), 50.0);
        assert_eq!(super::percentile(&mut [], 0.99), 0.0);
    }
}
