//! `mlmesh-bench soak`: many concurrent callers through the gateways of a
//! release mesh (two gateways, two inference and two embedding replicas,
//! one vector-search), with a well-behaved probe beside them, and one
//! replica of each stateless service killed (SIGKILL) half way.
//!
//! Half the callers' connections go to each gateway, as a Kubernetes
//! Service spreads them. When a gateway dies, its callers do what a gRPC
//! client with a retry policy does with an idempotent call whose server
//! went away: retry it once on the other gateway (counted as "retried"; a
//! call that fails again, or fails on a live gateway, is a failure). Replicas behind the gateway need no such help: the gateway
//! routes around a dead one itself.
//!
//! Every caller makes real calls in turn (ModelInfer on iris-logreg, Embed,
//! Search) and checks every accepted answer against a reference that is
//! not the mesh's own: onnxruntime's probabilities for the iris rows
//! (`references.json`), sentence-transformers' embeddings of the golden
//! texts (cosine ≥ 0.99: the default model is int8), and the document a
//! query was copied from (top hit). A call the gateway sheds answers
//! RESOURCE_EXHAUSTED; the caller then backs off (as a well-behaved client
//! does) and tries again. Anything else is a failure.
//!
//! Closed loop (`--rate 0`): each caller calls back to back. Open loop
//! (`--rate N`): calls start on a fixed schedule of N per second whatever
//! the answers take, and latency is measured from the scheduled start, so
//! a stall shows in the figures instead of slowing the schedule
//! (coordinated omission). Latencies go into HDR histograms.
//!
//! The open-file limit is raised for this process and the services it
//! starts (with `prlimit`, util-linux), not for the machine.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use mlmesh_proto::gateway::v1 as gw;
use mlmesh_tests::{Service, TempDir};

mod calls;

use calls::{Conn, Outcome, call, refs};

#[derive(clap::Parser)]
pub struct SoakArgs {
    /// Concurrent callers.
    #[arg(long, default_value_t = 10_000)]
    callers: usize,
    /// HTTP/2 connections the callers share (each carries callers /
    /// connections streams; the gateway allows `server.max_concurrent_streams`
    /// per connection).
    #[arg(long, default_value_t = 200)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Open loop: calls started per second in all (0: closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// SIGKILL one gateway, one inference and one embedding replica half way.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    kill: bool,
    /// The gateway's `limits.max_in_flight` (calls served at once; more
    /// are shed with RESOURCE_EXHAUSTED).
    #[arg(long, default_value_t = 1024)]
    gateway_max_in_flight: usize,
}

/// What the callers saw.
#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    shed: AtomicU64,
    wrong: AtomicU64,
    failed: AtomicU64,
    /// Calls retried on the other gateway because theirs had been killed.
    retried: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut f) = self.failures.lock()
            && f.len() < 10
        {
            f.push(what);
        }
    }
}

fn record(h: &Mutex<Histogram<u64>>, d: Duration) {
    if let Ok(mut h) = h.lock() {
        let _ = h.record(d.as_micros().max(1) as u64);
    }
}

fn hist() -> anyhow::Result<Mutex<Histogram<u64>>> {
    // 1 µs to 10 min, 3 significant digits.
    Ok(Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3)?))
}

fn q_ms(h: &Mutex<Histogram<u64>>, q: f64) -> f64 {
    h.lock()
        .map(|h| h.value_at_quantile(q) as f64 / 1e3)
        .unwrap_or(0.0)
}

