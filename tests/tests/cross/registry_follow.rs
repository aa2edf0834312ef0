//! The inference service follows a registry alias, both as processes: push
//! v1, point `production` at it, serve it; push v2 and move the alias while
//! a client sends requests continuously → answers switch to v2's outputs
//! with zero failed calls; roll back → v1's outputs again. Outputs are
//! checked against scikit-learn / NumPy references. Then a version that
//! cannot load: the running one keeps serving and the failure is counted
//! and reported. References:
//! (`services/inference/tests/data/references.json`).

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use mlmesh_proto::{
    inference::{
        self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    },
    registry::v1::{self as pb, registry_client::RegistryClient},
};
use mlmesh_tests::{Service, TempDir, repo_root};
use serde_json::Value;

fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().unwrap_or(f64::NAN) as f32],
        other => panic!("not numeric: {other}"),
    }
}

pub(crate) struct Refs {
    pub(crate) row: Vec<f32>,
    pub(crate) v1: Vec<f32>,
    pub(crate) v2: Vec<f32>,
}

pub(crate) fn refs() -> Refs {
    let p = repo_root().join("services/inference/tests/data/references.json");
    let r: Value =
        serde_json::from_str(&std::fs::read_to_string(p).expect("references")).expect("json");
    let m = &r["models"];
    Refs {
        row: flat(&m["digits-mlp"]["input"]["data"][0]),
        v1: flat(&m["digits-mlp"]["sklearn"]["probabilities"])[..10].to_vec(),
        v2: flat(&m["digits-mlp-npz-v2"]["numpy"]["probabilities"])[..10].to_vec(),
    }
}

pub(crate) fn close(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-4)
}

async fn push(c: &mut RegistryClient<tonic::transport::Channel>, files: &[(&str, Vec<u8>)]) -> i64 {
    crate::registry_support::push(c, "digits", files, None, usize::MAX)
        .await
        .expect("push")
}

