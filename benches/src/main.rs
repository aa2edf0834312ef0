//! `mlmesh-bench`: drives mlmesh services over real gRPC with N concurrent
//! clients and, in the same run, measures the in-process floor (ONNX Runtime
//! called directly) on the same texts and batch sizes.
//!
//! `mlmesh-bench embed` starts the release `mlmesh-embedding` binary as a
//! child process on 127.0.0.1:0 (or uses `--addr`), so the figures include
//! the gRPC stack, the batching queue and a real loopback socket, and the
//! process's readiness time and RSS are measured too.
//!
//! `mlmesh-bench vector` does the same for the vector-search service against
//! an exact in-process scan (see [`vector`]), and `mlmesh-bench gateway`
//! measures the gateway hop against calling the services directly (see
//! [`gateway`]). `mlmesh-bench inference` measures the inference service
//! against the in-process floor and MLServer (see [`inference`]).

mod codec;
mod console;
mod embed_memory;
mod embed_peers;
mod front_door;
mod gateway;
mod inference;
mod peer;
mod proxy;
mod quantize;
mod registry;
mod retrieval;
mod soak;
mod validation;
mod vector;
mod vector_peers;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use mlmesh_embedding::{
    engine::{
        model::ModelFolder,
        runner::{Runner, init_runtime},
    },
    settings::{DEFAULT_MODEL_DIR, DEFAULT_MODEL_NAME, DEFAULT_ORT_DYLIB},
};
use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::Service;
use tokenizers::TruncationDirection;

#[derive(Parser)]
#[command(name = "mlmesh-bench", about = "Load generator for mlmesh services")]
struct Cli {
    #[command(subcommand)]
    workload: Workload,
}

#[derive(Subcommand)]
enum Workload {
    /// Embed: service over gRPC vs. ONNX Runtime in-process.
    Embed(EmbedArgs),
    /// Vector search: service over gRPC vs. an exact in-process scan.
    Vector(vector::VectorArgs),
    /// Embedding memory: resident memory one model run adds, by shape.
    EmbedMemory(embed_memory::EmbedMemoryArgs),
    /// Embeddings: the service vs. text-embeddings-inference, same model.
    EmbedPeers(embed_peers::EmbedPeersArgs),
    /// Vector search vs. faiss HNSW and a Qdrant server at equal recall.
    VectorPeers(vector_peers::VectorPeersArgs),
    /// Retrieval quality and latency of dense, sparse (BM25) and hybrid search.
    Retrieval(retrieval::RetrievalArgs),
    /// Gateway: embed and search through the gateway vs. the services directly.
    Gateway(gateway::GatewayArgs),
    /// Inference: the service vs. the in-process floor and MLServer.
    Inference(inference::InferenceArgs),
    /// Proxy: the gateway forwarding ModelInfer vs. nginx and HAProxy in
    /// front of the same replica, all driven by h2load.
    Proxy(proxy::ProxyArgs),
    /// Registry: artifact upload/download vs. cp + sha256sum; alias move → inference.
    Registry(registry::RegistryArgs),
    /// Soak: many concurrent callers through the gateway, a probe beside
    /// them, replicas killed half way; every answer checked.
    Soak(soak::SoakArgs),
    /// Codec: the element walk before every decode vs. prost's decode alone.
    Codec(codec::CodecArgs),
    /// Validation: the gate's overhead on alias moves; a suite's run time.
    Validation(validation::ValidationArgs),
    /// Console: the live overview's CPU cost at idle; the Models page
    /// with 10,000 versions vs. the registry's own call.
    Console(console::ConsoleArgs),
    /// Quantize: MiniLM converted and quantized, fp32 vs int8 served side
    /// by side (quality against sentence-transformers, batch-32 speed).
    Quantize(quantize::QuantizeArgs),
}

