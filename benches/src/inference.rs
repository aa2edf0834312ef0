//! `mlmesh-bench inference`: the inference service over real gRPC against
//! (a) the in-process floor — the same `.npz` MLP (ndarray) and ONNX file
//! (ONNX Runtime) called directly in this process — and (b) MLServer
//! (`mlserver` + `mlserver-sklearn` from PyPI, pinned in
//! `scripts/mlserver.txt`) serving the same fitted scikit-learn model over
//! the same v2 gRPC protocol, driven by the same load generator. Targets
//! alternate round by round so drift on a shared machine hits all alike;
//! figures are medians over rounds.
//!
//! Also measured: model load time (RepositoryModelUnload + Load, median of
//! 5) and the resident memory each extra loaded small model adds.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use mlmesh_inference::{
    backend::{self, OrtOptions, Runner},
    repository::Backend,
    settings::DEFAULT_ORT_DYLIB,
    tensor::{Data, Tensor},
};
use mlmesh_proto::inference::{
    self as pb,
    grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::{InferInputTensor, InferRequestedOutputTensor},
};
use mlmesh_tests::{Service, TempDir, copy_dir, mlserver::MlServer, repo_root};
use tonic::transport::Channel;

use crate::{Stats, median, ms, pooled, rss_kib, stats};

#[derive(Parser)]
pub struct InferenceArgs {
    /// Concurrent clients for single-row requests, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    concurrency: Vec<usize>,
    /// Seconds per cell and target, split into `--rounds` slices.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Rows per request of the batched-throughput cell (at most 64: the
    /// ONNX model's derived max_batch_size).
    #[arg(long, default_value_t = 64)]
    big_batch: usize,
    /// Folder holding the pinned MLServer install (scripts/mlserver.txt);
    /// absent: the MLServer column is skipped with a note.
    #[arg(long, default_value = ".cache/mlmesh/py/mlserver")]
    mlserver: PathBuf,
    #[arg(long, default_value = DEFAULT_ORT_DYLIB)]
    ort_dylib: PathBuf,
    /// Only the memory measurement (RSS per loaded model).
    #[arg(long)]
    memory_only: bool,
    /// ONNX Runtime idle spinning in the started service and the floor
    /// (`inference.allow_spinning`).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    allow_spinning: bool,
}

