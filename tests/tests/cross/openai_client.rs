//! The official OpenAI Python client, unchanged, against the gateway's
//! `/v1/embeddings`: what it decodes (base64 by default, or float) must be
//! the embedding service's own vectors, and its errors must be the typed
//! exceptions a user of that client expects.
//!
//! The client comes from PyPI, pinned in `scripts/openai-client.txt`;
//! `make test` installs it (scripts/fetch-openai-client.sh). When it is not
//! installed (a bare `cargo test`) the test says so and passes without
//! running.

use mlmesh_tests::OutputWithin as _;
use std::process::Command;

use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::{MeshProcesses, repo_root};
use serde_json::Value;

const MODEL: &str = "all-MiniLM-L6-v2";
const TEXTS: [&str; 2] = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
];

fn vectors(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("array of vectors")
        .iter()
        .map(|e| {
            e.as_array()
                .expect("vector")
                .iter()
                .map(|x| x.as_f64().expect("number") as f32)
                .collect()
        })
        .collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_openai_python_client_works_unchanged() {
    let _serial = mlmesh_tests::serial_async().await;
    let site = repo_root().join(".cache/mlmesh/py/openai");
    if !site.join(".mlmesh-stamp").is_file() {
        eprintln!(
            "skipped: the openai Python client is not installed in {}; \
             run scripts/fetch-openai-client.sh (make test does)",
            site.display()
        );
        return;
    }
    let mesh = MeshProcesses::start(&[]);
    let http = mesh.gateway.http_addr.expect("http");

    let script = repo_root().join("tests/data/openai_client.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(script)
            .arg(format!("http://{http}/v1"))
            .arg(MODEL)
            .env("PYTHONPATH", &site)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env_remove("OPENAI_BASE_URL")
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run python3")
    })
    .await
    .expect("join");
    assert!(
        out.status.success(),
        "the openai client script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");

    // What the embedding service itself returns for the same texts.
    let mut emb = EmbeddingServiceClient::connect(format!("http://{}", mesh.embedding.addr))
        .await
        .expect("connect");
    let embed = |dimensions: Option<u32>| EmbedRequest {
        inputs: TEXTS.iter().map(|t| (*t).to_owned()).collect(),
        model: MODEL.into(),
        dimensions,
        ..Default::default()
    };
    let direct = emb.embed(embed(None)).await.expect("embed").into_inner();
    let direct: Vec<Vec<f32>> = direct.embeddings.into_iter().map(|e| e.values).collect();
    let direct64 = emb
        .embed(embed(Some(64)))
        .await
        .expect("embed")
        .into_inner();

    // Default call: base64 on the wire, decoded by the client; bit-for-bit
    // the same floats up to the model's run-to-run jitter.
    let d = &got["default"];
    assert_eq!(d["model"], MODEL);
    assert_eq!(d["indexes"], serde_json::json!([0, 1]));
    let via = vectors(&d["vectors"]);
    assert_eq!(via.len(), 2);
    for (v, w) in via.iter().zip(&direct) {
        assert_eq!(v.len(), 384);
        assert!(max_abs_diff(v, w) < 1e-5, "base64 path differs from Embed");
    }
    let tokens = d["prompt_tokens"].as_u64().expect("prompt_tokens");
    assert!(tokens >= 10, "usage.prompt_tokens {tokens}");
    assert_eq!(d["total_tokens"].as_u64(), Some(tokens));

    let float = vectors(&got["float"]);
    assert!(max_abs_diff(&float[0], &direct[0]) < 1e-5, "float path");

    let cut = vectors(&got["dimensions_64"]);
    assert_eq!(cut[0].len(), 64);
    assert!(max_abs_diff(&cut[0], &direct64.embeddings[0].values) < 1e-5);

    // Every model of the mesh: here the embedding service's only.
    assert_eq!(
        got["models"],
        serde_json::json!([{"id": MODEL, "object": "model", "owned_by": "mlmesh-embedding"}])
    );
    assert_eq!(got["model"], MODEL);

    // Errors arrive as the client's typed exceptions, with our message.
    let e = &got["errors"];
    assert_eq!(e["retrieve_unknown"]["class"], "NotFoundError", "{e}");
    assert_eq!(e["unknown_model"]["class"], "NotFoundError", "{e}");
    assert_eq!(e["unknown_model"]["status"], 404);
    assert!(
        e["unknown_model"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-model")),
        "{e}"
    );
    assert_eq!(e["empty_input"]["class"], "BadRequestError", "{e}");
    assert_eq!(e["empty_input"]["status"], 400);
    assert_eq!(e["dimensions_too_large"]["class"], "BadRequestError", "{e}");
    assert!(
        e["dimensions_too_large"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("dimensions")),
        "{e}"
    );

    tokio::task::spawn_blocking(move || mesh.stop())
        .await
        .expect("join");
}
