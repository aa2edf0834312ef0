//! `mlmesh up`: starts the embedding, vector-search, inference, registry and gateway
//! binaries (built beside this one) as separate processes on their default
//! addresses, waits until the gateway can reach them, ingests mlmesh's own
//! docs as a demo collection, prints copy-paste examples, and on Ctrl-C /
//! SIGTERM stops every process cleanly.
//!
//! Processes rather than one binary: it is the deployment shape (each
//! service scales on its own), so what `make run` shows is what runs in a
//! cluster.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use mlmesh_proto::{
    embedding::v1::EmbedRequest,
    gateway::v1::{self as gw, gateway_client::GatewayClient},
};
use mlmesh_runtime::shutdown::signal;

#[derive(clap::Args, Debug)]
pub struct Up {
    /// Gateway gRPC address.
    #[arg(long, default_value = "127.0.0.1:50050")]
    gateway: String,
    /// Gateway HTTP/JSON address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    http: String,
    /// Embedding service address.
    #[arg(long, default_value = "127.0.0.1:50051")]
    embedding: String,
    /// Vector-search service address.
    #[arg(long, default_value = "127.0.0.1:50052")]
    vector_search: String,
    /// Inference service address (Open Inference Protocol, tritonclient).
    #[arg(long, default_value = "127.0.0.1:50053")]
    inference: String,
    /// Prometheus /metrics of the gateway, embedding, vector-search and inference.
    #[arg(long, default_value = "127.0.0.1:9050")]
    gateway_metrics: String,
    #[arg(long, default_value = "127.0.0.1:9051")]
    embedding_metrics: String,
    #[arg(long, default_value = "127.0.0.1:9052")]
    vector_search_metrics: String,
    #[arg(long, default_value = "127.0.0.1:9053")]
    inference_metrics: String,
    /// Model registry address (`mlmesh registry …` talks to it).
    #[arg(long, default_value = "127.0.0.1:50054")]
    registry: String,
    #[arg(long, default_value = "127.0.0.1:9054")]
    registry_metrics: String,
    /// Registry data folder (SQLite metadata, blobs).
    #[arg(long, default_value = ".cache/mlmesh/registry-data")]
    registry_dir: PathBuf,
    /// Vector-search data folder.
    #[arg(long, default_value = ".cache/mlmesh/vector-data")]
    data_dir: PathBuf,
    /// Collection the demo corpus goes into (replaced on every start).
    #[arg(long, default_value = "mlmesh-docs")]
    demo_collection: String,
    /// Start the services only; no demo corpus.
    #[arg(long)]
    no_demo: bool,
    /// Log filter for the services (RUST_LOG, when set, wins).
    #[arg(long, default_value = "warn,mlmesh_runtime=info,qdrant_edge=error")]
    log_level: String,
}

/// The gateway's settings: the demo pipelines (compiled in, written beside
/// the data folders at start).
const DEMO_GATEWAY: &str = include_str!("../../deploy/demo/gateway.toml");

/// The demo corpus: mlmesh's own docs, compiled in so `mlmesh up` works
/// from any folder.
const DEMO: &[(&str, &str)] = &[
    ("README.md", include_str!("../../README.md")),
    ("ARCHITECTURE.md", include_str!("../../ARCHITECTURE.md")),
    ("docs/services.md", include_str!("../../docs/services.md")),
    ("docs/inference.md", include_str!("../../docs/inference.md")),
    ("docs/registry.md", include_str!("../../docs/registry.md")),
    (
        "docs/validation.md",
        include_str!("../../docs/validation.md"),
    ),
    (
        "docs/front-door.md",
        include_str!("../../docs/front-door.md"),
    ),
    ("docs/models.md", include_str!("../../docs/models.md")),
    ("docs/console.md", include_str!("../../docs/console.md")),
    (
        "docs/benchmarking.md",
        include_str!("../../docs/benchmarking.md"),
    ),
    ("docs/deploy.md", include_str!("../../docs/deploy.md")),
    (
        "docs/configuration/README.md",
        include_str!("../../docs/configuration/README.md"),
    ),
    ("docs/metrics.md", include_str!("../../docs/metrics.md")),
    (
        "docs/benchmarks.md",
        include_str!("../../docs/benchmarks.md"),
    ),
];

struct Proc {
    name: &'static str,
    child: Child,
}

/// A binary built beside this one (`target/<profile>/`).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mlmesh binary")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: build the services first (`cargo build --release --workspace --bins`, which `make run` does)",
            path.display()
        );
    }
    Ok(path)
}

