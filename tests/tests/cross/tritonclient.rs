//! The official Triton Python gRPC client (`tritonclient[grpc]`, pinned in
//! `scripts/tritonclient.txt`), unchanged, against the `mlmesh-inference`
//! binary serving the bundled models: readiness, metadata, config, infer
//! with numpy arrays of every datatype (BYTES included), compression, async
//! and stream infer (a failing request mid-stream), repository index,
//! unload/load, statistics, and the error cases. The script compares every
//! answer with the references onnxruntime and scikit-learn computed
//! (`services/inference/tests/data/references.json`).
//!
//! The same checks run once more through the gateway, which forwards the
//! service.
//!
//! `make test` installs the client (scripts/fetch-python-packages.sh); a
//! bare `cargo test` without it says so and passes without running.

use mlmesh_tests::OutputWithin as _;
use std::process::Command;

use mlmesh_tests::{Service, repo_root};
use serde_json::Value;

fn client_site() -> Option<std::path::PathBuf> {
    let site = repo_root().join(".cache/mlmesh/py/tritonclient");
    if !site.join(".mlmesh-stamp").is_file() {
        eprintln!(
            "skipped: tritonclient is not installed in {}; run \
             scripts/fetch-python-packages.sh tritonclient scripts/tritonclient.txt (make test does)",
            site.display()
        );
        return None;
    }
    Some(site)
}

#[test]
fn the_official_tritonclient_works_unchanged() {
    let _serial = mlmesh_tests::serial();
    let Some(site) = client_site() else { return };
    let svc = Service::start("mlmesh-inference", &[]);
    run_checks(&site, svc.addr);
}

/// The same client and checks, pointed at a gateway in front of the
/// inference service: every call (streams, compression, load/unload,
/// errors) crosses the gateway's forwarding.
#[test]
fn tritonclient_through_the_gateway_works_unchanged() {
    let _serial = mlmesh_tests::serial();
    let Some(site) = client_site() else { return };
    let svc = Service::start("mlmesh-inference", &[]);
    let gateway = Service::start(
        "mlmesh-gateway",
        &[
            ("MLMESH_DOWNSTREAM__INFERENCE", svc.addr.to_string()),
            // Not called by these checks.
            ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
            ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
            ("MLMESH_HTTP__LISTEN", "off".into()),
        ],
    );
    run_checks(&site, gateway.addr);
    // The calls really went through the gateway, and each method is counted.
    let infer = gateway.metric(
        "mlmesh_gateway_requests_total{code=\"OK\",method=\"ModelInfer\",protocol=\"grpc\"}",
    );
    assert!(
        infer >= 10.0,
        "ModelInfer calls counted by the gateway: {infer}"
    );
    let stream = gateway.metric(
        "mlmesh_gateway_requests_total{code=\"OK\",method=\"ModelStreamInfer\",protocol=\"grpc\"}",
    );
    assert!(stream >= 1.0, "streams counted by the gateway: {stream}");
}

/// Dynamic batching joins requests by input name and only requests with
/// the same set of inputs: 16 tritonclient threads call `pair-diff`
/// (a - b + c, c optional) listing inputs in random orders, some with c,
/// at once; every answer equals onnxruntime's for the caller's own inputs
/// and none fails. Directly and through the gateway.
#[test]
fn batching_never_mixes_callers_inputs() {
    let _serial = mlmesh_tests::serial();
    let Some(site) = client_site() else { return };
    let svc = Service::start("mlmesh-inference", &[]);
    run_batching(&site, svc.addr);
    // Batches of more than one request really formed (otherwise the check
    // proves nothing about joining).
    let runs = svc.metric("mlmesh_inference_batch_size_count{model=\"pair-diff\"");
    let rows = svc.metric("mlmesh_inference_batch_size_sum{model=\"pair-diff\"");
    assert!(
        runs > 0.0 && rows / runs > 1.5,
        "no batching happened: {rows} rows in {runs} runs"
    );
    let gateway = Service::start(
        "mlmesh-gateway",
        &[
            ("MLMESH_DOWNSTREAM__INFERENCE", svc.addr.to_string()),
            ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
            ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
            ("MLMESH_HTTP__LISTEN", "off".into()),
        ],
    );
    run_batching(&site, gateway.addr);
}

fn run_batching(site: &std::path::Path, addr: std::net::SocketAddr) {
    let (report, out) = run_script(
        site,
        "tests/data/tritonclient_batching.py",
        addr,
        "services/inference/models/pair-diff/1/model.onnx",
    );
    assert_eq!(report["failed"], 0, "{report:#}");
    assert_eq!(report["calls"], 16 * 25, "{report:#}");
    assert!(report["mixed"].as_u64().unwrap_or(0) > 50, "{report:#}");
    assert!(out.status.success(), "script exited with {}", out.status);
}

fn run_checks(site: &std::path::Path, addr: std::net::SocketAddr) {
    let (report, out) = run_script(
        site,
        "tests/data/tritonclient_check.py",
        addr,
        "services/inference/tests/data/references.json",
    );
    let failures = report["failures"].as_array().expect("failures");
    assert!(
        failures.is_empty(),
        "tritonclient checks failed: {failures:#?}"
    );
    assert!(out.status.success(), "script exited with {}", out.status);
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    // Every family of checks ran (the script cannot silently skip one).
    for must in [
        "server_metadata",
        "model_ready_unknown_is_false",
        "model_metadata",
        "model_config",
        "infer_iris-logreg_probabilities",
        "infer_digits-mlp-npz_label",
        "infer_diabetes-linear",
        "datatype_BYTES",
        "datatype_UINT64",
        "compression_gzip",
        "async_infer",
        "stream_error_names_datatype",
        "repository_index",
        "load_then_ready",
        "statistics",
        "byte_length_mismatch",
        "unknown_model_not_found",
    ] {
        assert!(
            checks.contains(&must),
            "check {must} did not run: {checks:?}"
        );
    }
    assert!(checks.len() >= 50, "only {} checks ran", checks.len());
}

/// Runs one of the tritonclient scripts against `addr` with `data` (a
/// repository path); its JSON report and the process output.
fn run_script(
    site: &std::path::Path,
    script: &str,
    addr: std::net::SocketAddr,
    data: &str,
) -> (Value, std::process::Output) {
    let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
        .arg(repo_root().join(script))
        .arg(addr.to_string())
        .arg(repo_root().join(data))
        .env("PYTHONPATH", site)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{script} printed no report:\nstdout: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (report, out)
}
