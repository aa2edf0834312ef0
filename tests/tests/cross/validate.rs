//! `mlmesh model validate` against a real registry and the real inference
//! binary: the iris logistic regression (services/inference/models) as v1
//! in production, a deliberately worse depth-1 tree with the same
//! signature as v2 (tests/data/validation, made with scikit-learn by
//! scripts/make-validation-suite.py). Accuracies are checked against
//! scikit-learn's own (`iris-expected.json`).

use std::process::{Command, Output};

use mlmesh_tests::{Service, TempDir, binary, repo_root};

fn expected() -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo_root().join("tests/data/validation/iris-expected.json"))
            .expect("iris-expected.json");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn a_worse_version_fails_validation_naming_the_check_and_a_good_one_passes() {
    let _serial = mlmesh_tests::serial();
    let data = TempDir::new("validate-registry");
    let registry = Service::start(
        "mlmesh-registry",
        &[(
            "MLMESH_REGISTRY__DATA_DIR",
            data.path().display().to_string(),
        )],
    );
    let addr = registry.addr.to_string();
    let mlmesh = |args: &[&str]| -> Output {
        Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .args(args)
            .env("MLMESH_REGISTRY", &addr)
            .output()
            .expect("run mlmesh")
    };
    let ok = |args: &[&str]| {
        let out = mlmesh(args);
        assert!(
            out.status.success(),
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    ok(&["registry", "create", "iris-logreg"]);
    ok(&[
        "registry",
        "push",
        "iris-logreg",
        "services/inference/models/iris-logreg",
    ]);
    ok(&[
        "registry",
        "alias",
        "set",
        "iris-logreg",
        "production",
        "1",
        "--expect",
        "0",
    ]);
    ok(&[
        "registry",
        "push",
        "iris-logreg",
        "tests/data/validation/iris-tree",
    ]);
    let suite = "tests/data/validation/iris-suite.json";
    let want = expected();
    let pct = |key: &str| {
        format!(
            "accuracy {:.4} on 150 examples",
            want[key].as_f64().expect(key)
        )
    };

    // The production version alone: contract and accuracy pass.
    let printed = ok(&[
        "model",
        "validate",
        "iris-logreg",
        "@production",
        "--suite",
        suite,
    ]);
    assert!(printed.contains("PASS contract"), "{printed}");
    assert!(
        printed.contains(&format!(
            "PASS accuracy probabilities: {}",
            pct("logreg_accuracy")
        )),
        "{printed}"
    );
    // Robustness probes from the signature: every one a clear status, the
    // service still live, a batch equal to single calls.
    for words in [
        "PASS robustness",
        "NaN: Ok",
        "wrong datatype: InvalidArgument",
        "wrong rank: InvalidArgument",
        "maximum batch (64): Ok",
        "one row over (65): InvalidArgument",
        "a batch of 8 equals 8 single calls",
    ] {
        assert!(printed.contains(words), "{printed} lacks {words:?}");
    }
    assert!(printed.contains("passed: 3 checks"), "{printed}");

    // The tree against production: refused, the failed check named with
    // its interval; the exit status says so.
    let out = mlmesh(&[
        "model",
        "validate",
        "iris-logreg",
        "2",
        "--suite",
        suite,
        "--against",
        "@production",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{printed}{err}");
    assert!(!out.status.success(), "a worse version passed: {printed}");
    assert!(
        printed.contains("PASS contract"),
        "same signature: {printed}"
    );
    assert!(
        printed.contains(&format!(
            "FAIL accuracy probabilities: {}",
            pct("tree_accuracy")
        )),
        "{printed}"
    );
    for words in [
        "at least 0.9 required",
        "against the champion",
        "margin 0.02",
        "McNemar",
    ] {
        assert!(printed.contains(words), "{printed} lacks {words:?}");
    }
    assert!(
        err.contains("validation failed: 1 of 3 checks (accuracy probabilities)"),
        "{err}"
    );

    // Production against itself: non-inferior; the suite this time from
    // the registry (content-addressed), and the outcome as a record.
    // This copy of the suite also has budgets: memory and load bounds no
    // version comes near, and latency measured without a limit (a test
    // never judges time; the benchmark does).
    let suites = TempDir::new("validate-suite");
    let mut doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo_root().join(suite)).expect("suite"))
            .expect("json");
    doc["budgets"] = serde_json::json!({
        "load_ms": 60000, "rss_mb": 4096, "concurrency": 4, "requests": 100
    });
    let bytes = serde_json::to_vec(&doc).expect("json");
    std::fs::write(suites.path().join("suite.json"), &bytes).expect("write suite");
    let suite_digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
    ok(&["registry", "create", "iris-suites"]);
    ok(&[
        "registry",
        "push",
        "iris-suites",
        suites.path().to_str().expect("utf-8"),
    ]);
    let report = suites.path().join("report.json");
    let printed = ok(&[
        "model",
        "validate",
        "iris-logreg",
        "1",
        "--suite",
        "registry://iris-suites@1",
        "--against",
        "@production",
        "--report",
        report.to_str().expect("utf-8"),
    ]);
    assert!(printed.contains("non-inferior by margin 0.02"), "{printed}");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("the report")).expect("json");
    assert_eq!(record["suite"]["digest"], suite_digest.as_str(), "{record}");
    assert_eq!(record["candidate"]["version"], 1);
    assert_eq!(record["champion"]["version"], 1);
    assert!(
        record["candidate"]["manifest_digest"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{record}"
    );
    assert_eq!(record["passed"], true, "{record}");
    assert_eq!(record["checks"].as_array().map(Vec::len), Some(6));
    assert_eq!(record["checks"][1]["interval"]["n"], 150);
    assert!(record["runner"]["cores"].as_u64().is_some_and(|c| c >= 1));
    for words in [
        "PASS budget load",
        "PASS budget memory",
        "PASS budget latency",
        "champion p99",
    ] {
        assert!(printed.contains(words), "{printed} lacks {words:?}");
    }

    // The gate: production now demands passing evidence of this suite,
    // non-inferior to the current version by 0.02.
    let printed = ok(&[
        "registry",
        "policy",
        "set",
        "iris-logreg",
        "production",
        "--suite",
        "registry://iris-suites@1",
        "--margin",
        "0.02",
    ]);
    assert!(printed.contains(&suite_digest[..12]), "{printed}");
    let out = mlmesh(&["registry", "alias", "set", "iris-logreg", "production", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("requires passing evidence"),
        "{err}"
    );
    // Promoting the worse tree: validated, refused, the failure recorded.
    let out = mlmesh(&["model", "promote", "iris-logreg", "2", "--to", "production"]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the tree was promoted: {printed}");
    for words in [
        "the registry asks for evidence",
        "FAIL accuracy probabilities",
        "recorded as evidence",
    ] {
        assert!(printed.contains(words), "{printed} lacks {words:?}");
    }
    assert!(err.contains("validation failed"), "{err}");
    let shown = ok(&["registry", "evidence", "iris-logreg", "2"]);
    assert!(
        shown.contains("FAILED") && shown.contains("FAIL accuracy probabilities"),
        "{shown}"
    );
    // A good version (the same logistic regression again) is validated and
    // promoted; the move names its evidence.
    ok(&[
        "registry",
        "push",
        "iris-logreg",
        "services/inference/models/iris-logreg",
    ]);
    let printed = ok(&["model", "promote", "iris-logreg", "3", "--to", "production"]);
    assert!(printed.contains("PASS accuracy probabilities"), "{printed}");
    assert!(
        printed.contains("production: v1 -> v3") && printed.contains("[evidence"),
        "{printed}"
    );
    let history = ok(&["registry", "alias", "history", "iris-logreg", "production"]);
    assert!(
        history
            .lines()
            .next()
            .is_some_and(|l| l.contains("v1 -> v3") && l.contains("[evidence")),
        "{history}"
    );
    let shown = ok(&["registry", "show", "iris-logreg", "3"]);
    assert!(
        shown.contains("PASSED") && shown.contains("against v1"),
        "{shown}"
    );
    // Promoting again: nothing to do.
    let printed = ok(&["model", "promote", "iris-logreg", "3", "--to", "production"]);
    assert!(printed.contains("already points at v3"), "{printed}");

    // The follower reports the evidence of the version it serves.
    let evidence_id: f64 = history
        .split("[evidence ")
        .nth(1)
        .and_then(|t| t.split(']').next())
        .and_then(|n| n.trim().parse().ok())
        .expect("the history names the evidence");
    let (repo, cache) = (
        TempDir::new("validate-repo"),
        TempDir::new("validate-cache"),
    );
    let inference = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                repo.path().display().to_string(),
            ),
            ("MLMESH_INFERENCE__REGISTRY_ADDR", addr.clone()),
            (
                "MLMESH_INFERENCE__REGISTRY_MODELS",
                "registry://iris-logreg@production".into(),
            ),
            (
                "MLMESH_INFERENCE__REGISTRY_CACHE_DIR",
                cache.path().display().to_string(),
            ),
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let metric = "mlmesh_inference_registry_evidence{model=\"iris-logreg\"}";
    while inference.metric(metric) != evidence_id {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower reports evidence {} (want {evidence_id})",
            inference.metric(metric)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    drop(inference);
    drop(registry);
}

/// The same job over gRPC (`mlmesh.validation.v1.Validator`, served by an
/// inference service that knows the registry): each check streamed as it
/// is decided, the outcome recorded as evidence; a file suite refused, a
/// second run while one runs refused at once.
#[test]
fn the_validator_runs_over_grpc_and_records_evidence() {
    use mlmesh_proto::{
        registry::v1 as rpb,
        validation::v1::{self as vpb, validate_event::Event, validator_client::ValidatorClient},
    };
    let _serial = mlmesh_tests::serial();
    let data = TempDir::new("validator-registry");
    let registry = Service::start(
        "mlmesh-registry",
        &[(
            "MLMESH_REGISTRY__DATA_DIR",
            data.path().display().to_string(),
        )],
    );
    let addr = registry.addr.to_string();
    let suites = TempDir::new("validator-suite");
    std::fs::copy(
        repo_root().join("tests/data/validation/iris-suite.json"),
        suites.path().join("suite.json"),
    )
    .expect("copy suite");
    let suite_dir = suites.path().display().to_string();
    for args in [
        &["registry", "create", "iris-logreg"][..],
        &[
            "registry",
            "push",
            "iris-logreg",
            "services/inference/models/iris-logreg",
        ],
        &[
            "registry",
            "push",
            "iris-logreg",
            "tests/data/validation/iris-tree",
        ],
        &["registry", "create", "iris-suites"],
        &["registry", "push", "iris-suites", &suite_dir],
    ] {
        let out = Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .env("MLMESH_REGISTRY", &addr)
            .args(args)
            .output()
            .expect("run mlmesh");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let repo = TempDir::new("validator-repo");
    let inference = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                repo.path().display().to_string(),
            ),
            ("MLMESH_INFERENCE__REGISTRY_ADDR", addr.clone()),
        ],
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut v = ValidatorClient::connect(format!("http://{}", inference.addr))
            .await
            .expect("connect");
        let request = |suite: &str| vpb::ValidateRequest {
            model: "iris-logreg".into(),
            version: "2".into(),
            suite: suite.into(),
            against: "1".into(),
            record: true,
        };
        let e = v
            .validate(request("tests/data/validation/iris-suite.json"))
            .await
            .expect_err("a file suite");
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("suite"), "{e:?}");

        let mut stream = v
            .validate(request("registry://iris-suites@1"))
            .await
            .expect("validate")
            .into_inner();
        let busy = v
            .validate(request("registry://iris-suites@1"))
            .await
            .expect_err("a second run at once");
        assert_eq!(busy.code(), tonic::Code::ResourceExhausted, "{busy:?}");
        let (mut notes, mut checks, mut outcome) = (Vec::new(), Vec::<rpb::Check>::new(), None);
        while let Some(ev) = stream.message().await.expect("event") {
            match ev.event.expect("event") {
                Event::Note(n) => notes.push(n),
                Event::Check(c) => checks.push(c),
                Event::Outcome(o) => outcome = Some(o),
            }
        }
        assert!(notes[0].contains("against v1"), "{notes:?}");
        let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["contract", "accuracy probabilities", "robustness"],
            "{checks:?}"
        );
        let acc = &checks[1];
        assert!(!acc.passed, "{acc:?}");
        let ni = acc.non_inferiority.as_ref().expect("compared with v1");
        assert!(
            ni.against_version == 1 && ni.samples == 150 && ni.upper < 0.0,
            "{ni:?}"
        );
        let o = outcome.expect("an outcome");
        let e = o.evidence.expect("evidence");
        assert!(o.recorded && e.id > 0 && !e.passed, "{e:?}");
        // The registry holds it.
        let mut reg = rpb::registry_client::RegistryClient::connect(format!("http://{addr}"))
            .await
            .expect("registry");
        let listed = reg
            .list_evidence(rpb::ListEvidenceRequest {
                model: "iris-logreg".into(),
                version: 2,
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner()
            .evidence;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, e.id);
        assert_eq!(listed[0].checks.len(), 3);
    });
}

