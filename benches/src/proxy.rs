//! `mlmesh-bench proxy`: the gateway forwarding Open Inference Protocol
//! calls, side by side with the proxies a platform team would deploy
//! instead: nginx (`grpc_pass`) and HAProxy (HTTP/2 to HTTP/2), all in
//! front of the same inference replica.
//!
//! One load generator for every target: h2load (nghttp2's HTTP/2
//! benchmarking client, C, one thread), sending the same unary
//! `ModelInfer` (iris-logreg, one row) as a gRPC frame on `-c` connections
//! with one stream each (closed loop). Targets alternate within each round
//! (the order rotates per round), so drift on a shared machine hits every
//! target alike; figures are medians over rounds.
//!
//! Reported per concurrency and target: calls/s, p50/p99 (from h2load's
//! per-request log), the p50 the hop adds over calling the replica directly
//! in the same round, and the CPU the proxy process(es) spent per forwarded
//! call (`/proc/<pid>/stat`, every process of nginx's and HAProxy's groups).
//!
//! h2load sees HTTP statuses only; a gRPC error travels in a trailer with
//! status 200. So before measuring, every target answers the same call
//! through a real gRPC client and its output must equal the replica's own
//! answer byte for byte.
//!
//! The peers' configuration is in `benches/peers/` (their defaults, with the
//! changes a fair run needs and why); `benches/peers/install-proxies.sh`
//! installs the pinned Debian packages.

use std::{
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use mlmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use mlmesh_tests::{OutputWithin as _, Service, TempDir};
use prost::Message as _;
use tonic::transport::Channel;

use crate::{
    cpu_secs, median,
    peer::{Peer, free_port, peers_dir},
};

#[derive(Parser)]
pub struct ProxyArgs {
    /// Concurrent connections (h2load `-c`, one stream each),
    /// comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    concurrency: Vec<usize>,
    /// Seconds of measurement per target and round (after 0.5 s warm-up).
    #[arg(long, default_value_t = 4.0)]
    duration: f64,
    /// Rounds; figures are medians over rounds.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Targets to measure, comma-separated, from `direct`, `gateway`,
    /// `nginx`, `haproxy`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,gateway,nginx,haproxy"
    )]
    targets: Vec<String>,
    /// Run only this target for `--duration` seconds at the first
    /// concurrency and print its pid first (for attaching `perf`).
    #[arg(long)]
    only: Option<String>,
    /// Extra environment for the gateway process, `KEY=VALUE`; repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    gateway_env: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Direct,
    Gateway,
    Nginx,
    Haproxy,
}

impl Target {
    fn parse(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "direct" => Self::Direct,
            "gateway" => Self::Gateway,
            "nginx" => Self::Nginx,
            "haproxy" => Self::Haproxy,
            other => bail!("unknown target {other:?}: direct, gateway, nginx or haproxy"),
        })
    }

    fn label(self) -> &'static str {
        match self {
            Self::Direct => "replica directly",
            Self::Gateway => "mlmesh gateway",
            Self::Nginx => "nginx grpc_pass",
            Self::Haproxy => "HAProxy h2",
        }
    }
}

fn render(template: &Path, vars: &[(&str, String)]) -> anyhow::Result<String> {
    let mut s = std::fs::read_to_string(template)
        .with_context(|| format!("reading {}", template.display()))?;
    for (k, v) in vars {
        s = s.replace(&format!("{{{{{k}}}}}"), v);
    }
    ensure!(
        !s.contains("{{"),
        "{} has a placeholder left",
        template.display()
    );
    Ok(s)
}

/// Starts a peer proxy (`nginx` or `haproxy`) in front of `upstream` on a
/// free port, from its configuration template in `benches/peers/`.
fn start_peer(tool: &str, dir: &Path, upstream: SocketAddr) -> anyhow::Result<Peer> {
    let addr = free_port()?;
    let (template, args): (&str, &[&str]) = match tool {
        "nginx" => ("nginx.conf", &["-c"]),
        _ => ("haproxy.cfg", &["-db", "-f"]),
    };
    let conf = dir.join(template);
    std::fs::write(
        &conf,
        render(
            &peers_dir().join(template),
            &[
                ("LISTEN", addr.to_string()),
                ("UPSTREAM", upstream.to_string()),
                ("DIR", dir.display().to_string()),
            ],
        )?,
    )?;
    let mut cmd = Command::new(tool);
    if tool == "nginx" {
        cmd.arg("-p").arg(dir);
    }
    cmd.args(args).arg(&conf);
    Peer::start(cmd, addr, dir.join(format!("{tool}.out")))
}

fn iris() -> pb::ModelInferRequest {
    mlmesh_tests::iris_request("iris-logreg", [5.1, 3.5, 1.4, 0.2])
}

/// The request as one gRPC frame: flag byte, big-endian length, message.
fn grpc_frame(m: &impl prost::Message) -> Vec<u8> {
    let body = m.encode_to_vec();
    let mut f = Vec::with_capacity(5 + body.len());
    f.push(0);
    f.extend_from_slice(&(body.len() as u32).to_be_bytes());
    f.extend_from_slice(&body);
    f
}

