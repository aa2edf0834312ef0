//! `mlmesh-bench validation`: what the validation gate costs. Two figures:
//!
//! - the gate's overhead on SetAliases: moves of an alias with a policy
//!   (each to a new version with fresh passing evidence) interleaved with
//!   moves of an alias without one, on the same registry (release binary,
//!   loopback gRPC); medians and p90s side by side;
//! - `mlmesh model validate` of a classifier suite of `--examples` examples
//!   (the iris data set's 150 flowers, repeated in order to the size) with
//!   robustness probes and budgets, against a champion: wall time per run,
//!   median of `--runs`;
//! - the primary's latency through a gateway mirroring a share of its
//!   calls to a shadow, against one without the rule (same inference
//!   service, alternating rounds).

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
    /// ModelInfer calls per gateway (shadow on and off) in the shadow
    /// comparison.
    #[arg(long, default_value_t = 4000)]
    shadow_calls: usize,
    /// The shadow's sampled share.
    #[arg(long, default_value_t = 0.1)]
    shadow_fraction: f64,
    /// Callers at once in the shadow comparison.
    #[arg(long, default_value_t = 4)]
    shadow_concurrency: usize,
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
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
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
    println!();
    minilm_time(&svc, args.runs)?;
    println!();
    shadow_overhead(&args).await?;
    Ok(())
}

/// `mlmesh model validate` of the MiniLM suite (sentence-transformers'
/// vectors for 60 texts, cosine ≥ 0.999, robustness, budgets) against a
/// champion: two embedding processes started and loaded per run.
fn minilm_time(svc: &Service, runs: usize) -> anyhow::Result<()> {
    let root = repo_root();
    let model = root.join(".cache/mlmesh/models/all-MiniLM-L6-v2");
    if !model.join("model.onnx").is_file() {
        println!(
            "MiniLM suite: skipped, {} is missing (make models)",
            model.display()
        );
        return Ok(());
    }
    let golden: serde_json::Value = serde_json::from_slice(&std::fs::read(
        root.join("services/embedding/tests/data/minilm-golden.json"),
    )?)?;
    let items = golden["items"].as_array().context("items")?;
    let suite = serde_json::json!({
        "name": "minilm-sentence-transformers",
        "task": "embedding",
        "examples": items.iter().map(|i| serde_json::json!({
            "inputs": {"text": i["text"]}, "expected": {"embedding": i["embedding"]}
        })).collect::<Vec<_>>(),
        "checks": [{"kind": "cosine", "output": "embedding", "min": 0.999}],
        "budgets": {"load_ms": 60000, "rss_mb": 4096, "concurrency": 4, "requests": 200}
    });
    time_suite(
        svc,
        runs,
        &Timed {
            model: "minilm",
            folder: &model.display().to_string(),
            suite: &suite,
            title: format!("the MiniLM suite (`mlmesh-bench validation --runs {runs}`)"),
            what: "60 texts against sentence-transformers' vectors (cosine ≥ 0.999), 5 robustness probes and a batch check, budgets (p99 at concurrency 4 over 200 calls each, interleaved with the champion); two embedding processes started and loaded per run",
            target: "< 60 s",
        },
    )
}

