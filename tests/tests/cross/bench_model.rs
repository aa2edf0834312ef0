//! `mlmesh bench model` against the real inference service: a planted
//! regression — iris with a deliberately slower version (the same model
//! plus a heavy branch that adds zero to its probabilities) — is found
//! both by history (records in the registry, bootstrap comparison with
//! earlier versions) and by an interleaved A/B; an unchanged version,
//! measured three times, is never flagged. The report files are written.
//! Nothing here judges absolute speed: only ratios far beyond noise.

use std::path::Path;

use mlmesh_modelkit::onnx::{self, GraphBuilder, attr_int, dtype, tensor_f32, tensor_i64};
use mlmesh_tests::{Service, TempDir, repo_root};
use prost::Message as _;

use crate::registry_cli::RegistryCli;

/// The iris model with 16 extra 512×512 MatMuls on its input whose sum,
/// times zero, is added to `probabilities`: the same answers, ~4 million
/// more multiply-adds per row.
fn slower(model: &[u8]) -> Vec<u8> {
    let mut m = onnx::decode(model).expect("iris decodes");
    let g = m.graph.as_mut().expect("graph");
    let mut b = GraphBuilder::default();
    let mut h = {
        let w: Vec<f32> = (0..4 * 512)
            .map(|i| ((i as f32) * 0.37).sin() * 0.05)
            .collect();
        let w = b.init(tensor_f32("slow/w_in", &[4, 512], &w));
        b.op("MatMul", &["input", &w], "slow")
    };
    for k in 0..16 {
        let w: Vec<f32> = (0..512 * 512)
            .map(|i| ((i as f32) * 0.013 + k as f32).sin() * 0.04)
            .collect();
        let w = b.init(tensor_f32(&format!("slow/w{k}"), &[512, 512], &w));
        let y = b.op("MatMul", &[&h, &w], "slow");
        h = b.op("Tanh", &[&y], "slow");
    }
    let axes = b.init(tensor_i64("slow/axes", &[1], &[1]));
    let s = b.op_with(
        "ReduceSum",
        &[&h, &axes],
        "slow",
        vec![attr_int("keepdims", 1)],
    );
    let zero = b.init(tensor_f32("slow/zero", &[], &[0.0]));
    let z = b.op("Mul", &[&s, &zero], "slow");
    let producer = g
        .node
        .iter_mut()
        .find(|n| n.output.iter().any(|o| o == "probabilities"))
        .expect("a node makes probabilities");
    for o in &mut producer.output {
        if o == "probabilities" {
            *o = "probabilities_base".into();
        }
    }
    let mut add = b.op("Add", &["probabilities_base", &z], "slow");
    if let Some(last) = b.nodes.last_mut() {
        last.output = vec!["probabilities".into()];
        add = "probabilities".into();
    }
    assert_eq!(add, "probabilities");
    assert!(
        b.initializers
            .iter()
            .all(|t| t.data_type == dtype::FLOAT || t.data_type == dtype::INT64)
    );
    g.node.extend(b.nodes);
    g.initializer.extend(b.initializers);
    m.encode_to_vec()
}

/// A model folder `name` in `repo`: iris's config renamed, `model` as v1.
fn model_dir(repo: &Path, name: &str, model: &[u8]) {
    let src = repo_root().join("services/inference/models/iris-logreg");
    let dir = repo.join(name);
    std::fs::create_dir_all(dir.join("1")).expect("mkdir");
    let config = std::fs::read_to_string(src.join("config.pbtxt"))
        .expect("config")
        .replace("name: \"iris-logreg\"", &format!("name: \"{name}\""));
    std::fs::write(dir.join("config.pbtxt"), config).expect("config");
    std::fs::write(dir.join("1/model.onnx"), model).expect("model");
}

