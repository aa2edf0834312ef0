//! Shadow traffic through the gateway, with real processes: the inference
//! service serves the iris logistic regression, the deliberately worse
//! depth-1 tree and a copy of the regression; the gateway mirrors every
//! `iris-logreg` call to the tree (compared by predicted class) and half of
//! the `iris-copy` calls to the regression (compared element by element).
//! Four callers at once send the iris flowers: every primary call succeeds
//! and answers what the inference service answers for the primary model
//! directly (to the last bit dynamic batching may change) (the shadow's answer never leaks); the report's counts
//! equal what direct calls to both models say they must be.

use mlmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
};
use mlmesh_tests::{HttpClient, Service, TempDir, repo_root};
use serde_json::Value;
use tonic::transport::Channel;

use crate::registry_cli::RegistryCli;

const RULES: &str = r#"
[shadow]
max_in_flight = 1024

[[shadow.rules]]
model = "iris-logreg"
shadow_model = "iris-tree"
fraction = 1.0
compare = "argmax"
output = "probabilities"

[[shadow.rules]]
model = "iris-copy"
shadow_model = "iris-logreg"
fraction = 0.5
compare = "tensor"
atol = 1e-6
rtol = 0.0
"#;

fn repository() -> TempDir {
    let dir = TempDir::new("shadow-models");
    let root = repo_root();
    let logreg = root.join("services/inference/models/iris-logreg");
    mlmesh_tests::copy_dir(&logreg, &dir.path().join("iris-logreg")).expect("copy");
    mlmesh_tests::copy_dir(&logreg, &dir.path().join("iris-copy")).expect("copy");
    let cfg = dir.path().join("iris-copy/config.pbtxt");
    let text = std::fs::read_to_string(&cfg).expect("config");
    std::fs::write(&cfg, text.replace("iris-logreg", "iris-copy")).expect("write");
    mlmesh_tests::copy_dir(
        &root.join("tests/data/validation/iris-tree"),
        &dir.path().join("iris-tree"),
    )
    .expect("copy");
    dir
}

/// The iris flowers of the validation suite, as requests for `model`.
fn requests(model: &str) -> Vec<pb::ModelInferRequest> {
    let suite: Value = serde_json::from_slice(
        &std::fs::read(repo_root().join("tests/data/validation/iris-suite.json")).expect("suite"),
    )
    .expect("json");
    suite["examples"]
        .as_array()
        .expect("examples")
        .iter()
        .map(|e| {
            let data: Vec<u8> = e["inputs"]["input"]["data"]
                .as_array()
                .expect("data")
                .iter()
                .flat_map(|v| (v.as_f64().expect("number") as f32).to_le_bytes())
                .collect();
            pb::ModelInferRequest {
                model_name: model.into(),
                inputs: vec![pb::model_infer_request::InferInputTensor {
                    name: "input".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 4],
                    ..Default::default()
                }],
                raw_input_contents: vec![data.into()],
                ..Default::default()
            }
        })
        .collect()
}

fn probabilities(r: &pb::ModelInferResponse) -> Vec<f32> {
    let i = r
        .outputs
        .iter()
        .position(|o| o.name == "probabilities")
        .expect("probabilities");
    r.raw_output_contents[i]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |b, (i, &x)| if x > b.1 { (i, x) } else { b },
        )
        .0
}

/// The second test's rule: every `iris-logreg` call mirrored to the
/// registry candidate served as `iris-candidate`.
const CANDIDATE_RULE: &str = r#"
[shadow]
max_in_flight = 1024

[[shadow.rules]]
model = "iris-logreg"
shadow_model = "iris-candidate"
fraction = 1.0
compare = "argmax"
output = "probabilities"
"#;

/// A gateway in front of `inference` with `rules` (its settings file in
/// `dir`), HTTP on a port of its own.
fn gateway(inference: &Service, rules: &str, dir: &TempDir) -> Service {
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, rules).expect("write");
    Service::start(
        "mlmesh-gateway",
        &[
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
            ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
            ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
            ("MLMESH_HTTP__LISTEN", "127.0.0.1:0".into()),
            ("MLMESH_CONFIG", file.display().to_string()),
        ],
    )
}