/// The primary's latency through a gateway mirroring `--shadow-fraction`
/// of its calls to a shadow, against a gateway without the rule, both in
/// front of the same inference service, in alternating rounds.
async fn shadow_overhead(args: &ValidationArgs) -> anyhow::Result<()> {
    use futures::{StreamExt as _, stream};
    use mlmesh_proto::inference::{
        self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient,
    };
    let root = repo_root();
    let models = TempDir::new("bench-shadow-models");
    mlmesh_tests::copy_dir(
        &root.join("services/inference/models/iris-logreg"),
        &models.path().join("iris-logreg"),
    )?;
    mlmesh_tests::copy_dir(
        &root.join("tests/data/validation/iris-tree"),
        &models.path().join("iris-tree"),
    )?;
    let config = TempDir::new("bench-shadow-config");
    let file = config.path().join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[shadow]\nmax_in_flight = 64\n[[shadow.rules]]\nmodel = \"iris-logreg\"\nshadow_model = \"iris-tree\"\nfraction = {}\ncompare = \"argmax\"\noutput = \"probabilities\"\n",
            args.shadow_fraction
        ),
    )?;
    let inference = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                models.path().display().to_string(),
            ),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ],
    );
    let gateway = |shadow: bool| {
        let mut env = vec![
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
            ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
            ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
            ("MLMESH_HTTP__LISTEN", "127.0.0.1:0".into()),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info,mlmesh_gateway=info".into(),
            ),
        ];
        if shadow {
            env.push(("MLMESH_CONFIG", file.display().to_string()));
        }
        Service::start("mlmesh-gateway", &env)
    };
    let (off, on) = (gateway(false), gateway(true));
    let suite: serde_json::Value = serde_json::from_slice(&std::fs::read(
        root.join("tests/data/validation/iris-suite.json"),
    )?)?;
    let requests: Vec<ipb::ModelInferRequest> = suite["examples"]
        .as_array()
        .context("examples")?
        .iter()
        .map(|e| {
            let data: Vec<u8> = e["inputs"]["input"]["data"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .flat_map(|v| (v.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                        .collect()
                })
                .unwrap_or_default();
            ipb::ModelInferRequest {
                model_name: "iris-logreg".into(),
                inputs: vec![ipb::model_infer_request::InferInputTensor {
                    name: "input".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 4],
                    ..Default::default()
                }],
                raw_input_contents: vec![data.into()],
                ..Default::default()
            }
        })
        .collect();
    let connect = |addr: std::net::SocketAddr| async move {
        GrpcInferenceServiceClient::connect(format!("http://{addr}")).await
    };
    let (c_off, c_on) = (connect(off.addr).await?, connect(on.addr).await?);
    let burst = |c: GrpcInferenceServiceClient<tonic::transport::Channel>, n: usize| {
        let requests = requests.clone();
        async move {
            let out: Vec<Result<f64, tonic::Status>> = stream::iter(0..n)
                .map(|i| {
                    let mut c = c.clone();
                    let rq = requests[i % requests.len()].clone();
                    async move {
                        let t = Instant::now();
                        c.model_infer(rq)
                            .await
                            .map(|_| t.elapsed().as_secs_f64() * 1000.0)
                    }
                })
                .buffer_unordered(args.shadow_concurrency)
                .collect()
                .await;
            out
        }
    };
    // Warm both paths.
    burst(c_off.clone(), 200).await;
    burst(c_on.clone(), 200).await;
    let rounds = 10;
    let per = args.shadow_calls.div_ceil(rounds);
    let (mut t_off, mut t_on, mut failed) = (Vec::new(), Vec::new(), 0usize);
    for r in 0..rounds {
        let order = if r % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for shadow in order {
            let c = if shadow { c_on.clone() } else { c_off.clone() };
            for x in burst(c, per).await {
                match x {
                    Ok(ms) if shadow => t_on.push(ms),
                    Ok(ms) => t_off.push(ms),
                    Err(_) => failed += 1,
                }
            }
        }
    }
    let mut http = mlmesh_tests::HttpClient::new(on.http_addr.context("http address")?);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, report) = http.json("GET", "/v1/shadow", None);
    let rule = &report["rules"][0];
    println!(
        "## Shadow at {:.0}% sampling: the primary's latency (`mlmesh-bench validation --shadow-calls {} --shadow-fraction {}`)",
        args.shadow_fraction * 100.0,
        args.shadow_calls,
        args.shadow_fraction
    );
    println!();
    println!(
        "iris-logreg through two gateways in front of one inference service, one mirroring to iris-tree (compared by class), {} callers, {rounds} alternating rounds",
        args.shadow_concurrency
    );
    println!();
    println!("| gateway | calls | p50 | p99 |");
    println!("|---|---|---|---|");
    let (p50_off, p99_off) = (median(t_off.clone()), quantile(t_off.clone(), 0.99));
    let (p50_on, p99_on) = (median(t_on.clone()), quantile(t_on.clone(), 0.99));
    println!(
        "| shadow off | {} | {p50_off:.3} ms | {p99_off:.3} ms |",
        t_off.len()
    );
    println!(
        "| shadow on | {} | {p50_on:.3} ms | {p99_on:.3} ms |",
        t_on.len()
    );
    println!();
    println!(
        "failed primary calls: {failed}; p99 on / off: {:.3} (target ≤ 1.05); shadow calls compared {}, skipped {}, errors {}, agreement {}",
        p99_on / p99_off.max(1e-9),
        rule["calls"],
        rule["skipped"],
        rule["errors"],
        rule["agreement"]
    );
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
    time_suite(
        svc,
        runs,
        &Timed {
            model: "iris-logreg",
            folder: "services/inference/models/iris-logreg",
            suite: &suite,
            title: format!(
                "a {examples}-example classifier suite (`mlmesh-bench validation --examples {examples} --runs {runs}`)"
            ),
            what: "contract, accuracy with a paired bootstrap interval and McNemar against the champion, 10 robustness probes, budgets (load, memory, p99 at concurrency 4 over 200 calls each, interleaved with the champion); two inference processes started and loaded per run",
            target: "< 5 s",
        },
    )
}

/// One suite's timing: the model folder pushed twice (v1 the champion,
/// v2 the candidate), then `mlmesh model validate` of v2 against v1
/// `runs` times; its wall times and the last run's checks, printed.
struct Timed<'a> {
    model: &'a str,
    folder: &'a str,
    suite: &'a serde_json::Value,
    title: String,
    what: &'a str,
    target: &'a str,
}

fn time_suite(svc: &Service, runs: usize, t: &Timed<'_>) -> anyhow::Result<()> {
    let root = repo_root();
    let dir = TempDir::new("bench-validation-suite");
    let suite_file = dir.path().join("suite.json");
    std::fs::write(&suite_file, serde_json::to_vec(t.suite)?)?;
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
    for args in [
        vec!["registry", "create", t.model],
        vec!["registry", "push", t.model, t.folder],
        vec!["registry", "push", t.model, t.folder],
    ] {
        let (ok, out) = mlmesh(&args)?;
        if !ok {
            bail!("{args:?}: {out}");
        }
    }
    let suite_arg = suite_file.display().to_string();
    let (mut secs, mut last) = (Vec::new(), String::new());
    for _ in 0..runs {
        let started = Instant::now();
        let (ok, out) = mlmesh(&[
            "model",
            "validate",
            t.model,
            "2",
            "--suite",
            &suite_arg,
            "--against",
            "1",
        ])?;
        secs.push(started.elapsed().as_secs_f64());
        if !ok {
            bail!("validation failed: {out}");
        }
        last = out;
    }
    println!("## `mlmesh model validate` of {}", t.title);
    println!();
    println!("{}", t.what);
    println!();
    println!(
        "| runs | median wall time | min | max | target |\n|---|---|---|---|---|\n| {} | {:.2} s | {:.2} s | {:.2} s | {} |",
        secs.len(),
        median(secs.clone()),
        secs.iter().copied().fold(f64::INFINITY, f64::min),
        secs.iter().copied().fold(0.0, f64::max),
        t.target,
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