/// A broken version (scripts/make-broken-model.py: the logistic
/// regression behind a batch-dependent normalisation, as a layer exported
/// in training mode would be) fails accuracy and robustness — a batch
/// differs from the same rows one by one — and nothing crashes: the
/// registry and the validator stay well, the exit status says it failed.
#[test]
fn a_broken_version_fails_robustness_and_crashes_nothing() {
    let _serial = mlmesh_tests::serial();
    let data = TempDir::new("validate-broken");
    let registry = Service::start(
        "mlmesh-registry",
        &[(
            "MLMESH_REGISTRY__DATA_DIR",
            data.path().display().to_string(),
        )],
    );
    let addr = registry.addr.to_string();
    let mlmesh = |args: &[&str]| -> Output {
        Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .args(args)
            .env("MLMESH_REGISTRY", &addr)
            .output()
            .expect("run mlmesh")
    };
    for args in [
        &["registry", "create", "iris-logreg"][..],
        &[
            "registry",
            "push",
            "iris-logreg",
            "tests/data/validation/iris-batch-dependent",
        ],
    ] {
        let out = mlmesh(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = mlmesh(&[
        "model",
        "validate",
        "iris-logreg",
        "1",
        "--suite",
        "tests/data/validation/iris-suite.json",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a broken version passed: {printed}");
    for words in [
        "PASS contract",
        "FAIL accuracy probabilities: accuracy 0.3333 on 150 examples",
        "FAIL robustness",
        "differs in a batch of 8",
    ] {
        assert!(printed.contains(words), "{printed} lacks {words:?}");
    }
    // Every probe still ended in a clear status: the service lived.
    assert!(
        printed.contains("NaN: Ok") && printed.contains("wrong rank: InvalidArgument"),
        "{printed}"
    );
    assert!(err.contains("validation failed: 2 of 3 checks"), "{err}");
    // The registry is unharmed.
    let out = mlmesh(&["registry", "list"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("iris-logreg"));
}

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
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("services/embedding/tests/data/minilm-golden.json"))
            .expect("golden"),
    )
    .expect("json");
    let items = golden["items"].as_array().expect("items");
    let suite = serde_json::json!({
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
        "checks": [{"kind": "cosine", "output": "embedding", "min": 0.999}],
        "budgets": {"load_ms": 60000, "rss_mb": 4096, "concurrency": 2, "requests": 40}
    });
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

    let data = TempDir::new("validate-minilm-registry");
    let registry = Service::start(
        "mlmesh-registry",
        &[(
            "MLMESH_REGISTRY__DATA_DIR",
            data.path().display().to_string(),
        )],
    );
    let addr = registry.addr.to_string();
    let mlmesh = |args: &[&str]| -> Output {
        Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .args(args)
            .env("MLMESH_REGISTRY", &addr)
            .output()
            .expect("run mlmesh")
    };
    let (model_arg, perturbed_arg) = (model.display().to_string(), perturbed.display().to_string());
    for args in [
        &["registry", "create", "minilm"][..],
        &["registry", "push", "minilm", &model_arg],
        &["registry", "push", "minilm", &perturbed_arg],
    ] {
        let out = mlmesh(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
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

/// A regressor: scikit-learn's diabetes linear regression (the bundled
/// model, `services/inference/models/diabetes-linear`) checked element by
/// element against scikit-learn's own predictions for 20 rows
/// (`services/inference/tests/data/references.json`); the same suite with
/// a tolerance no float32 model can meet fails, naming the largest error.
#[test]
fn a_regressor_is_checked_against_scikit_learn() {
    let _serial = mlmesh_tests::serial();
    let refs: serde_json::Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("services/inference/tests/data/references.json"))
            .expect("references"),
    )
    .expect("json");
    let m = &refs["models"]["diabetes-linear"];
    let rows = m["input"]["data"].as_array().expect("rows");
    let want = m["sklearn"]["variable"].as_array().expect("sklearn");
    let suite = |atol: f64| {
        serde_json::json!({
            "name": "diabetes",
            "examples": rows.iter().zip(want).map(|(x, y)| serde_json::json!({
                "inputs": {"X": {"datatype": "FP32", "shape": [1, 10], "data": x}},
                "expected": {"variable": y}
            })).collect::<Vec<_>>(),
            "checks": [{"kind": "tensor", "output": "variable", "atol": atol, "rtol": 0.0}]
        })
    };
    let work = TempDir::new("validate-diabetes");
    let (loose, tight) = (
        work.path().join("loose.json"),
        work.path().join("tight.json"),
    );
    std::fs::write(&loose, serde_json::to_vec(&suite(1e-3)).expect("json")).expect("write");
    std::fs::write(&tight, serde_json::to_vec(&suite(1e-9)).expect("json")).expect("write");
    let data = TempDir::new("validate-diabetes-registry");
    let registry = Service::start(
        "mlmesh-registry",
        &[(
            "MLMESH_REGISTRY__DATA_DIR",
            data.path().display().to_string(),
        )],
    );
    let addr = registry.addr.to_string();
    let mlmesh = |args: &[&str]| -> Output {
        Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .args(args)
            .env("MLMESH_REGISTRY", &addr)
            .output()
            .expect("run mlmesh")
    };
    for args in [
        &["registry", "create", "diabetes-linear"][..],
        &[
            "registry",
            "push",
            "diabetes-linear",
            "services/inference/models/diabetes-linear",
        ],
    ] {
        let out = mlmesh(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let loose_arg = loose.display().to_string();
    let out = mlmesh(&[
        "model",
        "validate",
        "diabetes-linear",
        "1",
        "--suite",
        &loose_arg,
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("PASS tensor variable: every element within atol 0.001"),
        "{printed}"
    );
    assert!(printed.contains("PASS robustness"), "{printed}");
    let tight_arg = tight.display().to_string();
    let out = mlmesh(&[
        "model",
        "validate",
        "diabetes-linear",
        "1",
        "--suite",
        &tight_arg,
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "a 1e-9 tolerance passed: {printed}");
    assert!(
        printed.contains("FAIL tensor variable") && printed.contains("largest error"),
        "{printed}"
    );
}
