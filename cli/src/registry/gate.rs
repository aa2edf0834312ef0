//! `mlmesh registry policy …` and `mlmesh registry evidence`: what an alias
//! demands before it moves, and the validation evidence versions carry.

use anyhow::Context as _;
use clap::Subcommand;
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::Client;

#[derive(Subcommand, Debug)]
pub enum PolicyCmd {
    /// Require passing evidence of a suite before ALIAS moves to a version.
    Set {
        model: String,
        alias: String,
        /// The suite: a JSON file or registry://<model>@<alias|version>
        /// (the policy keeps its SHA-256, and where to find it).
        #[arg(
            long,
            required_unless_present = "benchmark_workload",
            conflicts_with = "benchmark_workload"
        )]
        suite: Option<String>,
        /// Instead of a suite, a benchmark workload (the `workload` digest
        /// of `mlmesh bench model`'s report): the version needs a passing
        /// `mlmesh bench model --record` on it — no regression against
        /// earlier versions beyond its threshold, no errors.
        #[arg(long)]
        benchmark_workload: Option<String>,
        /// Also require non-inferiority to the alias's current version:
        /// every comparison's lower bound above -MARGIN.
        #[arg(long, conflicts_with = "benchmark_workload")]
        margin: Option<f64>,
        /// Accept evidence no older than this many days (0: any age).
        #[arg(long, default_value_t = 30)]
        max_age_days: u64,
    },
    /// The policies of a model's aliases.
    List { model: String },
    /// Remove an alias's policy.
    Remove { model: String, alias: String },
}

pub async fn policy(c: &mut Client, cmd: PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Set {
            model,
            alias,
            suite,
            benchmark_workload,
            margin,
            max_age_days,
        } => {
            let (digest, suite) = match (suite, benchmark_workload) {
                (Some(suite), _) => {
                    let dir =
                        std::env::temp_dir().join(format!("mlmesh-policy-{}", std::process::id()));
                    let fetched = mlmesh_validator::suite_source::fetch(c, &suite, &dir).await;
                    let _ = std::fs::remove_dir_all(&dir);
                    let (bytes, digest) = fetched?;
                    mlmesh_validate::suite::Suite::parse(&bytes)
                        .with_context(|| format!("the suite {suite}"))?;
                    (digest, suite)
                }
                (None, Some(w)) => {
                    let w = w.to_ascii_lowercase();
                    if w.len() != 64 || !w.bytes().all(|b| b.is_ascii_hexdigit()) {
                        anyhow::bail!("--benchmark-workload: a SHA-256 in hex (64 characters)");
                    }
                    (w.clone(), format!("benchmark workload {w}"))
                }
                (None, None) => anyhow::bail!("--suite or --benchmark-workload"),
            };
            let p = c
                .set_alias_policy(pb::SetAliasPolicyRequest {
                    policy: Some(pb::AliasPolicy {
                        model,
                        alias,
                        suite_digest: digest,
                        suite_source: suite,
                        margin,
                        max_age_secs: max_age_days.saturating_mul(86_400),
                        updated_at: None,
                    }),
                    remove: false,
                })
                .await?
                .into_inner();
            println!("{}", describe_policy(&p));
        }
        PolicyCmd::List { model } => {
            let list = c
                .list_alias_policies(pb::ListAliasPoliciesRequest { model })
                .await?
                .into_inner();
            for p in &list.policies {
                println!("{}", describe_policy(p));
            }
        }
        PolicyCmd::Remove { model, alias } => {
            c.set_alias_policy(pb::SetAliasPolicyRequest {
                policy: Some(pb::AliasPolicy {
                    model: model.clone(),
                    alias: alias.clone(),
                    ..Default::default()
                }),
                remove: true,
            })
            .await?;
            println!("{model} {alias}: policy removed");
        }
    }
    Ok(())
}

/// A digest's first 12 characters (whatever the registry sent).
fn short(digest: &str) -> String {
    digest.chars().take(12).collect()
}

fn describe_policy(p: &pb::AliasPolicy) -> String {
    format!(
        "{} {}: requires suite {} ({}){}{}",
        p.model,
        p.alias,
        short(&p.suite_digest),
        p.suite_source,
        p.margin
            .map(|m| format!(", non-inferior to the current version by margin {m}"))
            .unwrap_or_default(),
        match p.max_age_secs {
            0 => String::new(),
            s => format!(", evidence at most {} days old", s / 86_400),
        }
    )
}

/// One alias move, with what let it through.
pub fn describe_move(m: &pb::AliasMove) -> String {
    format!(
        "{} {}: v{} -> v{} (revision {}){}",
        m.model,
        m.alias,
        m.from_version,
        m.to_version,
        m.revision,
        admitted_by(m).trim_end()
    )
}

/// `[evidence N] `, `[override] ` or nothing.
pub fn admitted_by(m: &pb::AliasMove) -> String {
    if m.overridden {
        " [override] ".into()
    } else if m.evidence_id != 0 {
        format!(" [evidence {}] ", m.evidence_id)
    } else {
        String::new()
    }
}

/// Evidence of `version` (0: every version), newest first, one line each
/// and a line per failed check.
pub async fn print_evidence(c: &mut Client, model: &str, version: i64) -> anyhow::Result<()> {
    let list = c
        .list_evidence(pb::ListEvidenceRequest {
            model: model.to_owned(),
            version,
            ..Default::default()
        })
        .await?
        .into_inner();
    if list.evidence.is_empty() {
        println!("evidence: none");
    }
    for e in &list.evidence {
        println!("{}", describe_evidence(e));
        for ch in e.checks.iter().filter(|ch| !ch.passed) {
            println!("    FAIL {}: {}", ch.name, ch.detail);
        }
    }
    Ok(())
}

pub fn describe_evidence(e: &pb::Evidence) -> String {
    let at = e.recorded_at.map_or(0, |t| t.seconds);
    format!(
        "evidence {:>4}  v{:<4} {}  {} of suite {} ({}){}  {} checks, {} ms, on {} ({} cores)  at {at}",
        e.id,
        e.version,
        if e.passed { "PASSED" } else { "FAILED" },
        e.kind,
        short(&e.suite_digest),
        e.suite_source,
        match e.against_version {
            0 => String::new(),
            v => format!(" against v{v}"),
        },
        e.checks.len(),
        e.duration_ms,
        e.runner.as_ref().map_or("?", |r| r.cpu.as_str()),
        e.runner.as_ref().map_or(0, |r| r.cores),
    )
}