#[test]
fn a_planted_regression_is_found_and_an_unchanged_version_is_not() {
    let _serial = mlmesh_tests::serial();
    let work = TempDir::new("bench-model");
    let repo = work.path().join("repo");
    let fast =
        std::fs::read(repo_root().join("services/inference/models/iris-logreg/1/model.onnx"))
            .expect("iris");
    model_dir(&repo, "iris", &fast);
    model_dir(&repo, "iris-slow", &slower(&fast));
    let inference = Service::start(
        "mlmesh-inference",
        &[(
            "MLMESH_INFERENCE__MODEL_REPOSITORY",
            repo.display().to_string(),
        )],
    );
    let cli = RegistryCli::start("bench-model-registry");
    let (fast_dir, slow_dir) = (
        repo.join("iris").display().to_string(),
        repo.join("iris-slow").display().to_string(),
    );
    cli.all_ok(&[
        &["registry", "create", "iris"][..],
        &["registry", "push", "iris", &fast_dir],
        &["registry", "push", "iris", &slow_dir],
        &["registry", "push", "iris", &fast_dir],
    ]);
    let server = inference.addr.to_string();
    let suite = repo_root().join("tests/data/validation/iris-suite.json");
    let out = work.path().join("report");
    let bench = |model: &str, extra: &[&str]| {
        let mut args = vec![
            "bench", "model", "--server", &server, "--model", model, "--inputs",
        ];
        let suite = suite.display().to_string();
        let out = out.display().to_string();
        args.extend([suite.as_str(), "--concurrency", "2", "--warmup-secs", "0.5"]);
        args.extend([
            "--window-secs",
            "0.25",
            "--min-windows",
            "8",
            "--max-secs",
            "4",
        ]);
        args.extend([
            "--ci-width",
            "0.05",
            "--threshold",
            "0.2",
            "--out",
            out.as_str(),
        ]);
        args.extend(extra);
        let o = cli.run(&args);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("$ mlmesh {}\n{printed}", args.join(" "));
        (o.status.success(), printed)
    };

    // Calls that fail measure refusals, not the model: a failing exit,
    // nothing recorded.
    let (ok, printed) = bench("no-such-model", &["--record", "iris@1"]);
    assert!(
        !ok && printed.contains("calls failed") && !printed.contains("recorded as evidence"),
        "{printed}"
    );
    let evidence = cli.ok(&["registry", "evidence", "iris", "1"]);
    assert!(!evidence.contains("benchmark"), "{evidence}");

    let (ok, printed) = bench("iris", &["--record", "iris@1"]);
    assert!(ok, "{printed}");
    assert!(printed.contains("no earlier version") || printed.contains("recorded as evidence"));
    let (ok, printed) = bench("iris-slow", &["--record", "iris@2"]);
    assert!(!ok, "the slower version must fail: {printed}");
    assert!(
        printed.contains("against v1") && printed.contains("REGRESSION"),
        "{printed}"
    );
    for run in 0..3 {
        let (ok, printed) = bench("iris", &["--record", "iris@3"]);
        assert!(ok, "run {run}: an unchanged version flagged: {printed}");
        assert!(printed.contains("against v1"), "{printed}");
    }
    let evidence = cli.ok(&["registry", "evidence", "iris", "2"]);
    assert!(evidence.contains("benchmark.regression"), "{evidence}");

    // The benchmark as a gate: an alias policy on the workload admits v1
    // (its record passed) and refuses v2 (its record found the regression).
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("json"))
            .expect("json");
    let workload = report["workload"].as_str().expect("workload").to_owned();
    cli.ok(&[
        "registry",
        "policy",
        "set",
        "iris",
        "production",
        "--benchmark-workload",
        &workload,
    ]);
    cli.ok(&[
        "registry",
        "alias",
        "set",
        "iris",
        "production",
        "1",
        "--expect",
        "0",
    ]);
    let refused = cli.run(&["registry", "alias", "set", "iris", "production", "2"]);
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "v2 admitted: {said}");
    assert!(
        said.contains("benchmark.regression"),
        "the refusal names the check: {said}"
    );

    // Interleaved A/B: slower against the original, and the original
    // against itself.
    let (ok, printed) = bench("iris-slow", &["--against-model", "iris", "--rounds", "4"]);
    assert!(!ok && printed.contains("REGRESSION"), "{printed}");
    let (ok, printed) = bench("iris", &["--against-model", "iris", "--rounds", "4"]);
    assert!(
        ok && printed.contains("no change beyond the threshold"),
        "{printed}"
    );

    let csv = std::fs::read_to_string(out.join("report.csv")).expect("csv");
    assert!(
        csv.starts_with("Concurrency,Inferences/Second,p50 latency"),
        "{csv}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).expect("html");
    assert!(
        html.contains("<svg") && !html.contains("<script"),
        "self-contained"
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("json"))
            .expect("json");
    assert_eq!(json["passed"], true, "{json}");
}