#[derive(Parser)]
struct EmbedArgs {
    /// Concurrent clients, comma-separated (one connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    concurrency: Vec<usize>,
    /// Texts per request, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,32")]
    batch: Vec<usize>,
    /// Seconds of measurement per cell and side (after 1 s of warm-up),
    /// split into `--rounds` alternating raw / service slices.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Alternating raw/service slices per cell: drift on a shared machine
    /// then hits both sides alike. Figures are medians over rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Use a running service instead of starting one.
    #[arg(long)]
    addr: Option<String>,
    /// Model folder for the in-process baseline.
    #[arg(long, default_value = DEFAULT_MODEL_DIR)]
    model_dir: PathBuf,
    /// ONNX Runtime library.
    #[arg(long, default_value = DEFAULT_ORT_DYLIB)]
    ort_dylib: PathBuf,
    /// Intra-op threads of the started service.
    #[arg(long, default_value_t = 2)]
    intra_op_threads: usize,
    /// ONNX Runtime idle spinning in the started service
    /// (`embedding.allow_spinning`). The floor always runs ONNX Runtime's
    /// defaults (spinning on, its own thread count, the unmodified file).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    allow_spinning: bool,
    /// Arena shrinkage after each run in the started service
    /// (`embedding.shrink_arena`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    shrink_arena: bool,
    /// ONNX Runtime's CPU arena in the started service
    /// (`embedding.cpu_arena`).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cpu_arena: bool,
    /// Texts: `short` (16 short sentences) or `mixed` (3–40 words each).
    #[arg(long, default_value = "short")]
    texts: String,
}

/// Short sentences, as in a typical semantic-search query load.
pub(crate) const TEXTS: &[&str] = &[
    "How do I reset my password?",
    "The quick brown fox jumps over the lazy dog.",
    "Best practices for deploying gRPC services on Kubernetes.",
    "What is the capital of France?",
    "A man is playing a guitar on stage.",
    "Vector search finds the nearest neighbours of a query embedding.",
    "The weather is lovely today.",
    "Rust guarantees memory safety without a garbage collector.",
    "Where can I find the invoice for my last order?",
    "Transformers changed natural language processing.",
    "She sold seashells by the seashore.",
    "Latency matters more than throughput for interactive search.",
    "Please summarise this document in three sentences.",
    "The cat sat on the mat and purred.",
    "Kubernetes schedules pods onto nodes.",
    "Embeddings map text to points in a vector space.",
];

/// `mixed` texts: 3 to 40 words each, deterministic.
fn mixed_text(i: usize) -> String {
    const WORDS: &[&str] = &[
        "model",
        "serving",
        "latency",
        "vector",
        "search",
        "the",
        "of",
        "cluster",
        "query",
        "batch",
        "embedding",
        "token",
        "gateway",
        "replica",
        "memory",
        "budget",
        "a",
        "fast",
        "slow",
        "quick",
    ];
    let n = 3 + (i * 7919) % 38;
    (0..n)
        .map(|k| WORDS[(i * 31 + k * 17) % WORDS.len()])
        .collect::<Vec<_>>()
        .join(" ")
}

static MIXED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn batch_of(size: usize, offset: usize) -> Vec<String> {
    let mixed = MIXED.load(std::sync::atomic::Ordering::Relaxed);
    (0..size)
        .map(|i| {
            if mixed {
                mixed_text(offset + i)
            } else {
                TEXTS[(offset + i) % TEXTS.len()].to_owned()
            }
        })
        .collect()
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_secs(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .unwrap_or(0.0)
}

struct Stats {
    lat: Vec<Duration>,
    texts_per_sec: f64,
    p50: Duration,
    p95: Duration,
    p99: Duration,
    requests: usize,
}

fn stats(mut lat: Vec<Duration>, texts: usize, elapsed: Duration) -> Stats {
    lat.sort();
    let q = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        lat: lat.clone(),
        texts_per_sec: texts as f64 / elapsed.as_secs_f64(),
        p50: q(0.50),
        p95: q(0.95),
        p99: q(0.99),
        requests: lat.len(),
    }
}

/// The floor: tokenize + one ONNX Runtime run + pooling, sequentially, in
/// this process, on the same texts and batch size.
fn raw(
    runner: &mut Runner,
    folder: &ModelFolder,
    batch: usize,
    secs: f64,
    warm_secs: f64,
) -> anyhow::Result<Stats> {
    let run_once = |runner: &mut Runner, offset: usize| -> anyhow::Result<()> {
        let toks: Vec<Vec<i64>> = batch_of(batch, offset)
            .iter()
            .enumerate()
            .map(|(i, t)| {
                folder
                    .tokenize(t, i, Some(TruncationDirection::Right))
                    .map(|t| t.ids)
            })
            .collect::<Result<_, _>>()?;
        let seqs: Vec<&[i64]> = toks.iter().map(Vec::as_slice).collect();
        let out = runner.run(&seqs)?;
        anyhow::ensure!(out.len() == batch);
        Ok(())
    };
    let warm = Instant::now();
    let mut i = 0;
    while warm.elapsed().as_secs_f64() < warm_secs {
        run_once(runner, i)?;
        i += 1;
    }
    let mut lat = Vec::new();
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        let t = Instant::now();
        run_once(runner, i)?;
        lat.push(t.elapsed());
        i += 1;
    }
    let n = lat.len();
    Ok(stats(lat, n * batch, start.elapsed()))
}