/// Raises this process's open-file soft limit to its hard limit (its
/// children inherit it).
fn raise_nofile() {
    let pid = std::process::id().to_string();
    let hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        })
        .unwrap_or_else(|| "65536".into());
    match std::process::Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={hard}:{hard}")])
        .status()
    {
        Ok(s) if s.success() => {}
        other => eprintln!("soak: could not raise the open-file limit ({other:?}); continuing"),
    }
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    raise_nofile();
    let refs = Arc::new(refs()?);
    let data = TempDir::new("soak-vector");
    eprintln!("soak: starting 2 inference, 2 embedding, 1 vector-search and 2 gateways (release)");
    let mut inference = vec![
        Service::start("mlmesh-inference", &[]),
        Service::start("mlmesh-inference", &[]),
    ];
    let mut embedding = vec![
        Service::start(
            "mlmesh-embedding",
            &[("MLMESH_EMBEDDING__INTRA_OP_THREADS", "1".into())],
        ),
        Service::start(
            "mlmesh-embedding",
            &[("MLMESH_EMBEDDING__INTRA_OP_THREADS", "1".into())],
        ),
    ];
    let vector = Service::start(
        "mlmesh-vector-search",
        &[("MLMESH_VECTOR__DATA_DIR", data.path().display().to_string())],
    );
    let list = |s: &[Service]| {
        s.iter()
            .map(|s| s.addr.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let gateway = || {
        Service::start(
            "mlmesh-gateway",
            &[
                ("MLMESH_DOWNSTREAM__INFERENCE", list(&inference)),
                ("MLMESH_DOWNSTREAM__EMBEDDING", list(&embedding)),
                ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", vector.addr.to_string()),
                ("MLMESH_HTTP__LISTEN", "off".into()),
                (
                    "MLMESH_LIMITS__MAX_IN_FLIGHT",
                    args.gateway_max_in_flight.to_string(),
                ),
            ],
        )
    };
    let mut gateways = [gateway(), gateway()];
    let gw_addrs = gateways.each_ref().map(|g| g.addr.to_string());
    let gw_pids = gateways.each_ref().map(|g| g.child.id());
    // The probe and the set-up use the gateway that stays up.
    let gw_addr = gw_addrs[0].clone();

    // The search corpus: one document per query text.
    let mut setup = Conn::open(&gw_addr).await?;
    let collection = "soak".to_owned();
    setup
        .gateway
        .create_collection(gw::CreateCollectionRequest {
            name: collection.clone(),
            ..Default::default()
        })
        .await?;
    setup
        .gateway
        .ingest(gw::IngestRequest {
            collection: collection.clone(),
            documents: refs
                .queries
                .iter()
                .map(|(t, id)| gw::Document {
                    id: id.clone(),
                    text: t.clone(),
                    metadata: None,
                })
                .collect(),
            chunking: None,
        })
        .await?;

    // Probe baseline, before any load.
    let probe_hist = hist()?;
    let mut probe = Conn::open(&gw_addr).await?;
    let mut base = Vec::new();
    for i in 0..30 {
        let t = Instant::now();
        if let Outcome::Ok = call(&mut probe, &refs, &collection, i * 3).await {
            base.push(t.elapsed());
        }
    }
    base.sort();
    let base_p50 = base.get(base.len() / 2).copied().unwrap_or_default();

    eprintln!(
        "soak: {} callers on {} connections, {} for {:.0} s{}",
        args.callers,
        args.connections,
        if args.rate > 0.0 {
            format!("open loop at {:.0}/s", args.rate)
        } else {
            "closed loop".into()
        },
        args.duration,
        if args.kill {
            ", one gateway, one inference and one embedding replica killed half way"
        } else {
            ""
        }
    );
    // Connections alternate between the two gateways.
    let mut conns: [Vec<Conn>; 2] = [Vec::new(), Vec::new()];
    for j in 0..args.connections.max(2) {
        conns[j % 2].push(Conn::open(&gw_addrs[j % 2]).await?);
    }
    let dead = Arc::new([AtomicBool::new(false), AtomicBool::new(false)]);
    let tally = Arc::new(Tally::default());
    let accepted_hist = Arc::new(hist()?);
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(args.duration);
    let per_caller_interval =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.callers as f64 / args.rate));
    let mut tasks = Vec::with_capacity(args.callers);
    for k in 0..args.callers {
        // Caller k's gateway, its connection there and one to the other.
        let mut g = k % 2;
        let mut c = conns[g][(k / 2) % conns[g].len()].clone();
        let mut other = conns[1 - g][(k / 2) % conns[1 - g].len()].clone();
        let (refs, tally, h, stop, dead) = (
            Arc::clone(&refs),
            Arc::clone(&tally),
            Arc::clone(&accepted_hist),
            Arc::clone(&stop),
            Arc::clone(&dead),
        );
        let collection = collection.clone();
        let n = args.callers;
        tasks.push(tokio::spawn(async move {
            let mut i = k;
            // Open loop: this caller's share of the schedule, staggered.
            let mut next = per_caller_interval.map(|iv| started + iv.mul_f64(k as f64 / n as f64));
            let mut backoff = Duration::from_millis(20);
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let scheduled = match (&mut next, per_caller_interval) {
                    (Some(n), Some(iv)) => {
                        // A call scheduled after the end is not made
                        // (with few calls per second among many callers,
                        // most callers' next turn lies past it).
                        if *n >= until {
                            break;
                        }
                        tokio::time::sleep_until((*n).into()).await;
                        let s = *n;
                        *n += iv;
                        s
                    }
                    _ => Instant::now(),
                };
                let mut outcome = call(&mut c, &refs, &collection, i).await;
                if matches!(outcome, Outcome::Failed(_)) && dead[g].load(Ordering::Relaxed) {
                    // Its gateway was killed: from now on this caller
                    // uses the other one, starting with this call.
                    tally.retried.fetch_add(1, Ordering::Relaxed);
                    std::mem::swap(&mut c, &mut other);
                    g = 1 - g;
                    outcome = call(&mut c, &refs, &collection, i).await;
                }
                match outcome {
                    Outcome::Ok => {
                        tally.accepted.fetch_add(1, Ordering::Relaxed);
                        record(&h, scheduled.elapsed());
                        backoff = Duration::from_millis(20);
                    }
                    other => {
                        match other {
                            Outcome::Shed => {
                                tally.shed.fetch_add(1, Ordering::Relaxed);
                            }
                            Outcome::Wrong(w) => {
                                tally.wrong.fetch_add(1, Ordering::Relaxed);
                                tally.fail(format!("WRONG {w}"));
                            }
                            Outcome::Failed(f) => tally.fail(f),
                            Outcome::Ok => {}
                        }
                        // Back off before trying again, as a well-behaved
                        // client does (closed loop; the open loop keeps
                        // its schedule).
                        if per_caller_interval.is_none() {
                            let jitter = Duration::from_micros((k as u64 * 7919) % 20_000);
                            tokio::time::sleep(backoff + jitter).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
                i += 1;
            }
        }));
    }
    // The probe, every 100 ms throughout, on its own connection; the
    // killer, half way.
    let probe_tally = Arc::new(Tally::default());
    let probe_task = {
        let (refs, t, stop, collection) = (
            Arc::clone(&refs),
            Arc::clone(&probe_tally),
            Arc::clone(&stop),
            collection.clone(),
        );
        let ph = Arc::new(probe_hist);
        let ph2 = Arc::clone(&ph);
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                let t0 = Instant::now();
                match call(&mut probe, &refs, &collection, i).await {
                    Outcome::Ok => {
                        t.accepted.fetch_add(1, Ordering::Relaxed);
                        record(&ph2, t0.elapsed());
                    }
                    Outcome::Shed => {
                        t.shed.fetch_add(1, Ordering::Relaxed);
                    }
                    Outcome::Wrong(w) => t.fail(format!("WRONG {w}")),
                    Outcome::Failed(f) => t.fail(f),
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            probe
        });
        (task, ph)
    };
    let mut rss_peak = 0u64;
    let mut killed_at = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(500)).await;
        for pid in gw_pids {
            if let Some((_, hwm)) = crate::rss_kib(pid) {
                rss_peak = rss_peak.max(hwm);
            }
        }
        if args.kill && killed_at.is_none() && started.elapsed().as_secs_f64() > args.duration / 2.0
        {
            // Marked before the kill: a failure on that gateway from here
            // on is its death, and its callers move to the other.
            dead[1].store(true, Ordering::Relaxed);
            gateways[1].kill();
            inference[1].kill();
            embedding[1].kill();
            killed_at = Some(started.elapsed());
            eprintln!(
                "soak: killed one gateway, one inference and one embedding replica (SIGKILL)"
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let load_end = Instant::now();
    for t in tasks {
        let _ = t.await;
    }
    let drained = load_end.elapsed();
    let (probe_task, probe_hist) = probe_task;
    let mut probe = probe_task.await?;
    // Recovery: the probe back within 2× its pre-load p50, three times running.
    let recovery_start = Instant::now();
    let mut in_a_row = 0;
    let recovered = loop {
        let t = Instant::now();
        let ok = matches!(call(&mut probe, &refs, &collection, 0).await, Outcome::Ok);
        if ok && t.elapsed() <= base_p50 * 2 + Duration::from_millis(1) {
            in_a_row += 1;
            if in_a_row == 3 {
                break Some(recovery_start.elapsed());
            }
        } else {
            in_a_row = 0;
        }
        if recovery_start.elapsed() > Duration::from_secs(60) {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    if let Some((_, hwm)) = crate::rss_kib(gw_pids[0]) {
        rss_peak = rss_peak.max(hwm);
    }
    let load = Duration::from_secs_f64(args.duration);
    let accepted = tally.accepted.load(Ordering::Relaxed);
    println!(
        "\n## mlmesh-bench soak: {} callers, {} connections to 2 gateways, {}, {:.0} s, gateway limits.max_in_flight {}",
        args.callers,
        args.connections,
        if args.rate > 0.0 {
            format!(
                "open loop {:.0}/s (latency from the scheduled start)",
                args.rate
            )
        } else {
            "closed loop".into()
        },
        args.duration,
        args.gateway_max_in_flight
    );
    println!("| | value |\n|---|---|");
    println!(
        "| accepted calls | {accepted} ({:.0}/s), every answer checked |",
        accepted as f64 / load.as_secs_f64()
    );
    println!(
        "| shed (RESOURCE_EXHAUSTED) | {} |",
        tally.shed.load(Ordering::Relaxed)
    );
    println!(
        "| retried on the other gateway after theirs was killed | {} |",
        tally.retried.load(Ordering::Relaxed)
    );
    println!(
        "| wrong answers | {} |",
        tally.wrong.load(Ordering::Relaxed)
    );
    println!(
        "| other failures | {} |",
        tally.failed.load(Ordering::Relaxed) - tally.wrong.load(Ordering::Relaxed)
    );
    println!(
        "| accepted p50 / p99 / p99.9 | {:.1} / {:.1} / {:.1} ms |",
        q_ms(&accepted_hist, 0.5),
        q_ms(&accepted_hist, 0.99),
        q_ms(&accepted_hist, 0.999)
    );
    println!(
        "| probe p50 / p99 / p99.9 (before load: p50 {:.1} ms) | {:.1} / {:.1} / {:.1} ms, {} ok, {} shed, {} failed |",
        base_p50.as_secs_f64() * 1e3,
        q_ms(&probe_hist, 0.5),
        q_ms(&probe_hist, 0.99),
        q_ms(&probe_hist, 0.999),
        probe_tally.accepted.load(Ordering::Relaxed),
        probe_tally.shed.load(Ordering::Relaxed),
        probe_tally.failed.load(Ordering::Relaxed)
    );
    println!(
        "| gateway peak RSS (the larger of the two) | {:.0} MiB |",
        rss_peak as f64 / 1024.0
    );
    if let Some(k) = killed_at {
        println!("| replicas killed at | {:.1} s |", k.as_secs_f64());
    }
    println!(
        "| callers drained after the load | {:.2} s |",
        drained.as_secs_f64()
    );
    println!(
        "| recovery (probe back within 2× its pre-load p50) | {} |",
        recovered.map_or("not within 60 s".into(), |d| format!(
            "{:.2} s",
            d.as_secs_f64()
        ))
    );
    for f in tally.failures.lock().map(|f| f.clone()).unwrap_or_default() {
        println!("failure: {f}");
    }
    for f in probe_tally
        .failures
        .lock()
        .map(|f| f.clone())
        .unwrap_or_default()
    {
        println!("probe failure: {f}");
    }
    drop(gateways);
    Ok(())
}
