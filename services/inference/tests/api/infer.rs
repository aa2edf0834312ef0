//! Inference against references, batching, MiniLM as a plain ONNX model,
//! and the error statuses.

use std::time::Duration;

use mlmesh_proto::inference::{self as pb, model_infer_request::InferInputTensor};
use tonic::Code;

use crate::helpers::*;

/// Tolerance for FP32 outputs against onnxruntime / scikit-learn
/// references (`references.json` → tolerance).
const TOL: f32 = 1e-4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_never_changes_a_result() {
    let repo = TempRepo::with(&["digits-mlp-npz"]);
    // A long queue delay so concurrent single rows are batched together.
    repo.write(
        "digits-mlp-npz/config.pbtxt",
        b"backend: \"mlmesh_npz\"\nmax_batch_size: 64\ndynamic_batching { max_queue_delay_microseconds: 50000 }\n",
    );
    let app = spawn_app(repo.path(), |_| {}).await;
    let rows = digits_rows();
    let refs = references();
    let expected = flat(&refs["models"]["digits-mlp"]["sklearn"]["probabilities"]);

    // All 32 rows in one request.
    let all: Vec<f32> = rows.iter().flatten().copied().collect();
    let whole = app
        .client()
        .model_infer(f32_request("digits-mlp-npz", "input", rows.len(), &all))
        .await
        .expect("batched request")
        .into_inner();
    let (shape, whole_p) = output_f32(&whole, "probabilities");
    assert_eq!(shape, vec![32, 10]);
    assert!(max_abs_diff(&whole_p, &expected) < TOL, "vs scikit-learn");

    // The same rows as 32 concurrent single-row requests.
    let calls = rows.iter().enumerate().map(|(i, row)| {
        let mut c = app.client();
        let req = f32_request("digits-mlp-npz", "input", 1, row);
        async move {
            (
                i,
                c.model_infer(req).await.expect("single row").into_inner(),
            )
        }
    });
    let answers = futures::future::join_all(calls).await;
    for (i, resp) in answers {
        let (shape, p) = output_f32(&resp, "probabilities");
        assert_eq!(shape, vec![1, 10]);
        let solo = &whole_p[i * 10..(i + 1) * 10];
        assert!(
            max_abs_diff(&p, solo) <= 1e-6,
            "row {i} differs when batched: {p:?} vs {solo:?}"
        );
    }
    // They really were batched together.
    let stats = app
        .client()
        .model_statistics(pb::ModelStatisticsRequest {
            name: "digits-mlp-npz".into(),
            ..Default::default()
        })
        .await
        .expect("stats")
        .into_inner();
    let s = &stats.model_stats[0];
    assert_eq!(s.inference_count, 64);
    // One run for the whole request, far fewer than 32 for the singles.
    assert!(
        s.execution_count < 1 + 32,
        "no dynamic batch formed: {:?}",
        s.batch_stats
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_is_servable_as_a_plain_onnx_model() {
    let model = repo_root().join(".cache/mlmesh/models/all-MiniLM-L6-v2/model.onnx");
    assert!(model.is_file(), "run `make models` first");
    let repo = TempRepo::with(&[]);
    repo.write(
        "minilm/1/model.onnx",
        &std::fs::read(&model).expect("read model"),
    );
    let app = spawn_app(repo.path(), |_| {}).await;
    let refs = references();
    let r = &refs["models"]["all-MiniLM-L6-v2"];

    let md = app
        .client()
        .model_metadata(pb::ModelMetadataRequest {
            name: "minilm".into(),
            ..Default::default()
        })
        .await
        .expect("metadata")
        .into_inner();
    let ids = md
        .inputs
        .iter()
        .find(|i| i.name == "input_ids")
        .expect("input_ids");
    assert_eq!(
        (ids.datatype.as_str(), ids.shape.as_slice()),
        ("INT64", &[-1i64, -1][..])
    );
    assert_eq!(md.outputs[0].shape, vec![-1, -1, 384]);

    // INT64 inputs in the typed `contents` field (raw is tested elsewhere).
    let inputs = r["inputs"]
        .as_object()
        .expect("inputs")
        .iter()
        .map(|(name, v)| InferInputTensor {
            name: name.clone(),
            datatype: "INT64".into(),
            shape: vec![2, 4],
            contents: Some(pb::InferTensorContents {
                int64_contents: flat(v).into_iter().map(|x| x as i64).collect(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    let resp = app
        .client()
        .model_infer(pb::ModelInferRequest {
            model_name: "minilm".into(),
            inputs,
            ..Default::default()
        })
        .await
        .expect("infer")
        .into_inner();
    let (shape, got) = output_f32(&resp, r["output_name"].as_str().expect("name"));
    assert_eq!(shape, vec![2, 4, 384]);
    let want = flat(&r["onnxruntime"]);
    let d = max_abs_diff(&got, &want);
    assert!(
        d < 1e-3,
        "MiniLM hidden states differ from onnxruntime's by {d}"
    );
    app.stop().await;
}

fn code_and_message(
    r: Result<tonic::Response<pb::ModelInferResponse>, tonic::Status>,
) -> (Code, String) {
    let e = r.expect_err("must fail");
    (e.code(), e.message().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_precise_statuses() {
    let repo = TempRepo::with(&["iris-logreg", "digits-mlp-npz"]);
    let app = spawn_app(repo.path(), |s| {
        s.server.max_request_bytes = 64 * 1024;
        s.inference.load_on_demand = false;
    })
    .await;
    let mut c = app.client();
    let row = [5.1f32, 3.5, 1.4, 0.2];

    let (code, msg) = code_and_message(c.model_infer(f32_request("nope", "input", 1, &row)).await);
    assert_eq!(code, Code::NotFound);
    assert!(msg.contains("nope") && msg.contains("iris-logreg"), "{msg}");

    let mut req = f32_request("iris-logreg", "input", 1, &row);
    req.model_version = "9".into();
    let (code, msg) = code_and_message(c.model_infer(req).await);
    assert_eq!(code, Code::NotFound);
    assert!(
        msg.contains("9") && msg.contains("served versions: 1"),
        "{msg}"
    );

    let (code, msg) = code_and_message(
        c.model_infer(f32_request("iris-logreg", "input", 1, &row[..3]))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("[1, 3]") && msg.contains("[-1, 4]"), "{msg}");

    let mut req = f32_request("iris-logreg", "input", 1, &row);
    req.inputs[0].datatype = "INT32".into();
    let (code, msg) = code_and_message(c.model_infer(req).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("INT32") && msg.contains("FP32"), "{msg}");

    let mut req = f32_request("iris-logreg", "input", 1, &row);
    req.raw_input_contents[0] = req.raw_input_contents[0].slice(..12);
    let (code, msg) = code_and_message(c.model_infer(req).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(msg.contains("12 bytes") && msg.contains("16"), "{msg}");

    let mut req = f32_request("iris-logreg", "input", 1, &row);
    req.raw_input_contents.clear();
    req.inputs[0].contents = Some(pb::InferTensorContents {
        fp32_contents: vec![1.0; 3],
        ..Default::default()
    });
    let (code, msg) = code_and_message(c.model_infer(req).await);
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("3 FP32 elements") && msg.contains("needs 4"),
        "{msg}"
    );

    let big = vec![0.5f32; 65 * 4];
    let (code, msg) = code_and_message(
        c.model_infer(f32_request("iris-logreg", "input", 65, &big))
            .await,
    );
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        msg.contains("batch size 65") && msg.contains("max_batch_size"),
        "{msg}"
    );

    let huge = vec![0.5f32; 64 * 1024];
    let (code, msg) = code_and_message(
        c.model_infer(f32_request("iris-logreg", "input", 16384, &huge))
            .await,
    );
    assert_eq!(code, Code::ResourceExhausted);
    assert!(msg.contains("server.max_request_bytes"), "{msg}");

    // Unloaded, and not loaded on demand: UNAVAILABLE.
    c.repository_model_unload(pb::RepositoryModelUnloadRequest {
        model_name: "digits-mlp-npz".into(),
        ..Default::default()
    })
    .await
    .expect("unload");
    let (code, msg) = code_and_message(
        c.model_infer(f32_request("digits-mlp-npz", "input", 1, &[0.0; 64]))
            .await,
    );
    assert_eq!(code, Code::Unavailable);
    assert!(
        msg.contains("digits-mlp-npz") && msg.contains("unloaded"),
        "{msg}"
    );
    // Still answering after all that.
    c.model_infer(f32_request("iris-logreg", "input", 1, &row))
        .await
        .expect("serves");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once_and_a_queue_timeout_expires() {
    let repo = TempRepo::with(&["digits-mlp-npz"]);
    // Requests wait up to 300 ms for company; at most 2 may wait.
    repo.write(
        "digits-mlp-npz/config.pbtxt",
        b"backend: \"mlmesh_npz\"\nmax_batch_size: 64\ndynamic_batching {\n max_queue_delay_microseconds: 300000\n default_queue_policy { max_queue_size: 2 allow_timeout_override: true }\n}\n",
    );
    let app = spawn_app(repo.path(), |_| {}).await;
    let row = vec![0.25f32; 64];
    let calls = (0..6).map(|_| {
        let mut c = app.client();
        let req = f32_request("digits-mlp-npz", "input", 1, &row);
        async move {
            let t = std::time::Instant::now();
            (c.model_infer(req).await, t.elapsed())
        }
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<_> = results.iter().filter(|(r, _)| r.is_err()).collect();
    assert_eq!(refused.len(), 4, "{results:?}");
    for (r, took) in refused {
        let e = r.as_ref().expect_err("refused");
        assert_eq!(e.code(), Code::ResourceExhausted);
        assert!(e.message().contains("max_queue_size"), "{}", e.message());
        assert!(
            *took < Duration::from_millis(250),
            "refusal waited {took:?}"
        );
    }

    // A request whose `timeout` (µs) passes in the queue is not run.
    let mut req = f32_request("digits-mlp-npz", "input", 1, &row);
    req.parameters.insert(
        "timeout".into(),
        pb::InferParameter {
            parameter_choice: Some(pb::infer_parameter::ParameterChoice::Int64Param(20_000)),
        },
    );
    let (code, msg) = code_and_message(app.client().model_infer(req).await);
    assert_eq!(code, Code::DeadlineExceeded);
    assert!(msg.contains("timeout of 20000"), "{msg}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_far_above_tonics_4_mib_default_are_served() {
    let repo = TempRepo::with(&[]);
    repo.write("wide/1/model.npz", &linear_npz(4096, 1, 0.5));
    let app = spawn_app(repo.path(), |s| s.inference.default_max_batch_size = 512).await;
    // 400 rows × 4096 FP32 = 6.25 MiB in one message.
    let x = vec![1.0f32; 400 * 4096];
    let r = app
        .client()
        .model_infer(f32_request("wide", "input", 400, &x))
        .await
        .expect("a 6 MiB request")
        .into_inner();
    let (shape, y) = output_f32(&r, "output");
    assert_eq!(shape, vec![400, 1]);
    assert!(y.iter().all(|&v| v == 2048.0), "{:?}", &y[..4]);
    app.stop().await;
}
