//! The validation job, once for every way it is started (`mlmesh model
//! validate` / `promote`, and the inference service's `Validator` RPC).
//! Each version (the candidate, and the champion when given) is pulled from
//! the registry — verified — into a model repository of its own and served
//! by a real `mlmesh-inference` process on a loopback port, so the
//! candidate runs exactly as it would in production and nothing that
//! serves traffic is touched. Every example of the suite goes to both; the
//! answers are judged by `mlmesh_validate` (contract, tolerances, accuracy
//! with a paired interval against the champion); robustness probes
//! generated from the candidate's signature ([`robustness`]) and the
//! suite's budgets ([`budgets`]) follow; each check is reported as it is
//! decided, and the outcome is an evidence record for the registry.

pub mod budgets;
mod embedding;
pub mod robustness;
mod served;
pub mod suite_source;
mod target;

use std::path::PathBuf;

use anyhow::Context as _;
use mlmesh_proto::{inference as inf, registry::v1 as pb};
use mlmesh_tensor::DataType;
use mlmesh_validate::{
    checks::{CheckResult, Corpora, contract, evaluate_with_corpus},
    suite::Suite,
};

use served::tempdir;
pub use served::{Served, requests};
use target::Target;

/// What a run reports as it goes.
#[derive(Debug)]
pub enum Progress<'a> {
    /// A line of context (what is validated against what).
    Note(String),
    /// The champion's version number, once it is resolved (before any
    /// check that compares with it).
    Champion(i64),
    /// A check, as soon as it is decided.
    Check(&'a CheckResult),
}

/// Where the serving processes come from.
#[derive(Clone, Debug)]
pub struct Job {
    /// The `mlmesh-inference` binary an inference version is served by.
    pub inference_bin: PathBuf,
    /// The `mlmesh-embedding` binary an embedding version is served by.
    pub embedding_bin: PathBuf,
    /// Settings given to those processes (none of the caller's `MLMESH_*`
    /// are), e.g. `ORT_DYLIB_PATH`.
    pub env: Vec<(String, String)>,
}

/// A finished run: every check, the evidence record it makes, and the
/// outcome as a JSON report.
pub struct Outcome {
    pub results: Vec<CheckResult>,
    pub evidence: pb::Evidence,
    pub report: serde_json::Value,
}

/// An output's elements as numbers (booleans as 0 and 1, anything else
/// NaN), as the suite's checks read them.
pub(crate) fn numbers(
    o: &inf::model_infer_response::InferOutputTensor,
    raw: &[u8],
) -> anyhow::Result<Vec<f64>> {
    let dt = DataType::parse(&o.datatype)
        .with_context(|| format!("output {:?}: datatype {}", o.name, o.datatype))?;
    Ok(mlmesh_tensor::json::from_raw(dt, raw, &o.name)?
        .iter()
        .map(|v| {
            v.as_f64()
                .or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))))
                .unwrap_or(f64::NAN)
        })
        .collect())
}

/// A mesh binary (`mlmesh-inference`, `mlmesh-embedding`) next to the
/// running executable.
pub fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    Ok(exe.with_file_name(name))
}

/// Stores `e` in the registry.
pub async fn record(
    reg: &mut mlmesh_registry_client::Client,
    e: pb::Evidence,
) -> anyhow::Result<pb::Evidence> {
    Ok(reg
        .record_evidence(pb::RecordEvidenceRequest { evidence: Some(e) })
        .await
        .context("recording the evidence")?
        .into_inner())
}