/// `conns.len()` callers, each with its own connection, in a closed loop
/// for `secs`: `call(conn, i)` makes the i-th call and hands the connection
/// back. Every call's latency; throughput counts calls.
async fn closed_loop<C, F, Fut>(conns: Vec<C>, secs: f64, call: F) -> anyhow::Result<Stats>
where
    C: Send + 'static,
    F: Fn(C, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<C>> + Send,
{
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in conns.into_iter().enumerate() {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            // Callers start at different inputs.
            let mut i = k * 31;
            while start.elapsed().as_secs_f64() < secs {
                let t0 = Instant::now();
                c = call(c, i).await?;
                lat.push(t0.elapsed());
                i += 1;
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let n = lat.len();
    Ok(stats(lat, n, start.elapsed()))
}

/// `KEY=VALUE` pairs (a bench's `--env`-style flags).
fn env_pairs(flag: &str, pairs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    pairs
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("{flag} {kv:?} is not KEY=VALUE"))
        })
        .collect()
}

async fn service(
    addr: &str,
    concurrency: usize,
    batch: usize,
    secs: f64,
    warm_secs: f64,
) -> anyhow::Result<Stats> {
    let mut clients = Vec::new();
    for _ in 0..concurrency {
        clients.push(
            EmbeddingServiceClient::connect(addr.to_owned())
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    let warmup = Duration::from_secs_f64(warm_secs);
    let measure = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for (k, mut c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = k * 7;
            loop {
                let now = t0.elapsed();
                if now >= warmup + measure {
                    break;
                }
                let req = EmbedRequest {
                    inputs: batch_of(batch, i),
                    ..Default::default()
                };
                let t = Instant::now();
                let r = c.embed(req).await?;
                let d = t.elapsed();
                anyhow::ensure!(r.into_inner().embeddings.len() == batch);
                // Only calls that started inside the window count.
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
    let n = lat.len();
    Ok(stats(lat, n * batch, measure))
}

/// Latency percentiles over all rounds' calls together.
fn pooled(rounds: &[Stats]) -> Stats {
    let lat: Vec<Duration> = rounds.iter().flat_map(|r| r.lat.iter().copied()).collect();
    let n = lat.len();
    stats(lat, n, Duration::from_secs(1))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut workload = Box::pin(async move {
        match cli.workload {
            Workload::Embed(args) => embed(args).await,
            Workload::Vector(args) => vector::run(args).await,
            Workload::VectorPeers(args) => vector_peers::run(args).await,
            Workload::Retrieval(args) => retrieval::run(args).await,
            Workload::EmbedPeers(args) => embed_peers::run(args).await,
            Workload::EmbedMemory(args) => embed_memory::run(args).await,
            Workload::Gateway(args) => gateway::run(args).await,
            Workload::Inference(args) => inference::run(args).await,
            Workload::Proxy(args) => proxy::run(args).await,
            Workload::Registry(args) => registry::run(args).await,
            Workload::Validation(args) => validation::run(args).await,
            Workload::Quantize(args) => quantize::run(args).await,
            Workload::Console(args) => console::run(args).await,
            Workload::Soak(args) => soak::run(args).await,
            Workload::Codec(args) => {
                codec::run(args);
                Ok(())
            }
        }
    });
    tokio::select! {
        r = &mut workload => r,
        () = mlmesh_runtime::shutdown::signal() => {
            // Dropping the workload drops the services it started, which
            // kills them; without this a SIGTERM to the bench left them
            // running. Exit at once: measuring threads may still be busy.
            drop(workload);
            eprintln!("stopped by a signal; the services this run started were stopped");
            std::process::exit(130);
        }
    }
}

async fn embed(args: EmbedArgs) -> anyhow::Result<()> {
    if args.concurrency.contains(&0) || args.batch.contains(&0) {
        bail!("--concurrency and --batch values must be at least 1");
    }
    match args.texts.as_str() {
        "short" => {}
        "mixed" => MIXED.store(true, std::sync::atomic::Ordering::Relaxed),
        other => bail!("--texts is short or mixed, not {other:?}"),
    }

    // Start the service first: its readiness time is one of the figures.
    let started = match &args.addr {
        Some(_) => None,
        None => Some(Service::start(
            "mlmesh-embedding",
            &[
                (
                    "MLMESH_EMBEDDING__INTRA_OP_THREADS",
                    args.intra_op_threads.to_string(),
                ),
                (
                    "MLMESH_EMBEDDING__ALLOW_SPINNING",
                    args.allow_spinning.to_string(),
                ),
                (
                    "MLMESH_EMBEDDING__SHRINK_ARENA",
                    args.shrink_arena.to_string(),
                ),
                ("MLMESH_EMBEDDING__CPU_ARENA", args.cpu_arena.to_string()),
                (
                    "MLMESH_TELEMETRY__LOG_LEVEL",
                    "warn,mlmesh_runtime=info".into(),
                ),
            ],
        )),
    };
    let addr = match (&args.addr, &started) {
        (Some(a), _) => a.clone(),
        (None, Some(s)) => format!("http://{}", s.addr),
        (None, None) => unreachable!("one of them is set"),
    };

    let env = init_runtime(&args.ort_dylib)?;
    let folder = ModelFolder::load(DEFAULT_MODEL_NAME, &args.model_dir)?;
    let mut runner = Runner::ort_defaults(&env, &folder)?;

    println!("# mlmesh-bench embed");
    println!(
        "model {DEFAULT_MODEL_NAME} (int8), service: intra_op_threads {}, allow_spinning {}, shrink_arena {}, cpu_arena {}; floor: ONNX Runtime defaults on the unmodified file; texts {}; {} s per cell and side in {} alternating rounds, {} cores",
        args.intra_op_threads,
        args.allow_spinning,
        args.shrink_arena,
        args.cpu_arena,
        args.texts,
        args.duration,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let Some(s) = &started {
        println!(
            "service ready (listening, health SERVING) {:.0} ms after spawn",
            s.started_in.as_secs_f64() * 1e3
        );
    }
    println!();
    println!(
        "| batch | clients | raw texts/s | service texts/s | ratio | raw p50 ms | svc p50 ms | svc p95 ms | svc p99 ms | requests | svc p50 − raw p50 ms | svc CPU s / 1000 texts |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let pid = started.as_ref().map(|s| s.child.id());
    let slice = args.duration / args.rounds.max(1) as f64;
    for &batch in &args.batch {
        for &c in &args.concurrency {
            let (mut raw_rounds, mut svc_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let (mut svc_cpu, mut svc_texts) = (0.0, 0usize);
            for round in 0..args.rounds.max(1) {
                let warm = if round == 0 { 1.0 } else { 0.2 };
                let r =
                    tokio::task::block_in_place(|| raw(&mut runner, &folder, batch, slice, warm))?;
                let cpu0 = pid.map_or(0.0, cpu_secs);
                let s = service(&addr, c, batch, slice, warm).await?;
                svc_cpu += pid.map_or(0.0, cpu_secs) - cpu0;
                // Warm-up calls also cost CPU: count every text sent.
                svc_texts += (s.texts_per_sec * (slice + warm)) as usize;
                ratios.push(s.texts_per_sec / r.texts_per_sec);
                raw_rounds.push(r);
                svc_rounds.push(s);
            }
            let r = pooled(&raw_rounds);
            let s = pooled(&svc_rounds);
            println!(
                "| {batch} | {c} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {} | {} | {:+.2} | {:.2} |",
                median(raw_rounds.iter().map(|x| x.texts_per_sec).collect()),
                median(svc_rounds.iter().map(|x| x.texts_per_sec).collect()),
                median(ratios),
                ms(r.p50),
                ms(s.p50),
                ms(s.p95),
                ms(s.p99),
                s.requests,
                (s.p50.as_secs_f64() - r.p50.as_secs_f64()) * 1e3,
                svc_cpu / (svc_texts.max(1) as f64 / 1000.0),
            );
        }
    }
    if let Some(pid) = pid {
        // What an idle service burns (spinning threads keep polling).
        let c0 = cpu_secs(pid);
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!();
        println!(
            "service CPU while idle: {:.1} % of one core (3 s after the last call)",
            (cpu_secs(pid) - c0) / 3.0 * 100.0
        );
    }
    if let Some(s) = &started
        && let Some((rss, hwm)) = rss_kib(s.child.id())
    {
        println!();
        println!(
            "service RSS after the run: {:.0} MB (peak {:.0} MB)",
            rss as f64 / 1024.0,
            hwm as f64 / 1024.0
        );
    }
    Ok(())
}
