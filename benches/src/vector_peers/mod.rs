//! `mlmesh-bench vector-peers`: vector search against the engines a
//! platform team would deploy instead, on the same vectors and queries in
//! one run: faiss HNSW in process and a Qdrant server over gRPC.
//!
//! 1. Vectors: MiniLM embeddings of real passages (or the clustered set).
//! 2. Reference answers: exact top-10 by faiss `IndexFlatIP`.
//! 3. Each engine is loaded with the same HNSW parameters (m, ef_construct),
//!    then its recall@10 is measured at rising search breadth `ef`; each is
//!    then timed at the smallest `ef` that reaches `--recall` (equal recall,
//!    not equal `ef`: the engines' graphs differ).
//! 4. Timed rounds alternate the engines (order rotating per round) at each
//!    client count; QPS and latencies are medians over rounds.
//!
//! The service and Qdrant get one load generator: generated tonic clients,
//! one connection per client, `--batch` queries per call (1: Search /
//! Query; more: SearchBatch / QueryBatch, which spreads the network hop over
//! the batch). faiss runs in a Python child, one thread per client calling
//! `search` on as many queries (one OpenMP thread per call, the GIL released
//! while searching): no network hop.

pub(crate) mod client;
pub mod corpus;
mod engines;

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, ensure};
use clap::Parser;
use mlmesh_tests::{TempDir, repo_root};

use self::{
    client::K,
    engines::{Engine, Hnsw, Loaded, Python},
};
use crate::median;

#[derive(Parser)]
pub struct VectorPeersArgs {
    /// `docs` (MiniLM embeddings of `--corpus`) or `clustered` (synthetic).
    #[arg(long, default_value = "docs")]
    dataset: String,
    /// Passages, one JSON object with a "text" per line
    /// (benches/peers/fetch-doc-corpus.sh makes it).
    #[arg(long, default_value = ".cache/mlmesh/corpus/docs.jsonl")]
    corpus: PathBuf,
    /// Vectors in the collection.
    #[arg(long, default_value_t = 100_000)]
    points: usize,
    /// Held-out queries (recall is measured on all of them).
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Engines, comma-separated, from `mlmesh`, `mlmesh-int8`, `faiss`,
    /// `qdrant`, `qdrant-int8` (`-int8`: the collection quantized to bytes,
    /// searches rescored with the originals).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "mlmesh,mlmesh-int8,faiss,qdrant,qdrant-int8"
    )]
    engines: Vec<String>,
    /// Extra settings for the mlmesh service, `KEY=VALUE`, comma-separated
    /// (e.g. `MLMESH_VECTOR__SEGMENTS=1`).
    #[arg(long, value_delimiter = ',')]
    mlmesh_env: Vec<String>,
    /// The Qdrant server binary (built from its source; see
    /// docs/benchmarks.md). Without it Qdrant is left out, with a note.
    #[arg(long, env = "MLMESH_BENCH_QDRANT_BIN")]
    qdrant_bin: Option<PathBuf>,
    /// Python with faiss on `--faiss-path` (make faiss installs it).
    #[arg(long, default_value = "python3")]
    python: String,
    #[arg(long, default_value = ".cache/mlmesh/py/faiss")]
    faiss_path: PathBuf,
    /// Concurrent clients, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    clients: Vec<usize>,
    /// Queries per call, comma-separated (the vector-search service takes
    /// at most `vector.max_batch_searches`, 64 by default, per call).
    #[arg(long, value_delimiter = ',', default_value = "1")]
    batch: Vec<usize>,
    /// Recall@10 every engine must reach; each is timed at the smallest
    /// `ef` that reaches it.
    #[arg(long, default_value_t = 0.95)]
    recall: f64,
    /// Search breadths tried, rising, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,16,24,32,48,64,96,128,192,256,384,512"
    )]
    efs: Vec<u32>,
    /// HNSW edges per node, every engine.
    #[arg(long, default_value_t = 16)]
    m: u32,
    /// HNSW build breadth, every engine.
    #[arg(long, default_value_t = 100)]
    ef_construct: u32,
    /// Seconds per engine, client count and round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Rounds (engines alternate within each); medians reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn recall(found: &[Vec<u64>], truth: &[Vec<u64>]) -> f64 {
    let hit: usize = found
        .iter()
        .zip(truth)
        .map(|(f, t)| f.iter().filter(|id| t.contains(id)).count())
        .sum();
    hit as f64 / (truth.len() * K) as f64
}

