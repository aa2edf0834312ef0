//! `mlmesh model validate` against a real registry and the real inference
//! binary: the iris logistic regression (services/inference/models) as v1
//! in production, a deliberately worse depth-1 tree with the same
//! signature as v2 (tests/data/validation, made with scikit-learn by
//! scripts/make-validation-suite.py). Accuracies are checked against
//! scikit-learn's own (`iris-expected.json`). Then the gate end to end
//! (policy, promotion, the follower's evidence), a broken version, and a
//! regressor. Over gRPC: `validate_grpc.rs`; embedding and retrieval
//! suites: `validate_embedding.rs`.

use mlmesh_tests::{Service, TempDir, repo_root};

use crate::registry_cli::RegistryCli;

fn expected() -> serde_json::Value {
    let text =
        std::fs::read_to_string(repo_root().join("tests/data/validation/iris-expected.json"))
            .expect("iris-expected.json");
    serde_json::from_str(&text).expect("json")
}

#[test]
fn a_worse_version_fails_validation_naming_the_check_and_a_good_one_passes() {
    let _serial = mlmesh_tests::serial();
    let cli = RegistryCli::start("validate-registry");
    let addr = cli.addr();
    let mlmesh = |args: &[&str]| cli.run(args);
    let ok = |args: &[&str]| cli.ok(args);
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
    drop(cli);
}

/// A broken version (scripts/make-broken-model.py: the logistic
/// regression behind a batch-dependent normalisation, as a layer exported
/// in training mode would be) fails accuracy and robustness — a batch
/// differs from the same rows one by one — and nothing crashes: the
/// registry and the validator stay well, the exit status says it failed.
#[test]
fn a_broken_version_fails_robustness_and_crashes_nothing() {
    let _serial = mlmesh_tests::serial();
    let cli = RegistryCli::start("validate-broken");
    let mlmesh = |args: &[&str]| cli.run(args);
    cli.all_ok(&[
        &["registry", "create", "iris-logreg"][..],
        &[
            "registry",
            "push",
            "iris-logreg",
            "tests/data/validation/iris-batch-dependent",
        ],
    ]);
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
    let cli = RegistryCli::start("validate-diabetes-registry");
    let mlmesh = |args: &[&str]| cli.run(args);
    cli.all_ok(&[
        &["registry", "create", "diabetes-linear"][..],
        &[
            "registry",
            "push",
            "diabetes-linear",
            "services/inference/models/diabetes-linear",
        ],
    ]);
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