fn spawn(
    name: &'static str,
    args: &[String],
    env: &[(&str, String)],
    log: &str,
) -> anyhow::Result<Proc> {
    let mut cmd = Command::new(sibling(name)?);
    cmd.args(args)
        .env("MLMESH_TELEMETRY__LOG_LEVEL", log)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().with_context(|| format!("starting {name}"))?;
    let label = name.trim_start_matches("mlmesh-");
    // Prefix each service's output so the interleaved logs stay readable.
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[{label:>13}] {line}");
            }
        });
    }
    Ok(Proc { name, child })
}

/// SIGTERM to each process, then wait for all (killing any still running
/// after `grace`).
fn stop_all(procs: &mut [Proc], grace: Duration) {
    for p in procs.iter() {
        let _ = Command::new("kill")
            .args(["-TERM", &p.child.id().to_string()])
            .status();
    }
    let deadline = Instant::now() + grace;
    for p in procs.iter_mut() {
        loop {
            match p.child.try_wait() {
                Ok(Some(status)) => {
                    eprintln!("mlmesh: {} stopped ({status})", p.name);
                    break;
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                _ => {
                    eprintln!("mlmesh: {} did not stop in time; killing it", p.name);
                    let _ = p.child.kill();
                    let _ = p.child.wait();
                    break;
                }
            }
        }
    }
}

/// Waits until the gateway answers a real embed and a collection listing
/// (so both downstream services are up), or a process dies.
async fn wait_ready(
    procs: &mut [Proc],
    gateway: &str,
    downstream: &[&str],
) -> anyhow::Result<GatewayClient<tonic::transport::Channel>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = String::from("not started");
    loop {
        for p in procs.iter_mut() {
            if let Some(status) = p.child.try_wait()? {
                bail!(
                    "{} exited during start-up ({status}); see its log above",
                    p.name
                );
            }
        }
        if Instant::now() > deadline {
            bail!("the mesh was not ready within 180 s: {last}");
        }
        // Each service binds only once it can serve (models loaded,
        // collections opened): probe their ports before asking the gateway,
        // so start-up does not fill the log with its retries.
        let mut listening = true;
        for &addr in downstream {
            if tokio::net::TcpStream::connect(addr).await.is_err() {
                listening = false;
                last = format!("{addr} is not listening yet");
            }
        }
        if !listening {
            tokio::time::sleep(Duration::from_millis(250)).await;
            continue;
        }
        match GatewayClient::connect(format!("http://{gateway}")).await {
            Ok(mut c) => {
                let embed = c
                    .embed(EmbedRequest {
                        inputs: vec!["ready?".into()],
                        ..Default::default()
                    })
                    .await;
                let list = c.list_collections(gw::ListCollectionsRequest {}).await;
                match (embed, list) {
                    (Ok(_), Ok(_)) => return Ok(c),
                    (Err(e), _) | (_, Err(e)) => last = e.message().to_owned(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The registry's demo model: the bundled iris classifier as `iris-logreg`
/// v1 in `production` and the same files again as v2, validated against
/// v1, so the console's Models page has versions, an alias, evidence and a
/// history to act on. Left as it
/// is when the model exists (a restart keeps what was done to it).
async fn seed_registry(addr: &str) -> anyhow::Result<&'static str> {
    use mlmesh_proto::registry::v1 as pb;
    let mut c = mlmesh_registry_client::connect(addr, None, None).map_err(anyhow::Error::msg)?;
    if c.get_model(pb::GetModelRequest {
        name: "iris-logreg".into(),
    })
    .await
    .is_ok()
    {
        return Ok("kept");
    }
    c.create_model(pb::CreateModelRequest {
        name: "iris-logreg".into(),
        description:
            "Iris species from flower measurements (scikit-learn logistic regression, ONNX)".into(),
        tags: [("task".to_owned(), "classification".to_owned())].into(),
        metadata: None,
    })
    .await
    .context("creating the demo model")?;
    let dir = Path::new("services/inference/models/iris-logreg");
    for _ in 0..2 {
        mlmesh_registry_client::push::push(
            &mut c,
            "iris-logreg",
            dir,
            None,
            mlmesh_registry_client::push::About::default(),
            1 << 20,
            |_| {},
        )
        .await
        .context("pushing the demo model")?;
    }
    c.set_aliases(pb::SetAliasesRequest {
        model: "iris-logreg".into(),
        aliases: vec![pb::AliasTarget {
            alias: "production".into(),
            version: 1,
            expected_version: Some(0),
        }],
        reason: "demo data (mlmesh up)".into(),
        override_policy: false,
    })
    .await
    .context("setting the demo alias")?;
    // Evidence for the Models page: v2 validated for real against v1 (the
    // bundled iris suite, one inference process per version).
    let conn = crate::registry::RegistryConn {
        addr: addr.to_owned(),
        admin_token_file: None,
        tls_ca_file: None,
        tls_cert_file: None,
        tls_key_file: None,
    };
    crate::model::validate::validate(crate::model::validate::Validate::recording(
        "iris-logreg",
        2,
        "tests/data/validation/iris-suite.json",
        Some(1),
        conn,
    ))
    .await
    .context("validating the demo model")?;
    Ok("created")
}

async fn load_demo(
    c: &mut GatewayClient<tonic::transport::Channel>,
    name: &str,
) -> anyhow::Result<u64> {
    // Replace, so every start has exactly the current docs.
    let _ = c
        .delete_collection(gw::DeleteCollectionRequest { name: name.into() })
        .await;
    c.create_collection(gw::CreateCollectionRequest {
        name: name.into(),
        ..Default::default()
    })
    .await
    .context("creating the demo collection")?;
    let documents = DEMO
        .iter()
        .map(|(id, text)| gw::Document {
            id: (*id).into(),
            text: (*text).into(),
            metadata: None,
        })
        .collect();
    let r = c
        .ingest(gw::IngestRequest {
            collection: name.into(),
            documents,
            chunking: None,
        })
        .await
        .context("ingesting the demo corpus")?
        .into_inner();
    Ok(r.chunks)
}

fn examples(u: &Up) -> String {
    let http = &u.http;
    let coll = &u.demo_collection;
    format!(
        r#"
mlmesh is up. The console: http://{http}/ui/

Try:

  # hybrid search (meaning and words) over mlmesh's own docs
  curl -s http://{http}/v1/collections/{coll}/search \
    -H 'content-type: application/json' \
    -d '{{"query": "how do I run the tests?", "limit": 3}}'

  # RAG retrieval: the context to give a text generator, with sources
  curl -s http://{http}/v1/rag/query -H 'content-type: application/json' \
    -d '{{"collection": "{coll}", "query": "what happens on SIGTERM?", "top_k": 3}}'

  # OpenAI-compatible embeddings
  curl -s http://{http}/v1/embeddings -H 'content-type: application/json' \
    -d '{{"input": ["hello world"], "model": "all-MiniLM-L6-v2"}}'

  # gRPC (reflection is on)
  grpcurl -plaintext -d '{{"collection": "{coll}", "query": "chunking", "limit": 2}}' \
    {grpc} mlmesh.gateway.v1.Gateway/Search

  # a pipeline: text → MiniLM embedding → topic classifier (v2, fallback v1)
  curl -s http://{http}/v1/pipelines/topic -H 'content-type: application/json' \
    -d '{{"inputs": {{"text": ["Heavy snow is expected tonight", "Whisk the eggs with sugar"]}}}}'
  # …with an A/B split between two versions, sticky per caller
  curl -s http://{http}/v1/pipelines/topic-ab -H 'content-type: application/json' \
    -d '{{"inputs": {{"text": "The striker scored twice"}}, "sticky_key": "alice"}}'

  # every model of the mesh; inference through the gateway (REST, OIP)
  curl -s http://{http}/v1/models
  curl -s http://{http}/v2/models/iris-logreg/infer -H 'content-type: application/json' \
    -d '{{"inputs": [{{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}}]}}'

  # model serving (Open Inference Protocol; Triton's and KServe's clients work,
  # against the inference service or the gateway, which forwards it)
  python3 -c 'import numpy as np, tritonclient.grpc as g
  c = g.InferenceServerClient("{inference}")
  x = g.InferInput("input", [1, 4], "FP32"); x.set_data_from_numpy(np.array([[5.1, 3.5, 1.4, 0.2]], np.float32))
  print(c.infer("iris-logreg", [x]).as_numpy("probabilities"))'
  grpcurl -plaintext -d '{{"model_name": "iris-logreg", "inputs": [{{"name": "input", "datatype": "FP32", "shape": [1, 4], "contents": {{"fp32_contents": [5.1, 3.5, 1.4, 0.2]}}}}]}}' \
    {inference} inference.GRPCInferenceService/ModelInfer
  grpcurl -plaintext {inference} inference.GRPCInferenceService/RepositoryIndex

  # model registry: push a folder as a version, promote it, pull it back verified
  mlmesh registry create iris && mlmesh registry push iris services/inference/models/iris-logreg
  mlmesh registry alias set iris production 1 --expect 0 && mlmesh registry alias history iris
  mlmesh registry pull iris @production /tmp/iris && mlmesh registry watch --from 1

  readiness: curl -s http://{http}/readyz     metrics: curl -s http://{metrics}/metrics

Ctrl-C stops all five services.
"#,
        grpc = u.gateway,
        metrics = u.gateway_metrics,
        inference = u.inference,
    )
}

pub async fn up(u: Up) -> anyhow::Result<()> {
    let log = std::env::var("RUST_LOG").unwrap_or_else(|_| u.log_level.clone());
    let mut procs = Vec::new();
    let started = async {
        procs.push(spawn(
            "mlmesh-embedding",
            &[
                "--listen".into(),
                u.embedding.clone(),
                "--metrics-listen".into(),
                u.embedding_metrics.clone(),
            ],
            &[],
            &log,
        )?);
        procs.push(spawn(
            "mlmesh-vector-search",
            &[
                "--listen".into(),
                u.vector_search.clone(),
                "--metrics-listen".into(),
                u.vector_search_metrics.clone(),
                "--data-dir".into(),
                u.data_dir.display().to_string(),
            ],
            &[],
            &log,
        )?);
        procs.push(spawn(
            "mlmesh-inference",
            &[
                "--listen".into(),
                u.inference.clone(),
                "--metrics-listen".into(),
                u.inference_metrics.clone(),
            ],
            &[],
            &log,
        )?);
        procs.push(spawn(
            "mlmesh-registry",
            &[
                "--listen".into(),
                u.registry.clone(),
                "--metrics-listen".into(),
                u.registry_metrics.clone(),
            ],
            &[(
                "MLMESH_REGISTRY__DATA_DIR",
                u.registry_dir.display().to_string(),
            )],
            &log,
        )?);
        let gateway_config = u
            .data_dir
            .parent()
            .unwrap_or(Path::new("."))
            .join("gateway-demo.toml");
        if let Some(dir) = gateway_config.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&gateway_config, DEMO_GATEWAY)
            .with_context(|| format!("writing {}", gateway_config.display()))?;
        procs.push(spawn(
            "mlmesh-gateway",
            &[
                "--config".into(),
                gateway_config.display().to_string(),
                "--listen".into(),
                u.gateway.clone(),
                "--metrics-listen".into(),
                u.gateway_metrics.clone(),
                "--http-listen".into(),
                u.http.clone(),
            ],
            &[
                ("MLMESH_DOWNSTREAM__EMBEDDING", u.embedding.clone()),
                ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", u.vector_search.clone()),
                ("MLMESH_DOWNSTREAM__INFERENCE", u.inference.clone()),
                ("MLMESH_DOWNSTREAM__REGISTRY", u.registry.clone()),
            ],
            &log,
        )?);
        eprintln!(
            "mlmesh: starting embedding, vector-search, inference, registry and gateway; waiting until they serve…"
        );
        let mut client = wait_ready(
            &mut procs,
            &u.gateway,
            &[&u.embedding, &u.vector_search, &u.inference, &u.registry],
        )
        .await?;
        if !u.no_demo {
            match seed_registry(&u.registry).await {
                Ok(what) => eprintln!(
                    "mlmesh: registry demo model iris-logreg {what} (v1 in production, v2 validated against it, to promote)"
                ),
                Err(e) => eprintln!("mlmesh: registry demo model not created: {e:#}"),
            }
            let t0 = Instant::now();
            let chunks = load_demo(&mut client, &u.demo_collection).await?;
            eprintln!(
                "mlmesh: demo corpus ({} docs, {chunks} chunks) loaded into {:?} in {:.1} s",
                DEMO.len(),
                u.demo_collection,
                t0.elapsed().as_secs_f64()
            );
        }
        println!("{}", examples(&u));
        anyhow::Ok(())
    };
    // Ctrl-C during start-up stops everything too.
    let result = tokio::select! {
        r = started => Some(r),
        () = signal() => None,
    };
    match result {
        Some(Ok(())) => {}
        Some(Err(e)) => {
            stop_all(&mut procs, Duration::from_secs(35));
            return Err(e);
        }
        None => {
            stop_all(&mut procs, Duration::from_secs(35));
            return Ok(());
        }
    }
    // Run until a signal or until one service dies.
    loop {
        tokio::select! {
            () = signal() => break,
            () = tokio::time::sleep(Duration::from_millis(500)) => {
                let dead = procs
                    .iter_mut()
                    .find_map(|p| matches!(p.child.try_wait(), Ok(Some(_))).then_some(p.name));
                if let Some(name) = dead {
                    stop_all(&mut procs, Duration::from_secs(35));
                    bail!("{name} exited; stopped the others");
                }
            }
        }
    }
    eprintln!("mlmesh: stopping (each service drains its in-flight calls)…");
    stop_all(&mut procs, Duration::from_secs(35));
    Ok(())
}
