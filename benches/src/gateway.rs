//! `mlmesh-bench gateway`: what the gateway hop costs.
//!
//! Starts the release embedding, vector-search and gateway binaries as three
//! processes (as `make run` does), ingests a small corpus, then compares, on
//! the same texts and at the same concurrency:
//!
//! - **embed**: `Embed` on the embedding service directly (gRPC) vs.
//!   `Embed` through the gateway (gRPC) vs. `POST /v1/embeddings` through
//!   the gateway (HTTP/JSON, keep-alive);
//! - **search**: embed + vector search called directly by the client (two
//!   gRPC calls, what a client without the gateway does) vs. gateway
//!   `Search` (gRPC) vs. `POST /v1/collections/{c}/search` (HTTP/JSON);
//! - **bare hop**: `GetCollection` on vector-search directly vs. through
//!   the gateway, which forwards it uncached: the hop without a model's
//!   milliseconds (and their variance) on top.
//!
//! Two measurements per concurrency:
//!
//! 1. **Throughput**: each path alone for alternating slices (`--rounds`
//!    of them, so drift on a shared machine hits every path alike): QPS
//!    (median over rounds), p50/p99 and the CPU the gateway and embedding
//!    processes spent per call.
//! 2. **Added latency**: every client alternates call by call between the
//!    direct path and the gateway path on the same text, so both sides see
//!    the same machine at the same moment. Reported: both p50s and their
//!    difference, the p50 one gateway hop adds.
//!
//! Every client is a thread with its own connections; gRPC calls are driven
//! on it with `Handle::block_on`, HTTP calls with a blocking keep-alive
//! client, so every path pays the same client-side costs.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use mlmesh_proto::{
    embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient},
    gateway::v1::{self as gw, gateway_client::GatewayClient},
    vector::v1::{self as vec, vector_search_client::VectorSearchClient},
};
use mlmesh_tests::{HttpClient, MeshProcesses};
use tokio::runtime::Handle;
use tonic::transport::Channel;

use crate::{Stats, TEXTS, median, ms, stats};

#[derive(Parser)]
pub struct GatewayArgs {
    /// Concurrent clients, comma-separated (one connection per client and
    /// service).
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    concurrency: Vec<usize>,
    /// Seconds of measurement per cell and path, split into `--rounds`
    /// slices (after 0.5 s of warm-up each).
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Slices per cell; figures are medians over rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Extra environment for the gateway process only, `KEY=VALUE`
    /// (e.g. `TOKIO_WORKER_THREADS=1`); repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    gateway_env: Vec<String>,
    /// Pin the gateway's threads to these CPUs (a `taskset` list, e.g. `1`)
    /// once it has started. Run the bench itself under `taskset -c 0` and
    /// the other services inherit that, so the gateway gets a core of its
    /// own, as on a node of its own; see docs/benchmarks.md.
    #[arg(long, value_name = "LIST")]
    gateway_cpus: Option<String>,
    /// Run only this path, for `--duration` seconds, and skip the
    /// comparisons (for attaching a profiler): one of `direct-embed`,
    /// `gateway-embed`, `http-embed`, `direct-search`, `gateway-search`,
    /// `http-search`, `direct-get`, `gateway-get`.
    #[arg(long)]
    only: Option<String>,
    /// Which comparisons: `hop` (embed, search and the bare hop, above),
    /// `front-door` (inference through the gateway, a pipeline vs. the
    /// client's own calls, auth on vs. off: see `front_door`), or `all`.
    #[arg(long, default_value = "all", value_parser = ["hop", "front-door", "all"])]
    part: String,
}

const COLLECTION: &str = "bench";
const WARM: f64 = 0.5;

/// The paths compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum P {
    DirectEmbed,
    GatewayEmbed,
    HttpEmbed,
    DirectSearch,
    GatewaySearch,
    HttpSearch,
    DirectGet,
    GatewayGet,
}

const ALL: [P; 8] = [
    P::DirectEmbed,
    P::GatewayEmbed,
    P::HttpEmbed,
    P::DirectSearch,
    P::GatewaySearch,
    P::HttpSearch,
    P::DirectGet,
    P::GatewayGet,
];