impl Job {
    /// Runs `suite_source` against `version` of `model` (and `against`),
    /// reporting each check through `progress` as it is decided.
    pub async fn run(
        &self,
        reg: &mut mlmesh_registry_client::Client,
        model: &str,
        version: &str,
        suite_source: &str,
        against: Option<&str>,
        progress: &mut (dyn FnMut(Progress<'_>) + Send),
    ) -> anyhow::Result<Outcome> {
        let started = std::time::Instant::now();
        let started_ms = now_ms();
        let work = tempdir()?;
        let (bytes, suite_digest) =
            suite_source::fetch(reg, suite_source, &work.0.join("suite")).await?;
        let suite = Suite::parse(&bytes)?;
        let candidate =
            Target::start(self, reg, &suite, model, version, &work.0.join("candidate")).await?;
        let champion = match against {
            Some(a) => {
                Some(Target::start(self, reg, &suite, model, a, &work.0.join("champion")).await?)
            }
            None => None,
        };
        if let Some(c) = &champion {
            progress(Progress::Champion(c.version().version));
        }
        progress(Progress::Note(format!(
            "validating {} v{} with suite {:?} ({} examples){}",
            model,
            candidate.version().version,
            suite.name,
            suite.examples.len(),
            champion
                .as_ref()
                .map(|c| format!(" against v{}", c.version().version))
                .unwrap_or_default()
        )));
        let mut results = vec![contract(
            suite.signature.as_ref(),
            &candidate.signature().await?,
            match &champion {
                Some(c) => Some(c.signature().await?),
                None => None,
            }
            .as_ref(),
        )];
        progress(Progress::Check(&results[0]));
        let ours = candidate.answers().await?;
        let theirs = match &champion {
            Some(c) => Some(c.answers().await?),
            None => None,
        };
        let corpora = Corpora {
            candidate: candidate.corpus(&suite).await?,
            champion: match &champion {
                Some(c) => Some(c.corpus(&suite).await?),
                None => None,
            },
        };
        let report = evaluate_with_corpus(&suite, &ours, theirs.as_ref(), &corpora)?;
        for c in &report.checks {
            progress(Progress::Check(c));
        }
        results.extend(report.checks);
        let robust = candidate.robustness(model, &ours).await?;
        progress(Progress::Check(&robust));
        results.push(robust);
        if let Some(b) = &suite.budgets {
            let champion_cost = champion.as_ref().map(Target::costed);
            for c in
                budgets::measure(b, candidate.costed().as_ref(), champion_cost.as_deref()).await
            {
                progress(Progress::Check(&c));
                results.push(c);
            }
        }
        let (candidate, champion) = (
            candidate.version().clone(),
            champion.as_ref().map(|c| c.version().clone()),
        );
        let runner = runner();
        let evidence = pb::Evidence {
            model: model.to_owned(),
            version: candidate.version,
            manifest_digest: candidate.manifest_digest.clone(),
            suite_digest: suite_digest.clone(),
            suite_source: suite_source.to_owned(),
            passed: results.iter().all(|c| c.passed),
            against_version: champion.as_ref().map_or(0, |c| c.version),
            against_manifest_digest: champion
                .as_ref()
                .map(|c| c.manifest_digest.clone())
                .unwrap_or_default(),
            checks: results
                .iter()
                .map(|c| evidence_check(c, champion.as_ref().map_or(0, |c| c.version)))
                .collect(),
            runner: Some(runner.clone()),
            recorded_at: None,
            duration_ms: started.elapsed().as_millis() as u64,
            kind: "validation".into(),
            id: 0,
        };
        let report = serde_json::json!({
            "model": model,
            "candidate": version_json(&candidate),
            "champion": champion.as_ref().map(version_json),
            "suite": {"name": suite.name, "source": suite_source, "digest": suite_digest, "examples": suite.examples.len()},
            "runner": {"cpu": runner.cpu, "cores": runner.cores, "os": runner.os, "mlmesh": runner.mlmesh},
            "checks": results.iter().map(check_json).collect::<Vec<_>>(),
            "passed": evidence.passed,
            "started_ms": started_ms,
            "finished_ms": now_ms(),
        });
        Ok(Outcome {
            results,
            evidence,
            report,
        })
    }
}

/// The ONNX Runtime the serving processes load, by its library's file
/// name (`ORT_DYLIB_PATH`, else the cache `make models` fills, as the
/// services resolve it): `1.31.1`; empty when it cannot be told.
fn onnxruntime_version() -> String {
    let file = match std::env::var_os("ORT_DYLIB_PATH") {
        Some(p) => std::fs::canonicalize(&p).ok(),
        None => std::fs::read_dir(".cache/mlmesh/onnxruntime")
            .ok()
            .and_then(|d| {
                d.filter_map(Result::ok).map(|e| e.path()).find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("libonnxruntime.so."))
                })
            }),
    };
    file.as_deref()
        .and_then(std::path::Path::file_name)
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("libonnxruntime.so."))
        .unwrap_or_default()
        .to_owned()
}

/// A check as the registry keeps it (bounded as the registry demands:
/// finite figures, text within its limit).
pub fn evidence_check(c: &CheckResult, against: i64) -> pb::Check {
    let mut detail = c.detail.clone();
    if detail.len() > 4000 {
        let mut end = 4000;
        while !detail.is_char_boundary(end) {
            end -= 1;
        }
        detail.truncate(end);
    }
    pb::Check {
        name: c.check.clone(),
        passed: c.passed,
        detail,
        figures: c
            .figures
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        non_inferiority: c
            .interval
            .filter(|_| against != 0)
            .map(|i| pb::NonInferiority {
                metric: c.check.clone(),
                against_version: against,
                difference: i.estimate,
                lower: i.low,
                upper: i.high,
                confidence: i.confidence,
                margin: c.margin.unwrap_or(0.0),
                samples: i.n as u64,
                detectable: c.min_detectable.filter(|m| m.is_finite()).unwrap_or(0.0),
                mcnemar_p: c.mcnemar.map_or(-1.0, |m| m.p_value),
            }),
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn version_json(v: &pb::Version) -> serde_json::Value {
    serde_json::json!({"version": v.version, "manifest_digest": v.manifest_digest})
}

/// Where the validation ran: what makes its figures comparable.
pub fn runner() -> pb::Runner {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    pb::Runner {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get() as u32),
        os: format!("{} {}", std::env::consts::OS, std::env::consts::ARCH),
        onnxruntime: onnxruntime_version(),
        mlmesh: env!("CARGO_PKG_VERSION").to_owned(),
        host: std::env::var("HOSTNAME").unwrap_or_default(),
    }
}

fn check_json(c: &CheckResult) -> serde_json::Value {
    serde_json::json!({
        "check": c.check,
        "passed": c.passed,
        "detail": c.detail,
        "figures": c.figures,
        "interval": c.interval.map(|i| serde_json::json!({
            "estimate": i.estimate, "low": i.low, "high": i.high, "confidence": i.confidence, "n": i.n,
        })),
        "mcnemar": c.mcnemar.map(|m| serde_json::json!({"b": m.b, "c": m.c, "p_value": m.p_value})),
        "min_detectable": c.min_detectable,
    })
}