pub async fn run(args: VectorPeersArgs) -> anyhow::Result<()> {
    ensure!(
        args.points > 0
            && args.queries > 0
            && !args.clients.contains(&0)
            && !args.batch.contains(&0)
            && !args.efs.is_empty(),
        "--points, --queries, --clients, --batch and --efs must be positive"
    );
    for e in &args.engines {
        ensure!(
            matches!(
                e.as_str(),
                "mlmesh" | "mlmesh-int8" | "faiss" | "qdrant" | "qdrant-int8"
            ),
            "unknown engine {e:?}: mlmesh, mlmesh-int8, faiss, qdrant or qdrant-int8"
        );
    }
    let mlmesh_env = crate::env_pairs("--mlmesh-env", &args.mlmesh_env)?;
    let root = repo_root();
    let python = Python {
        exe: args.python.clone(),
        path: root.join(&args.faiss_path),
    };
    let faiss_version = python.version()?;
    let v = match args.dataset.as_str() {
        "docs" => corpus::embedded(&root.join(&args.corpus), args.points, args.queries).await?,
        "clustered" => corpus::clustered(args.points, args.queries, 384, 100),
        other => bail!("unknown --dataset {other:?}: docs or clustered"),
    };
    let hnsw = Hnsw {
        m: args.m,
        ef_construct: args.ef_construct,
    };
    println!("# mlmesh-bench vector-peers");
    println!(
        "{} vectors and {} held-out queries: {}; cosine; top-{K}; HNSW m {} ef_construct {} on every engine; {} cores",
        v.data.len(),
        v.queries.len(),
        v.label,
        hnsw.m,
        hnsw.ef_construct,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let dir = TempDir::new("bench-vector-peers");
    let (data_file, query_file) = v.write(dir.path())?;
    let truth = python.truth(&data_file, &query_file, v.dim, dir.path())?;
    println!("reference: exact top-{K} by faiss {faiss_version} IndexFlatIP");

    // Declared before the engines, so the services stop before their data
    // folders go.
    let mut folders = Vec::new();
    let mut engines: Vec<(Engine, Loaded)> = Vec::new();
    for e in &args.engines {
        match e.as_str() {
            "mlmesh" | "mlmesh-int8" => {
                let folder = TempDir::new("bench-vector-peers-data");
                let loaded =
                    Engine::mlmesh(&v, hnsw, e.ends_with("-int8"), &mlmesh_env, &folder).await?;
                engines.push(loaded);
                folders.push(folder);
            }
            "faiss" => {
                engines.push(Engine::faiss(
                    python.clone(),
                    &data_file,
                    &query_file,
                    v.dim,
                    hnsw,
                    dir.path(),
                )?);
            }
            _ => match &args.qdrant_bin {
                Some(bin) => {
                    let qdir = dir.path().join(e);
                    std::fs::create_dir_all(&qdir)?;
                    let version = std::process::Command::new(bin).arg("--version").output()?;
                    println!("{e}: {}", String::from_utf8_lossy(&version.stdout).trim());
                    engines.push(Engine::qdrant(bin, &v, hnsw, e.ends_with("-int8"), &qdir).await?);
                }
                None => println!(
                    "qdrant: SKIPPED (no --qdrant-bin / MLMESH_BENCH_QDRANT_BIN; see docs/benchmarks.md for building it)"
                ),
            },
        }
    }

    println!();
    println!("## Loading");
    println!();
    println!("| engine | load s | index s | memory added MB | MB per million vectors |");
    println!("|---|---:|---:|---:|---:|");
    for (e, l) in &engines {
        let mb = l.added_kib.map(|k| k as f64 / 1024.0);
        println!(
            "| {} | {:.1} | {:.1} | {} | {} |",
            e.name(),
            l.load_secs,
            l.index_secs,
            mb.map_or("?".into(), |m| format!("{m:.0}")),
            mb.map_or("?".into(), |m| format!(
                "{:.0}",
                m * 1e6 / v.data.len() as f64
            )),
        );
    }

    println!();
    println!("## Recall@{K} by search breadth");
    println!();
    let mut chosen = Vec::new();
    for (e, _) in &engines {
        let mut line = Vec::new();
        let mut pick = None;
        for &ef in &args.efs {
            let r = recall(&e.answers(&v.queries, ef, dir.path()).await?, &truth);
            line.push(format!("ef {ef}: {r:.3}"));
            if r >= args.recall {
                pick = Some((ef, r));
                break;
            }
        }
        println!("- {}: {}", e.name(), line.join(", "));
        let Some(p) = pick else {
            bail!(
                "{} does not reach recall@{K} {} at ef {:?}",
                e.name(),
                args.recall,
                args.efs
            );
        };
        chosen.push(p);
    }

    println!();
    println!(
        "## Throughput at recall@{K} ≥ {} ({} rounds of {} s, engines alternating)",
        args.recall, args.rounds, args.duration
    );
    println!();
    println!(
        "| clients | queries per call | engine | ef | recall@{K} | QPS | p50 ms per call | p99 ms per call |"
    );
    println!("|---:|---:|---|---:|---:|---:|---:|---:|");
    let queries = Arc::new(v.queries.clone());
    let mut ratios = Vec::new();
    let runs = args
        .clients
        .iter()
        .flat_map(|&c| args.batch.iter().map(move |&b| (c, b)));
    for (clients, batch) in runs {
        // A short warm-up per engine (connections, caches).
        for (i, (e, _)) in engines.iter().enumerate() {
            e.round(&queries, clients, 0.5, chosen[i].0, batch).await?;
        }
        let mut rounds: Vec<Vec<crate::Stats>> = engines.iter().map(|_| Vec::new()).collect();
        for r in 0..args.rounds.max(1) {
            for k in 0..engines.len() {
                let i = (k + r) % engines.len();
                let s = engines[i]
                    .0
                    .round(&queries, clients, args.duration, chosen[i].0, batch)
                    .await?;
                rounds[i].push(s);
            }
        }
        for (i, (e, _)) in engines.iter().enumerate() {
            let med = |f: &dyn Fn(&crate::Stats) -> f64| median(rounds[i].iter().map(f).collect());
            println!(
                "| {clients} | {batch} | {} | {} | {:.3} | {:.0} | {:.3} | {:.3} |",
                e.name(),
                chosen[i].0,
                chosen[i].1,
                med(&|s| s.texts_per_sec),
                med(&|s| s.p50.as_secs_f64() * 1e3),
                med(&|s| s.p99.as_secs_f64() * 1e3),
            );
        }
        // Each mlmesh variant against each peer: the median of the rounds'
        // ratios (both measured in the same round).
        for (m, (me, _)) in engines.iter().enumerate() {
            if !matches!(me, Engine::Mlmesh { .. }) {
                continue;
            }
            for (p, (pe, _)) in engines.iter().enumerate() {
                if matches!(pe, Engine::Mlmesh { .. }) {
                    continue;
                }
                let r = median(
                    rounds[m]
                        .iter()
                        .zip(&rounds[p])
                        .map(|(a, b)| a.texts_per_sec / b.texts_per_sec)
                        .collect(),
                );
                ratios.push(format!(
                    "- {clients} clients, {batch} per call: {} ÷ {}: **{r:.2}×** QPS",
                    me.name(),
                    pe.name()
                ));
            }
        }
    }
    println!();
    println!("## Ratios (median over rounds)");
    println!();
    for r in ratios {
        println!("{r}");
    }
    println!();
    for (e, _) in &engines {
        if let Some(rss) = e.rss_kib() {
            println!("{} RSS at the end: {:.0} MB", e.name(), rss as f64 / 1024.0);
        }
    }
    Ok(())
}
