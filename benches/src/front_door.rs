//! `mlmesh-bench gateway --part front-door`: what the front door's newer
//! duties cost, each against its baseline in the same run, on the same
//! processes, in alternating rounds (drift on a shared machine hits both
//! sides alike):
//!
//! - **inference**: `ModelInfer` (iris-logreg, one row) on the inference
//!   service directly vs. through the gateway (forwarded undecoded);
//! - **pipeline**: the two-step `topic` pipeline (MiniLM embedding →
//!   classifier) as one `RunPipeline` on the gateway vs. the client making
//!   the same two calls itself (`Embed`, then `ModelInfer` with the vector),
//!   directly on the services, and the same two calls made through the
//!   gateway (the client's alternative once the services sit behind it);
//! - **auth**: the same `ModelInfer` through a gateway with API-key auth
//!   and a (never reached) rate limit vs. an identical gateway without.
//!
//! Closed loop: `concurrency` tasks each call back to back. Reported per
//! path: QPS and p50 (medians over rounds), and the ratio to the baseline.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use mlmesh_proto::{
    embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient},
    gateway::v1::{self as gw, gateway_client::GatewayClient},
    inference::{
        self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    },
};
use mlmesh_tests::{MeshProcesses, Service, TempDir, repo_root};
use tonic::{Request, transport::Channel};

use crate::{TEXTS, median};

const KEY: &str = "mlm_bench_key_0f4e2a9c";

#[derive(Clone)]
struct Clients {
    inference: GrpcInferenceServiceClient<Channel>,
    via_gateway: GrpcInferenceServiceClient<Channel>,
    via_auth: GrpcInferenceServiceClient<Channel>,
    gateway: GatewayClient<Channel>,
    embedding: EmbeddingServiceClient<Channel>,
}

#[derive(Clone, Copy, PartialEq)]
enum Path {
    InferDirect,
    InferGateway,
    PipelineClient,
    PipelineClientViaGateway,
    PipelineGateway,
    AuthOff,
    AuthOn,
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::InferDirect => "ModelInfer, inference service directly",
            Path::InferGateway => "ModelInfer through the gateway",
            Path::PipelineClient => "Embed + ModelInfer by the client, on the services",
            Path::PipelineClientViaGateway => "Embed + ModelInfer by the client, via gateway",
            Path::PipelineGateway => "RunPipeline topic (same two steps)",
            Path::AuthOff => "ModelInfer via gateway, auth off",
            Path::AuthOn => "ModelInfer via gateway, API key + rate limit",
        }
    }
}

fn iris() -> pb::ModelInferRequest {
    mlmesh_tests::iris_request("iris-logreg", [5.1, 3.5, 1.4, 0.2])
}

fn keyed<T>(m: T) -> Request<T> {
    let mut r = Request::new(m);
    if let Ok(v) = format!("Bearer {KEY}").parse() {
        r.metadata_mut().insert("authorization", v);
    }
    r
}

async fn call(c: &mut Clients, p: Path, i: usize) -> anyhow::Result<()> {
    let text = TEXTS[i % TEXTS.len()].to_owned();
    match p {
        Path::InferDirect => {
            c.inference.model_infer(iris()).await?;
        }
        Path::InferGateway | Path::AuthOff => {
            c.via_gateway.model_infer(iris()).await?;
        }
        Path::AuthOn => {
            c.via_auth.model_infer(keyed(iris())).await?;
        }
        Path::PipelineGateway => {
            c.gateway
                .run_pipeline(gw::RunPipelineRequest {
                    pipeline: "topic".into(),
                    texts: [("text".to_owned(), gw::Texts { values: vec![text] })].into(),
                    ..Default::default()
                })
                .await?;
        }
        Path::PipelineClient | Path::PipelineClientViaGateway => {
            let rq = EmbedRequest {
                inputs: vec![text],
                ..Default::default()
            };
            let e = if p == Path::PipelineClient {
                c.embedding.embed(rq).await?.into_inner()
            } else {
                c.gateway.embed(rq).await?.into_inner()
            };
            let v = &e.embeddings[0].values;
            let infer = if p == Path::PipelineClient {
                &mut c.inference
            } else {
                &mut c.via_gateway
            };
            infer
                .model_infer(pb::ModelInferRequest {
                    model_name: "topic-classifier".into(),
                    model_version: "2".into(),
                    inputs: vec![InferInputTensor {
                        name: "input".into(),
                        datatype: "FP32".into(),
                        shape: vec![1, v.len() as i64],
                        ..Default::default()
                    }],
                    raw_input_contents: vec![
                        v.iter()
                            .flat_map(|x| x.to_le_bytes())
                            .collect::<Vec<u8>>()
                            .into(),
                    ],
                    ..Default::default()
                })
                .await?;
        }
    }
    Ok(())
}

