//! Pipelines declared in the gateway's settings, run against real
//! processes (embedding, inference, vector-search, gateway) with the demo
//! topic classifier: labels as the reference implementation computed them
//! (`tests/data/topic-classifier.json`, by scripts/train-topic-classifier.py),
//! over HTTP and gRPC; sticky A/B arms; an ensemble whose branches overlap
//! in time; a switch; a fallback after UNAVAILABLE; a step timeout and a
//! failing step named in the status; a bad pipeline refused at start.

use mlmesh_tests::OutputWithin as _;
use std::process::Command;

use mlmesh_proto::{
    gateway::v1::{self as gw, gateway_client::GatewayClient},
    inference::{self as pb, grpc_inference_service_client::GrpcInferenceServiceClient},
};
use mlmesh_tests::{HttpClient, MeshProcesses, Service, TempDir, binary, repo_root};
use serde_json::{Value, json};

/// Test pipelines, beside the demo's.
const TEST_PIPELINES: &str = r#"
[pipelines.route]
inputs = ["text", "lang"]
outputs = { label = "classify.label" }

[[pipelines.route.steps]]
kind = "embed"
name = "embed"
input = "request.text"

[[pipelines.route.steps]]
kind = "switch"
name = "classify"
cases = [
  { when = { value = "request.lang", equals = "old" }, step = { kind = "infer", model = "topic-classifier", version = "1", inputs = { input = "embed.embedding" }, outputs = ["label"] } },
  { when = { value = "request.lang", equals = "broken" }, step = { kind = "infer", model = "no-such-model", inputs = { input = "embed.embedding" }, outputs = ["label"] } },
]
default = { kind = "infer", model = "topic-classifier", version = "2", inputs = { input = "embed.embedding" }, outputs = ["label"] }

[pipelines.canary]
inputs = ["text"]
outputs = { label = "classify.label" }

[[pipelines.canary.steps]]
kind = "embed"
name = "embed"
input = "request.text"

[[pipelines.canary.steps]]
kind = "infer"
name = "classify"
model = "topic-canary"
inputs = { input = "embed.embedding" }
outputs = ["label"]
fallback = { model = "topic-classifier", version = "1" }

[pipelines.embed-only]
inputs = ["text"]
outputs = { embedding = "embed.embedding" }

[[pipelines.embed-only.steps]]
kind = "embed"
name = "embed"
input = "request.text"

[pipelines.slow]
inputs = ["text"]
outputs = { embedding = "embed.embedding" }

[[pipelines.slow.steps]]
kind = "embed"
name = "embed"
input = "request.text"
timeout_ms = 5
"#;