/// (through the gateway, its direct baseline, name).
const PAIRS: [(P, P, &str); 5] = [
    (P::GatewayEmbed, P::DirectEmbed, "embed gRPC"),
    (P::HttpEmbed, P::DirectEmbed, "embed HTTP"),
    (P::GatewaySearch, P::DirectSearch, "search gRPC"),
    (P::HttpSearch, P::DirectSearch, "search HTTP"),
    (P::GatewayGet, P::DirectGet, "bare hop"),
];

impl P {
    fn key(self) -> &'static str {
        match self {
            P::DirectEmbed => "direct-embed",
            P::GatewayEmbed => "gateway-embed",
            P::HttpEmbed => "http-embed",
            P::DirectSearch => "direct-search",
            P::GatewaySearch => "gateway-search",
            P::HttpSearch => "http-search",
            P::DirectGet => "direct-get",
            P::GatewayGet => "gateway-get",
        }
    }

    fn label(self) -> &'static str {
        match self {
            P::DirectEmbed => "embed: direct gRPC",
            P::GatewayEmbed => "embed: gateway gRPC",
            P::HttpEmbed => "embed: gateway HTTP /v1/embeddings",
            P::DirectSearch => "search: direct embed+search",
            P::GatewaySearch => "search: gateway gRPC",
            P::HttpSearch => "search: gateway HTTP",
            P::DirectGet => "hop: direct GetCollection",
            P::GatewayGet => "hop: gateway GetCollection",
        }
    }
}

fn text(i: usize) -> String {
    TEXTS[i % TEXTS.len()].to_owned()
}

/// One client: its own connections to every service and the gateway.
struct Client {
    rt: Handle,
    embedding: EmbeddingServiceClient<Channel>,
    vector: VectorSearchClient<Channel>,
    gateway: GatewayClient<Channel>,
    http: HttpClient,
}

impl Client {
    async fn connect(
        rt: Handle,
        [e, v, g]: [&str; 3],
        http: std::net::SocketAddr,
    ) -> anyhow::Result<Self> {
        let url = |a: &str| format!("http://{a}");
        Ok(Self {
            rt,
            embedding: EmbeddingServiceClient::connect(url(e))
                .await
                .with_context(|| format!("connecting to {e}"))?,
            vector: VectorSearchClient::connect(url(v))
                .await
                .with_context(|| format!("connecting to {v}"))?,
            gateway: GatewayClient::connect(url(g))
                .await
                .with_context(|| format!("connecting to {g}"))?,
            http: HttpClient::new(http),
        })
    }

    fn post(&mut self, path: &str, json: &str) -> anyhow::Result<()> {
        let (status, data) = self.http.request("POST", path, &[], json.as_bytes())?;
        anyhow::ensure!(
            status == 200,
            "{path}: {status} {}",
            String::from_utf8_lossy(&data)
        );
        Ok(())
    }

