//! `mlmesh-bench quantize`: the converter and the closed-loop quantizer on
//! the real all-MiniLM-L6-v2, then the models served side by side by one
//! embedding process — the converted fp32, our int8, and the int8 export
//! `make models` fetches (the service's default) — each judged against
//! sentence-transformers' own vectors for the 60 golden texts (held out:
//! the quantizer calibrates on `tests/data/calibration-texts.json`) and
//! timed at batch 32 in alternating rounds (median texts/s and the median
//! of per-round ratios to fp32).

use std::{path::PathBuf, time::Instant};

use anyhow::Context as _;
use clap::Parser;
use mlmesh_modelkit::quantize::{self, Options, embedding::EmbeddingBackend};
use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::{Service, TempDir, repo_root};

#[derive(Parser)]
pub struct QuantizeArgs {
    /// Seconds per model per round.
    #[arg(long, default_value_t = 4.0)]
    secs: f64,
    /// Alternating rounds.
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// The quantizer's gate (min cosine to fp32 on the calibration texts).
    #[arg(long, default_value_t = 0.99)]
    min_cosine: f64,
    /// ONNX Runtime threads of the service and the quantizer.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

fn golden() -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(
        repo_root().join("services/embedding/tests/data/minilm-golden.json"),
    )?)?;
    v["items"]
        .as_array()
        .context("items")?
        .iter()
        .map(|i| {
            Ok((
                i["text"].as_str().context("text")?.to_owned(),
                i["embedding"]
                    .as_array()
                    .context("embedding")?
                    .iter()
                    .map(|x| x.as_f64().unwrap_or_default() as f32)
                    .collect(),
            ))
        })
        .collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut x, mut y) = (0.0f64, 0.0f64, 0.0f64);
    for (p, q) in a.iter().zip(b) {
        d += f64::from(*p) * f64::from(*q);
        x += f64::from(*p).powi(2);
        y += f64::from(*q).powi(2);
    }
    d / (x.sqrt() * y.sqrt()).max(1e-30)
}

