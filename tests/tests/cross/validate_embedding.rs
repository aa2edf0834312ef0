//! Embedding and retrieval suites: all-MiniLM-L6-v2 validated by the real
//! embedding service against sentence-transformers' vectors, a perturbed
//! version refused, recall@k over the end-to-end corpus.

use mlmesh_tests::{TempDir, repo_root};

use crate::registry_cli::RegistryCli;

/// An embedding suite (`"task": "embedding"`): all-MiniLM-L6-v2 (the int8
/// model `make models` fetches) pushed to the registry and validated by
/// the real embedding service against sentence-transformers' own vectors
/// for 60 texts (`services/embedding/tests/data/minilm-golden.json`),
/// cosine ≥ 0.999 each; then a perturbed version — the same weights with
/// the tokenizer's lower-casing turned off, so capitals become unknown
/// tokens — fails that check against the first, and its robustness
/// probes still end in clear statuses.
#[test]
fn an_embedding_suite_validates_minilm_against_sentence_transformers() {
    let _serial = mlmesh_tests::serial();
    let model = repo_root().join(".cache/mlmesh/models/all-MiniLM-L6-v2");
    if !model.join("model.onnx").is_file() {
        eprintln!(
            "skipped: {} is missing; run make models (make test does)",
            model.display()
        );
        return;
    }
    let suite = crate::golden::minilm_suite(0.999);
    let work = TempDir::new("validate-minilm");
    let suite_file = work.path().join("suite.json");
    std::fs::write(&suite_file, serde_json::to_vec(&suite).expect("json")).expect("write");
    // The perturbed copy.
    let perturbed = work.path().join("perturbed");
    mlmesh_tests::copy_dir(&model, &perturbed).expect("copy");
    let tok = perturbed.join("tokenizer.json");
    let mut t: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&tok).expect("tokenizer")).expect("json");
    t["normalizer"]["lowercase"] = serde_json::Value::Bool(false);
    std::fs::write(&tok, serde_json::to_vec(&t).expect("json")).expect("write");

    let cli = RegistryCli::start("validate-minilm-registry");
    let mlmesh = |args: &[&str]| cli.run(args);
    let (model_arg, perturbed_arg) = (model.display().to_string(), perturbed.display().to_string());
    cli.all_ok(&[
        &["registry", "create", "minilm"][..],
        &["registry", "push", "minilm", &model_arg],
        &["registry", "push", "minilm", &perturbed_arg],
    ]);
    let suite_arg = suite_file.display().to_string();
    let printed = {
        let out = mlmesh(&["model", "validate", "minilm", "1", "--suite", &suite_arg]);
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{printed}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        printed
    };
    println!("{printed}");
    for words in [
        "PASS contract",
        "PASS cosine embedding",
        "PASS robustness",
        "a batch of 8 equals 8 single calls",
        "PASS budget latency",
    ] {
        assert!(printed.contains(words), "{printed} lacks {words:?}");
    }
    let out = mlmesh(&[
        "model",
        "validate",
        "minilm",
        "2",
        "--suite",
        &suite_arg,
        "--against",
        "1",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    println!("{printed}");
    assert!(
        !out.status.success(),
        "the perturbed tokenizer passed: {printed}"
    );
    assert!(printed.contains("FAIL cosine embedding"), "{printed}");
    assert!(printed.contains("PASS robustness"), "{printed}");

    // A retrieval suite over the end-to-end corpus (8 documents, 8
    // held-out questions, each naming the document that answers it):
    // recall@1 of each version's own vectors, exact search.
    let corpus: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/data/e2e-corpus.json")).expect("corpus"),
    )
    .expect("json");
    let retrieval = serde_json::json!({
        "name": "e2e-retrieval",
        "task": "embedding",
        "corpus": corpus["documents"].as_array().expect("documents").iter()
            .map(|d| serde_json::json!({"id": d["id"], "text": d["text"]})).collect::<Vec<_>>(),
        "examples": corpus["questions"].as_array().expect("questions").iter()
            .map(|q| serde_json::json!({"inputs": {"text": q["question"]}, "relevant": [q["expect"]]}))
            .collect::<Vec<_>>(),
        "checks": [{"kind": "recall", "k": 1, "min": 0.75, "margin": 0.5}]
    });
    let retrieval_file = work.path().join("retrieval.json");
    std::fs::write(
        &retrieval_file,
        serde_json::to_vec(&retrieval).expect("json"),
    )
    .expect("write");
    let retrieval_arg = retrieval_file.display().to_string();
    let out = mlmesh(&[
        "model",
        "validate",
        "minilm",
        "1",
        "--suite",
        &retrieval_arg,
        "--against",
        "1",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    println!("{printed}");
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("PASS recall@1: recall@1 1.0000 over 8 queries and 8 documents"),
        "{printed}"
    );
    assert!(
        printed.contains("against the champion +0.0000"),
        "{printed}"
    );
}
