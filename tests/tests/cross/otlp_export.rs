//! Trace export for real: the embedding binary, configured only by the
//! standard `OTEL_*` variables, sends its spans to an OTLP collector (here a
//! tonic server in the test) under its own `service.name`, joined to the
//! caller's `traceparent`.

use std::time::Duration;

use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::{Service, otlp::OtlpCollector};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_spans_reach_an_otlp_collector_in_the_callers_trace() {
    let _serial = mlmesh_tests::serial_async().await;
    let (collector, addr) = OtlpCollector::start().await;
    let mut svc = Service::start(
        "mlmesh-embedding",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    );
    let mut client = EmbeddingServiceClient::connect(format!("http://{}", svc.addr))
        .await
        .expect("connect");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut req = tonic::Request::new(EmbedRequest {
        inputs: vec!["traced across processes".into()],
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    client.embed(req).await.expect("embed");

    // SIGTERM flushes the batch exporter on the way out.
    svc.terminate();
    let code = tokio::task::spawn_blocking(move || svc.wait(Duration::from_secs(30)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));

    let rows = collector.spans();
    let ours: Vec<_> = rows.iter().filter(|r| r.trace == trace_id).collect();
    assert!(
        !ours.is_empty(),
        "no span in the caller's trace; got {rows:?}"
    );
    assert!(
        ours.iter().all(|r| r.service == "mlmesh-embedding"),
        "{ours:?}"
    );
    let find = |name: &str| {
        ours.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("span {name} missing: {ours:?}"))
    };
    let server = find("mlmesh.embedding.v1.EmbeddingService/Embed");
    assert_eq!(
        server.parent, caller_span,
        "the server span's parent is the caller"
    );
    let request = find("embed.request");
    assert_eq!(request.parent, server.id);
    assert_eq!(find("embed.tokenize").parent, request.id);
    assert_eq!(find("embed.wait").parent, request.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_spans_show_the_queue_and_the_batch_run() {
    let _serial = mlmesh_tests::serial_async().await;
    use mlmesh_proto::inference::{
        InferTensorContents, ModelInferRequest,
        grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    };
    let (collector, addr) = OtlpCollector::start().await;
    let mut svc = Service::start(
        "mlmesh-inference",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    );
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", svc.addr))
        .await
        .expect("connect");
    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4737";
    let mut req = tonic::Request::new(ModelInferRequest {
        model_name: "iris-logreg".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            contents: Some(InferTensorContents {
                fp32_contents: vec![5.1, 3.5, 1.4, 0.2],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-00f067aa0ba902b8-01")
            .parse()
            .expect("ascii"),
    );
    client.model_infer(req).await.expect("infer");
    svc.terminate();
    let code = tokio::task::spawn_blocking(move || svc.wait(Duration::from_secs(30)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));
    let rows = collector.spans();
    let ours: Vec<_> = rows.iter().filter(|r| r.trace == trace_id).collect();
    let find = |name: &str| {
        ours.iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("span {name} missing: {ours:?}"))
    };
    let server = find("inference.GRPCInferenceService/ModelInfer");
    let request = find("infer.request");
    assert_eq!(request.parent, server.id);
    assert_eq!(find("infer.queue").parent, request.id);
    assert_eq!(find("infer.batch_run").parent, request.id);
    assert!(
        ours.iter().all(|r| r.service == "mlmesh-inference"),
        "{ours:?}"
    );
}
