//! Loading, zero-downtime reload under load, failed loads, polling and the
//! memory budget.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mlmesh_proto::inference as pb;
use tonic::Code;

use crate::helpers::*;

fn v2_npz() -> Vec<u8> {
    std::fs::read(repo_root().join("services/inference/tests/data/digits-mlp-npz-v2.npz"))
        .expect("v2")
}

/// Which reference the probabilities of digits row 0 match: 1 or 2.
fn which_version(p: &[f32]) -> Option<u8> {
    let r = references();
    let v1 = flat(&r["models"]["digits-mlp"]["sklearn"]["probabilities"]);
    let v2 = flat(&r["models"]["digits-mlp-npz-v2"]["numpy"]["probabilities"]);
    if max_abs_diff(p, &v1[..10]) < 1e-4 {
        Some(1)
    } else if max_abs_diff(p, &v2[..10]) < 1e-4 {
        Some(2)
    } else {
        None
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_continuous_load_fails_no_call() {
    let repo = TempRepo::with(&["digits-mlp-npz"]);
    let app = spawn_app(repo.path(), |_| {}).await;
    let row = digits_rows().swap_remove(0);
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (mut c, row, stop, failures, seen) = (
            app.client(),
            row.clone(),
            stop.clone(),
            failures.clone(),
            seen.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match c
                    .model_infer(f32_request("digits-mlp-npz", "input", 1, &row))
                    .await
                {
                    Ok(r) => {
                        let (_, p) = output_f32(&r.get_ref().clone(), "probabilities");
                        let v = which_version(&p).map_or(0, usize::from);
                        seen[v].fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        eprintln!("failed call: {e}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Version 2 appears; an explicit load swaps it in beside version 1.
    repo.write("digits-mlp-npz/2/model.npz", &v2_npz());
    app.client()
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "digits-mlp-npz".into(),
            ..Default::default()
        })
        .await
        .expect("reload");
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A broken version 3: the load fails, version 2 keeps serving.
    repo.write("digits-mlp-npz/3/model.npz", b"not a zip file");
    let e = app
        .client()
        .repository_model_load(pb::RepositoryModelLoadRequest {
            model_name: "digits-mlp-npz".into(),
            ..Default::default()
        })
        .await
        .expect_err("corrupt version");
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("3/model.npz") && e.message().contains("keeps serving"),
        "{}",
        e.message()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client task");
    }
    let (v1, v2, other) = (
        seen[1].load(Ordering::Relaxed),
        seen[2].load(Ordering::Relaxed),
        seen[0].load(Ordering::Relaxed),
    );
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "calls failed during the reload"
    );
    assert_eq!(other, 0, "answers matching neither version's reference");
    assert!(v1 > 0 && v2 > 0, "v1 answers {v1}, v2 answers {v2}");
    let idx = app.index("digits-mlp-npz").await;
    assert_eq!(idx.len(), 1);
    assert_eq!(
        (idx[0].version.as_str(), idx[0].state.as_str()),
        ("2", "READY")
    );
    assert!(idx[0].reason.contains("3/model.npz"), "{idx:?}");
    let m = app.metrics().await;
    assert!(
        mlmesh_tests::metric_sum(
            &m,
            "mlmesh_inference_model_loads_total{model=\"digits-mlp-npz\",outcome=\"failure\"}"
        ) >= 1.0,
        "failure metric"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_model_fails_alone_and_names_its_file() {
    let repo = TempRepo::with(&["iris-logreg"]);
    repo.write(
        "broken/1/model.onnx",
        b"\x08\x07garbage, not a protobuf graph",
    );
    repo.write("badconfig/config.pbtxt", b"max_batch_size: lots\n");
    repo.write("badconfig/1/model.npz", b"");
    let app = spawn_app(repo.path(), |_| {}).await;
    let idx = app.index("broken").await;
    assert_eq!(idx[0].state, "UNAVAILABLE");
    assert!(idx[0].reason.contains("broken/1/model.onnx"), "{idx:?}");
    let idx = app.index("badconfig").await;
    assert!(
        idx[0].reason.contains("config.pbtxt") && idx[0].reason.contains("max_batch_size"),
        "{idx:?}"
    );
    // The other model serves; a call to the broken one is UNAVAILABLE with the reason.
    app.client()
        .model_infer(f32_request(
            "iris-logreg",
            "input",
            1,
            &[5.1, 3.5, 1.4, 0.2],
        ))
        .await
        .expect("iris serves");
    let e = app
        .client()
        .model_infer(f32_request("broken", "input", 1, &[0.0]))
        .await
        .expect_err("broken");
    assert_eq!(e.code(), Code::Unavailable);
    assert!(e.message().contains("model.onnx"), "{}", e.message());
    let ready = app
        .client()
        .model_ready(pb::ModelReadyRequest {
            name: "broken".into(),
            ..Default::default()
        })
        .await
        .expect("ready rpc")
        .into_inner();
    assert!(!ready.ready);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_reloads_a_new_version() {
    let repo = TempRepo::with(&["digits-mlp-npz"]);
    let app = spawn_app(repo.path(), |s| s.inference.poll_interval_secs = 1).await;
    let row = digits_rows().swap_remove(0);
    let ask = || {
        let mut c = app.client();
        let req = f32_request("digits-mlp-npz", "input", 1, &row);
        async move {
            let r = c.model_infer(req).await.expect("infer").into_inner();
            which_version(&output_f32(&r, "probabilities").1)
        }
    };
    assert_eq!(ask().await, Some(1));
    repo.write("digits-mlp-npz/2/model.npz", &v2_npz());
    let t0 = Instant::now();
    while ask().await != Some(2) {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "version 2 not picked up by polling"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_budget_evicts_the_least_recently_used_model() {
    let repo = TempRepo::with(&[]);
    // Each model holds (200 + 1) × 1024 × 4 bytes ≈ 0.8 MiB of weights:
    // three fit in 3 MiB, four do not.
    for (name, w) in [("a", 1.0f32), ("b", 2.0), ("c", 3.0), ("pinned", 4.0)] {
        repo.write(&format!("{name}/1/model.npz"), &linear_npz(200, 1024, w));
    }
    let app = spawn_app(repo.path(), |s| {
        s.inference.memory_budget_mb = 3;
        s.inference.load_models = vec!["pinned".into(), "a".into(), "b".into()];
        s.inference.pinned_models = vec!["pinned".into()];
    })
    .await;
    let state = |name: &'static str| {
        let app = &app;
        async move { app.index(name).await[0].state.clone() }
    };
    let x = vec![1.0f32; 200];
    let mut c = app.client();
    // Use a, so b is the least recently used.
    c.model_infer(f32_request("a", "input", 1, &x))
        .await
        .expect("a");
    // c is loaded on demand: b is evicted (pinned never is).
    let r = c
        .model_infer(f32_request("c", "input", 1, &x))
        .await
        .expect("c")
        .into_inner();
    assert_eq!(output_f32(&r, "output").1[0], 200.0 * 3.0);
    assert_eq!(state("b").await, "UNAVAILABLE");
    assert!(app.index("b").await[0].reason.contains("memory_budget"));
    assert_eq!(state("a").await, "READY");
    assert_eq!(state("pinned").await, "READY");
    // b again: now a is the least recently used.
    c.model_infer(f32_request("b", "input", 1, &x))
        .await
        .expect("b reloads on demand");
    assert_eq!(state("a").await, "UNAVAILABLE");
    assert_eq!(state("pinned").await, "READY");
    let m = app.metrics().await;
    assert_eq!(
        mlmesh_tests::metric_sum(&m, "mlmesh_inference_model_evictions_total"),
        2.0
    );
    assert_eq!(
        mlmesh_tests::metric_sum(&m, "mlmesh_inference_model_loaded_bytes{model=\"c\"}"),
        201.0 * 1024.0 * 4.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_with_a_call_in_flight_is_never_evicted() {
    let repo = TempRepo::with(&[]);
    for (name, w) in [("a", 1.0f32), ("b", 2.0), ("c", 3.0), ("d", 4.0)] {
        repo.write(&format!("{name}/1/model.npz"), &linear_npz(200, 1024, w));
    }
    let app = spawn_app(repo.path(), |s| {
        s.inference.memory_budget_mb = 3;
        s.inference.load_models = vec!["a".into(), "b".into(), "c".into()];
    })
    .await;
    // `a` is the least recently used, but a call holds it.
    let lease = app.models.try_acquire("a", "").expect("a is loaded");
    let x = vec![1.0f32; 200];
    app.client()
        .model_infer(f32_request("d", "input", 1, &x))
        .await
        .expect("d loads");
    let state = |n: &'static str| {
        let app = &app;
        async move { app.index(n).await[0].state.clone() }
    };
    assert_eq!(state("a").await, "READY", "evicted while in use");
    assert_eq!(state("b").await, "UNAVAILABLE");
    drop(lease);
    app.stop().await;
}