pub(crate) fn request(row: &[f32]) -> ipb::ModelInferRequest {
    ipb::ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, row.len() as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![
            row.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// The inference service following `digits@production` on `registry`.
/// (`extra`: more settings, e.g. an admin token.)
pub(crate) fn start_inference(
    registry: &Service,
    repo: &TempDir,
    cache: &TempDir,
    extra: &[(&str, String)],
) -> Service {
    let mut env = vec![
        (
            "MLMESH_INFERENCE__MODEL_REPOSITORY",
            repo.path().display().to_string(),
        ),
        ("MLMESH_INFERENCE__REGISTRY_ADDR", registry.addr.to_string()),
        (
            "MLMESH_INFERENCE__REGISTRY_MODELS",
            "registry://digits@production".into(),
        ),
        (
            "MLMESH_INFERENCE__REGISTRY_CACHE_DIR",
            cache.path().display().to_string(),
        ),
    ];
    env.extend(extra.iter().cloned());
    Service::start("mlmesh-inference", &env)
}

/// A registry on `data`, with `extra` settings.
pub(crate) fn start_registry(data: &TempDir, extra: &[(&str, String)]) -> Service {
    let mut env = vec![(
        "MLMESH_REGISTRY__DATA_DIR",
        data.path().display().to_string(),
    )];
    env.extend(extra.iter().cloned());
    Service::start("mlmesh-registry", &env)
}

/// The runtime the follow tests drive their clients on.
pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn probabilities(r: &ipb::ModelInferResponse) -> Vec<f32> {
    let i = r
        .outputs
        .iter()
        .position(|o| o.name == "probabilities")
        .expect("probabilities output");
    r.raw_output_contents[i]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn the_inference_service_follows_an_alias_with_zero_failed_calls() {
    let _serial = mlmesh_tests::serial();
    let rt = runtime();
    let (reg_data, cache, repo) = (
        TempDir::new("follow-registry"),
        TempDir::new("follow-cache"),
        TempDir::new("follow-repo"),
    );
    let registry = start_registry(&reg_data, &[]);
    let refs = refs();
    let v1_file =
        std::fs::read(repo_root().join("services/inference/models/digits-mlp-npz/1/model.npz"))
            .expect("v1 model");
    let v2_file =
        std::fs::read(repo_root().join("services/inference/tests/data/digits-mlp-npz-v2.npz"))
            .expect("v2 model");
    let mut reg = rt.block_on(async {
        let mut c = RegistryClient::connect(format!("http://{}", registry.addr))
            .await
            .expect("registry");
        c.create_model(pb::CreateModelRequest {
            name: "digits".into(),
            ..Default::default()
        })
        .await
        .expect("create");
        // A Triton-style folder: the version folder inside is dropped.
        assert_eq!(push(&mut c, &[("1/model.npz", v1_file)]).await, 1);
        c.set_aliases(pb::SetAliasesRequest {
            model: "digits".into(),
            aliases: vec![pb::AliasTarget {
                alias: "production".into(),
                version: 1,
                expected_version: Some(0),
            }],
            reason: "first release".into(),
            override_policy: false,
        })
        .await
        .expect("alias");
        c
    });
    let inference = start_inference(&registry, &repo, &cache, &[]);
    let addr = inference.addr;
    let inf = &inference;
    let cache_dir = cache.path().to_path_buf();
    rt.block_on(async move {
        let mut ic = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("inference");
        // Serving version 1 once the follower has synced.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = ic.model_infer(request(&refs.row)).await {
                let r = r.into_inner();
                assert_eq!(r.model_version, "1");
                assert!(close(&probabilities(&r), &refs.v1), "v1's outputs");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "digits@production was not served within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }

        // A client sends continuously from here on.
        let stop = Arc::new(AtomicBool::new(false));
        // (client, version whose outputs came back), in arrival order.
        let answers: Arc<Mutex<Vec<(usize, u8)>>> = Arc::default();
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut clients = Vec::new();
        for client in 0..3 {
            let (mut c, stop, answers, failures, row) = (
                ic.clone(),
                stop.clone(),
                answers.clone(),
                failures.clone(),
                refs.row.clone(),
            );
            let (v1, v2) = (refs.v1.clone(), refs.v2.clone());
            clients.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.model_infer(request(&row)).await {
                        Ok(r) => {
                            let p = probabilities(r.get_ref());
                            let which = if close(&p, &v1) {
                                1
                            } else if close(&p, &v2) {
                                2
                            } else {
                                0
                            };
                            answers.lock().expect("lock").push((client, which));
                        }
                        Err(e) => failures.lock().expect("lock").push(e.to_string()),
                    }
                }
            }));
        }
        let latest = || answers.lock().expect("lock").last().map_or(0, |a| a.1);
        let wait_for = |want: u8, what: &'static str| {
            let latest = &latest;
            async move {
                let t0 = Instant::now();
                while latest() != want {
                    assert!(
                        t0.elapsed() < Duration::from_secs(30),
                        "{what} not seen within 30 s"
                    );
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                t0.elapsed()
            }
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(push(&mut reg, &[("model.npz", v2_file)]).await, 2);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(latest(), 1, "pushing v2 alone changes nothing");
        reg.set_aliases(pb::SetAliasesRequest {
            model: "digits".into(),
            aliases: vec![pb::AliasTarget {
                alias: "production".into(),
                version: 2,
                expected_version: Some(1),
            }],
            reason: "v2".into(),
            override_policy: false,
        })
        .await
        .expect("promote");
        let promoted = wait_for(2, "v2's outputs").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        reg.rollback_alias(pb::RollbackAliasRequest {
            model: "digits".into(),
            alias: "production".into(),
            expected_version: Some(2),
            reason: "roll back".into(),
            override_policy: false,
        })
        .await
        .expect("rollback");
        let rolled_back = wait_for(1, "v1's outputs again").await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A version that cannot load: v1 keeps serving, the failure shows.
        let failed = r#"mlmesh_inference_registry_syncs_total{model="digits",outcome="failure"}"#;
        assert_eq!(inf.metric(failed), 0.0);
        assert_eq!(
            push(&mut reg, &[("model.npz", b"not a zip archive".to_vec())]).await,
            3
        );
        reg.set_aliases(pb::SetAliasesRequest {
            model: "digits".into(),
            aliases: vec![pb::AliasTarget {
                alias: "production".into(),
                version: 3,
                expected_version: Some(1),
            }],
            reason: "broken".into(),
            override_policy: false,
        })
        .await
        .expect("move to the broken version");
        let t0 = Instant::now();
        while inf.metric(failed) < 1.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the failed sync was not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let index = ic
            .repository_index(ipb::RepositoryIndexRequest::default())
            .await
            .expect("index")
            .into_inner();
        let row = index
            .models
            .iter()
            .find(|m| m.name == "digits")
            .expect("digits in the index");
        assert_eq!(row.state, "READY", "{row:?}");
        assert!(
            row.reason.contains("model.npz"),
            "the reason names the file: {row:?}"
        );
        // A broken version that brings its own config.pbtxt: after the
        // failed load the model folder's config is v1's again (none), not
        // the broken version's, so no later poll or restart reads it.
        let bad_config = "name: \"digits\"\nbackend: \"mlmesh_npz\"\nmax_batch_size: 8\n\
                          input [ { name: \"input\" data_type: TYPE_FP32 dims: [ 3 ] } ]\n";
        assert_eq!(
            push(
                &mut reg,
                &[
                    ("config.pbtxt", bad_config.as_bytes().to_vec()),
                    ("1/model.npz", b"still not a zip archive".to_vec()),
                ]
            )
            .await,
            4
        );
        reg.set_aliases(pb::SetAliasesRequest {
            model: "digits".into(),
            aliases: vec![pb::AliasTarget {
                alias: "production".into(),
                version: 4,
                expected_version: Some(3),
            }],
            reason: "broken, with a config".into(),
            override_policy: false,
        })
        .await
        .expect("move to the broken version with a config");
        let t0 = Instant::now();
        while inf.metric(failed) < 2.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the second failed sync was not counted"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let model_config = cache_dir.join("models/digits/config.pbtxt");
        assert!(
            !model_config.exists(),
            "the failed version's config was left behind: {:?}",
            std::fs::read_to_string(&model_config)
        );
        reg.set_aliases(pb::SetAliasesRequest {
            model: "digits".into(),
            aliases: vec![pb::AliasTarget {
                alias: "production".into(),
                version: 1,
                expected_version: Some(4),
            }],
            reason: "back to v1".into(),
            override_policy: false,
        })
        .await
        .expect("back to v1");
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.await.expect("client");
        }
        let failures = failures.lock().expect("lock").clone();
        assert!(failures.is_empty(), "failed calls: {failures:?}");
        let answers = answers.lock().expect("lock").clone();
        assert!(
            answers.iter().all(|a| a.1 != 0),
            "every answer is v1's or v2's"
        );
        // Each client's own answers (its calls are sequential): 1…1 2…2
        // 1…1, each switch once, never back and forth, and v1 throughout
        // the failed load. (Across clients a call that started on the old
        // version may finish after another client's first new answer.)
        for client in 0..3 {
            let mut phases: Vec<u8> = answers
                .iter()
                .filter(|a| a.0 == client)
                .map(|a| a.1)
                .collect();
            phases.dedup();
            assert_eq!(phases, [1, 2, 1], "client {client}");
        }
        eprintln!(
            "{} answers, 0 failed; alias move → v2 answers in {:?}, rollback → v1 answers in {:?}",
            answers.len(),
            promoted,
            rolled_back
        );
    });
    drop(inference);

    // The cache holds a version 1 that is not the registry's version 1 (as
    // after a registry restored from an older backup or reset): its
    // manifest digest differs, so a restarted service pulls it again and
    // serves the registry's contents, not the stale ones under that number.
    let v1_dir = cache.path().join("models/digits/1");
    let npz = std::fs::read_dir(&v1_dir)
        .expect("cached v1")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "npz"))
        .expect("cached model.npz");
    std::fs::write(
        &npz,
        std::fs::read(repo_root().join("services/inference/tests/data/digits-mlp-npz-v2.npz"))
            .expect("v2 model"),
    )
    .expect("tamper");
    std::fs::write(v1_dir.join(".mlmesh-manifest"), "0".repeat(64)).expect("marker");
    let inference = start_inference(&registry, &repo, &cache, &[]);
    let addr = inference.addr;
    let refs = self::refs();
    rt.block_on(async move {
        let mut ic = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("inference");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = ic.model_infer(request(&refs.row)).await {
                let r = r.into_inner();
                assert_eq!(r.model_version, "1");
                assert!(
                    close(&probabilities(&r), &refs.v1),
                    "the registry's v1 is served, not the stale cached one"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "digits@production was not served within 30 s after the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    drop(inference);
    drop(registry);
}