fn references() -> Value {
    let p = repo_root().join("tests/data/topic-classifier.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("references")).expect("json")
}

/// An inference model repository with the topic classifier, and a copy of
/// it named `topic-canary` (the model the canary pipeline prefers).
fn repository() -> TempDir {
    let dir = TempDir::new("pipeline-models");
    let src = repo_root().join("services/inference/models/topic-classifier");
    mlmesh_tests::copy_dir(&src, &dir.path().join("topic-classifier")).expect("copy");
    mlmesh_tests::copy_dir(&src, &dir.path().join("topic-canary")).expect("copy");
    let cfg = dir.path().join("topic-canary/config.pbtxt");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("topic-classifier", "topic-canary")).expect("write");
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelines_run_across_the_mesh() {
    let _serial = mlmesh_tests::serial_async().await;
    let models = repository();
    let config = TempDir::new("pipeline-config");
    let file = config.path().join("gateway.toml");
    let demo = std::fs::read_to_string(repo_root().join("deploy/demo/gateway.toml"))
        .expect("demo settings");
    std::fs::write(&file, format!("{demo}\n{TEST_PIPELINES}")).expect("write");
    let inference = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                models.path().display().to_string(),
            ),
            // An unloaded model stays unloaded (UNAVAILABLE) until loaded.
            ("MLMESH_INFERENCE__LOAD_ON_DEMAND", "false".into()),
        ],
    );
    let mesh = MeshProcesses::start_with(
        &[],
        &[
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
            ("MLMESH_CONFIG", file.display().to_string()),
        ],
    );
    let refs = references();
    let texts = refs["texts"].clone();
    let mut h = HttpClient::new(mesh.gateway.http_addr.expect("http"));

    // text → embedding → classifier v2, over HTTP.
    let (s, body) = h.post_json("/v1/pipelines/topic", &json!({"inputs": {"text": texts}}));
    assert_eq!(s, 200, "{body}");
    assert_eq!(
        body["outputs"]["label"]["data"],
        refs["versions"]["2"]["label"]
    );
    assert_eq!(
        body["outputs"]["label"]["data"],
        json!(refs["labels"]),
        "every held-out text right"
    );
    let want: Vec<f64> = refs["versions"]["2"]["probabilities"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|r| r.as_array().expect("row").iter().filter_map(Value::as_f64))
        .collect();
    let got: Vec<f64> = body["outputs"]["probabilities"]["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(got.len(), want.len());
    let tol = refs["tolerance"]["fp32_abs"].as_f64().expect("tol");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= tol, "{g} vs reference {w}");
    }
    let steps = body["steps"].as_array().expect("steps");
    assert_eq!(steps[0]["service"], "embedding");
    assert_eq!(steps[1]["step"], "classify");
    assert_eq!(steps[1]["model"], "topic-classifier");
    assert_eq!(steps[1]["model_version"], "2");
    assert_eq!(steps[1]["fallback"], false);

    // The same over gRPC.
    let mut g = GatewayClient::connect(format!("http://{}", mesh.gateway.addr))
        .await
        .expect("connect");
    let list: Vec<String> = texts
        .as_array()
        .expect("texts")
        .iter()
        .filter_map(|t| t.as_str().map(str::to_owned))
        .collect();
    let r = g
        .run_pipeline(gw::RunPipelineRequest {
            pipeline: "topic".into(),
            texts: [(
                "text".to_owned(),
                gw::Texts {
                    values: list.clone(),
                },
            )]
            .into(),
            ..Default::default()
        })
        .await
        .expect("RunPipeline")
        .into_inner();
    let label = &r.outputs["label"];
    assert_eq!(label.datatype, "INT64");
    let labels: Vec<i64> = label
        .raw
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    assert_eq!(json!(labels), refs["labels"]);
    let names: Vec<String> = g
        .list_pipelines(gw::ListPipelinesRequest {})
        .await
        .expect("ListPipelines")
        .into_inner()
        .pipelines
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert!(names.contains(&"topic-ab".to_owned()), "{names:?}");

    // A/B: each caller always on its arm; both arms in use; the answer
    // names the version that served it.
    let mut arms = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..40 {
        let key = format!("user-{i}");
        let mut seen = Vec::new();
        for _ in 0..2 {
            let (s, b) = h.post_json(
                "/v1/pipelines/topic-ab",
                &json!({"inputs": {"text": list[0]}, "sticky_key": key}),
            );
            assert_eq!(s, 200, "{b}");
            let step = &b["steps"][1];
            let arm = step["arm"].as_str().expect("arm").to_owned();
            let version = step["model_version"].as_str().expect("version");
            assert_eq!(version, &arm[1..], "arm {arm} served by version {version}");
            seen.push(arm);
        }
        assert_eq!(seen[0], seen[1], "caller {key} moved between arms");
        *arms.entry(seen[0].clone()).or_default() += 1;
    }
    assert_eq!(arms.len(), 2, "both arms used: {arms:?}");
    assert!(arms["v1"] > arms["v2"], "80/20 weights: {arms:?}");

    // Ensemble: both versions at once (their calls overlap), voted.
    let (s, b) = h.post_json(
        "/v1/pipelines/topic-ensemble",
        &json!({"inputs": {"text": texts}}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["outputs"]["label"]["data"], json!(refs["labels"]));
    let span = |i: usize| {
        let st = &b["steps"][i];
        let start = st["started_us"].as_u64().expect("start");
        (start, start + st["duration_us"].as_u64().expect("duration"))
    };
    let ((s0, e0), (s1, e1)) = (span(1), span(2));
    assert!(s0 < e1 && s1 < e0, "branches ran one after the other: {b}");
    assert_eq!(b["steps"][1]["step"], "vote[0]");

    // Switch on a request input.
    let run_route = |h: &mut HttpClient, lang: &str| {
        h.post_json(
            "/v1/pipelines/route",
            &json!({"inputs": {"text": list[0], "lang": lang}}),
        )
    };
    let (s, b) = run_route(&mut h, "old");
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["steps"][1]["model_version"], "1");
    assert_eq!(b["steps"][1]["step"], "classify/case0");
    let (_, b) = run_route(&mut h, "new");
    assert_eq!(b["steps"][1]["step"], "classify/default");
    // A failing step fails the call, named, with the service's code.
    let (s, b) = run_route(&mut h, "broken");
    assert_eq!(s, 404, "{b}");
    let msg = b["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("\"route\"") && msg.contains("classify/case1"),
        "{msg}"
    );

    // Fallback: the preferred model is unloaded (UNAVAILABLE); version 1 of
    // the classifier answers, and the answer says so.
    let (s, b) = h.post_json(
        "/v1/pipelines/canary",
        &json!({"inputs": {"text": list[0]}}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["steps"][1]["fallback"], false);
    let mut inf = GrpcInferenceServiceClient::connect(format!("http://{}", mesh.gateway.addr))
        .await
        .expect("connect");
    inf.repository_model_unload(pb::RepositoryModelUnloadRequest {
        model_name: "topic-canary".into(),
        ..Default::default()
    })
    .await
    .expect("unload through the gateway");
    // The unload finishes once its calls in flight have (asynchronously).
    for _ in 0..100 {
        let ready = inf
            .model_ready(pb::ModelReadyRequest {
                name: "topic-canary".into(),
                version: String::new(),
            })
            .await
            .expect("ModelReady")
            .into_inner()
            .ready;
        if !ready {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (s, b) = h.post_json(
        "/v1/pipelines/canary",
        &json!({"inputs": {"text": list[0]}}),
    );
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["steps"][1]["fallback"], true, "{b}");
    assert_eq!(b["steps"][1]["model"], "topic-classifier");
    assert_eq!(b["steps"][1]["model_version"], "1");
    assert_eq!(b["outputs"]["label"]["data"][0], refs["labels"][0]);

    // A step's own timeout: 5 ms for 64 long texts.
    let long: Vec<String> = (0..64)
        .map(|i| format!("{i} {}", "the forecast calls for rain and wind ".repeat(20)))
        .collect();
    let (s, b) = h.post_json("/v1/pipelines/slow", &json!({"inputs": {"text": long}}));
    assert_eq!(s, 504, "{b}");
    let msg = b["error"]["message"].as_str().expect("message");
    assert!(
        msg.contains("\"embed\"") && msg.contains("timeout_ms of 5 ms"),
        "{msg}"
    );

    // Bad requests name the field.
    let (s, b) = h.post_json("/v1/pipelines/topic", &json!({"inputs": {"txt": "x"}}));
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["param"], "inputs.text", "{b}");
    let (s, _) = h.post_json("/v1/pipelines/nope", &json!({"inputs": {}}));
    assert_eq!(s, 404);

    streams(&mesh, &refs, &list);

    // Counted per pipeline, step, model version and outcome.
    let m = mlmesh_tests::scrape(mesh.gateway.metrics_addr.expect("metrics"));
    assert!(
        m.contains("mlmesh_gateway_pipeline_steps_total{model=\"topic-classifier\",outcome=\"fallback\",pipeline=\"canary\",step=\"classify\",version=\"1\"} 1"),
        "{m}"
    );
    assert!(
        mlmesh_tests::metric_sum(
            &m,
            "mlmesh_gateway_pipeline_runs_total{code=\"OK\",pipeline=\"topic-ab\"}"
        ) >= 80.0
    );
    mesh.stop();
}