/// One measured target.
#[derive(Clone)]
enum Target {
    /// The runner called directly in this process.
    Floor(&'static str),
    /// A gRPC server: label, address, model, output to request.
    Grpc(&'static str, String, &'static str, &'static str),
}

impl Target {
    fn label(&self) -> &'static str {
        match self {
            Target::Floor(l) | Target::Grpc(l, ..) => l,
        }
    }
}

/// Digits rows (64 features) from the test references.
fn digit_rows() -> anyhow::Result<Vec<Vec<f32>>> {
    let p = repo_root().join("services/inference/tests/data/references.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p)?)?;
    let rows = v["models"]["digits-mlp"]["input"]["data"]
        .as_array()
        .context("digits rows")?
        .iter()
        .map(|r| {
            r.as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    Ok(rows)
}

fn batch(rows: &[Vec<f32>], n: usize, offset: usize) -> Vec<f32> {
    (0..n)
        .flat_map(|i| rows[(offset + i) % rows.len()].iter().copied())
        .collect()
}

fn request(model: &str, output: &str, data: &[f32], n: usize) -> pb::ModelInferRequest {
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![n as i64, 64],
            ..Default::default()
        }],
        outputs: vec![InferRequestedOutputTensor {
            name: output.into(),
            ..Default::default()
        }],
        raw_input_contents: vec![
            data.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// `concurrency` clients (one connection each) sending `n`-row requests.
async fn drive(
    (addr, model, output): (&str, &'static str, &'static str),
    rows: &[Vec<f32>],
    concurrency: usize,
    n: usize,
    secs: f64,
    warm: f64,
) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(
            GrpcInferenceServiceClient::connect(format!("http://{addr}"))
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    let (warmup, measure) = (Duration::from_secs_f64(warm), Duration::from_secs_f64(secs));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        // Requests prepared up front: the generator measures the server.
        let reqs: Vec<_> = (0..8)
            .map(|i| request(model, output, &batch(rows, n, k * 8 + i), n))
            .collect();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            loop {
                let now = t0.elapsed();
                if now >= warmup + measure {
                    break;
                }
                let t = Instant::now();
                let r = c.model_infer(reqs[i % reqs.len()].clone()).await?;
                let d = t.elapsed();
                anyhow::ensure!(r.into_inner().raw_output_contents.len() == 1, "one output");
                if now >= warmup {
                    lat.push(d);
                }
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let count = lat.len();
    Ok(stats(lat, count * n, measure))
}

/// The floor: one runner, sequential runs of `n` rows in this thread.
fn floor(
    runner: &mut dyn Runner,
    rows: &[Vec<f32>],
    n: usize,
    secs: f64,
    warm: f64,
) -> anyhow::Result<Stats> {
    let inputs: Vec<Tensor> = (0..8)
        .map(|i| Tensor {
            name: "input".into(),
            shape: vec![n as i64, 64],
            data: Data::F32(batch(rows, n, i)),
        })
        .collect();
    let mut i = 0;
    let w = Instant::now();
    while w.elapsed().as_secs_f64() < warm {
        runner
            .run(vec![inputs[i % 8].clone()])
            .map_err(anyhow::Error::msg)?;
        i += 1;
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        // The copy of the input is part of what a server does too.
        runner
            .run(vec![inputs[i % 8].clone()])
            .map_err(anyhow::Error::msg)?;
        lat.push(t.elapsed());
        i += 1;
    }
    let count = lat.len();
    Ok(stats(lat, count * n, start.elapsed()))
}

async fn client(addr: &str) -> anyhow::Result<GrpcInferenceServiceClient<Channel>> {
    Ok(GrpcInferenceServiceClient::connect(format!("http://{addr}")).await?)
}

/// Unload + load `model` five times; the median load.
async fn load_time(addr: &str, model: &str) -> anyhow::Result<Duration> {
    let mut c = client(addr).await?;
    let mut times = Vec::new();
    for _ in 0..5 {
        c.repository_model_unload(pb::RepositoryModelUnloadRequest {
            model_name: model.into(),
            ..Default::default()
        })
        .await?;
        let t = Instant::now();
        c.repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: model.into(),
            ..Default::default()
        })
        .await?;
        times.push(t.elapsed().as_secs_f64());
    }
    Ok(Duration::from_secs_f64(median(times)))
}

/// RSS a loaded copy of `model` adds: 20 copies in a fresh service, one
/// loaded at start, 19 more loaded through the API.
async fn rss_per_model(model: &str) -> anyhow::Result<f64> {
    let dir = TempDir::new("bench-rss");
    let src = repo_root().join("services/inference/models").join(model);
    for i in 0..20 {
        let dst = dir.path().join(format!("m{i:02}"));
        copy_dir(&src, &dst)?;
        // config.pbtxt names the model: drop it with the copy's new name.
        let cfg = dst.join("config.pbtxt");
        if cfg.is_file() {
            let text = std::fs::read_to_string(&cfg)?.replace(&format!("name: \"{model}\""), "");
            std::fs::write(&cfg, text)?;
        }
    }
    let svc = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                dir.path().display().to_string(),
            ),
            ("MLMESH_INFERENCE__LOAD_MODELS", "m00".into()),
            // The harness waits for the runtime's "listening" line.
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ],
    );
    let addr = svc.addr.to_string();
    let before = rss_kib(svc.child.id()).map_or(0, |r| r.0);
    let mut c = client(&addr).await?;
    for i in 1..20 {
        c.repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: format!("m{i:02}"),
            ..Default::default()
        })
        .await?;
    }
    let after = rss_kib(svc.child.id()).map_or(0, |r| r.0);
    Ok((after.saturating_sub(before)) as f64 / 19.0 / 1024.0)
}

