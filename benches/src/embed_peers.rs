//! `mlmesh-bench embed-peers`: the embedding service against
//! text-embeddings-inference (TEI), serving the same model file on the same
//! machine, driven by one load generator over gRPC.
//!
//! Both are called the same way: one text per `Embed` call (TEI's gRPC
//! `tei.v1.Embed/Embed` takes one), N clients on one connection each,
//! closed loop; the servers batch concurrent calls themselves. Targets
//! alternate within each round (order rotating), figures are medians over
//! rounds; CPU per call comes from each server's `/proc/<pid>/stat`.
//!
//! Before timing, both embed the same texts and their vectors must agree
//! (cosine ≥ 0.999): same model, same pooling, same normalisation.
//!
//! Memory: afterwards both embed the same long passages (the longest of the
//! docs corpus, truncated at the model's 256 tokens) with 16 clients, and
//! each server's peak resident set (VmHWM) is reported.
//!
//! TEI is not installable here: it is built from its public source outside
//! the project (docs/benchmarks.md names the version and build settings);
//! `--tei-bin` / `MLMESH_BENCH_TEI_BIN` points at the binary.

use std::{
    path::PathBuf,
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use clap::Parser;
use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::{Service, TempDir, repo_root};
use tonic::transport::Channel;

use crate::{
    Stats, TEXTS, closed_loop, cpu_secs, env_pairs, median,
    peer::{Peer, free_port},
    rss_kib,
};

#[derive(Parser)]
pub struct EmbedPeersArgs {
    /// The `text-embeddings-router` binary (built with its `ort` backend and
    /// `grpc` feature).
    #[arg(long, env = "MLMESH_BENCH_TEI_BIN")]
    tei_bin: PathBuf,
    /// Model folder both serve (ONNX file, tokenizer, pooling config).
    #[arg(long, default_value = mlmesh_embedding::settings::DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    /// ONNX Runtime library TEI loads (the one mlmesh uses).
    #[arg(long, default_value = mlmesh_embedding::settings::DEFAULT_ORT_DYLIB)]
    ort_dylib: PathBuf,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,16")]
    clients: Vec<usize>,
    /// Seconds per target, client count and round.
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Rounds; medians reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Passages (JSON lines with "text") for the memory phase.
    #[arg(long, default_value = ".cache/mlmesh/corpus/docs.jsonl")]
    corpus: PathBuf,
    /// Long passages embedded in the memory phase.
    #[arg(long, default_value_t = 2000)]
    passages: usize,
    /// Extra settings for the mlmesh service, `KEY=VALUE`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    mlmesh_env: Vec<String>,
}

/// TEI's gRPC request and response for `tei.v1.Embed/Embed`: the field
/// names, numbers and types of its published `tei.proto` (only the fields
/// used here).
#[derive(Clone, PartialEq, prost::Message)]
struct TeiEmbedRequest {
    #[prost(string, tag = "1")]
    inputs: String,
    #[prost(bool, tag = "2")]
    truncate: bool,
    #[prost(bool, optional, tag = "3")]
    normalize: Option<bool>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TeiEmbedResponse {
    #[prost(float, repeated, tag = "1")]
    embeddings: Vec<f32>,
}

enum Client {
    Mlmesh(EmbeddingServiceClient<Channel>),
    Tei(tonic::client::Grpc<Channel>),
}

impl Client {
    async fn embed(&mut self, text: &str) -> anyhow::Result<Vec<f32>> {
        match self {
            Self::Mlmesh(c) => {
                let r = c
                    .embed(EmbedRequest {
                        inputs: vec![text.to_owned()],
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                r.embeddings
                    .into_iter()
                    .next()
                    .map(|e| e.values)
                    .context("no embedding")
            }
            Self::Tei(g) => {
                g.ready().await?;
                let r: tonic::Response<TeiEmbedResponse> = g
                    .unary(
                        tonic::Request::new(TeiEmbedRequest {
                            inputs: text.to_owned(),
                            truncate: true,
                            normalize: Some(true),
                        }),
                        http::uri::PathAndQuery::from_static("/tei.v1.Embed/Embed"),
                        tonic_prost::ProstCodec::default(),
                    )
                    .await?;
                Ok(r.into_inner().embeddings)
            }
        }
    }
}

struct Target {
    name: &'static str,
    addr: String,
    pid: u32,
    tei: bool,
}

impl Target {
    async fn client(&self) -> anyhow::Result<Client> {
        let ch = Channel::from_shared(self.addr.clone())?.connect().await?;
        Ok(if self.tei {
            Client::Tei(tonic::client::Grpc::new(ch))
        } else {
            Client::Mlmesh(EmbeddingServiceClient::new(ch))
        })
    }

    /// `clients` callers embedding `texts` (one per call) for `secs`.
    async fn round(
        &self,
        texts: &Arc<Vec<String>>,
        clients: usize,
        secs: f64,
    ) -> anyhow::Result<(Stats, f64)> {
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(self.client().await?);
        }
        let cpu0 = cpu_secs(self.pid);
        let texts = Arc::clone(texts);
        let s = closed_loop(conns, secs, move |mut c: Client, i| {
            let texts = Arc::clone(&texts);
            async move {
                let v = c.embed(&texts[i % texts.len()]).await?;
                ensure!(!v.is_empty(), "an empty vector");
                Ok(c)
            }
        })
        .await?;
        let cpu = (cpu_secs(self.pid) - cpu0) / s.requests.max(1) as f64;
        Ok((s, cpu))
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    dot / (n(a) * n(b))
}

/// The `n` longest passages of the corpus.
fn long_passages(corpus: &std::path::Path, n: usize) -> anyhow::Result<Vec<String>> {
    let mut all = crate::vector_peers::corpus::passages(corpus)?;
    all.sort_by_key(|t| std::cmp::Reverse(t.len()));
    all.truncate(n);
    ensure!(!all.is_empty(), "{} has no passages", corpus.display());
    Ok(all)
}

pub async fn run(args: EmbedPeersArgs) -> anyhow::Result<()> {
    ensure!(
        !args.clients.contains(&0) && args.rounds > 0,
        "--clients and --rounds must be positive"
    );
    let root = repo_root();
    let model_dir = root.join(&args.model_dir);
    let mut env: Vec<(String, String)> = vec![(
        "MLMESH_TELEMETRY__LOG_LEVEL".into(),
        "warn,mlmesh_runtime=info".into(),
    )];
    env.extend(env_pairs("--mlmesh-env", &args.mlmesh_env)?);
    let env: Vec<(&str, String)> = env.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
    let svc = Service::start("mlmesh-embedding", &env);

    // TEI on loopback, its defaults otherwise; no downloads (a local model
    // folder), ONNX Runtime from the same library file as mlmesh.
    let dir = TempDir::new("bench-tei");
    let port = free_port()?;
    let metrics_port = free_port()?;
    let version = Command::new(&args.tei_bin).arg("--version").output()?;
    let mut cmd = Command::new(&args.tei_bin);
    cmd.current_dir(dir.path())
        .args(["--model-id"])
        .arg(&model_dir)
        .args(["--hostname", "127.0.0.1", "--port"])
        .arg(port.port().to_string())
        .args(["--prometheus-port"])
        .arg(metrics_port.port().to_string())
        .env("ORT_DYLIB_PATH", root.join(&args.ort_dylib))
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", dir.path().join("hf"))
        .env("RUST_LOG", "warn");
    let tei = Peer::start_within(
        cmd,
        port,
        dir.path().join("tei.out"),
        Duration::from_secs(120),
    )?;

    let targets = [
        Target {
            name: "mlmesh embedding",
            addr: format!("http://{}", svc.addr),
            pid: svc.child.id(),
            tei: false,
        },
        Target {
            name: "TEI",
            addr: format!("http://{port}"),
            pid: tei.child.id(),
            tei: true,
        },
    ];
    println!("# mlmesh-bench embed-peers");
    println!(
        "model {} (the same ONNX file for both); {}; one text per call; {} s per target and round, {} rounds, {} cores",
        model_dir.display(),
        String::from_utf8_lossy(&version.stdout).trim(),
        args.duration,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Same answers first.
    let (mut a, mut b) = (targets[0].client().await?, targets[1].client().await?);
    let mut worst = 1.0f32;
    for t in TEXTS {
        let (x, y) = (a.embed(t).await?, b.embed(t).await?);
        ensure!(
            x.len() == y.len(),
            "dimensions differ: {} vs {}",
            x.len(),
            y.len()
        );
        worst = worst.min(cosine(&x, &y));
    }
    ensure!(worst >= 0.999, "the two disagree: cosine {worst}");
    println!(
        "answers agree: lowest cosine between the two on {} texts {worst:.6}",
        TEXTS.len()
    );

    let short: Arc<Vec<String>> = Arc::new(TEXTS.iter().map(|t| (*t).to_owned()).collect());
    println!();
    println!("## Short sentences");
    println!();
    println!("| clients | target | texts/s | p50 ms | p99 ms | CPU ms / text | mlmesh ÷ TEI |");
    println!("|---:|---|---:|---:|---:|---:|---:|");
    for &clients in &args.clients {
        for t in &targets {
            t.round(&short, clients, 0.5).await?;
        }
        let mut rounds: [Vec<(Stats, f64)>; 2] = [Vec::new(), Vec::new()];
        for r in 0..args.rounds {
            for k in 0..2 {
                let i = (k + r) % 2;
                rounds[i].push(targets[i].round(&short, clients, args.duration).await?);
            }
        }
        let ratio = median(
            rounds[0]
                .iter()
                .zip(&rounds[1])
                .map(|(m, t)| m.0.texts_per_sec / t.0.texts_per_sec)
                .collect(),
        );
        for (i, t) in targets.iter().enumerate() {
            let med = |f: &dyn Fn(&(Stats, f64)) -> f64| median(rounds[i].iter().map(f).collect());
            println!(
                "| {clients} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
                t.name,
                med(&|s| s.0.texts_per_sec),
                med(&|s| s.0.p50.as_secs_f64() * 1e3),
                med(&|s| s.0.p99.as_secs_f64() * 1e3),
                med(&|s| s.1 * 1e3),
                if i == 0 {
                    format!("{ratio:.2}×")
                } else {
                    String::new()
                },
            );
        }
    }

    let passages = Arc::new(long_passages(&root.join(&args.corpus), args.passages)?);
    println!();
    println!(
        "## Memory: the {} longest passages of the docs corpus, 16 clients, each once",
        passages.len()
    );
    println!();
    println!("| target | texts/s | peak RSS MB (VmHWM) | RSS 1 s after MB |");
    println!("|---|---:|---:|---:|");
    for t in &targets {
        let per = passages.len().div_ceil(16);
        let t0 = Instant::now();
        let mut tasks = Vec::new();
        for k in 0..16 {
            let mut c = t.client().await?;
            let mine: Vec<String> = passages.iter().skip(k * per).take(per).cloned().collect();
            tasks.push(tokio::spawn(async move {
                for p in mine {
                    c.embed(&p).await?;
                }
                Ok::<_, anyhow::Error>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        let secs = t0.elapsed().as_secs_f64();
        // What an idle server keeps (mlmesh gives its arena back after
        // 250 ms idle).
        tokio::time::sleep(Duration::from_secs(1)).await;
        let (rss, hwm) = rss_kib(t.pid).unwrap_or((0, 0));
        println!(
            "| {} | {:.0} | {:.0} | {:.0} |",
            t.name,
            passages.len() as f64 / secs,
            hwm as f64 / 1024.0,
            rss as f64 / 1024.0
        );
    }
    drop(tei);
    Ok(())
}
