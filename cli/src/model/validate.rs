//! `mlmesh model validate <model> <version|@alias> --suite FILE [--against
//! @alias|N]`: the validator as a job. Each version is pulled from the
//! registry (verified) into a model repository of its own and served by
//! the real inference service binary on a loopback port of its own, so
//! the candidate runs exactly as it would in production and nothing that
//! serves traffic is touched. Every example of the suite goes to both;
//! the answers are judged by `mlmesh_validate` (contract, tolerances,
//! accuracy with a paired interval against the champion), robustness
//! probes generated from the candidate's signature run against it
//! (`robustness`), and each check is printed as it is decided. The exit status is 1 when any check fails.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Args;
use mlmesh_validate::checks::CheckResult;
use mlmesh_validator::{Job, Outcome, Progress};

#[derive(Args, Debug)]
pub struct Validate {
    /// The registered model.
    model: String,
    /// The candidate: a version number or @alias.
    version: String,
    /// The suite: a JSON file, or `registry://<model>@<alias|version>`, a
    /// registry version holding `suite.json` (content-addressed, reusable
    /// across the versions it validates).
    #[arg(long)]
    suite: String,
    /// Also write the outcome as a JSON record (versions and manifest
    /// digests, the suite's digest, the runner, every check with its
    /// figures) to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// The champion to compare with: a version number or @alias.
    #[arg(long)]
    against: Option<String>,
    /// Store the outcome in the registry as evidence of the version (what
    /// alias policies demand before a move).
    #[arg(long)]
    record: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

impl Validate {
    /// Validate `version` of `model` with `suite` (against `against`) and
    /// record the outcome as evidence.
    pub fn recording(
        model: &str,
        version: i64,
        suite: &str,
        against: Option<i64>,
        conn: crate::registry::RegistryConn,
    ) -> Self {
        Self {
            model: model.to_owned(),
            version: version.to_string(),
            suite: suite.to_owned(),
            report: None,
            against: against.map(|a| a.to_string()),
            record: true,
            conn,
        }
    }
}

pub async fn validate(v: Validate) -> anyhow::Result<()> {
    let mut reg = v.conn.connect()?;
    let out = run(
        &mut reg,
        &v.model,
        &v.version,
        &v.suite,
        v.against.as_deref(),
    )
    .await?;
    if let Some(path) = &v.report {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&out.report)?)
            .and_then(|()| std::fs::rename(&tmp, path))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if v.record {
        let e = mlmesh_validator::record(&mut reg, out.evidence.clone()).await?;
        println!(
            "recorded as evidence {} of {} v{}",
            e.id, e.model, e.version
        );
    }
    verdict(&out.results)
}

/// Ok when every check passed; otherwise the failed checks, named.
pub fn verdict(results: &[CheckResult]) -> anyhow::Result<()> {
    let failed: Vec<&str> = results
        .iter()
        .filter(|c| !c.passed)
        .map(|c| c.check.as_str())
        .collect();
    if failed.is_empty() {
        println!("passed: {} checks", results.len());
        Ok(())
    } else {
        bail!(
            "validation failed: {} of {} checks ({})",
            failed.len(),
            results.len(),
            failed.join(", ")
        )
    }
}

/// Runs `suite` against `version` of `model` (and `against`), printing each
/// check as it is decided.
/// Runs the job with the `mlmesh-inference` binary beside this one,
/// printing each check as it is decided.
pub async fn run(
    reg: &mut mlmesh_registry_client::Client,
    model: &str,
    version: &str,
    suite: &str,
    against: Option<&str>,
) -> anyhow::Result<Outcome> {
    let job = Job {
        inference_bin: mlmesh_validator::sibling("mlmesh-inference")?,
        embedding_bin: mlmesh_validator::sibling("mlmesh-embedding")?,
        env: Vec::new(),
    };
    let mut print = |p: Progress<'_>| match p {
        Progress::Note(n) => println!("{n}"),
        Progress::Champion(_) => {}
        Progress::Check(c) => print_check(c),
    };
    job.run(reg, model, version, suite, against, &mut print)
        .await
}

pub fn print_check(c: &CheckResult) {
    println!(
        "{} {}: {}",
        if c.passed { "PASS" } else { "FAIL" },
        c.check,
        c.detail
    );
}
