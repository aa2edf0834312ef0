//! `mlmesh-bench validation`: what the validation gate costs. Two figures:
//!
//! - the gate's overhead on SetAliases: moves of an alias with a policy
//!   (each to a new version with fresh passing evidence) interleaved with
//!   moves of an alias without one, on the same registry (release binary,
//!   loopback gRPC); medians and p90s side by side;
//! - `mlmesh model validate` of a classifier suite of `--examples` examples
//!   (the iris data set's 150 flowers, repeated in order to the size) with
//!   robustness probes and budgets, against a champion: wall time per run,
//!   median of `--runs`.

use std::{process::Command, time::Instant};

use anyhow::{Context as _, bail};
use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use mlmesh_tests::{Service, TempDir, binary, repo_root};
use sha2::{Digest, Sha256};

use crate::median;

#[derive(clap::Args, Debug)]
pub struct ValidationArgs {
    /// Alias moves timed per alias (gated and ungated, interleaved).
    #[arg(long, default_value_t = 200)]
    moves: usize,
    /// Examples in the classifier suite.
    #[arg(long, default_value_t = 1000)]
    examples: usize,
    /// Validation runs timed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn quantile(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len().max(1)) - 1;
    v.get(i).copied().unwrap_or(0.0)
}

pub async fn run(args: ValidationArgs) -> anyhow::Result<()> {
    let data = TempDir::new("bench-validation");
    let svc = Service::start(
        "mlmesh-registry",
        &[
            (
                "MLMESH_REGISTRY__DATA_DIR",
                data.path().display().to_string(),
            ),
            ("MLMESH_TELEMETRY__LOG_LEVEL", "warn".into()),
        ],
    );
    println!("# mlmesh-bench validation");
    println!(
        "{} cores; registry release binary on loopback, embedded SQLite",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    gate_overhead(&svc, args.moves).await?;
    println!();
    validation_time(&svc, args.examples, args.runs)?;
    Ok(())
}

async fn gate_overhead(svc: &Service, moves: usize) -> anyhow::Result<()> {
    let mut c = RegistryClient::connect(format!("http://{}", svc.addr)).await?;
    let suite = sha256(b"bench suite");
    for name in ["gated", "open"] {
        c.create_model(pb::CreateModelRequest {
            name: name.into(),
            ..Default::default()
        })
        .await?;
    }
    c.set_alias_policy(pb::SetAliasPolicyRequest {
        policy: Some(pb::AliasPolicy {
            model: "gated".into(),
            alias: "production".into(),
            suite_digest: suite.clone(),
            suite_source: "bench".into(),
            margin: None,
            max_age_secs: 3600,
            updated_at: None,
        }),
        remove: false,
    })
    .await?;
    let (mut gated, mut open) = (Vec::new(), Vec::new());
    for i in 0..moves {
        let bytes = format!("version {i}").into_bytes();
        let mut versions = Vec::new();
        for model in ["gated", "open"] {
            versions.push(push(&mut c, model, &bytes).await?);
        }
        let v = &versions[0];
        c.record_evidence(pb::RecordEvidenceRequest {
            evidence: Some(pb::Evidence {
                model: "gated".into(),
                version: v.version,
                manifest_digest: v.manifest_digest.clone(),
                suite_digest: suite.clone(),
                passed: true,
                checks: vec![pb::Check {
                    name: "accuracy".into(),
                    passed: true,
                    ..Default::default()
                }],
                kind: "validation".into(),
                ..Default::default()
            }),
        })
        .await?;
        // Alternate which goes first, so neither always meets a warm cache.
        let order: [(&str, i64, bool); 2] = if i % 2 == 0 {
            [
                ("gated", versions[0].version, true),
                ("open", versions[1].version, false),
            ]
        } else {
            [
                ("open", versions[1].version, false),
                ("gated", versions[0].version, true),
            ]
        };
        for (model, version, is_gated) in order {
            let t = Instant::now();
            let r = c
                .set_aliases(pb::SetAliasesRequest {
                    model: model.into(),
                    aliases: vec![pb::AliasTarget {
                        alias: "production".into(),
                        version,
                        expected_version: None,
                    }],
                    reason: "bench".into(),
                    override_policy: false,
                })
                .await?
                .into_inner();
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            if is_gated {
                if r.moves.first().map(|m| m.evidence_id) == Some(0) {
                    bail!("the gated move names no evidence: {r:?}");
                }
                gated.push(ms);
            } else {
                open.push(ms);
            }
        }
    }
    println!("## Gate overhead on SetAliases (`mlmesh-bench validation --moves {moves}`)");
    println!();
    println!("| alias | moves | p50 | p90 |");
    println!("|---|---|---|---|");
    let (gp50, op50) = (median(gated.clone()), median(open.clone()));
    println!(
        "| with a policy (fresh passing evidence, new version each move) | {} | {gp50:.2} ms | {:.2} ms |",
        gated.len(),
        quantile(gated, 0.9)
    );
    println!(
        "| without a policy | {} | {op50:.2} ms | {:.2} ms |",
        open.len(),
        quantile(open, 0.9)
    );
    println!();
    println!(
        "gate overhead (p50 difference): {:.2} ms (target < 5 ms)",
        gp50 - op50
    );
    Ok(())
}

async fn push(
    c: &mut RegistryClient<tonic::transport::Channel>,
    model: &str,
    bytes: &[u8],
) -> anyhow::Result<pb::Version> {
    let up = c
        .start_upload(pb::StartUploadRequest {
            model: model.into(),
            files: vec![pb::FileEntry {
                path: "model.bin".into(),
                size: bytes.len() as u64,
                sha256: sha256(bytes),
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    let r = c
        .upload_files(tokio_stream::iter(vec![pb::UploadChunk {
            upload_id: up.upload_id,
            path: "model.bin".into(),
            offset: 0,
            data: bytes.to_vec().into(),
        }]))
        .await?
        .into_inner();
    r.version.context("committed")
}

fn validation_time(svc: &Service, examples: usize, runs: usize) -> anyhow::Result<()> {
    let root = repo_root();
    let mut suite: serde_json::Value = serde_json::from_slice(
        &std::fs::read(root.join("tests/data/validation/iris-suite.json")).context("iris suite")?,
    )?;
    let base = suite["examples"].as_array().cloned().unwrap_or_default();
    if base.is_empty() {
        bail!("the iris suite has no examples");
    }
    suite["examples"] = base.iter().cycle().take(examples).cloned().collect();
    suite["budgets"] =
        serde_json::json!({"load_ms": 60000, "rss_mb": 4096, "concurrency": 4, "requests": 200});
    let dir = TempDir::new("bench-validation-suite");
    let suite_file = dir.path().join("suite.json");
    std::fs::write(&suite_file, serde_json::to_vec(&suite)?)?;
    let addr = svc.addr.to_string();
    let mlmesh = |args: &[&str]| -> anyhow::Result<(bool, String)> {
        let out = Command::new(binary("mlmesh"))
            .current_dir(&root)
            .env("MLMESH_REGISTRY", &addr)
            .args(args)
            .output()
            .context("run mlmesh")?;
        Ok((
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        ))
    };
    let model = "services/inference/models/iris-logreg";
    for args in [
        vec!["registry", "create", "iris"],
        vec!["registry", "push", "iris", model],
        vec!["registry", "push", "iris", model],
    ] {
        let (ok, out) = mlmesh(&args)?;
        if !ok {
            bail!("{args:?}: {out}");
        }
    }
    let suite_arg = suite_file.display().to_string();
    let mut secs = Vec::new();
    let mut last = String::new();
    for _ in 0..runs {
        let t = Instant::now();
        let (ok, out) = mlmesh(&[
            "model",
            "validate",
            "iris",
            "2",
            "--suite",
            &suite_arg,
            "--against",
            "1",
        ])?;
        secs.push(t.elapsed().as_secs_f64());
        if !ok {
            bail!("validation failed: {out}");
        }
        last = out;
    }
    println!(
        "## `mlmesh model validate` of a {examples}-example classifier suite (`mlmesh-bench validation --examples {examples} --runs {runs}`)"
    );
    println!();
    println!(
        "contract, accuracy with a paired bootstrap interval and McNemar against the champion, 10 robustness probes, budgets (load, memory, p99 at concurrency 4 over 200 calls each, interleaved with the champion); two inference processes started and loaded per run"
    );
    println!();
    println!(
        "| runs | median wall time | min | max | target |\n|---|---|---|---|---|\n| {} | {:.2} s | {:.2} s | {:.2} s | < 5 s |",
        secs.len(),
        median(secs.clone()),
        secs.iter().copied().fold(f64::INFINITY, f64::min),
        secs.iter().copied().fold(0.0, f64::max),
    );
    println!();
    println!("last run's checks:");
    for l in last
        .lines()
        .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
    {
        let short: String = l.chars().take(160).collect();
        println!("- {short}");
    }
    Ok(())
}
