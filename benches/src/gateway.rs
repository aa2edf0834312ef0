//! `mlmesh-bench gateway`: what the gateway hop costs.
//!
//! Starts the release embedding, vector-search and gateway binaries as three
//! processes (as `make run` does), ingests a small corpus, then for each
//! concurrency runs alternating slices of, on the same texts:
//!
//! - **embed**: `Embed` on the embedding service directly (gRPC) vs.
//!   `Embed` through the gateway (gRPC) vs. `POST /v1/embeddings` through
//!   the gateway (HTTP/JSON, keep-alive);
//! - **search**: embed + vector search called directly by the client (two
//!   gRPC calls, what a client without the gateway does) vs. gateway
//!   `Search` (gRPC) vs. `POST /v1/collections/{c}/search` (HTTP/JSON).
//!
//! Reported: QPS, p50, p99 per path, the gateway/direct QPS ratio and the
//! p50 the gateway adds.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use clap::Parser;
use mlmesh_proto::{
    embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient},
    gateway::v1::{self as gw, gateway_client::GatewayClient},
    vector::v1::{SearchRequest, vector_search_client::VectorSearchClient},
};
use mlmesh_tests::{HttpClient, MeshProcesses};
use tonic::transport::Channel;

use crate::{Stats, TEXTS, median, ms, pooled, stats};

#[derive(Parser)]
pub struct GatewayArgs {
    /// Concurrent clients, comma-separated (one connection each).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Seconds of measurement per cell and path, split into `--rounds`
    /// alternating slices.
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Alternating slices per cell; figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Extra environment for the gateway process only, `KEY=VALUE`
    /// (e.g. `TOKIO_WORKER_THREADS=1`); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    gateway_env: Vec<String>,
}

const COLLECTION: &str = "bench";

/// One call of a path, by worker and call number.
trait Path: Send + Sync + 'static {
    fn call(&self, worker: usize, i: usize) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// Runs `path` with `concurrency` async workers for `secs` after `warm`.
