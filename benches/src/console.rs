//! `mlmesh-bench console`: what the console costs the gateway.
//!
//! 1. **Live overview at idle.** The mesh (embedding, vector-search,
//!    inference, registry) with two gateways in front of it: one with the
//!    console off (the floor), one with it on. The gateway with the console
//!    is measured with no viewer and with `--consoles` open event streams
//!    (`/v1/mesh/events`, what each open Overview page holds), in
//!    alternating windows; CPU is the gateway process's user + system time
//!    from `/proc` over each window, as a percentage of one core.
//! 2. **Models page with many versions.** One model with `--versions`
//!    versions (and a benchmark evidence record on every tenth) in a real
//!    registry; the Models page's one call (`GET /v1/registry/models/{m}`)
//!    timed end to end on loopback, beside the registry's own
//!    `ListVersions` for the same page (the floor).

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use mlmesh_tests::{HttpClient, Service, TempDir};

use crate::{cpu_secs, median};

#[derive(clap::Args, Debug)]
pub struct ConsoleArgs {
    /// Open consoles (event streams) in the loaded windows.
    #[arg(long, default_value_t = 10)]
    consoles: usize,
    /// Seconds per CPU window.
    #[arg(long, default_value_t = 20.0)]
    window_secs: f64,
    /// Windows per configuration, alternating.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Versions of the model behind the Models page.
    #[arg(long, default_value_t = 10_000)]
    versions: usize,
    /// Timed calls of the Models page (and of the floor).
    #[arg(long, default_value_t = 30)]
    calls: usize,
}

/// One open event stream, read until dropped.
struct Viewer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl Viewer {
    fn open(addr: SocketAddr) -> anyhow::Result<Self> {
        let mut s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_millis(500)))?;
        s.write_all(
            format!(
                "GET /v1/mesh/events HTTP/1.1\r\nhost: {addr}\r\naccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 16 * 1024];
            let mut events = 0u64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        events +=
                            buf[..n].windows(11).filter(|w| w == b"event: mesh").count() as u64;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            events
        });
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }

    fn close(mut self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().and_then(|t| t.join().ok()).unwrap_or(0)
    }
}

fn cpu_pct(pid: u32, secs: f64) -> f64 {
    let c0 = cpu_secs(pid);
    std::thread::sleep(Duration::from_secs_f64(secs));
    100.0 * (cpu_secs(pid) - c0) / secs
}

