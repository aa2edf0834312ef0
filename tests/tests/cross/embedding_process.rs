//! The embedding binary as a process: graceful shutdown under load, help,
//! and configuration errors.

use mlmesh_tests::OutputWithin as _;
use std::{process::Command, time::Duration};

use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::{Service, binary};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_finishes_every_accepted_call_then_exits_0() {
    let _serial = mlmesh_tests::serial_async().await;
    let mut svc = Service::start(
        "mlmesh-embedding",
        &[
            ("MLMESH_EMBEDDING__MAX_BATCH_SIZE", "4".into()),
            ("MLMESH_SERVER__SHUTDOWN_GRACE_SECS", "30".into()),
        ],
    );
    eprintln!("embedding ready in {:?}", svc.started_in);
    let client = EmbeddingServiceClient::connect(format!("http://{}", svc.addr))
        .await
        .expect("connect");

    // 12 calls of 16 long inputs each: several seconds of work on 2 cores.
    let long = "graceful shutdown drains accepted calls ".repeat(50);
    let mut calls = Vec::new();
    for _ in 0..12 {
        let mut c = client.clone();
        let req = EmbedRequest {
            inputs: vec![long.clone(); 16],
            ..Default::default()
        };
        calls.push(tokio::spawn(async move { c.embed(req).await }));
    }
    // Wait until the server has admitted every input of every call.
    let mut admitted = 0.0;
    for _ in 0..500 {
        admitted = svc.metric("mlmesh_embedding_inputs_in_flight");
        if admitted >= 192.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        admitted, 192.0,
        "all 12 × 16 inputs accepted before SIGTERM"
    );
    svc.terminate();

    let mut ok = 0;
    for c in calls {
        let r = c
            .await
            .expect("join")
            .expect("an accepted call must complete during drain");
        assert_eq!(r.into_inner().embeddings.len(), 16);
        ok += 1;
    }
    assert_eq!(ok, 12);
    let code = tokio::task::spawn_blocking(move || {
        let code = svc.wait(Duration::from_secs(30));
        let logs: Vec<String> = svc.logs.try_iter().collect();
        (code, logs)
    })
    .await
    .expect("join");
    assert_eq!(code.0, Some(0), "clean exit after drain");
    assert!(
        code.1.iter().any(|l| l.contains("health NOT_SERVING")),
        "drain logged: {:?}",
        code.1
    );
}

#[test]
fn help_documents_every_setting() {
    let _serial = mlmesh_tests::serial();
    let out = Command::new(binary("mlmesh-embedding"))
        .arg("--help")
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for key in [
        "--config",
        "--listen",
        "--metrics-listen",
        "MLMESH_SERVER__LISTEN",
        "MLMESH_SERVER__SHUTDOWN_GRACE_SECS",
        "MLMESH_SERVER__MAX_REQUEST_BYTES",
        "MLMESH_EMBEDDING__MODELS",
        "MLMESH_EMBEDDING__INTRA_OP_THREADS",
        "MLMESH_EMBEDDING__MAX_BATCH_TOKENS",
        "MLMESH_EMBEDDING__MAX_QUEUED_INPUTS",
        "MLMESH_EMBEDDING__MAX_CLIENT_BATCH",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(help.contains(key), "--help lacks {key}");
    }
}

#[test]
fn bad_configuration_fails_at_start_naming_the_key() {
    let _serial = mlmesh_tests::serial();
    for (key, value, expect) in [
        (
            "MLMESH_EMBEDDING__MAX_BATCH_SIZE",
            "lots",
            "embedding.max_batch_size",
        ),
        (
            "MLMESH_SERVER__SHUTDOWN_GRACE_SECS",
            "-1",
            "server.shutdown_grace_secs",
        ),
        ("MLMESH_EMBEDDING__MODELS", "broken", "name=path"),
        (
            "MLMESH_EMBEDDING__MODELS",
            "m=/nonexistent/folder",
            "/nonexistent/folder",
        ),
        (
            "MLMESH_EMBEDDING__ORT_DYLIB_PATH",
            "/nonexistent/libonnxruntime.so",
            "ORT_DYLIB_PATH",
        ),
    ] {
        let out = Command::new(binary("mlmesh-embedding"))
            .current_dir(mlmesh_tests::repo_root())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .env(key, value)
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run");
        assert!(!out.status.success(), "{key}={value} must fail");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect),
            "{key}={value}: stderr lacks {expect:?}:\n{err}"
        );
    }
}