async fn drive<P: Path>(
    path: Arc<P>,
    concurrency: usize,
    secs: f64,
    warm: f64,
) -> anyhow::Result<Stats> {
    let warmup = Duration::from_secs_f64(warm);
    let measure = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let p = Arc::clone(&path);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = w * 7;
            loop {
                let now = t0.elapsed();
                if now >= warmup + measure {
                    break;
                }
                let t = Instant::now();
                p.call(w, i).await?;
                if now >= warmup {
                    lat.push(t.elapsed());
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
    Ok(stats(lat, n, measure))
}

/// HTTP paths run on blocking threads, one keep-alive connection each.
fn drive_http(
    addr: std::net::SocketAddr,
    concurrency: usize,
    secs: f64,
    warm: f64,
    body: fn(usize) -> (String, String),
) -> anyhow::Result<Stats> {
    let warmup = Duration::from_secs_f64(warm);
    let measure = Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..concurrency)
        .map(|w| {
            std::thread::spawn(move || {
                let mut h = HttpClient::new(addr);
                let mut lat = Vec::new();
                let mut i = w * 7;
                loop {
                    let now = t0.elapsed();
                    if now >= warmup + measure {
                        break;
                    }
                    let (path, json) = body(i);
                    let t = Instant::now();
                    let (status, data) = h.request("POST", &path, &[], json.as_bytes())?;
                    anyhow::ensure!(
                        status == 200,
                        "{path}: {status} {}",
                        String::from_utf8_lossy(&data)
                    );
                    if now >= warmup {
                        lat.push(t.elapsed());
                    }
                    i += 1;
                }
                Ok::<_, anyhow::Error>(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in threads {
        lat.extend(t.join().map_err(|_| anyhow::anyhow!("worker panicked"))??);
    }
    let n = lat.len();
    Ok(stats(lat, n, measure))
}

fn text(i: usize) -> String {
    TEXTS[i % TEXTS.len()].to_owned()
}

struct DirectEmbed(Vec<EmbeddingServiceClient<Channel>>);
impl Path for DirectEmbed {
    async fn call(&self, w: usize, i: usize) -> anyhow::Result<()> {
        let r = self.0[w]
            .clone()
            .embed(EmbedRequest {
                inputs: vec![text(i)],
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(r.into_inner().embeddings.len() == 1);
        Ok(())
    }
}

struct GatewayEmbed(Vec<GatewayClient<Channel>>);
impl Path for GatewayEmbed {
    async fn call(&self, w: usize, i: usize) -> anyhow::Result<()> {
        let r = self.0[w]
            .clone()
            .embed(EmbedRequest {
                inputs: vec![text(i)],
                ..Default::default()
            })
            .await?;
        anyhow::ensure!(r.into_inner().embeddings.len() == 1);
        Ok(())
    }
}

struct DirectSearch(Vec<(EmbeddingServiceClient<Channel>, VectorSearchClient<Channel>)>);
impl Path for DirectSearch {
    async fn call(&self, w: usize, i: usize) -> anyhow::Result<()> {
        let (e, v) = &self.0[w];
        let mut vector = e
            .clone()
            .embed(EmbedRequest {
                inputs: vec![text(i)],
                ..Default::default()
            })
            .await?
            .into_inner()
            .embeddings;
        let hits = v
            .clone()
            .search(SearchRequest {
                collection: COLLECTION.into(),
                vector: vector.pop().map(|e| e.values).unwrap_or_default(),
                limit: 5,
                with_payload: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .hits;
        anyhow::ensure!(hits.len() == 5);
        Ok(())
    }
}

struct GatewaySearch(Vec<GatewayClient<Channel>>);
impl Path for GatewaySearch {
    async fn call(&self, w: usize, i: usize) -> anyhow::Result<()> {
        let hits = self.0[w]
            .clone()
            .search(gw::SearchRequest {
                collection: COLLECTION.into(),
                query: text(i),
                limit: 5,
                ..Default::default()
            })
            .await?
            .into_inner()
            .hits;
        anyhow::ensure!(hits.len() == 5);
        Ok(())
    }
}

async fn clients<T, F, Fut>(n: usize, addr: &str, connect: F) -> anyhow::Result<Vec<T>>
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<T, tonic::transport::Error>>,
{
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            connect(format!("http://{addr}"))
                .await
                .with_context(|| format!("connecting to {addr}"))?,
        );
    }
    Ok(out)
}

fn row(label: &str, s: &Stats, qps: f64, cpu_us: [f64; 2]) {
    println!(
        "| {label:<28} | {qps:>8.0} | {:>7} | {:>7} | {:>8.0} | {:>8.0} |",
        ms(s.p50),
        ms(s.p99),
        cpu_us[0],
        cpu_us[1],
    );
}

/// User + system CPU seconds of process `pid` so far (Linux `/proc`).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the `(comm)`: state is field 3; utime, stime are 14, 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) / 100.0
}

fn account(acc: &mut [f64; 2], before: [f64; 2], after: [f64; 2]) {
    for k in 0..2 {
        acc[k] += after[k] - before[k];
    }
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    println!("starting embedding, vector-search and gateway as processes…");
    let gateway_env: Vec<(String, String)> = args
        .gateway_env
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .with_context(|| format!("--gateway-env {kv:?} is not KEY=VALUE"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mesh = tokio::task::spawn_blocking(move || {
        let genv: Vec<(&str, String)> = gateway_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        MeshProcesses::start_with(
            &[(
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info,mlmesh_gateway=info".into(),
            )],
            &genv,
        )
    })
    .await?;
    let (e_addr, v_addr, g_addr) = (
        mesh.embedding.addr.to_string(),
        mesh.vector.addr.to_string(),
        mesh.gateway.addr.to_string(),
    );
    let http = mesh.gateway.http_addr.context("gateway HTTP address")?;
    let (gateway_pid, embedding_pid) = (mesh.gateway.child.id(), mesh.embedding.child.id());

    // A corpus to search: every text in a few phrasings.
    let mut g = GatewayClient::connect(format!("http://{g_addr}")).await?;
    g.create_collection(gw::CreateCollectionRequest {
        name: COLLECTION.into(),
        ..Default::default()
    })
    .await?;
    for part in 0..2 {
        let documents = (part * 200..(part + 1) * 200)
            .map(|i| gw::Document {
                id: format!("d{i}"),
                text: format!("{} (variant {i})", TEXTS[i % TEXTS.len()]),
                metadata: None,
            })
            .collect();
        g.ingest(gw::IngestRequest {
            collection: COLLECTION.into(),
            documents,
            chunking: None,
        })
        .await?;
    }

    println!(
        "\nrounds: {} alternating slices of {:.1} s per path; one text per call; search top-5 over 400 chunks",
        args.rounds,
        args.duration / args.rounds as f64
    );
    let slice = args.duration / args.rounds.max(1) as f64;
    for &c in &args.concurrency {
        let direct_embed = Arc::new(DirectEmbed(
            clients(c, &e_addr, EmbeddingServiceClient::connect).await?,
        ));
        let gw_embed = Arc::new(GatewayEmbed(
            clients(c, &g_addr, GatewayClient::connect).await?,
        ));
        let mut pairs = Vec::new();
        for (e, v) in clients(c, &e_addr, EmbeddingServiceClient::connect)
            .await?
            .into_iter()
            .zip(clients(c, &v_addr, VectorSearchClient::connect).await?)
        {
            pairs.push((e, v));
        }
        let direct_search = Arc::new(DirectSearch(pairs));
        let gw_search = Arc::new(GatewaySearch(
            clients(c, &g_addr, GatewayClient::connect).await?,
        ));

        let mut r: [Vec<Stats>; 6] = Default::default();
        // CPU seconds the gateway and embedding processes spent per path.
        let mut cpu = [[0.0f64; 2]; 6];
        let pids = [gateway_pid, embedding_pid];
        let sample = || pids.map(cpu_secs);
        for _ in 0..args.rounds {
            let t = sample();
            r[0].push(drive(Arc::clone(&direct_embed), c, slice, 0.5).await?);
            account(&mut cpu[0], t, sample());
            let t = sample();
            r[1].push(drive(Arc::clone(&gw_embed), c, slice, 0.5).await?);
            account(&mut cpu[1], t, sample());
            let t = sample();
            r[2].push(
                tokio::task::spawn_blocking(move || {
                    drive_http(http, c, slice, 0.5, |i| {
                        (
                            "/v1/embeddings".into(),
                            format!(r#"{{"input": {:?}, "model": "all-MiniLM-L6-v2"}}"#, text(i)),
                        )
                    })
                })
                .await??,
            );
            account(&mut cpu[2], t, sample());
            let t = sample();
            r[3].push(drive(Arc::clone(&direct_search), c, slice, 0.5).await?);
            account(&mut cpu[3], t, sample());
            let t = sample();
            r[4].push(drive(Arc::clone(&gw_search), c, slice, 0.5).await?);
            account(&mut cpu[4], t, sample());
            let t = sample();
            r[5].push(
                tokio::task::spawn_blocking(move || {
                    drive_http(http, c, slice, 0.5, |i| {
                        (
                            format!("/v1/collections/{COLLECTION}/search"),
                            format!(r#"{{"query": {:?}, "limit": 5}}"#, text(i)),
                        )
                    })
                })
                .await??,
            );
            account(&mut cpu[5], t, sample());
        }
        let qps: Vec<f64> = r
            .iter()
            .map(|rounds| median(rounds.iter().map(|s| s.texts_per_sec).collect()))
            .collect();
        let p: Vec<Stats> = r.iter().map(|rounds| pooled(rounds)).collect();
        println!("\n### concurrency {c}\n");
        println!(
            "| path                         |      QPS | p50 ms  | p99 ms  | gateway CPU µs/call | embedding CPU µs/call |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        let labels = [
            "embed: direct gRPC",
            "embed: gateway gRPC",
            "embed: gateway HTTP /v1/embeddings",
            "search: direct embed+search",
            "search: gateway gRPC",
            "search: gateway HTTP",
        ];
        for i in 0..6 {
            // Calls made in a path's slices, warm-up included (same rate).
            let calls = p[i].requests as f64 * (slice + 0.5) / slice;
            row(
                labels[i],
                &p[i],
                qps[i],
                cpu[i].map(|s| s * 1e6 / calls.max(1.0)),
            );
        }
        let added = |g: &Stats, d: &Stats| (g.p50.as_secs_f64() - d.p50.as_secs_f64()) * 1e3;
        println!(
            "\nratios (gateway / direct QPS) and added p50: embed gRPC {:.2}× {:+.2} ms · embed HTTP {:.2}× {:+.2} ms · search gRPC {:.2}× {:+.2} ms · search HTTP {:.2}× {:+.2} ms",
            qps[1] / qps[0],
            added(&p[1], &p[0]),
            qps[2] / qps[0],
            added(&p[2], &p[0]),
            qps[4] / qps[3],
            added(&p[4], &p[3]),
            qps[5] / qps[3],
            added(&p[5], &p[3]),
        );
    }
    tokio::task::spawn_blocking(move || mesh.stop()).await?;
    Ok(())
}