#[test]
fn a_pipeline_referring_to_a_missing_step_stops_the_gateway_at_start() {
    let dir = TempDir::new("bad-pipeline");
    let file = dir.path().join("gateway.toml");
    std::fs::write(
        &file,
        TEST_PIPELINES.replace(
            "inputs = { input = \"embed.embedding\" }\noutputs = [\"label\"]\nfallback",
            "inputs = { input = \"embedd.embedding\" }\noutputs = [\"label\"]\nfallback",
        ),
    )
    .expect("write");
    let out = Command::new(binary("mlmesh-gateway"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("MLMESH_CONFIG", &file)
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run the gateway");
    assert!(
        !out.status.success(),
        "a bad pipeline must stop the gateway"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pipelines.canary.steps[1].inputs.input") && err.contains("\"embedd\""),
        "{err}"
    );
}

/// Opens a server-sent-events call; returns a reader of its events
/// (`(event, data)`), after checking the status and content type.
fn open_sse(
    addr: std::net::SocketAddr,
    path: &str,
    body: &Value,
) -> (
    std::net::TcpStream,
    impl Iterator<Item = (String, Value)> + use<>,
) {
    use std::io::{BufRead as _, Write as _};
    let body = body.to_string();
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        s,
        "POST {path} HTTP/1.1\r\nhost: x\r\naccept: text/event-stream\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("write");
    let mut r = std::io::BufReader::new(s.try_clone().expect("clone"));
    let mut head = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("head");
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/event-stream"),
        "{head}"
    );
    // Chunked framing lines are skipped; events are `event:` + `data:`.
    let mut event = String::new();
    let events = std::iter::from_fn(move || {
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).ok()? == 0 {
                return None;
            }
            let line = line.trim_end();
            if let Some(e) = line.strip_prefix("event: ") {
                event = e.to_owned();
            } else if let Some(d) = line.strip_prefix("data: ") {
                let v: Value = serde_json::from_str(d).unwrap_or(Value::Null);
                return Some((std::mem::take(&mut event), v));
            }
        }
    });
    (s, events)
}

