//! `mlmesh bench model`: a statistical benchmark of one model behind an
//! Open Inference Protocol or embedding endpoint (see [`target`]), run by
//! `mlmesh_loadgen` at each closed-loop concurrency or open-loop rate, each
//! run stopping once its throughput interval is narrow enough; optionally
//!
//! - `--against-model` / `--against-version` / `--against-server`: an A/B
//!   by interleaving (another version, model or server) — the
//!   candidate and the champion measured in alternating rounds at the first
//!   load; the verdict is the ratio's interval against a noise threshold;
//! - `--record MODEL@VERSION`: the result stored in the registry as
//!   evidence of that version, compared with earlier versions' records on
//!   the same workload and testbed (see [`history`]).
//!
//! Outputs: a line per run, and with `--out DIR` `report.json`,
//! `report.csv` (perf_analyzer's column names) and `report.html` (one
//! self-contained page). The exit status is 1 on a regression.

mod history;
mod target;

use std::{path::PathBuf, sync::Arc, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use mlmesh_loadgen::{Load, Plan, Run, report};
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::Selector;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use self::target::{Endpoint, Target, Work};

#[derive(Args, Debug)]
pub struct BenchCmd {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Benchmark a model behind an OIP (Triton / KServe v2 gRPC) or
    /// embedding endpoint: closed-loop concurrency or open-loop rates,
    /// latency corrected for coordinated omission, runs that stop when
    /// their interval is narrow; A/B by interleaving; history and
    /// regression detection through the registry.
    Model(Box<ModelBench>),
}

#[derive(Args, Debug)]
pub struct ModelBench {
    /// The endpoint's protocol.
    #[arg(long, value_enum, default_value_t = Endpoint::Oip)]
    endpoint: Endpoint,
    /// The endpoint's address (host:port or a URI).
    #[arg(long)]
    server: String,
    /// The model as the endpoint names it.
    #[arg(long)]
    model: String,
    /// OIP model_version (empty: the server's choice).
    #[arg(long, default_value = "")]
    model_version: String,
    /// What to send: for OIP a validation suite whose examples are the
    /// requests; for embedding a JSON list of texts (default: built-in).
    #[arg(long)]
    inputs: Option<PathBuf>,
    /// Texts per embedding call.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Closed loop: concurrent callers, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    concurrency: Vec<usize>,
    /// Open loop: offered calls per second, comma-separated (replaces
    /// --concurrency).
    #[arg(long, value_delimiter = ',')]
    rate: Vec<f64>,
    /// Open loop: Poisson arrivals (exponential gaps) instead of constant.
    #[arg(long)]
    poisson: bool,
    /// Open loop: calls in flight at most (later arrivals wait, and their
    /// wait counts in their latency).
    #[arg(long, default_value_t = 256)]
    max_in_flight: usize,
    /// Seconds of warm-up before each run (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup_secs: f64,
    /// Seconds per measurement window.
    #[arg(long, default_value_t = 1.0)]
    window_secs: f64,
    /// Windows at least, before the stop rule is applied.
    #[arg(long, default_value_t = 5)]
    min_windows: usize,
    /// Seconds at most per run (the report says when a run hit it).
    #[arg(long, default_value_t = 30.0)]
    max_secs: f64,
    /// Stop when the 95% interval's half-width is at most this fraction of
    /// the mean window throughput.
    #[arg(long, default_value_t = 0.02)]
    ci_width: f64,
    /// Seconds a call may take before it counts as failed.
    #[arg(long, default_value_t = 10.0)]
    call_timeout_secs: f64,
    /// Seed of the Poisson arrivals and the resampling.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A/B: the champion's model name (default: --model).
    #[arg(long)]
    against_model: Option<String>,
    /// A/B: the champion's OIP model_version.
    #[arg(long)]
    against_version: Option<String>,
    /// A/B: the champion's endpoint address (default: --server), e.g.
    /// another server speaking the same protocol (MLServer, Triton).
    #[arg(long)]
    against_server: Option<String>,
    /// A/B: alternating rounds (each side this many times).
    #[arg(long, default_value_t = 6)]
    rounds: usize,
    /// A change smaller than this fraction is noise, not a verdict.
    #[arg(long, default_value_t = 0.05)]
    threshold: f64,
    /// Write report.json, report.csv and report.html into this folder.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Store the result as evidence of this registry version
    /// (MODEL@VERSION or MODEL@ALIAS) and compare it with the model's
    /// earlier versions.
    #[arg(long)]
    record: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    conn: crate::registry::RegistryConn,
}

pub async fn run(cmd: BenchCmd) -> anyhow::Result<()> {
    match cmd.command {
        Cmd::Model(b) => model(*b).await,
    }
}

fn loads(b: &ModelBench) -> Vec<Load> {
    if b.rate.is_empty() {
        b.concurrency
            .iter()
            .map(|&c| Load::Closed { concurrency: c })
            .collect()
    } else {
        b.rate
            .iter()
            .map(|&r| Load::Open {
                rate: r,
                poisson: b.poisson,
                max_in_flight: b.max_in_flight,
            })
            .collect()
    }
}

fn secs(field: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{field}: {v} is not a duration"))
}

async fn model(b: ModelBench) -> anyhow::Result<()> {
    let (work, inputs_bytes) = Work::load(b.endpoint, b.inputs.as_deref(), b.batch)?;
    let work = Arc::new(work);
    let plan = Plan {
        warmup: secs("warmup-secs", b.warmup_secs)?,
        window: secs("window-secs", b.window_secs)?,
        min_windows: b.min_windows,
        max_time: secs("max-secs", b.max_secs)?,
        ci_width: b.ci_width,
        confidence: 0.95,
        seed: b.seed,
    };
    let loads = loads(&b);
    if loads.is_empty() || loads.len() > 32 {
        bail!("--concurrency / --rate: 1 to 32 levels");
    }
    if !(b.threshold > 0.0 && b.threshold < 1.0) {
        bail!(
            "--threshold: {} is not strictly between 0 and 1",
            b.threshold
        );
    }
    for l in &loads {
        plan.check(l).map_err(|e| anyhow::anyhow!("--{}", e))?;
    }
    // The workload: everything but the model, so versions compare.
    let workload = hex::encode(Sha256::digest(serde_json::to_vec(&json!({
        "endpoint": b.endpoint, "inputs": hex::encode(Sha256::digest(&inputs_bytes)),
        "batch": b.batch, "loads": loads, "plan": plan,
    }))?));
    if !(b.call_timeout_secs.is_finite() && (0.001..=3600.0).contains(&b.call_timeout_secs)) {
        bail!(
            "--call-timeout-secs: {} is not between 0.001 and 3600",
            b.call_timeout_secs
        );
    }
    let call_timeout = Duration::from_secs_f64(b.call_timeout_secs);
    let candidate = Target {
        endpoint: b.endpoint,
        addr: b.server.clone(),
        model: b.model.clone(),
        version: b.model_version.clone(),
    };
    let call = target::caller(&candidate, &work, call_timeout)?;
    let say = |line: String| {
        if !b.json {
            println!("{line}");
        }
    };
    let mut runs: Vec<Run> = Vec::new();
    for l in &loads {
        let r = mlmesh_loadgen::run(Arc::clone(&call), *l, &plan).await?;
        say(line(&r));
        runs.push(r);
    }
    let mut verdicts: Vec<String> = Vec::new();
    let mut regression = false;
    // A run with failed calls measured something else than the model
    // (refusals are fast): no comparison, no record, a failing exit.
    let broken = runs.iter().find(|r| r.errors > 0).map(|r| {
        format!(
            "{} of {} calls failed at {} (first: {}); not compared or recorded",
            r.errors,
            r.errors + r.ok,
            report::load_label(&r.load),
            r.first_error.as_deref().unwrap_or("unknown")
        )
    });
    if let Some(e) = &broken {
        verdicts.push(e.clone());
    }

    // A/B by interleaving at the first load.
    let ab = if broken.is_none()
        && (b.against_model.is_some() || b.against_version.is_some() || b.against_server.is_some())
    {
        let champion = Target {
            model: b.against_model.clone().unwrap_or_else(|| b.model.clone()),
            version: b.against_version.clone().unwrap_or_default(),
            addr: b.against_server.clone().unwrap_or_else(|| b.server.clone()),
            ..candidate.clone()
        };
        let champ = target::caller(&champion, &work, call_timeout)?;
        let round_plan = Plan {
            warmup: Duration::from_millis(500).min(plan.warmup),
            min_windows: 3,
            max_time: plan.window * 3,
            ..plan.clone()
        };
        let mut ratios = Vec::new();
        for r in 0..b.rounds.clamp(2, 100) {
            let (x, y) = if r % 2 == 0 {
                let x = mlmesh_loadgen::run(Arc::clone(&call), loads[0], &round_plan).await?;
                (
                    x,
                    mlmesh_loadgen::run(Arc::clone(&champ), loads[0], &round_plan).await?,
                )
            } else {
                let y = mlmesh_loadgen::run(Arc::clone(&champ), loads[0], &round_plan).await?;
                (
                    mlmesh_loadgen::run(Arc::clone(&call), loads[0], &round_plan).await?,
                    y,
                )
            };
            for (side, run) in [("candidate", &x), ("champion", &y)] {
                if run.errors > 0 {
                    bail!(
                        "A/B round {}: {side} {} of {} calls failed (first: {})",
                        r + 1,
                        run.errors,
                        run.errors + run.ok,
                        run.first_error.as_deref().unwrap_or("unknown")
                    );
                }
            }
            let mean = |r: &Run| {
                r.windows.iter().map(|w| w.throughput).sum::<f64>() / r.windows.len().max(1) as f64
            };
            let (cx, cy) = (mean(&x), mean(&y));
            if cy > 0.0 {
                ratios.push(cx / cy);
            }
        }
        let i = mlmesh_validate::bootstrap_mean(&ratios, 0.95, 2000, b.seed)?;
        let verdict = if i.high < 1.0 - b.threshold {
            regression = true;
            "REGRESSION"
        } else if i.low > 1.0 + b.threshold {
            "improvement"
        } else {
            "no change beyond the threshold"
        };
        let text = format!(
            "A/B against {}{} at {}: throughput ×{:.3} [{:.3}, {:.3}] over {} interleaved rounds (threshold {:.0}%): {verdict}",
            champion.model,
            if champion.version.is_empty() {
                String::new()
            } else {
                format!(" v{}", champion.version)
            },
            champion.addr,
            i.estimate,
            i.low,
            i.high,
            ratios.len(),
            b.threshold * 100.0
        );
        say(text.clone());
        verdicts.push(text);
        Some(
            json!({"champion": champion, "ratios": ratios, "ratio": i.estimate, "low": i.low, "high": i.high, "verdict": verdict}),
        )
    } else {
        None
    };

    // History.
    let mut history_points = Vec::new();
    let mut recorded = None;
    if let (None, Some(spec)) = (&broken, &b.record) {
        let (reg_model, which) = spec
            .split_once('@')
            .with_context(|| format!("--record {spec:?}: expected MODEL@VERSION or MODEL@ALIAS"))?;
        let mut reg = b.conn.connect()?;
        let selector = Selector::from_arg(which).map_err(anyhow::Error::msg)?;
        let version = reg
            .get_version(pb::GetVersionRequest {
                model: reg_model.to_owned(),
                selector: Some(selector.to_get()),
            })
            .await
            .with_context(|| format!("--record {spec}"))?
            .into_inner();
        let runner = mlmesh_validator::runner();
        let earlier =
            history::earlier(&mut reg, reg_model, version.version, &workload, &runner).await?;
        let windows: Vec<f64> = runs[0].windows.iter().map(|w| w.throughput).collect();
        let comparisons = history::compare(&windows, &earlier, b.threshold);
        for c in &comparisons {
            let text = format!(
                "against v{}: throughput ×{:.3} [{:.3}, {:.3}]{}",
                c.version,
                c.ratio,
                c.low,
                c.high,
                if c.regression { " — REGRESSION" } else { "" }
            );
            say(text.clone());
            if c.regression {
                regression = true;
                verdicts.push(text);
            }
        }
        history_points = history::points(&earlier, version.version, &runs[0]);
        let source = format!(
            "mlmesh bench model --endpoint {:?} --model {}",
            b.endpoint, b.model
        );
        let e = history::evidence(
            &version,
            &workload,
            &source,
            &runs[0],
            &comparisons,
            b.threshold,
        );
        let e = mlmesh_validator::record(&mut reg, e).await?;
        say(format!(
            "recorded as evidence {} of {} v{} (workload {})",
            e.id,
            e.model,
            e.version,
            &workload[..12]
        ));
        recorded = Some(
            json!({"evidence": e.id, "model": e.model, "version": e.version, "comparisons": comparisons}),
        );
    }

    let passed = !regression && runs.iter().all(|r| r.errors == 0);
    let verdict = if verdicts.is_empty() {
        format!(
            "{} at {}: {:.1} calls/s [{:.1}, {:.1}], p99 {:.2} ms; no regression found",
            b.model,
            report::load_label(&runs[0].load),
            runs[0].throughput,
            runs[0].throughput_low,
            runs[0].throughput_high,
            runs[0].p99_us as f64 / 1e3
        )
    } else {
        verdicts.join(" · ")
    };
    let report = json!({
        "target": candidate, "workload": workload, "plan": plan, "runs": runs,
        "ab": ab, "history": history_points, "recorded": recorded,
        "verdict": verdict, "passed": passed,
    });
    if let Some(dir) = &b.out {
        std::fs::create_dir_all(dir).with_context(|| format!("--out {}", dir.display()))?;
        let write = |name: &str, bytes: &[u8]| {
            std::fs::write(dir.join(name), bytes)
                .with_context(|| format!("writing {}", dir.join(name).display()))
        };
        write("report.json", &serde_json::to_vec_pretty(&report)?)?;
        write("report.csv", report::csv(&runs).as_bytes())?;
        let title = format!("mlmesh bench model — {}", b.model);
        write(
            "report.html",
            report::html(&title, &verdict, passed, &runs, &history_points, &report).as_bytes(),
        )?;
        say(format!("report written to {}", dir.display()));
    }
    if b.json {
        println!("{report}");
    }
    if let Some(e) = broken {
        bail!("{e}");
    }
    if regression {
        bail!("regression: {verdict}");
    }
    Ok(())
}

fn line(r: &Run) -> String {
    format!(
        "{}: {:.1} calls/s [{:.1}, {:.1}]{} · p50 {:.2} ms · p90 {:.2} · p99 {:.2} · p99.9 {:.2} · {} windows · {} errors",
        report::load_label(&r.load),
        r.throughput,
        r.throughput_low,
        r.throughput_high,
        if r.stable {
            ""
        } else {
            " (time cap hit before the interval narrowed)"
        },
        r.p50_us as f64 / 1e3,
        r.p90_us as f64 / 1e3,
        r.p99_us as f64 / 1e3,
        r.p999_us as f64 / 1e3,
        r.windows.len(),
        r.errors
    )
}
