//! The console's actions in a real browser (`tests/data/console_actions.py`,
//! Selenium + Debian's chromium) against the real mesh: registry, an
//! inference service following `iris-logreg@production`, embedding,
//! vector-search and a gateway with API keys.
//!
//! The registry holds the iris logistic regression as v1 (production), a
//! worse depth-1 tree as v2 and the regression again as v3; production's
//! policy demands passing evidence of the iris suite, non-inferior by 0.02,
//! and every version was validated for real (`mlmesh model validate
//! --record`: v2 fails accuracy, v1 and v3 pass). In the browser: the models
//! list keeps its filter in the URL; a key without `promote` is refused in
//! plain words; promoting v2 is refused by the gate naming the evidence;
//! promoting v3 moves the alias (checked here with the CLI) and the
//! playground's inference answers from v3 once the follower swapped;
//! rolling back restores v1 and inference answers from v1 again; the
//! serving page shows the replica's model with its registry version and
//! batch sizes, and refuses an unload without `admin`; search by
//! text finds an ingested document; the access page lists the callers and
//! the audit log every move with who made it. Every page is screenshotted
//! and none logs an unexpected console error.

use mlmesh_tests::OutputWithin as _;
use std::process::Command;

use mlmesh_tests::{HttpClient, MeshProcesses, Service, TempDir, repo_root};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::{console::browser, registry_cli::RegistryCli};

const OBSERVER: &str = "mlm_actions_observer_61c2";
const PROMOTER: &str = "mlm_actions_promoter_0d9e";
const ADMIN: &str = "mlm_actions_admin_7f31";