    /// One call of `path` on text `i`, on this thread.
    fn call(&mut self, path: P, i: usize) -> anyhow::Result<()> {
        let embed = || EmbedRequest {
            inputs: vec![text(i)],
            ..Default::default()
        };
        match path {
            P::DirectEmbed => {
                let mut c = self.embedding.clone();
                let r = self.rt.block_on(c.embed(embed()))?.into_inner();
                anyhow::ensure!(r.embeddings.len() == 1);
            }
            P::GatewayEmbed => {
                let mut c = self.gateway.clone();
                let r = self.rt.block_on(c.embed(embed()))?.into_inner();
                anyhow::ensure!(r.embeddings.len() == 1);
            }
            P::HttpEmbed => self.post(
                "/v1/embeddings",
                &format!(r#"{{"input": {:?}, "model": "all-MiniLM-L6-v2"}}"#, text(i)),
            )?,
            P::DirectSearch => {
                let (mut e, mut v) = (self.embedding.clone(), self.vector.clone());
                let hits = self.rt.block_on(async move {
                    let vector = e
                        .embed(embed())
                        .await?
                        .into_inner()
                        .embeddings
                        .pop()
                        .map(|e| e.values)
                        .unwrap_or_default();
                    let r = v
                        .search(vec::SearchRequest {
                            collection: COLLECTION.into(),
                            vector,
                            limit: 5,
                            with_payload: true,
                            ..Default::default()
                        })
                        .await?;
                    Ok::<_, tonic::Status>(r.into_inner().hits)
                })?;
                anyhow::ensure!(hits.len() == 5);
            }
            P::GatewaySearch => {
                let mut c = self.gateway.clone();
                let hits = self
                    .rt
                    .block_on(c.search(gw::SearchRequest {
                        collection: COLLECTION.into(),
                        query: text(i),
                        limit: 5,
                        ..Default::default()
                    }))?
                    .into_inner()
                    .hits;
                anyhow::ensure!(hits.len() == 5);
            }
            P::HttpSearch => self.post(
                &format!("/v1/collections/{COLLECTION}/search"),
                &format!(r#"{{"query": {:?}, "limit": 5}}"#, text(i)),
            )?,
            P::DirectGet => {
                let mut c = self.vector.clone();
                let r = self
                    .rt
                    .block_on(c.get_collection(vec::GetCollectionRequest {
                        name: COLLECTION.into(),
                    }))?;
                anyhow::ensure!(r.into_inner().points_count > 0);
            }
            P::GatewayGet => {
                let mut c = self.gateway.clone();
                let r = self
                    .rt
                    .block_on(c.get_collection(gw::GetCollectionRequest {
                        name: COLLECTION.into(),
                    }))?;
                anyhow::ensure!(r.into_inner().chunks_count > 0);
            }
        }
        Ok(())
    }
}

/// Every client runs the paths of `schedule` in turn, call by call, for
/// `WARM + secs` seconds; the text advances once per turn, so each path of
/// a turn gets the same text. Returns the measured latencies per path of
/// `schedule`.
fn drive(clients: &mut [Client], schedule: &[P], secs: f64) -> anyhow::Result<Vec<Vec<Duration>>> {
    let warm = Duration::from_secs_f64(WARM);
    let end = warm + Duration::from_secs_f64(secs);
    let t0 = Instant::now();
    let per_client = std::thread::scope(|s| {
        let handles: Vec<_> = clients
            .iter_mut()
            .enumerate()
            .map(|(w, client)| {
                s.spawn(move || {
                    let mut lat = vec![Vec::new(); schedule.len()];
                    let mut k = 0usize;
                    loop {
                        let now = t0.elapsed();
                        if now >= end {
                            break;
                        }
                        let slot = k % schedule.len();
                        let t = Instant::now();
                        client.call(schedule[slot], w * 7 + k / schedule.len())?;
                        if now >= warm {
                            lat[slot].push(t.elapsed());
                        }
                        k += 1;
                    }
                    Ok::<_, anyhow::Error>(lat)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("client panicked"))?)
            .collect::<anyhow::Result<Vec<_>>>()
    })?;
    let mut out = vec![Vec::new(); schedule.len()];
    for lat in per_client {
        for (o, l) in out.iter_mut().zip(lat) {
            o.extend(l);
        }
    }
    Ok(out)
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

fn p50_ms(lat: &[Duration]) -> f64 {
    stats(lat.to_vec(), lat.len(), Duration::from_secs(1))
        .p50
        .as_secs_f64()
        * 1e3
}

/// Throughput and added latency at one concurrency.
fn measure(
    clients: &mut [Client],
    rounds: usize,
    slice: f64,
    pids: [u32; 2],
) -> anyhow::Result<()> {
    let c = clients.len();
    // 1. Throughput: each path alone, in alternating slices.
    let mut qps: Vec<Vec<f64>> = vec![Vec::new(); ALL.len()];
    let mut lat: Vec<Vec<Duration>> = vec![Vec::new(); ALL.len()];
    let mut cpu = [[0.0f64; 2]; ALL.len()];
    let mut calls = [0usize; ALL.len()];
    for _ in 0..rounds {
        for (k, &path) in ALL.iter().enumerate() {
            let before = pids.map(cpu_secs);
            let l = drive(clients, &[path], slice)?.pop().unwrap_or_default();
            let after = pids.map(cpu_secs);
            for (j, acc) in cpu[k].iter_mut().enumerate() {
                *acc += after[j] - before[j];
            }
            qps[k].push(l.len() as f64 / slice);
            // CPU covers the warm-up too, at the same rate.
            calls[k] += (l.len() as f64 * (slice + WARM) / slice) as usize;
            lat[k].extend(l);
        }
    }
    let qps: Vec<f64> = qps.into_iter().map(median).collect();
    println!("\n### concurrency {c}: throughput (each path alone, alternating slices)\n");
    println!("| path | QPS | p50 ms | p99 ms | gateway CPU µs/call | embedding CPU µs/call |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, path) in ALL.iter().enumerate() {
        let s: Stats = stats(lat[k].clone(), lat[k].len(), Duration::from_secs(1));
        let per = |j: usize| cpu[k][j] * 1e6 / calls[k].max(1) as f64;
        println!(
            "| {} | {:.0} | {} | {} | {:.0} | {:.0} |",
            path.label(),
            qps[k],
            ms(s.p50),
            ms(s.p99),
            per(0),
            per(1)
        );
    }

    // 2. Added latency: direct and gateway calls interleaved call by call.
    let mut pair_lat: Vec<[Vec<Duration>; 2]> = vec![Default::default(); PAIRS.len()];
    for _ in 0..rounds {
        for (k, &(via, direct, _)) in PAIRS.iter().enumerate() {
            let mut l = drive(clients, &[direct, via], slice)?.into_iter();
            pair_lat[k][0].extend(l.next().unwrap_or_default());
            pair_lat[k][1].extend(l.next().unwrap_or_default());
        }
    }
    println!("\n### concurrency {c}: added latency (direct and gateway calls interleaved)\n");
    println!(
        "| through the gateway | QPS vs. direct | direct p50 ms | gateway p50 ms | added p50 ms |"
    );
    println!("|---|---:|---:|---:|---:|");
    let index = |p: P| ALL.iter().position(|&q| q == p).unwrap_or(0);
    let mut summary = Vec::new();
    for (k, &(via, direct, name)) in PAIRS.iter().enumerate() {
        let (d, g) = (p50_ms(&pair_lat[k][0]), p50_ms(&pair_lat[k][1]));
        let ratio = qps[index(via)] / qps[index(direct)].max(f64::MIN_POSITIVE);
        println!("| {name} | {ratio:.2}× | {d:.2} | {g:.2} | {:+.2} |", g - d);
        summary.push(format!("{name} {ratio:.2}× {:+.2} ms", g - d));
    }
    println!(
        "\nconcurrency {c}: gateway/direct QPS and added p50: {}",
        summary.join(" · ")
    );
    Ok(())
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    if args.part != "front-door" {
        hop(&args).await?;
    }
    if args.part != "hop" {
        let c = args.concurrency.iter().copied().max().unwrap_or(8);
        let slice = args.duration / args.rounds.max(1) as f64;
        crate::front_door::run(c, slice, args.rounds).await?;
    }
    Ok(())
}

async fn hop(args: &GatewayArgs) -> anyhow::Result<()> {
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
    if let Some(cpus) = &args.gateway_cpus {
        let pid = mesh.gateway.child.id().to_string();
        let ok = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid])
            .stdout(std::process::Stdio::null())
            .status()
            .context("run taskset")?
            .success();
        anyhow::ensure!(ok, "taskset -a -p -c {cpus} {pid} failed");
        println!("gateway (pid {pid}) pinned to CPUs {cpus}");
    }

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

    let only = match args.only.as_deref() {
        Some(k) => Some(ALL.into_iter().find(|p| p.key() == k).with_context(|| {
            format!(
                "--only {k:?}: expected one of {}",
                ALL.map(P::key).join(", ")
            )
        })?),
        None => None,
    };
    let slice = args.duration / args.rounds.max(1) as f64;
    println!(
        "\n{} rounds of {slice:.1} s per path and per comparison (after {WARM} s warm-up); one text per call; search top-5 over 400 chunks",
        args.rounds
    );
    let pids = [mesh.gateway.child.id(), mesh.embedding.child.id()];
    let addrs = [e_addr.as_str(), v_addr.as_str(), g_addr.as_str()];
    for &c in &args.concurrency {
        let mut clients = Vec::with_capacity(c);
        for _ in 0..c {
            clients.push(Client::connect(Handle::current(), addrs, http).await?);
        }
        let rounds = args.rounds.max(1);
        if let Some(path) = only {
            let secs = args.duration;
            let lat = tokio::task::spawn_blocking(move || drive(&mut clients, &[path], secs))
                .await??
                .pop()
                .unwrap_or_default();
            let s = stats(lat.clone(), lat.len(), Duration::from_secs_f64(secs));
            println!(
                "\n{} at concurrency {c}: {:.0} QPS, p50 {} ms, p99 {} ms",
                path.label(),
                s.texts_per_sec,
                ms(s.p50),
                ms(s.p99)
            );
            continue;
        }
        tokio::task::spawn_blocking(move || measure(&mut clients, rounds, slice, pids)).await??;
    }
    tokio::task::spawn_blocking(move || mesh.stop()).await?;
    Ok(())
}