pub async fn run(args: QuantizeArgs) -> anyhow::Result<()> {
    let root = repo_root();
    let ck = root.join(".cache/mlmesh/models/all-MiniLM-L6-v2-checkpoint");
    let default_int8 = root.join(".cache/mlmesh/models/all-MiniLM-L6-v2");
    anyhow::ensure!(ck.is_dir(), "{} is missing: run make models", ck.display());
    let work = TempDir::new("bench-quantize");
    let fp32 = work.path().join("fp32");
    let int8 = work.path().join("int8");

    println!("# mlmesh-bench quantize");
    let t = Instant::now();
    let c = mlmesh_modelkit::convert::convert(&ck, &fp32)?;
    println!(
        "convert: {:.1} s, {} parameters, model.onnx {:.1} MB",
        t.elapsed().as_secs_f64(),
        c.parameters,
        c.model_bytes as f64 / 1e6
    );
    let texts = quantize::embedding::calibration_texts(&std::fs::read(
        root.join("tests/data/calibration-texts.json"),
    )?)?;
    let t = Instant::now();
    let (src, scratch) = (fp32.clone(), work.path().join("scratch"));
    let (min, threads) = (args.min_cosine, args.threads);
    let outcome = tokio::task::spawn_blocking(move || {
        let model = mlmesh_modelkit::onnx::decode(&std::fs::read(src.join("model.onnx"))?)?;
        let backend = EmbeddingBackend::new(&src, &texts, threads, &scratch)?;
        let options = Options {
            gate: quantize::Gate::Cosine { min },
            ..Options::default()
        };
        anyhow::Ok(quantize::quantize(model, &backend, &options, |_| {})?)
    })
    .await??;
    quantize::save(
        &fp32,
        std::path::Path::new("model.onnx"),
        &int8,
        &outcome,
        serde_json::Map::new(),
    )?;
    println!(
        "quantize: {:.1} s; all {} nodes int8: min cosine {:.6} to fp32 on {} calibration texts; kept fp32: {:?}; result {:.6}; quantizer's own timing {:.2}× ({}); {}",
        t.elapsed().as_secs_f64(),
        outcome.eligible.len(),
        outcome.quality_all.min_cosine,
        outcome.calibration_examples,
        outcome.excluded,
        outcome.quality.min_cosine,
        outcome.speed.speedup,
        if outcome.recommended {
            "recommended"
        } else {
            "not recommended"
        },
        outcome.verdict
    );

    let models: Vec<(&str, PathBuf)> = vec![
        ("fp32", fp32.clone()),
        ("int8-mlmesh", int8.clone()),
        ("int8-default", default_int8),
    ];
    let spec = models
        .iter()
        .map(|(n, p)| format!("{n}={}", p.display()))
        .collect::<Vec<_>>()
        .join(",");
    let svc = Service::start(
        "mlmesh-embedding",
        &[
            ("MLMESH_EMBEDDING__MODELS", spec),
            (
                "MLMESH_EMBEDDING__INTRA_OP_THREADS",
                args.threads.to_string(),
            ),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ],
    );
    let addr = format!("http://{}", svc.addr);
    let golden = golden()?;
    let mut client = EmbeddingServiceClient::connect(addr.clone()).await?;
    println!(
        "\n| model | min cosine to sentence-transformers (60 held-out texts, each alone) | mean |"
    );
    println!("|---|---|---|");
    for (name, _) in &models {
        let mut cs = Vec::new();
        for (text, want) in &golden {
            let r = client
                .embed(EmbedRequest {
                    inputs: vec![text.clone()],
                    model: (*name).to_owned(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            let got = &r.embeddings.first().context("one vector")?.values;
            cs.push(cosine(got, want));
        }
        let min = cs.iter().copied().fold(f64::INFINITY, f64::min);
        let mean = cs.iter().sum::<f64>() / cs.len() as f64;
        println!("| {name} | {min:.6} | {mean:.6} |");
    }

    // Throughput at batch 32, alternating models round by round.
    let texts: Vec<String> = golden.iter().map(|g| g.0.clone()).collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); models.len()];
    for round in 0..args.rounds {
        let order: Vec<usize> = if round % 2 == 0 {
            (0..models.len()).collect()
        } else {
            (0..models.len()).rev().collect()
        };
        for m in order {
            let r = throughput(&addr, models[m].0, &texts, args.clients, args.secs).await?;
            rates[m].push(r);
        }
    }
    println!(
        "\n| model | texts/s at batch 32, {} client(s), median of {} rounds | × fp32 (median of per-round ratios) |",
        args.clients, args.rounds
    );
    println!("|---|---|---|");
    for (m, (name, _)) in models.iter().enumerate() {
        let ratios: Vec<f64> = rates[m].iter().zip(&rates[0]).map(|(a, b)| a / b).collect();
        println!(
            "| {name} | {:.1} | {:.2}× (rounds: {}) |",
            median(rates[m].clone()),
            median(ratios.clone()),
            ratios
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// Texts per second embedding batches of 32 golden texts with `model` for
/// `secs` (after half a second of warm-up), `clients` callers at once.
async fn throughput(
    addr: &str,
    model: &str,
    texts: &[String],
    clients: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let mut tasks = Vec::new();
    for k in 0..clients.max(1) {
        let mut c = EmbeddingServiceClient::connect(addr.to_owned()).await?;
        let (model, texts) = (model.to_owned(), texts.to_vec());
        tasks.push(tokio::spawn(async move {
            let batch = |i: usize| -> Vec<String> {
                (0..32)
                    .map(|j| texts[(i * 32 + j) % texts.len()].clone())
                    .collect()
            };
            let t0 = Instant::now();
            let (mut done, mut i) = (0usize, k * 5);
            let mut start = None;
            while t0.elapsed().as_secs_f64() < 0.5 + secs {
                let warm = t0.elapsed().as_secs_f64() < 0.5;
                c.embed(EmbedRequest {
                    inputs: batch(i),
                    model: model.clone(),
                    ..Default::default()
                })
                .await?;
                if !warm {
                    start.get_or_insert_with(Instant::now);
                    done += 32;
                }
                i += 1;
            }
            let took = start.map_or(1.0, |s| s.elapsed().as_secs_f64());
            anyhow::Ok(done as f64 / took)
        }));
    }
    let mut total = 0.0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total)
}