/// The registry as the test starts it: iris v1 in production, v2 (worse)
/// and v3 (as good) validated against it, production gated.
fn seeded_registry() -> RegistryCli {
    let cli = RegistryCli::start("console-actions-registry");
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
    ok(&[
        "registry",
        "push",
        "iris-logreg",
        "services/inference/models/iris-logreg",
    ]);
    let suites = TempDir::new("console-actions-suite");
    std::fs::copy(
        repo_root().join("tests/data/validation/iris-suite.json"),
        suites.path().join("suite.json"),
    )
    .expect("suite");
    ok(&["registry", "create", "iris-suites"]);
    ok(&[
        "registry",
        "push",
        "iris-suites",
        suites.path().to_str().expect("utf-8"),
    ]);
    ok(&[
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
    // v1 too: a rollback to it needs passing evidence of the suite.
    for (v, passes) in [("1", true), ("2", false), ("3", true)] {
        let mut args = vec![
            "model",
            "validate",
            "iris-logreg",
            v,
            "--suite",
            "registry://iris-suites@1",
            "--record",
        ];
        // The champion itself is validated alone.
        if v != "1" {
            args.extend(["--against", "@production"]);
        }
        let out = cli.run(&args);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.success(), passes, "validating v{v}: {printed}");
        assert!(printed.contains("recorded as evidence"), "{printed}");
    }
    cli
}

#[test]
fn promotion_rollback_and_search_work_in_a_real_browser() {
    let _serial = mlmesh_tests::serial();
    let Some((site, chromium, driver)) = browser() else {
        return;
    };
    let cli = seeded_registry();
    let (repo, cache) = (
        TempDir::new("console-actions-repo"),
        TempDir::new("console-actions-cache"),
    );
    let inference = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                repo.path().display().to_string(),
            ),
            ("MLMESH_INFERENCE__REGISTRY_ADDR", cli.addr()),
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

    let dir = TempDir::new("console-actions");
    let sha = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"watcher\"\nsha256 = \"{}\"\nscopes = [\"observe\", \"predict\", \"search\"]\n\n\
             [[keys]]\nname = \"promoter\"\nsha256 = \"{}\"\nscopes = [\"observe\", \"promote\", \"predict\", \"search\"]\n\n\
             [[keys]]\nname = \"operator\"\nsha256 = \"{}\"\nscopes = [\"admin\", \"observe\", \"ingest\", \"search\"]\n",
            sha(OBSERVER),
            sha(PROMOTER),
            sha(ADMIN),
        ),
    )
    .expect("keys file");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nkeys_file = \"{}\"\n\n[console]\nsample_interval_ms = 500\n",
            keys.display()
        ),
    )
    .expect("settings");
    let mesh = MeshProcesses::start_with(
        &[],
        &[
            ("MLMESH_CONFIG", config.display().to_string()),
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
            ("MLMESH_DOWNSTREAM__REGISTRY", cli.addr()),
        ],
    );
    let http = mesh.gateway.http_addr.expect("http");

    // A document to find by text.
    let mut c = HttpClient::new(http);
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("content-type", "application/json"),
        ("authorization", auth.as_str()),
    ];
    let (status, body) = c
        .request(
            "POST",
            "/v1/collections",
            &headers,
            json!({"name": "handbook"}).to_string().as_bytes(),
        )
        .expect("create collection");
    assert!(
        (200..300).contains(&status),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    let docs = json!({"documents": [
        {"id": "returns-policy", "text": "Customers may return any unworn item within thirty days for a full refund.", "metadata": {"team": "support"}},
        {"id": "gpu-drivers", "text": "Install the GPU driver before the CUDA toolkit, then reboot the machine.", "metadata": {"team": "infra"}},
        {"id": "lunch-menu", "text": "On Fridays the canteen serves fish and chips with mushy peas.", "metadata": {"team": "facilities"}},
    ]});
    let (status, body) = c
        .request(
            "POST",
            "/v1/collections/handbook/documents",
            &headers,
            docs.to_string().as_bytes(),
        )
        .expect("ingest");
    assert!(
        (200..300).contains(&status),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );

    // A collection made without a text index, for the console to add one.
    for (path, body) in [
        (
            "/v1/collections",
            json!({"name": "archive", "text_index": "none"}),
        ),
        (
            "/v1/collections/archive/documents",
            json!({"documents": [{"id": "gpu-drivers", "text": "Install the GPU driver before the CUDA toolkit, then reboot the machine."}]}),
        ),
    ] {
        let (status, body) = c
            .request("POST", path, &headers, body.to_string().as_bytes())
            .expect(path);
        assert!(
            (200..300).contains(&status),
            "{path} {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }

    let shots = std::env::temp_dir().join(format!(
        "mlmesh-console-actions-shots-{}",
        std::process::id()
    ));
    let cfg = dir.path().join("check.json");
    std::fs::write(
        &cfg,
        json!({
            "url": format!("http://{http}/ui/"),
            "observer": OBSERVER,
            "promoter": PROMOTER,
            "admin": ADMIN,
            "collection": "handbook",
            "old_collection": "archive",
            "query": "can I send back a jacket I bought last week and get my money?",
            "expect_document": "returns-policy",
            "shots": shots,
            "chromium": chromium,
            "chromedriver": driver,
        })
        .to_string(),
    )
    .expect("config");
    let alias_history = || cli.ok(&["registry", "alias", "history", "iris-logreg", "production"]);
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo_root().join("tests/data/console_actions.py"))
        .arg(&cfg)
        .env("PYTHONPATH", &site)
        .env("SE_OFFLINE", "true")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("no JSON from the check ({e}); stderr:\n{stderr}"));
    println!(
        "screenshots: {}\n{}",
        shots.display(),
        serde_json::to_string_pretty(&result["checks"]).unwrap_or_default()
    );
    assert!(
        result.get("exception").is_none(),
        "the check failed: {}\nbrowser log: {}",
        result["exception"],
        result["log_at_failure"],
    );
    let checks = result["checks"].as_object().expect("checks");
    for name in [
        "models_filter_kept_in_url",
        "models_list_shows_model",
        "promote_without_scope_refused",
        "gated_promotion_refused",
        "promotion_done",
        "inference_answers_from_promoted",
        "rollback_done",
        "inference_answers_from_rolled_back",
        "serving_shows_loaded_model",
        "unload_needs_admin",
        "version_page_compares",
        "search_by_text_finds_document",
        "search_says_which_retriever_found_each_hit",
        "search_by_words_only",
        "old_collection_gains_text_index",
        "old_collection_found_by_words",
        "access_lists_callers",
        "audit_lists_moves",
        "keyboard_promote_form_reachable",
        "no_unexpected_console_errors",
        "controls_have_names",
    ] {
        let c = checks
            .get(name)
            .unwrap_or_else(|| panic!("check {name} did not run"));
        assert_eq!(c["ok"], true, "{name}: saw {}", c["seen"]);
    }
    // What the browser did, as the registry recorded it: v1 → v3 by the
    // promoter through the gateway with its evidence, then back to v1.
    let history = alias_history();
    let lines: Vec<&str> = history.lines().collect();
    assert!(
        lines.len() >= 3
            && lines[0].contains("v3 -> v1")
            && lines[1].contains("v1 -> v3")
            && lines[1].contains("[evidence")
            && lines[1].contains("by promoter via the gateway"),
        "{history}"
    );
    assert!(
        !history.contains("-> v2"),
        "the gate let v2 through: {history}"
    );
    mesh.stop();
    drop(inference);
}
