//! Benchmark results kept in the registry as evidence of the version they
//! measured (kind `benchmark`): the suite digest names the workload (what
//! was sent, how, and the plan), the runner the testbed. Results compare
//! only within one workload and one testbed (CPU model and cores).
//!
//! Regression detection: the new run's window throughputs against each
//! earlier version's stored windows, a bootstrap interval of the ratio of
//! means; a regression is an interval wholly below `1 − threshold` (so
//! noise within the threshold, or an interval that reaches it, is not one).
//! The outcome is the evidence's `benchmark.regression` check, which a
//! registry alias policy naming this workload's digest turns into a gate.

use mlmesh_loadgen::{Run, report::HistoryPoint};
use mlmesh_proto::registry::v1 as pb;
use mlmesh_validate::bootstrap_ratio;

/// Window throughputs kept per record (a check holds at most 64 figures).
const KEPT_WINDOWS: usize = 48;

/// One earlier version compared with the new run.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Comparison {
    pub version: i64,
    pub ratio: f64,
    pub low: f64,
    pub high: f64,
    pub regression: bool,
}

fn windows_of(e: &pb::Evidence) -> Vec<f64> {
    let Some(c) = e.checks.iter().find(|c| c.name == "benchmark.throughput") else {
        return Vec::new();
    };
    let mut w: Vec<(&String, f64)> = c
        .figures
        .iter()
        .filter(|(k, _)| k.starts_with("window_"))
        .map(|(k, v)| (k, *v))
        .collect();
    w.sort_by(|a, b| a.0.cmp(b.0));
    w.into_iter().map(|(_, v)| v).collect()
}

fn same_testbed(a: &pb::Runner, b: &pb::Runner) -> bool {
    a.cpu == b.cpu && a.cores == b.cores
}

/// Earlier `benchmark` records of `model` for `workload` on this testbed,
/// the newest per version, versions below `version`, oldest first.
pub async fn earlier(
    reg: &mut mlmesh_registry_client::Client,
    model: &str,
    version: i64,
    workload: &str,
    runner: &pb::Runner,
) -> anyhow::Result<Vec<pb::Evidence>> {
    let mut all = Vec::new();
    let mut token = String::new();
    loop {
        let page = reg
            .list_evidence(pb::ListEvidenceRequest {
                model: model.to_owned(),
                version: 0,
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        all.extend(page.evidence);
        if page.next_page_token.is_empty() || all.len() >= 10_000 {
            break;
        }
        token = page.next_page_token;
    }
    let mut newest: std::collections::BTreeMap<i64, pb::Evidence> = Default::default();
    for e in all {
        let fits = e.kind == "benchmark"
            && e.suite_digest == workload
            && e.version != version
            && e.runner.as_ref().is_some_and(|r| same_testbed(r, runner));
        if fits && newest.get(&e.version).is_none_or(|old| old.id < e.id) {
            newest.insert(e.version, e);
        }
    }
    Ok(newest
        .into_values()
        .filter(|e| e.version < version)
        .collect())
}

/// The new run (`windows`) against each earlier record.
pub fn compare(windows: &[f64], earlier: &[pb::Evidence], threshold: f64) -> Vec<Comparison> {
    earlier
        .iter()
        .filter_map(|e| {
            let old = windows_of(e);
            let i = bootstrap_ratio(windows, &old, 0.95, 2000, e.version as u64).ok()?;
            Some(Comparison {
                version: e.version,
                ratio: i.estimate,
                low: i.low,
                high: i.high,
                regression: i.high < 1.0 - threshold,
            })
        })
        .collect()
}

/// The history chart's points: earlier records, then this run.
pub fn points(earlier: &[pb::Evidence], version: i64, run: &Run) -> Vec<HistoryPoint> {
    let figure = |e: &pb::Evidence, k: &str| {
        e.checks
            .iter()
            .find(|c| c.name == "benchmark.throughput")
            .and_then(|c| c.figures.get(k).copied())
            .unwrap_or_default()
    };
    let mut v: Vec<HistoryPoint> = earlier
        .iter()
        .map(|e| HistoryPoint {
            version: e.version,
            throughput: figure(e, "mean"),
            low: figure(e, "low"),
            high: figure(e, "high"),
            p99_us: figure(e, "p99_us") as u64,
        })
        .collect();
    v.push(HistoryPoint {
        version,
        throughput: run.throughput,
        low: run.throughput_low,
        high: run.throughput_high,
        p99_us: run.p99_us,
    });
    v
}

/// The record of `run` as evidence of `version`.
pub fn evidence(
    version: &pb::Version,
    workload: &str,
    source: &str,
    run: &Run,
    comparisons: &[Comparison],
    threshold: f64,
) -> pb::Evidence {
    let mut figures: std::collections::HashMap<String, f64> = [
        ("mean", run.throughput),
        ("low", run.throughput_low),
        ("high", run.throughput_high),
        ("p50_us", run.p50_us as f64),
        ("p90_us", run.p90_us as f64),
        ("p99_us", run.p99_us as f64),
        ("p999_us", run.p999_us as f64),
        ("errors", run.errors as f64),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let tail = run.windows.len().saturating_sub(KEPT_WINDOWS);
    for (i, w) in run.windows[tail..].iter().enumerate() {
        figures.insert(format!("window_{i:02}"), w.throughput);
    }
    let regressed: Vec<&Comparison> = comparisons.iter().filter(|c| c.regression).collect();
    let detail = if comparisons.is_empty() {
        "no earlier version measured on this workload and testbed".to_owned()
    } else {
        comparisons
            .iter()
            .map(|c| {
                format!(
                    "v{}: ×{:.3} [{:.3}, {:.3}]{}",
                    c.version,
                    c.ratio,
                    c.low,
                    c.high,
                    if c.regression { " REGRESSION" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    let checks = vec![
        pb::Check {
            name: "benchmark.throughput".into(),
            passed: run.errors == 0,
            detail: format!(
                "{:.1} calls/s [{:.1}, {:.1}], p99 {:.2} ms, {} errors, {} windows",
                run.throughput,
                run.throughput_low,
                run.throughput_high,
                run.p99_us as f64 / 1e3,
                run.errors,
                run.windows.len()
            ),
            figures,
            non_inferiority: None,
        },
        pb::Check {
            name: "benchmark.regression".into(),
            passed: regressed.is_empty(),
            detail: format!("threshold {:.0}%: {detail}", threshold * 100.0),
            figures: comparisons
                .iter()
                .map(|c| (format!("ratio_v{}", c.version), c.ratio))
                .take(60)
                .collect(),
            non_inferiority: None,
        },
    ];
    pb::Evidence {
        model: version.model.clone(),
        version: version.version,
        manifest_digest: version.manifest_digest.clone(),
        suite_digest: workload.to_owned(),
        suite_source: source.chars().take(1000).collect(),
        passed: checks.iter().all(|c| c.passed),
        checks,
        runner: Some(mlmesh_validator::runner()),
        duration_ms: (run.measured_secs * 1e3) as u64,
        kind: "benchmark".into(),
        ..Default::default()
    }
}