/// The gateway's shadow report once the first rule's sampled calls
/// (compared or skipped) reach `sampled`, or after 30 s.
async fn settled_report(gateway: &Service, sampled: u64) -> Value {
    let mut http = HttpClient::new(gateway.http_addr.expect("http"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = http.json("GET", "/v1/shadow", None);
        assert_eq!(status, 200, "{body}");
        let rule = &body["rules"][0];
        let done = rule["calls"].as_u64().unwrap_or(0) + rule["skipped"].as_u64().unwrap_or(0);
        if done == sampled || std::time::Instant::now() > deadline {
            return body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn client(addr: std::net::SocketAddr) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_compare_live_calls_and_never_touch_the_primary() {
    let _serial = mlmesh_tests::serial_async().await;
    let models = repository();
    let config = TempDir::new("shadow-config");
    let inference = Service::start(
        "mlmesh-inference",
        &[(
            "MLMESH_INFERENCE__MODEL_REPOSITORY",
            models.path().display().to_string(),
        )],
    );
    let gateway = gateway(&inference, RULES, &config);

    // What each model answers, directly.
    let mut direct = client(inference.addr).await;
    let mut want = std::collections::HashMap::new();
    for model in ["iris-logreg", "iris-tree"] {
        let mut answers = Vec::new();
        for rq in requests(model) {
            let r = direct.model_infer(rq).await.expect("direct").into_inner();
            answers.push(probabilities(&r));
        }
        want.insert(model, answers);
    }
    let differ = want["iris-logreg"]
        .iter()
        .zip(&want["iris-tree"])
        .filter(|(a, b)| argmax(a) != argmax(b))
        .count();
    assert!(differ > 0, "the tree is worse: some classes differ");

    // Four callers at once, each through every flower of both models.
    let rounds = 4;
    let tasks: Vec<_> = (0..rounds)
        .map(|_| {
            let addr = gateway.addr;
            let logreg = want["iris-logreg"].clone();
            tokio::spawn(async move {
                let mut c = client(addr).await;
                for model in ["iris-logreg", "iris-copy"] {
                    for (i, rq) in requests(model).into_iter().enumerate() {
                        let r = c.model_infer(rq).await.expect("primary call").into_inner();
                        assert_eq!(r.model_name, model, "the primary answered");
                        // Dynamic batching may change the last bit.
                        let got = probabilities(&r);
                        let close = got.len() == logreg[i].len()
                            && got
                                .iter()
                                .zip(&logreg[i])
                                .all(|(a, b)| (a - b).abs() <= 1e-6);
                        assert!(
                            close,
                            "{model} flower {i}: the primary's answer {got:?}, not {:?}",
                            logreg[i]
                        );
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("caller");
    }

    // The report settles once every sampled shadow call is done.
    let n = requests("iris-logreg").len() as u64;
    let report = settled_report(&gateway, rounds * n).await;
    let tree = &report["rules"][0];
    assert_eq!(tree["errors"], 0, "{report}");
    assert_eq!(tree["skipped"], 0, "{report}");
    assert_eq!(
        tree["disagree"].as_u64(),
        Some(rounds * differ as u64),
        "{report}"
    );
    assert_eq!(
        tree["agree"].as_u64(),
        Some(rounds * (n - differ as u64)),
        "{report}"
    );
    let rate = tree["agreement"].as_f64().expect("rate");
    let (lo, hi) = (
        tree["agreement_interval"]["low"].as_f64().expect("low"),
        tree["agreement_interval"]["high"].as_f64().expect("high"),
    );
    assert!(lo < rate && rate < hi, "{report}");
    assert!(
        tree["drift"]["max"].as_f64().is_some_and(|d| d > 0.0),
        "{report}"
    );

    let copy = &report["rules"][1];
    assert_eq!(
        (copy["errors"].as_u64(), copy["disagree"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    let sampled =
        copy["calls"].as_u64().expect("calls") + copy["skipped"].as_u64().expect("skipped");
    let total = rounds * n;
    assert!(
        sampled > total * 3 / 10 && sampled < total * 7 / 10,
        "half of {total} sampled: {sampled}"
    );
    assert!(
        copy["drift"]["max"].as_f64().is_some_and(|d| d < 1e-6),
        "the same model (batching moves the last bits only): {report}"
    );

    // The same figures as metrics.
    let metric = |outcome: &str| {
        gateway.metric(&format!(
            "mlmesh_gateway_shadow_calls_total{{model=\"iris-logreg\",outcome=\"{outcome}\"}}"
        ))
    };
    assert_eq!(metric("disagree"), (rounds * differ as u64) as f64);
    assert_eq!(metric("error"), 0.0);

    // The report as evidence of the tree's registry version: judged by the
    // lower bound of the agreement's interval (latency is the benchmark's
    // business, never a test's: its ratio is not judged here).
    let cli = RegistryCli::start("shadow-registry");
    let mlmesh = |args: &[&str]| cli.run(args);
    cli.all_ok(&[
        &["registry", "create", "iris-tree"][..],
        &[
            "registry",
            "push",
            "iris-tree",
            "tests/data/validation/iris-tree",
        ],
    ]);
    let gw = format!("http://{}", gateway.http_addr.expect("http"));
    let judge = |min: &str| {
        mlmesh(&[
            "model",
            "shadow",
            "iris-tree",
            "1",
            "--gateway",
            &gw,
            "--rule",
            "iris-logreg",
            "--max-latency-ratio",
            "1000000",
            "--min-agreement",
            min,
            "--record",
        ])
    };
    let out = judge("0.5");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("PASS shadow agreement") && printed.contains("recorded as evidence"),
        "{printed}"
    );
    let out = judge("0.9");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "agreement {rate} passed 0.9: {printed}"
    );
    assert!(printed.contains("FAIL shadow agreement"), "{printed}");
    let listed = mlmesh(&["registry", "evidence", "iris-tree", "1"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert_eq!(listed.matches("shadow of suite").count(), 2, "{listed}");
    assert!(
        listed.contains("PASSED") && listed.contains("FAILED"),
        "{listed}"
    );
}

/// A registry `candidate` alias shadowing `production` of the same model:
/// the inference service follows both (`… as iris-candidate` serves the
/// candidate under a name of its own, its config renamed to match), the
/// gateway mirrors every `iris-logreg` call to `iris-candidate`, and the
/// report becomes evidence of the candidate's registry version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_alias_shadows_production_of_the_same_model() {
    let _serial = mlmesh_tests::serial_async().await;
    let cli = RegistryCli::start("shadow-alias-registry");
    let mlmesh = |args: &[&str]| cli.run(args);
    // v1: the depth-1 tree (no name in its config) in production; v2: the
    // logistic regression (its config says name "iris-logreg") as the
    // candidate, served as iris-candidate.
    cli.all_ok(&[
        &["registry", "create", "iris-logreg"][..],
        &[
            "registry",
            "push",
            "iris-logreg",
            "tests/data/validation/iris-tree",
        ],
        &[
            "registry",
            "push",
            "iris-logreg",
            "services/inference/models/iris-logreg",
        ],
        &["registry", "alias", "set", "iris-logreg", "production", "1"],
        &["registry", "alias", "set", "iris-logreg", "candidate", "2"],
    ]);
    let (repo, cache, config) = (
        TempDir::new("shadow-alias-repo"),
        TempDir::new("shadow-alias-cache"),
        TempDir::new("shadow-alias-config"),
    );
    let inference = Service::start(
        "mlmesh-inference",
        &[
            ("MLMESH_INFERENCE__MODEL_REPOSITORY", repo.path().display().to_string()),
            ("MLMESH_INFERENCE__REGISTRY_ADDR", cli.addr()),
            (
                "MLMESH_INFERENCE__REGISTRY_MODELS",
                "registry://iris-logreg@production,registry://iris-logreg@candidate as iris-candidate".into(),
            ),
            ("MLMESH_INFERENCE__REGISTRY_CACHE_DIR", cache.path().display().to_string()),
        ],
    );
    let gateway = gateway(&inference, CANDIDATE_RULE, &config);
    // Both names serve once the followers have synced.
    let mut direct = client(inference.addr).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for name in ["iris-logreg", "iris-candidate"] {
        loop {
            let ready = direct
                .model_ready(pb::ModelReadyRequest {
                    name: name.into(),
                    version: String::new(),
                })
                .await
                .map(|r| r.into_inner().ready)
                .unwrap_or(false);
            if ready {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never became ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    let mut answers = std::collections::HashMap::new();
    for name in ["iris-logreg", "iris-candidate"] {
        let mut v = Vec::new();
        for rq in requests(name) {
            v.push(probabilities(
                &direct.model_infer(rq).await.expect("direct").into_inner(),
            ));
        }
        answers.insert(name, v);
    }
    let differ = answers["iris-logreg"]
        .iter()
        .zip(&answers["iris-candidate"])
        .filter(|(a, b)| argmax(a) != argmax(b))
        .count() as u64;
    assert!(
        differ > 0,
        "production (the tree) and the candidate differ somewhere"
    );
    let mut c = client(gateway.addr).await;
    for rq in requests("iris-logreg") {
        c.model_infer(rq).await.expect("primary call");
    }
    let n = requests("iris-logreg").len() as u64;
    let rule = settled_report(&gateway, n).await["rules"][0].clone();
    assert_eq!(rule["errors"], 0, "{rule}");
    assert_eq!(rule["disagree"].as_u64(), Some(differ), "{rule}");
    // The report as evidence of the candidate's version (v2, by alias);
    // latency not judged (see above).
    let gw = format!("http://{}", gateway.http_addr.expect("http"));
    let out = mlmesh(&[
        "model",
        "shadow",
        "iris-logreg",
        "@candidate",
        "--gateway",
        &gw,
        "--rule",
        "iris-logreg",
        "--max-latency-ratio",
        "1000000",
        "--min-agreement",
        "0.3",
        "--min-calls",
        "100",
        "--record",
    ]);
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        printed.contains("recorded as evidence") && printed.contains("of iris-logreg v2"),
        "{printed}"
    );
}