/// Streaming: a pipeline over a list answers each row as it completes, an
/// ingest reports each document, failures are `error` events, and a client
/// that leaves cancels the calls downstream.
fn streams(mesh: &MeshProcesses, refs: &Value, list: &[String]) {
    let http = mesh.gateway.http_addr.expect("http");
    let (_conn, events) = open_sse(
        http,
        "/v1/pipelines/topic",
        &json!({"inputs": {"text": list}, "stream": true}),
    );
    let all: Vec<(String, Value)> = events.take(list.len() + 1).collect();
    let mut seen = vec![false; list.len()];
    for (name, v) in &all[..list.len()] {
        assert_eq!(name, "result", "{v}");
        let i = v["index"].as_u64().expect("index") as usize;
        seen[i] = true;
        assert_eq!(
            v["outputs"]["label"]["data"][0], refs["labels"][i],
            "row {i}: {v}"
        );
    }
    assert!(seen.iter().all(|s| *s));
    assert_eq!(all[list.len()].0, "done");
    assert_eq!(all[list.len()].1["usage"]["succeeded"], list.len());

    // Every row fails: each an `error` event after the stream began.
    let (_conn, events) = open_sse(
        http,
        "/v1/pipelines/route",
        &json!({"inputs": {"text": &list[..2], "lang": "broken"}, "stream": true, "stream_over": "text"}),
    );
    let all: Vec<(String, Value)> = events.take(3).collect();
    assert_eq!(all[0].0, "error", "{all:?}");
    assert_eq!(all[0].1["error"]["code"], "NOT_FOUND");
    assert_eq!(all[2].1["usage"]["failed"], 2);

    // Ingest, one event per stored document.
    let mut h = HttpClient::new(http);
    let (s, b) = h.post_json("/v1/collections", &json!({"name": "streamed"}));
    assert_eq!(s, 201, "{b}");
    let docs: Vec<Value> = list
        .iter()
        .enumerate()
        .map(|(i, t)| json!({"id": format!("d{i}"), "text": t}))
        .collect();
    let (_conn, events) = open_sse(
        http,
        "/v1/collections/streamed/documents",
        &json!({"documents": docs, "stream": true}),
    );
    let all: Vec<(String, Value)> = events.take(docs.len() + 1).collect();
    assert!(
        all[..docs.len()]
            .iter()
            .all(|(n, v)| n == "progress" && v["chunks"] == 1),
        "{all:?}"
    );
    assert_eq!(all[docs.len()].1["chunks"], docs.len());

    // A client that leaves after the first answer: the gateway stops, and
    // the embedding service sees its calls in flight cancelled.
    let embed = |code: &str| {
        mesh.embedding.metric(&format!(
            "mlmesh_embedding_requests_total{{code=\"{code}\",method=\"Embed\"}}"
        ))
    };
    let before = embed("OK");
    let long: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{i} {}",
                "the forecast calls for rain and wind along the coast ".repeat(25)
            )
        })
        .collect();
    let (conn, mut events) = open_sse(
        http,
        "/v1/pipelines/embed-only",
        &json!({"inputs": {"text": long}, "stream": true}),
    );
    let (name, _) = events.next().expect("a first event");
    assert_eq!(name, "result");
    conn.shutdown(std::net::Shutdown::Both).expect("leave");
    drop(events);
    std::thread::sleep(std::time::Duration::from_secs(2));
    let answered = embed("OK") - before;
    let cancelled = embed("CANCELLED");
    assert!(
        cancelled >= 1.0,
        "the embedding service saw no cancellation (answered {answered})"
    );
    assert!(
        answered < 100.0,
        "the gateway kept calling after the client left: {answered} of 200"
    );
}
