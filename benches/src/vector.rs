//! `mlmesh-bench vector`: the vector-search service over real gRPC against an
//! exact in-process scan of the same vectors, in one run.
//!
//! For each dataset size: start the release `mlmesh-vector-search` binary on a
//! fresh data folder, bulk-upsert clustered unit vectors (upsert throughput),
//! time single-point upserts, wait for the background HNSW build, then
//! alternate rounds of exact scan (baseline, same client count as threads)
//! and gRPC search at each concurrency, and compute recall@10 of the service
//! against the exact scan's answers.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use clap::Parser;
use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use mlmesh_tests::{Service, TempDir};
use tonic::transport::Channel;

use crate::{Stats, median, ms, rss_kib, stats};

#[derive(Parser)]
pub struct VectorArgs {
    /// Dataset sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    points: Vec<usize>,
    /// Vector dimension.
    #[arg(long, default_value_t = 384)]
    dim: usize,
    /// Concurrent search clients (and baseline threads), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Seconds of search per cell and side, split into `--rounds`.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Alternating baseline / service rounds per cell; medians reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Clusters the vectors are drawn around (0: uniform random unit vectors).
    #[arg(long, default_value_t = 100)]
    clusters: usize,
    /// Held-out queries (drawn like the data), also used for recall@10.
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Points per bulk Upsert call.
    #[arg(long, default_value_t = 500)]
    upsert_batch: usize,
    /// Single-point Upsert calls timed after the bulk load.
    #[arg(long, default_value_t = 1000)]
    single_upserts: usize,
    /// HNSW search breadth (0: the engine default, ef_construct).
    #[arg(long, default_value_t = 0)]
    ef: u32,
}

const K: usize = 10;

/// xorshift64* with Box–Muller normals: reproducible without a rand crate.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
    pub(crate) fn normal(&mut self) -> f32 {
        let (u, v) = (self.next_f64().max(1e-12), self.next_f64());
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    }
}

