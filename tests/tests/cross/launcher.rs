//! `mlmesh up` (what `make run` calls): it starts the five services, loads
//! the demo corpus, answers a search over it, and stops everything with
//! exit 0 on SIGTERM.

use mlmesh_tests::OutputWithin as _;
use std::{
    process::{Command, Stdio},
    time::Duration,
};

use mlmesh_tests::{HttpClient, TempDir, binary, lines, repo_root};
use serde_json::json;

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

#[test]
fn mlmesh_up_serves_the_demo_corpus_and_stops_cleanly() {
    let _serial = mlmesh_tests::serial();
    let data = TempDir::new("launcher");
    let [
        gateway,
        http,
        embedding,
        vector,
        inference,
        registry,
        gm,
        em,
        vm,
        im,
        rm,
    ] = [(); 11].map(|()| free_port());
    let registry_data = TempDir::new("launcher-registry");
    let mut child = Command::new(binary("mlmesh"))
        .current_dir(repo_root())
        .args([
            "up",
            "--gateway",
            &gateway,
            "--http",
            &http,
            "--embedding",
            &embedding,
        ])
        .args(["--vector-search", &vector, "--gateway-metrics", &gm])
        .args(["--embedding-metrics", &em, "--vector-search-metrics", &vm])
        .args(["--inference", &inference, "--inference-metrics", &im])
        .args(["--registry", &registry, "--registry-metrics", &rm])
        .arg("--registry-dir")
        .arg(registry_data.path())
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mlmesh up");
    let rx = lines(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("mlmesh is up") {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => printed.push_str(&(line + "\n")),
            Err(_) => {
                let _ = child.kill();
                panic!("mlmesh up did not come up; printed: {printed}");
            }
        }
    }
    // The rest of the examples.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        printed.push_str(&(line + "\n"));
    }
    assert!(
        printed.contains(&format!("http://{http}/v1/embeddings")),
        "{printed}"
    );

    let mut h = HttpClient::new(http.parse().expect("addr"));
    let (status, body) = h.post_json(
        "/v1/collections/mlmesh-docs/search",
        &json!({"query": "What happens on SIGTERM?", "limit": 3}),
    );
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 3);
    assert!(
        hits.iter().all(|h| {
            let id = h["document_id"].as_str().unwrap_or("");
            // mlmesh's own docs, as `mlmesh up` loads them.
            id == "README.md" || id == "ARCHITECTURE.md" || id.starts_with("docs/")
        }),
        "{body}"
    );

    // The first example `mlmesh up` prints is a hybrid search: every hit
    // says which retrievers found it, and the README's test instructions
    // are in its top 3.
    let (status, body) = h.post_json(
        "/v1/collections/mlmesh-docs/search",
        &json!({"query": "how do I run the tests?", "limit": 3}),
    );
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 3, "{body}");
    assert!(
        hits.iter()
            .all(|h| h["found_by"].as_array().is_some_and(|f| !f.is_empty())),
        "{body}"
    );
    assert!(
        hits.iter().any(|h| h["document_id"] == "README.md"
            && h["text"]
                .as_str()
                .is_some_and(|t| t.contains("make test") || t.contains("cargo test"))),
        "the README's test instructions in the top 3: {body}"
    );

    // The inference service serves the demo models (tritonclient's
    // example is printed with its address).
    assert!(
        printed.contains(&format!("InferenceServerClient(\"{inference}\")")),
        "{printed}"
    );
    let probs = tokio::runtime::Runtime::new()
        .expect("runtime")
        .block_on(iris(&inference));
    assert_eq!(probs.len(), 3);
    assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4, "{probs:?}");

    // The demo pipeline: texts → MiniLM → the topic classifier, labels as
    // the reference implementation computed them for the held-out texts.
    let refs: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/data/topic-classifier.json"))
            .expect("references"),
    )
    .expect("json");
    assert!(printed.contains("/v1/pipelines/topic"), "{printed}");
    let (status, body) = h.post_json(
        "/v1/pipelines/topic",
        &json!({"inputs": {"text": refs["texts"]}}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["outputs"]["label"]["data"], refs["versions"]["2"]["label"],
        "{body}"
    );
    assert_eq!(body["steps"][1]["model_version"], "2", "{body}");

    // The registry, through the `mlmesh registry` command line: push a
    // model folder, promote it, pull it back verified.
    let cli = |args: &[&str]| {
        let out = Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .args(["registry", "--addr", &registry])
            .args(args)
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run mlmesh registry");
        assert!(
            out.status.success(),
            "mlmesh registry {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(printed.contains("mlmesh registry push"), "{printed}");
    cli(&["create", "iris"]);
    let pushed = cli(&["push", "iris", "services/inference/models/iris-logreg"]);
    assert!(pushed.contains("iris version 1 committed"), "{pushed}");
    cli(&["alias", "set", "iris", "production", "1", "--expect", "0"]);
    let pulled_to = TempDir::new("launcher-pull");
    let out = pulled_to.path().join("iris");
    let pulled = cli(&["pull", "iris", "@production", out.to_str().expect("utf-8")]);
    assert!(pulled.contains("version 1 written"), "{pulled}");
    let src = repo_root().join("services/inference/models/iris-logreg");
    for rel in ["config.pbtxt", "1/model.onnx"] {
        assert_eq!(
            std::fs::read(out.join(rel)).expect("pulled file"),
            std::fs::read(src.join(rel)).expect("source file"),
            "{rel}"
        );
    }
    let history = cli(&["alias", "history", "iris", "production"]);
    assert!(history.contains("v0 -> v1"), "{history}");

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mlmesh up did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // Every service is gone: their ports are free again.
    for addr in [&gateway, &embedding, &vector, &inference, &registry] {
        assert!(
            std::net::TcpStream::connect(addr.as_str()).is_err(),
            "{addr} still answers"
        );
    }
}

/// Class probabilities of one iris flower from the inference service.
async fn iris(addr: &str) -> Vec<f32> {
    use mlmesh_proto::inference::{
        InferTensorContents, ModelInferRequest,
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    };
    let mut c = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect");
    let r = c
        .model_infer(ModelInferRequest {
            model_name: "iris-logreg".into(),
            inputs: vec![InferInputTensor {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![1, 4],
                contents: Some(InferTensorContents {
                    fp32_contents: vec![5.1, 3.5, 1.4, 0.2],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("infer")
        .into_inner();
    let i = r
        .outputs
        .iter()
        .position(|o| o.name == "probabilities")
        .expect("probabilities");
    r.raw_output_contents[i]
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}