/// `concurrency` loops on `p` for `secs`: (calls per second, p50 ms).
async fn slice(
    clients: &Clients,
    p: Path,
    concurrency: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64)> {
    let warm_until = Instant::now() + Duration::from_millis(300);
    let end = warm_until + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..concurrency)
        .map(|k| {
            let mut c = clients.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = k * 7919;
                loop {
                    let t0 = Instant::now();
                    if t0 >= end {
                        break;
                    }
                    call(&mut c, p, i).await?;
                    i += 1;
                    if t0 >= warm_until {
                        lat.push(t0.elapsed());
                    }
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let qps = all.len() as f64 / secs;
    all.sort_unstable();
    let p50 = all
        .get(all.len() / 2)
        .map_or(0.0, |d| d.as_secs_f64() * 1e3);
    Ok((qps, p50))
}

pub async fn run(concurrency: usize, secs: f64, rounds: usize) -> anyhow::Result<()> {
    println!(
        "\nfront door: starting inference, embedding, vector-search and two gateways (auth off / on)…"
    );
    let dir = TempDir::new("bench-front-door");
    let demo = std::fs::read_to_string(repo_root().join("deploy/demo/gateway.toml"))
        .context("deploy/demo/gateway.toml")?;
    let plain = dir.path().join("gateway.toml");
    std::fs::write(&plain, &demo)?;
    let hash = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(KEY.as_bytes()))
    };
    let with_auth = dir.path().join("gateway-auth.toml");
    std::fs::write(
        &with_auth,
        format!(
            "{demo}\n[auth]\nmode = \"required\"\n\n[[auth.keys]]\nname = \"bench\"\nsha256 = \"{hash}\"\ntier = \"bench\"\nscopes = [\"embed\", \"search\", \"predict\"]\n\n\
             [auth.tiers.bench]\nrequests_per_second = 1000000.0\nburst = 1000000\n"
        ),
    )?;
    // The runtime's info lines say where each service listens.
    let log = (
        "MLMESH_TELEMETRY__LOG_LEVEL",
        "warn,mlmesh_runtime=info,mlmesh_gateway=info".to_owned(),
    );
    let (inference, mesh, auth_gw) = tokio::task::spawn_blocking(move || {
        let inference = Service::start("mlmesh-inference", std::slice::from_ref(&log));
        let mesh = MeshProcesses::start_with(
            std::slice::from_ref(&log),
            &[
                ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
                ("MLMESH_CONFIG", plain.display().to_string()),
            ],
        );
        let auth_gw = Service::start(
            "mlmesh-gateway",
            &[
                log,
                ("MLMESH_HTTP__LISTEN", "off".into()),
                (
                    "MLMESH_DOWNSTREAM__EMBEDDING",
                    mesh.embedding.addr.to_string(),
                ),
                (
                    "MLMESH_DOWNSTREAM__VECTOR_SEARCH",
                    mesh.vector.addr.to_string(),
                ),
                ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
                ("MLMESH_CONFIG", with_auth.display().to_string()),
            ],
        );
        (inference, mesh, auth_gw)
    })
    .await?;
    let connect = |a: std::net::SocketAddr| async move {
        Channel::from_shared(format!("http://{a}"))?
            .connect()
            .await
            .context("connect")
    };
    let mut clients_per_task = Vec::new();
    for _ in 0..1 {
        let g = connect(mesh.gateway.addr).await?;
        clients_per_task.push(Clients {
            inference: GrpcInferenceServiceClient::new(connect(inference.addr).await?),
            via_gateway: GrpcInferenceServiceClient::new(g.clone()),
            via_auth: GrpcInferenceServiceClient::new(connect(auth_gw.addr).await?),
            gateway: GatewayClient::new(g),
            embedding: EmbeddingServiceClient::new(connect(mesh.embedding.addr).await?),
        });
    }
    let clients = Arc::new(clients_per_task.remove(0));
    println!(
        "{rounds} rounds of {secs:.1} s per path (after 0.3 s warm-up), concurrency {concurrency}, paths alternating within each round\n"
    );
    println!(
        "{:<48} {:>10} {:>9} {:>10}",
        "path", "QPS", "p50 ms", "vs base"
    );
    for (base, other) in [
        (Path::InferDirect, Path::InferGateway),
        (Path::PipelineClient, Path::PipelineGateway),
        (Path::PipelineClientViaGateway, Path::PipelineGateway),
        (Path::AuthOff, Path::AuthOn),
    ] {
        let (mut bq, mut bl, mut oq, mut ol) = (vec![], vec![], vec![], vec![]);
        for r in 0..rounds.max(1) {
            // Alternate which side goes first.
            let order = if r % 2 == 0 {
                [base, other]
            } else {
                [other, base]
            };
            for p in order {
                let (q, l) = slice(&clients, p, concurrency, secs).await?;
                if p == base {
                    bq.push(q);
                    bl.push(l);
                } else {
                    oq.push(q);
                    ol.push(l);
                }
            }
        }
        let (bq, bl, oq, ol) = (median(bq), median(bl), median(oq), median(ol));
        println!("{:<48} {bq:>10.0} {bl:>9.2} {:>10}", base.label(), "base");
        println!(
            "{:<48} {oq:>10.0} {ol:>9.2} {:>9.1}%",
            other.label(),
            (oq / bq - 1.0) * 100.0
        );
    }
    // Streaming: time to the first `result` event of an 8-row streamed
    // pipeline call vs. one unary run of the same pipeline on one row.
    let http = mesh.gateway.http_addr.context("gateway HTTP")?;
    let mut unary = Vec::new();
    let mut first = Vec::new();
    for r in 0..10 {
        let mut c = (*clients).clone();
        let t0 = Instant::now();
        call(&mut c, Path::PipelineGateway, r).await?;
        unary.push(t0.elapsed().as_secs_f64() * 1e3);
        first.push(tokio::task::spawn_blocking(move || first_event_ms(http, r)).await??);
    }
    println!(
        "\nSSE: first `result` event of an 8-row streamed `topic` call after {:.2} ms (median of 10); one unary RunPipeline: {:.2} ms",
        median(first),
        median(unary)
    );
    tokio::task::spawn_blocking(move || {
        drop(auth_gw);
        mesh.stop();
        drop(inference);
    })
    .await?;
    Ok(())
}

/// Milliseconds from sending an 8-row streamed pipeline call to reading its
/// first `result` event.
fn first_event_ms(addr: std::net::SocketAddr, offset: usize) -> anyhow::Result<f64> {
    use std::io::{BufRead as _, Write as _};
    let texts: Vec<&str> = (0..8)
        .map(|i| TEXTS[(offset * 8 + i) % TEXTS.len()])
        .collect();
    let body = serde_json::json!({"inputs": {"text": texts}, "stream": true}).to_string();
    let t0 = Instant::now();
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "POST /v1/pipelines/topic HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut r = std::io::BufReader::new(s);
    let mut line = String::new();
    loop {
        line.clear();
        anyhow::ensure!(
            r.read_line(&mut line)? > 0,
            "the stream ended before a result"
        );
        if line.starts_with("event: result") {
            return Ok(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
}
