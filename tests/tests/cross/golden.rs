//! sentence-transformers' own vectors for all-MiniLM-L6-v2
//! (`services/embedding/tests/data/minilm-golden.json`, 60 texts) as an
//! embedding validation suite, shared by the tests that judge a MiniLM
//! served by the embedding service against them.

use mlmesh_tests::repo_root;

/// The suite: every golden text's vector at cosine ≥ `min`.
pub fn minilm_suite(min: f64) -> serde_json::Value {
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("services/embedding/tests/data/minilm-golden.json"))
            .expect("golden"),
    )
    .expect("json");
    let items = golden["items"].as_array().expect("items");
    serde_json::json!({
        "name": "minilm-sentence-transformers",
        "task": "embedding",
        "signature": {
            "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
            "outputs": [{"name": "embedding", "datatype": "FP32", "shape": [-1, 384]}]
        },
        "examples": items.iter().map(|i| serde_json::json!({
            "inputs": {"text": i["text"]},
            "expected": {"embedding": i["embedding"]}
        })).collect::<Vec<_>>(),
        "checks": [{"kind": "cosine", "output": "embedding", "min": min}],
        "budgets": {"load_ms": 60000, "rss_mb": 4096, "concurrency": 2, "requests": 40}
    })
}