pub async fn run(args: ConsoleArgs) -> anyhow::Result<()> {
    let quiet = (
        "MLMESH_TELEMETRY__LOG_LEVEL",
        "warn,mlmesh_runtime=info,mlmesh_gateway=info".to_owned(),
    );
    println!("starting embedding, vector-search, inference, registry and two gateways…");
    let data = TempDir::new("bench-console");
    let (embedding, vector, inference, registry) = {
        let d = data.path().to_owned();
        let q = quiet.clone();
        tokio::task::spawn_blocking(move || {
            let embedding = Service::start("mlmesh-embedding", std::slice::from_ref(&q));
            let vector = Service::start(
                "mlmesh-vector-search",
                &[
                    q.clone(),
                    (
                        "MLMESH_VECTOR__DATA_DIR",
                        d.join("vector").display().to_string(),
                    ),
                ],
            );
            let inference = Service::start("mlmesh-inference", std::slice::from_ref(&q));
            let registry = Service::start(
                "mlmesh-registry",
                &[
                    q,
                    (
                        "MLMESH_REGISTRY__DATA_DIR",
                        d.join("registry").display().to_string(),
                    ),
                ],
            );
            (embedding, vector, inference, registry)
        })
        .await?
    };
    let gateway = |console: bool| {
        let env = [
            quiet.clone(),
            ("MLMESH_HTTP__LISTEN", "127.0.0.1:0".to_owned()),
            ("MLMESH_DOWNSTREAM__EMBEDDING", embedding.addr.to_string()),
            ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", vector.addr.to_string()),
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
            ("MLMESH_DOWNSTREAM__REGISTRY", registry.addr.to_string()),
            ("MLMESH_CONSOLE__ENABLED", console.to_string()),
        ];
        tokio::task::spawn_blocking(move || {
            let e: Vec<(&str, String)> = env.iter().map(|(k, v)| (*k, v.clone())).collect();
            Service::start("mlmesh-gateway", &e)
        })
    };
    let (plain, with_console) = (gateway(false).await?, gateway(true).await?);
    let http = with_console
        .http_addr
        .context("the gateway's HTTP address")?;
    let (plain_pid, console_pid) = (plain.child.id(), with_console.child.id());

    // 1. CPU at idle, alternating: floor, console without viewers, console
    // with N viewers (the floor gateway measured in the same windows).
    println!(
        "\nlive overview at idle: {} windows of {:.0} s per configuration, {} consoles",
        args.rounds, args.window_secs, args.consoles
    );
    let (mut floor, mut idle, mut viewed, mut events) = (Vec::new(), Vec::new(), Vec::new(), 0);
    for _ in 0..args.rounds {
        let w = args.window_secs;
        let (f, i) = tokio::task::spawn_blocking(move || {
            let t = std::thread::spawn(move || cpu_pct(plain_pid, w));
            let i = cpu_pct(console_pid, w);
            (t.join().unwrap_or(0.0), i)
        })
        .await?;
        floor.push(f);
        idle.push(i);
        let viewers = (0..args.consoles)
            .map(|_| Viewer::open(http))
            .collect::<anyhow::Result<Vec<_>>>()?;
        std::thread::sleep(Duration::from_secs(1));
        let v = tokio::task::spawn_blocking(move || cpu_pct(console_pid, w)).await?;
        viewed.push(v);
        events += viewers.into_iter().map(Viewer::close).sum::<u64>();
    }
    let (f, i, v) = (
        median(floor.clone()),
        median(idle.clone()),
        median(viewed.clone()),
    );
    println!("| gateway | CPU (% of one core, median) | windows |");
    println!("|---|---:|---|");
    println!("| console off (floor) | {f:.3} | {floor:.3?} |");
    println!("| console on, no viewer | {i:.3} | {idle:.3?} |");
    println!(
        "| console on, {} open overviews | {v:.3} | {viewed:.3?} |",
        args.consoles
    );
    println!(
        "{} consoles cost {:.3} % of one core over the console at rest ({:.3} % over the floor); {events} events delivered",
        args.consoles,
        v - i,
        v - f
    );

    // 2. The Models page with many versions.
    println!("\nmodels page: pushing {} versions…", args.versions);
    let reg_addr = registry.addr;
    let mut c = RegistryClient::connect(format!("http://{reg_addr}")).await?;
    let model = "bench-many";
    c.create_model(pb::CreateModelRequest {
        name: model.into(),
        ..Default::default()
    })
    .await?;
    let files = TempDir::new("bench-console-version");
    std::fs::write(files.path().join("model.bin"), b"tiny")?;
    let mut rc = mlmesh_registry_client::connect(&reg_addr.to_string(), None, None)
        .map_err(anyhow::Error::msg)?;
    let t0 = Instant::now();
    for i in 0..args.versions {
        let v = mlmesh_registry_client::push::push(
            &mut rc,
            model,
            files.path(),
            None,
            mlmesh_registry_client::push::About::default(),
            1 << 20,
            |_| {},
        )
        .await?;
        if i % 10 == 0 {
            let check = pb::Check {
                name: "benchmark.throughput".into(),
                passed: true,
                detail: "synthetic record for the page's size".into(),
                figures: [("mean".to_owned(), 100.0 + i as f64)].into(),
                non_inferiority: None,
            };
            c.record_evidence(pb::RecordEvidenceRequest {
                evidence: Some(pb::Evidence {
                    model: model.into(),
                    version: v.version,
                    manifest_digest: v.manifest_digest.clone(),
                    suite_digest: "0".repeat(64),
                    passed: true,
                    checks: vec![check],
                    kind: "benchmark".into(),
                    ..Default::default()
                }),
            })
            .await?;
        }
    }
    println!(
        "{} versions pushed in {:.1} s",
        args.versions,
        t0.elapsed().as_secs_f64()
    );
    let page = format!("/v1/registry/models/{model}?page_size=50");
    let mut hc = HttpClient::new(http);
    let (mut gw, mut floor) = (Vec::new(), Vec::new());
    for _ in 0..args.calls {
        let t = Instant::now();
        let (status, body) = hc
            .request("GET", &page, &[], &[])
            .map_err(|e| anyhow::anyhow!("GET {page}: {e}"))?;
        gw.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(
            status == 200,
            "{status}: {}",
            String::from_utf8_lossy(&body)
        );
        let t = Instant::now();
        c.list_versions(pb::ListVersionsRequest {
            model: model.into(),
            page_size: 50,
            ..Default::default()
        })
        .await?;
        floor.push(t.elapsed().as_secs_f64() * 1e3);
    }
    println!("| call | median ms | p90 ms |");
    println!("|---|---:|---:|");
    let p90 = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[(v.len() * 9 / 10).min(v.len() - 1)]
    };
    println!(
        "| gateway GET /v1/registry/models/{{m}} ({} versions, 50 per page, 500 evidence) | {:.2} | {:.2} |",
        args.versions,
        median(gw.clone()),
        p90(gw)
    );
    println!(
        "| registry ListVersions, 50 (the floor) | {:.2} | {:.2} |",
        median(floor.clone()),
        p90(floor)
    );
    drop((plain, with_console, embedding, vector, inference, registry));
    Ok(())
}