pub(crate) fn normalize(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// `n` unit vectors around `clusters` random centres (noise of norm ≈ 0.6),
/// or uniform on the sphere when `clusters` is 0.
pub(crate) fn dataset(rng: &mut Rng, centres: &[Vec<f32>], n: usize, dim: usize) -> Vec<Vec<f32>> {
    let sigma = 0.6 / (dim as f32).sqrt();
    (0..n)
        .map(|_| {
            if centres.is_empty() {
                normalize((0..dim).map(|_| rng.normal()).collect())
            } else {
                let c = &centres[(rng.next_f64() * centres.len() as f64) as usize % centres.len()];
                normalize(c.iter().map(|x| x + sigma * rng.normal()).collect())
            }
        })
        .collect()
}

/// Exact top-K by dot product (= cosine on unit vectors).
fn exact_top(data: &[Vec<f32>], q: &[f32]) -> Vec<u64> {
    let mut best: Vec<(f32, u64)> = Vec::with_capacity(K + 1);
    for (i, v) in data.iter().enumerate() {
        let s: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
        if best.len() < K || s > best[best.len() - 1].0 {
            let at = best.partition_point(|(b, _)| *b >= s);
            best.insert(at, (s, i as u64));
            best.truncate(K);
        }
    }
    best.into_iter().map(|(_, i)| i).collect()
}

/// The baseline: `threads` threads scanning exactly for `secs`.
fn exact_scan(
    data: &Arc<Vec<Vec<f32>>>,
    queries: &Arc<Vec<Vec<f32>>>,
    threads: usize,
    secs: f64,
) -> Stats {
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let (data, queries) = (Arc::clone(data), Arc::clone(queries));
            std::thread::spawn(move || {
                let mut lat = Vec::new();
                let mut i = t * 31;
                while start.elapsed().as_secs_f64() < secs {
                    let q = &queries[i % queries.len()];
                    let t0 = Instant::now();
                    std::hint::black_box(exact_top(&data, q));
                    lat.push(t0.elapsed());
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let lat: Vec<Duration> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    let n = lat.len();
    stats(lat, n, start.elapsed())
}

fn search_request(collection: &str, q: &[f32], ef: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: collection.into(),
        vector: q.to_vec(),
        limit: K as u32,
        ef,
        ..Default::default()
    }
}

async fn grpc_search(
    addr: &str,
    collection: &str,
    queries: &Arc<Vec<Vec<f32>>>,
    clients: usize,
    secs: f64,
    ef: u32,
) -> anyhow::Result<Stats> {
    let mut conns = Vec::new();
    for _ in 0..clients {
        conns.push(VectorSearchClient::connect(addr.to_owned()).await?);
    }
    let (queries, collection) = (Arc::clone(queries), collection.to_owned());
    crate::closed_loop(conns, secs, move |mut c, i| {
        let req = search_request(&collection, &queries[i % queries.len()], ef);
        async move {
            let hits = c.search(req).await?.into_inner().hits;
            anyhow::ensure!(hits.len() == K, "expected {K} hits, got {}", hits.len());
            Ok(c)
        }
    })
    .await
}

fn num_id(n: u64) -> Option<pb::PointId> {
    Some(pb::PointId {
        kind: Some(pb::point_id::Kind::Num(n)),
    })
}

fn as_point(i: usize, v: &[f32]) -> pb::Point {
    pb::Point {
        id: num_id(i as u64),
        vector: v.to_vec(),
        payload: None,
        ..Default::default()
    }
}

pub async fn run(args: VectorArgs) -> anyhow::Result<()> {
    if args.points.contains(&0) || args.concurrency.contains(&0) || args.dim == 0 {
        bail!("--points, --concurrency and --dim must be at least 1");
    }
    println!("# mlmesh-bench vector");
    println!(
        "dimension {}, cosine, {} vectors, {} held-out queries, top-{K}, ef {}, {} s per cell and side in {} alternating rounds, {} cores",
        args.dim,
        if args.clusters == 0 {
            "uniform random unit".to_string()
        } else {
            format!("clustered ({} centres, noise norm ≈ 0.6)", args.clusters)
        },
        args.queries,
        if args.ef == 0 {
            "default".to_string()
        } else {
            args.ef.to_string()
        },
        args.duration,
        args.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let centres: Vec<Vec<f32>> = (0..args.clusters)
        .map(|_| normalize((0..args.dim).map(|_| rng.normal()).collect()))
        .collect();
    let mut summary = Vec::new();
    for &n in &args.points {
        let data = Arc::new(dataset(&mut rng, &centres, n, args.dim));
        let queries = Arc::new(dataset(&mut rng, &centres, args.queries, args.dim));
        let folder = TempDir::new("bench-vector");
        let svc = Service::start(
            "mlmesh-vector-search",
            &[
                (
                    "MLMESH_VECTOR__DATA_DIR",
                    folder.path().display().to_string(),
                ),
                (
                    "MLMESH_TELEMETRY__LOG_LEVEL",
                    "warn,mlmesh_runtime=info".into(),
                ),
            ],
        );
        let addr = format!("http://{}", svc.addr);
        let mut c: VectorSearchClient<Channel> = VectorSearchClient::connect(addr.clone())
            .await
            .context("connecting to the vector-search service")?;
        let name = "bench";
        c.create_collection(pb::CreateCollectionRequest {
            name: name.into(),
            dimension: args.dim as u32,
            distance: pb::Distance::Cosine.into(),
            hnsw: None,
            metadata: Default::default(),
            ..Default::default()
        })
        .await?;

        // Bulk load.
        let t0 = Instant::now();
        for (b, chunk) in data.chunks(args.upsert_batch).enumerate() {
            let points = chunk
                .iter()
                .enumerate()
                .map(|(j, v)| as_point(b * args.upsert_batch + j, v))
                .collect();
            c.upsert(pb::UpsertRequest {
                collection: name.into(),
                points,
            })
            .await?;
        }
        let load = t0.elapsed();

        // Single-point upserts (rewriting existing points with their own vectors).
        let mut lat = Vec::new();
        for k in 0..args.single_upserts {
            let i = (k * 7919) % n;
            let t = Instant::now();
            c.upsert(pb::UpsertRequest {
                collection: name.into(),
                points: vec![as_point(i, &data[i])],
            })
            .await?;
            lat.push(t.elapsed());
        }
        let single = stats(lat, args.single_upserts, Duration::from_secs(1));

        // Background indexing.
        let t1 = Instant::now();
        let info = loop {
            let info = c
                .get_collection(pb::GetCollectionRequest { name: name.into() })
                .await?
                .into_inner();
            if info.status() == pb::IndexStatus::Ready && t1.elapsed() > Duration::from_secs(2) {
                break info;
            }
            if t1.elapsed() > Duration::from_secs(1800) {
                bail!("collection not optimised after 30 minutes: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        let index_secs = t1.elapsed().as_secs_f64();

        // Recall@10 against the exact scan, every query once.
        let mut found = 0usize;
        for q in queries.iter() {
            let truth = exact_top(&data, q);
            let hits = c
                .search(search_request(name, q, args.ef))
                .await?
                .into_inner()
                .hits;
            found += hits
                .iter()
                .filter(|h| match h.id.as_ref().and_then(|i| i.kind.as_ref()) {
                    Some(pb::point_id::Kind::Num(id)) => truth.contains(id),
                    _ => false,
                })
                .count();
        }
        let recall = found as f64 / (queries.len() * K) as f64;

        println!();
        println!("## {n} vectors");
        println!(
            "bulk upsert: {:.0} points/s ({} points in batches of {}, {:.1} s, one client); single-point upsert p50 {} ms, p99 {} ms ({} calls, durable on return)",
            n as f64 / load.as_secs_f64(),
            n,
            args.upsert_batch,
            load.as_secs_f64(),
            ms(single.p50),
            ms(single.p99),
            single.requests
        );
        println!(
            "background optimisation done {index_secs:.1} s after the load: {} segments, {} of {} vectors in HNSW; recall@{K} {recall:.4}",
            info.segments_count, info.indexed_vectors_count, info.points_count
        );
        println!();
        println!(
            "| clients | exact scan QPS | exact p50 ms | service QPS | ratio | svc p50 ms | svc p99 ms | requests |"
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        let slice = args.duration / args.rounds.max(1) as f64;
        for &clients in &args.concurrency {
            let (mut base, mut svc_rounds, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..args.rounds.max(1) {
                let (d, q) = (Arc::clone(&data), Arc::clone(&queries));
                let b =
                    tokio::task::spawn_blocking(move || exact_scan(&d, &q, clients, slice)).await?;
                let s = grpc_search(&addr, name, &queries, clients, slice, args.ef).await?;
                ratios.push(s.texts_per_sec / b.texts_per_sec);
                base.push(b);
                svc_rounds.push(s);
            }
            let (b, s) = (crate::pooled(&base), crate::pooled(&svc_rounds));
            let svc_qps = median(svc_rounds.iter().map(|x| x.texts_per_sec).collect());
            println!(
                "| {clients} | {:.0} | {} | {:.0} | {:.1}× | {} | {} | {} |",
                median(base.iter().map(|x| x.texts_per_sec).collect()),
                ms(b.p50),
                svc_qps,
                median(ratios),
                ms(s.p50),
                ms(s.p99),
                s.requests
            );
            summary.push((n, clients, svc_qps, s.p50, recall, single.p50));
        }
        if let Some((rss, hwm)) = rss_kib(svc.child.id()) {
            println!();
            println!(
                "service RSS: {:.0} MB (peak {:.0} MB)",
                rss as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
        }
    }
    println!();
    println!("## targets");
    for (n, clients, qps, p50, recall, upsert) in summary {
        println!(
            "{n} vectors, {clients} clients: search p50 {} ms, {qps:.0} QPS, recall@{K} {recall:.3}, single upsert p50 {} ms",
            ms(p50),
            ms(upsert)
        );
    }
    Ok(())
}