pub async fn run(args: InferenceArgs) -> anyhow::Result<()> {
    if args.concurrency.contains(&0) {
        bail!("--concurrency values must be at least 1");
    }
    if args.memory_only {
        return memory().await;
    }
    let rows = digit_rows()?;
    let svc = Service::start(
        "mlmesh-inference",
        &[(
            "MLMESH_TELEMETRY__LOG_LEVEL",
            "warn,mlmesh_runtime=info".into(),
        )],
    );
    let addr = svc.addr.to_string();
    let site = repo_root().join(&args.mlserver);
    let ml = if site.join(".mlmesh-stamp").is_file() {
        let site = site.clone();
        Some(
            tokio::task::spawn_blocking(move || MlServer::start(&site, "digits-mlp"))
                .await?
                .context("starting MLServer")?,
        )
    } else {
        None
    };

    let repo = repo_root().join("services/inference/models");
    let ort = OrtOptions {
        dylib: repo_root().join(&args.ort_dylib),
        intra_op_threads: 1,
        allow_spinning: args.allow_spinning,
    };
    let mut npz = backend::load(
        Backend::Npz,
        &repo.join("digits-mlp-npz/1/model.npz"),
        1,
        &ort,
    )?;
    let mut onnx = backend::load(
        Backend::Onnx,
        &repo.join("digits-mlp/1/model.onnx"),
        1,
        &ort,
    )?;

    println!("# mlmesh-bench inference");
    println!(
        "model: digits MLP (64 → 32 → 10, scikit-learn MLPClassifier); mlmesh serves it as .npz (ndarray) and ONNX (ONNX Runtime, 1 intra-op thread, allow_spinning {}), MLServer {} the same fitted estimator (mlserver-sklearn); {} s per cell and target in {} alternating rounds; {} cores",
        args.allow_spinning,
        if ml.is_some() {
            "serves"
        } else {
            "(not installed: `make mlserver`) would serve"
        },
        args.duration,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "service ready {:.0} ms after spawn (7 demo models loaded)",
        svc.started_in.as_secs_f64() * 1e3
    );
    println!();
    println!(
        "| rows/request | clients | target | requests/s | predictions/s | p50 ms | p99 ms | vs MLServer (req/s) |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");

    let mut cells: Vec<(usize, usize)> = args.concurrency.iter().map(|&c| (1, c)).collect();
    cells.push((10, 1));
    cells.push((args.big_batch, 2));
    let slice = args.duration / args.rounds.max(1) as f64;
    for (n, c) in cells {
        let mut targets = vec![
            Target::Floor("floor: ndarray in-process"),
            Target::Floor("floor: ONNX Runtime in-process"),
            Target::Grpc(
                "mlmesh .npz",
                addr.clone(),
                "digits-mlp-npz",
                "probabilities",
            ),
            Target::Grpc("mlmesh ONNX", addr.clone(), "digits-mlp", "probabilities"),
        ];
        if let Some(m) = &ml {
            targets.push(Target::Grpc(
                "MLServer (sklearn)",
                m.grpc.to_string(),
                "digits-mlp",
                "predict_proba",
            ));
        }
        let mut per: Vec<Vec<Stats>> = targets.iter().map(|_| Vec::new()).collect();
        for round in 0..args.rounds.max(1) {
            let warm = if round == 0 { 1.0 } else { 0.2 };
            for (k, t) in targets.iter().enumerate() {
                let s = match t {
                    Target::Floor(l) if l.contains("ndarray") => {
                        tokio::task::block_in_place(|| {
                            floor(npz.runners[0].as_mut(), &rows, n, slice, warm)
                        })?
                    }
                    Target::Floor(_) => tokio::task::block_in_place(|| {
                        floor(onnx.runners[0].as_mut(), &rows, n, slice, warm)
                    })?,
                    Target::Grpc(_, a, model, output) => {
                        drive((a, model, output), &rows, c, n, slice, warm).await?
                    }
                };
                per[k].push(s);
            }
        }
        let ml_rps = ml.as_ref().map(|_| {
            median(
                per[per.len() - 1]
                    .iter()
                    .map(|s| s.texts_per_sec / n as f64)
                    .collect(),
            )
        });
        for (t, rounds) in targets.iter().zip(&per) {
            let rps = median(rounds.iter().map(|s| s.texts_per_sec / n as f64).collect());
            let pps = median(rounds.iter().map(|s| s.texts_per_sec).collect());
            let p = pooled(rounds);
            let clients = if matches!(t, Target::Floor(_)) { 1 } else { c };
            let vs = match (ml_rps, t) {
                (Some(m), Target::Grpc(..)) if m > 0.0 => format!("{:.1}×", rps / m),
                _ => String::new(),
            };
            println!(
                "| {n} | {clients} | {} | {rps:.0} | {pps:.0} | {} | {} | {vs} |",
                t.label(),
                ms(p.p50),
                ms(p.p99)
            );
        }
    }

    println!();
    let npz_load = load_time(&addr, "digits-mlp-npz").await?;
    let onnx_load = load_time(&addr, "digits-mlp").await?;
    println!(
        "model load (RepositoryModelUnload + RepositoryModelLoad, warm-up run included, median of 5): digits-mlp-npz {} ms, digits-mlp (ONNX) {} ms",
        ms(npz_load),
        ms(onnx_load)
    );
    if let Some((rss, hwm)) = rss_kib(svc.child.id()) {
        println!(
            "service RSS after the run: {:.0} MB (peak {:.0} MB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    drop(svc);
    memory().await
}

async fn memory() -> anyhow::Result<()> {
    let per_onnx = rss_per_model("digits-mlp").await?;
    let per_npz = rss_per_model("digits-mlp-npz").await?;
    let per_iris = rss_per_model("iris-logreg").await?;
    println!(
        "RSS added per loaded model (19 extra copies): digits-mlp ONNX {per_onnx:.2} MB, iris-logreg ONNX {per_iris:.2} MB, digits-mlp-npz {per_npz:.2} MB"
    );
    Ok(())
}