/// The answer `addr` gives to the benchmark's call, as comparable bytes.
async fn answer(addr: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let ch = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    let r = GrpcInferenceServiceClient::new(ch)
        .model_infer(iris())
        .await
        .with_context(|| format!("ModelInfer through {addr}"))?
        .into_inner();
    ensure!(
        !r.raw_output_contents.is_empty(),
        "{addr} answered without outputs"
    );
    // The id and model version are the replica's; outputs must match.
    Ok(pb::ModelInferResponse {
        id: String::new(),
        ..r
    }
    .encode_to_vec())
}

struct Slice {
    qps: f64,
    p50_ms: f64,
    p99_ms: f64,
    calls: u64,
    cpu: f64,
}

/// One h2load run against `addr`.
fn h2load(
    addr: SocketAddr,
    payload: &Path,
    log: &Path,
    clients: usize,
    secs: f64,
) -> anyhow::Result<(f64, u64, Vec<u64>)> {
    // h2load appends to an existing log file.
    let _ = std::fs::remove_file(log);
    let out = Command::new("h2load")
        .args(["-c", &clients.to_string(), "-m", "1", "-t", "1"])
        .arg("-D")
        .arg(format!("{}ms", (secs * 1e3).round() as u64))
        .arg("--warm-up-time=500ms")
        .arg("-d")
        .arg(payload)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg(format!("--log-file={}", log.display()))
        .arg(format!(
            "http://{addr}/inference.GRPCInferenceService/ModelInfer"
        ))
        .output_within(Duration::from_secs_f64(secs + 60.0))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "h2load failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "requests: N total, N started, N done, N succeeded, 0 failed, 0 errored, 0 timeout"
    let req = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .context("h2load printed no requests line")?;
    let num = |word: &str| -> anyhow::Result<u64> {
        req.split(',')
            .find(|p| p.trim_end().ends_with(word))
            .and_then(|p| p.split_whitespace().find_map(|w| w.parse().ok()))
            .with_context(|| format!("no {word:?} in {req:?}"))
    };
    let (done, ok) = (num("done")?, num("succeeded")?);
    ensure!(
        ok == done && num("failed")? == 0 && num("errored")? == 0,
        "calls failed: {req}"
    );
    let status = text
        .lines()
        .find(|l| l.starts_with("status codes:"))
        .unwrap_or_default();
    ensure!(
        status.ends_with(" 0 3xx, 0 4xx, 0 5xx"),
        "not every answer was 2xx: {status}"
    );
    // "finished in 4.00s, 2500.00 req/s, …"
    let qps = text
        .lines()
        .find(|l| l.starts_with("finished in"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|p| p.split_whitespace().next()?.parse().ok())
        .context("h2load printed no req/s")?;
    let mut lat: Vec<u64> = std::fs::read_to_string(log)?
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (f.get(1) == Some(&"200")).then(|| f.get(2)?.parse().ok())?
        })
        .collect();
    lat.sort_unstable();
    Ok((qps, ok, lat))
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    sorted_us
        .get(((sorted_us.len() as f64 * p) as usize).min(sorted_us.len().saturating_sub(1)))
        .map_or(0.0, |us| *us as f64 / 1e3)
}

pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let targets = args
        .targets
        .iter()
        .map(|t| Target::parse(t))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for tool in ["h2load", "nginx", "haproxy"] {
        ensure!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .stdout(Stdio::null())
                .status()?
                .success(),
            "{tool} is not installed: run benches/peers/install-proxies.sh"
        );
    }
    let versions = [
        Command::new("nginx").arg("-v").output()?.stderr,
        Command::new("haproxy").arg("-v").output()?.stdout,
        Command::new("h2load").arg("--version").output()?.stdout,
    ]
    .map(|b| {
        String::from_utf8_lossy(&b)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    println!(
        "peers: {}; {}; load: {}",
        versions[0], versions[1], versions[2]
    );

    let dir = TempDir::new("bench-proxy");
    let log = (
        "MLMESH_TELEMETRY__LOG_LEVEL",
        "warn,mlmesh_runtime=info".to_owned(),
    );
    let gateway_env = args.gateway_env.clone();
    let (inference, gateway) = tokio::task::spawn_blocking(move || {
        let inference = Service::start("mlmesh-inference", std::slice::from_ref(&log));
        let extra: Vec<(String, String)> = gateway_env
            .iter()
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
            })
            .collect();
        let mut env = vec![
            log,
            ("MLMESH_HTTP__LISTEN", "off".to_owned()),
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
        ];
        env.extend(extra.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let gateway = Service::start("mlmesh-gateway", &env);
        (inference, gateway)
    })
    .await?;
    let nginx = start_peer("nginx", dir.path(), inference.addr)?;
    let haproxy = start_peer("haproxy", dir.path(), inference.addr)?;
    let addr = |t: Target| match t {
        Target::Direct => inference.addr,
        Target::Gateway => gateway.addr,
        Target::Nginx => nginx.addr,
        Target::Haproxy => haproxy.addr,
    };
    let cpu = |t: Target| match t {
        Target::Direct => 0.0,
        Target::Gateway => cpu_secs(gateway.child.id()),
        Target::Nginx => nginx.cpu(),
        Target::Haproxy => haproxy.cpu(),
    };

    // Every target must give the replica's own answer.
    let want = answer(inference.addr).await?;
    for &t in &targets {
        let got = answer(addr(t)).await?;
        ensure!(
            got == want,
            "{} answered differently from the replica",
            t.label()
        );
    }
    let payload = dir.path().join("infer.grpc");
    std::fs::write(&payload, grpc_frame(&iris()))?;
    let h2log = dir.path().join("h2load.log");

    if let Some(only) = &args.only {
        let t = Target::parse(only)?;
        let pid = match t {
            Target::Direct => inference.child.id(),
            Target::Gateway => gateway.child.id(),
            Target::Nginx => nginx.child.id(),
            Target::Haproxy => haproxy.child.id(),
        };
        println!("pid {pid}: {} for {:.0} s", t.label(), args.duration);
        let c = args.concurrency.first().copied().unwrap_or(8);
        let (qps, calls, _) = h2load(addr(t), &payload, &h2log, c, args.duration)?;
        println!("{calls} calls, {qps:.0} calls/s");
        return Ok(());
    }

    println!(
        "ModelInfer iris-logreg (1 row), h2load -m 1; {} rounds × {:.1} s per target, order rotating per round\n",
        args.rounds, args.duration
    );
    for &c in &args.concurrency {
        let mut slices: Vec<Vec<Slice>> = targets.iter().map(|_| Vec::new()).collect();
        let mut added: Vec<Vec<f64>> = targets.iter().map(|_| Vec::new()).collect();
        for r in 0..args.rounds.max(1) {
            let mut round_p50 = vec![0.0; targets.len()];
            for k in 0..targets.len() {
                let i = (k + r) % targets.len();
                let t = targets[i];
                let c0 = cpu(t);
                let (qps, calls, lat) = h2load(addr(t), &payload, &h2log, c, args.duration)
                    .with_context(|| format!("{} at {c} clients", t.label()))?;
                let s = Slice {
                    qps,
                    p50_ms: percentile_ms(&lat, 0.5),
                    p99_ms: percentile_ms(&lat, 0.99),
                    calls,
                    cpu: cpu(t) - c0,
                };
                round_p50[i] = s.p50_ms;
                slices[i].push(s);
            }
            if let Some(d) = targets.iter().position(|t| *t == Target::Direct) {
                for i in 0..targets.len() {
                    added[i].push(round_p50[i] - round_p50[d]);
                }
            }
        }
        print_cell(c, &targets, &slices, &added);
    }
    drop(nginx);
    drop(haproxy);
    tokio::task::spawn_blocking(move || {
        drop(gateway);
        drop(inference);
    })
    .await?;
    Ok(())
}

fn print_cell(c: usize, targets: &[Target], slices: &[Vec<Slice>], added: &[Vec<f64>]) {
    let med = |i: usize, f: &dyn Fn(&Slice) -> f64| median(slices[i].iter().map(f).collect());
    let qps_of = |t: Target| {
        targets
            .iter()
            .position(|x| *x == t)
            .map(|i| med(i, &|s| s.qps))
    };
    let (nginx, haproxy) = (qps_of(Target::Nginx), qps_of(Target::Haproxy));
    println!("{c} clients");
    println!(
        "  {:<18} {:>9} {:>8} {:>8} {:>8} {:>8} {:>10} {:>12}",
        "target",
        "calls/s",
        "×nginx",
        "×haproxy",
        "p50 ms",
        "p99 ms",
        "added p50",
        "proxy CPU/call"
    );
    for (i, t) in targets.iter().enumerate() {
        let qps = med(i, &|s| s.qps);
        let ratio = |b: Option<f64>| b.map_or("-".to_owned(), |b| format!("{:.2}", qps / b));
        let cpu_us = median(
            slices[i]
                .iter()
                .map(|s| s.cpu / s.calls.max(1) as f64 * 1e6)
                .collect(),
        );
        println!(
            "  {:<18} {:>9.0} {:>8} {:>8} {:>8.3} {:>8.3} {:>10} {:>12}",
            t.label(),
            qps,
            ratio(nginx),
            ratio(haproxy),
            med(i, &|s| s.p50_ms),
            med(i, &|s| s.p99_ms),
            if *t == Target::Direct || added[i].is_empty() {
                "-".to_owned()
            } else {
                format!("{:+.3}", median(added[i].clone()))
            },
            if *t == Target::Direct {
                "-".to_owned()
            } else {
                format!("{cpu_us:.1} µs")
            },
        );
    }
}