/// The benchmarker against a server that is not ours: MLServer (pinned,
/// `make mlserver`) serving the same fitted digits MLP as the inference
/// service's bundled ONNX copy. Measured alone, then ours against it in an
/// interleaved A/B. Nothing is judged about who is faster (a shared machine
/// decides that per run); what must hold is that every request of the
/// held-out suite is answered by both, the report counts them, and the A/B
/// names the champion's address.
#[test]
fn mlserver_is_measured_and_compared() {
    let _serial = mlmesh_tests::serial();
    let Some(site) = mlmesh_tests::mlserver::site() else {
        return;
    };
    let work = TempDir::new("bench-mlserver");
    let peer = mlmesh_tests::mlserver::MlServer::start(&site, "digits-mlp").expect("MLServer");
    let inference = Service::start("mlmesh-inference", &[]);
    let cli = RegistryCli::start("bench-mlserver-registry");
    let suite = repo_root().join("tests/data/validation/digits-suite.json");
    let (peer_addr, ours) = (peer.grpc.to_string(), inference.addr.to_string());
    let run = |server: &str, out: &Path, extra: &[&str]| {
        let (suite, out) = (suite.display().to_string(), out.display().to_string());
        let mut args = vec![
            "bench",
            "model",
            "--server",
            server,
            "--model",
            "digits-mlp",
            "--inputs",
            &suite,
            "--concurrency",
            "1,2",
            "--warmup-secs",
            "0.5",
            "--window-secs",
            "0.25",
            "--min-windows",
            "6",
            "--max-secs",
            "3",
            "--ci-width",
            "0.1",
            "--out",
            &out,
        ];
        args.extend(extra);
        let o = cli.run(&args);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("$ mlmesh {}\n{printed}", args.join(" "));
        let json: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(&out).join("report.json")).unwrap_or_default(),
        )
        .unwrap_or_default();
        (o.status.success(), printed, json)
    };

    let (ok, printed, json) = run(&peer_addr, &work.path().join("mlserver"), &[]);
    assert!(ok, "{printed}\nMLServer printed:\n{}", peer.printed());
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2, "one run per concurrency: {json}");
    for r in runs {
        assert!(r["ok"].as_u64().unwrap_or(0) > 0, "{r}");
        assert_eq!(
            r["errors"].as_u64(),
            Some(0),
            "MLServer answered every request: {r}"
        );
        assert!(r["throughput"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
    }

    let (ok, printed, json) = run(
        &ours,
        &work.path().join("ab"),
        &[
            "--against-server",
            &peer_addr,
            "--rounds",
            "3",
            "--threshold",
            "0.2",
        ],
    );
    // Either verdict is a pass of the tool; a failed call is not.
    assert!(
        printed.contains(&format!("at {peer_addr}")) && printed.contains("throughput ×"),
        "{printed}"
    );
    let ab = &json["ab"];
    let (low, high) = (
        ab["low"].as_f64().expect("ab.low"),
        ab["high"].as_f64().expect("ab.high"),
    );
    assert!(
        low.is_finite() && high.is_finite() && low <= high && low > 0.0,
        "{ab}"
    );
    let _ = ok;
}

/// The embedding endpoint: texts in batches against the real embedding
/// service; every call answered with every vector, and a model the service
/// does not have fails the run naming it (nothing measured from refusals).
#[test]
fn the_embedding_endpoint_is_measured() {
    let _serial = mlmesh_tests::serial();
    let work = TempDir::new("bench-embedding");
    let svc = Service::start("mlmesh-embedding", &[]);
    let cli = RegistryCli::start("bench-embedding-registry");
    let server = svc.addr.to_string();
    let out = work.path().display().to_string();
    let run = |model: &str| {
        let args = [
            "bench",
            "model",
            "--endpoint",
            "embedding",
            "--server",
            &server,
            "--model",
            model,
            "--batch",
            "4",
            "--concurrency",
            "2",
            "--warmup-secs",
            "0.5",
            "--window-secs",
            "0.25",
            "--min-windows",
            "4",
            "--max-secs",
            "3",
            "--ci-width",
            "0.2",
            "--out",
            &out,
        ];
        let o = cli.run(&args);
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        println!("$ mlmesh {}\n{printed}", args.join(" "));
        (o.status.success(), printed)
    };
    let (ok, printed) = run("all-MiniLM-L6-v2");
    assert!(ok, "{printed}");
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(work.path().join("report.json")).expect("report.json"),
    )
    .expect("json");
    let r = &json["runs"][0];
    assert!(r["ok"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");

    let (ok, printed) = run("no-such-model");
    assert!(
        !ok && printed.contains("calls failed") && printed.contains("no-such-model"),
        "{printed}"
    );
}

/// A server that accepts connections and never answers: every call ends at
/// `--call-timeout-secs` as a failure, the run fails naming the timeout,
/// and nothing hangs.
#[test]
fn a_stalled_server_fails_the_run_instead_of_hanging_it() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    // Hold every accepted connection open, silent, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    let cli = RegistryCli::start("bench-stalled-registry");
    let suite = repo_root().join("tests/data/validation/digits-suite.json");
    let t0 = std::time::Instant::now();
    let o = cli.run(&[
        "bench",
        "model",
        "--server",
        &addr.to_string(),
        "--model",
        "digits-mlp",
        "--inputs",
        &suite.display().to_string(),
        "--concurrency",
        "2",
        "--warmup-secs",
        "0.1",
        "--window-secs",
        "0.2",
        "--min-windows",
        "2",
        "--max-secs",
        "1",
        "--call-timeout-secs",
        "0.3",
    ]);
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!o.status.success(), "{printed}");
    assert!(
        printed.contains("no answer within 0.3 s"),
        "the failure names the timeout: {printed}"
    );
    assert!(
        t0.elapsed() < std::time::Duration::from_secs(60),
        "bounded: {:?}",
        t0.elapsed()
    );
}
