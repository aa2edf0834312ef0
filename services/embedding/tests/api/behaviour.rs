//! What clients rely on: batching transparency, options, every RPC, health
//! and metrics.

use futures::StreamExt as _;
use mlmesh_proto::embedding::v1 as pb;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

use crate::helpers::{cosine, norm, request, spawn_app, spawn_app_with};

const TEXTS: &[&str] = &[
    "A man is eating food.",
    "A man is riding a horse on a sunny beach in the early morning while gulls circle overhead.",
    "Rust makes systems programming safer.",
    "short",
    "The quick brown fox jumps over the lazy dog, again and again, until the dog finally wakes up and chases it.",
    "Vector databases index embeddings for nearest-neighbour search.",
];

#[tokio::test]
async fn concurrent_callers_get_the_vectors_they_would_get_alone() {
    let app = spawn_app().await;
    let mut alone = Vec::new();
    for t in TEXTS {
        alone.push(app.embed(&[t]).await.remove(0));
    }
    // 48 concurrent calls of mixed lengths: the batcher packs them together.
    let mut tasks = Vec::new();
    for i in 0..48 {
        let mut c = app.client();
        let t = TEXTS[i % TEXTS.len()];
        tasks.push(tokio::spawn(async move {
            let v = c.embed(request(&[t])).await.expect("embed").into_inner();
            (i % TEXTS.len(), v.embeddings[0].values.clone())
        }));
    }
    let mut worst = 1.0f32;
    for t in tasks {
        let (k, v) = t.await.expect("join");
        let c = cosine(&v, &alone[k]);
        worst = worst.min(c);
        // int8 dynamic quantization scales activations per batch, so
        // batched vectors may differ from solo ones in the last digits.
        assert!(c > 0.9995, "text {k}: cosine {c} to its solo vector");
    }
    eprintln!("batched vs alone: worst cosine {worst}");
    let batches = app.metric("mlmesh_embedding_batch_size_count").await;
    let inputs = app.metric("mlmesh_embedding_batch_size_sum").await;
    assert!(
        inputs > batches,
        "some runs held more than one input ({inputs} inputs in {batches} runs)"
    );
    app.stop().await;
}

#[tokio::test]
async fn options_normalize_dimensions_and_truncation() {
    let app = spawn_app().await;
    let mut c = app.client();
    let full = app.embed(&["Matryoshka embeddings nest."]).await.remove(0);
    assert!((norm(&full) - 1.0).abs() < 1e-4);

    let mut r = request(&["Matryoshka embeddings nest."]);
    r.dimensions = Some(64);
    let out = c.embed(r).await.expect("dims").into_inner();
    assert_eq!(out.dimensions, 64);
    let cut = &out.embeddings[0].values;
    assert_eq!(cut.len(), 64);
    assert!((norm(cut) - 1.0).abs() < 1e-4);
    assert!(
        cosine(cut, &full[..64]) > 0.9999,
        "first 64 components, renormalized"
    );

    let mut r = request(&["Matryoshka embeddings nest."]);
    r.normalize = Some(false);
    let raw = c
        .embed(r)
        .await
        .expect("raw")
        .into_inner()
        .embeddings
        .remove(0)
        .values;
    assert!(
        (norm(&raw) - 1.0).abs() > 1e-2,
        "unnormalized vector keeps its length"
    );
    assert!(cosine(&raw, &full) > 0.9999);

    // Left and right truncation keep different ends of a long text.
    let text = format!("{} {}", "alpha ".repeat(300), "omega ".repeat(300));
    let mut right = request(&[&text]);
    right.truncation_direction = pb::TruncationDirection::Right as i32;
    let mut left = request(&[&text]);
    left.truncation_direction = pb::TruncationDirection::Left as i32;
    let r = c.embed(right).await.expect("right").into_inner();
    let l = c.embed(left).await.expect("left").into_inner();
    let usage = r.usage.expect("usage");
    assert_eq!(usage.prompt_tokens, 256);
    assert_eq!(usage.total_input_tokens, 602);
    let alpha = app.embed(&[&"alpha ".repeat(254)]).await.remove(0);
    let omega = app.embed(&[&"omega ".repeat(254)]).await.remove(0);
    assert!(cosine(&r.embeddings[0].values, &alpha) > 0.999);
    assert!(cosine(&l.embeddings[0].values, &omega) > 0.999);
    app.stop().await;
}

#[tokio::test]
async fn similarity_tokenize_and_info() {
    let app = spawn_app().await;
    let mut c = app.client();
    let s = c
        .similarity(pb::SimilarityRequest {
            source: "A man is eating food.".into(),
            texts: vec![
                "A man is eating a piece of bread.".into(),
                "The stock market fell sharply today.".into(),
            ],
            ..Default::default()
        })
        .await
        .expect("similarity")
        .into_inner();
    assert_eq!(s.scores.len(), 2);
    assert!(
        s.scores[0] > 0.6 && s.scores[1] < 0.2 && s.scores[0] > s.scores[1],
        "{:?}",
        s.scores
    );

    let t = c
        .tokenize(pb::TokenizeRequest {
            inputs: vec!["Hello, wörld!".into(), "word ".repeat(300)],
            ..Default::default()
        })
        .await
        .expect("tokenize")
        .into_inner();
    let first = &t.inputs[0];
    let texts: Vec<&str> = first.tokens.iter().map(|t| t.text.as_str()).collect();
    assert_eq!(texts, ["[CLS]", "hello", ",", "world", "!", "[SEP]"]);
    assert!(first.tokens[0].special && !first.tokens[1].special);
    // Byte offsets into the UTF-8 input: "wörld" is bytes 7..13.
    assert_eq!((first.tokens[3].start, first.tokens[3].end), (7, 13));
    assert!(!first.truncated);
    assert!(t.inputs[1].truncated);
    assert_eq!(t.inputs[1].tokens.len(), 256);
    assert_eq!(t.inputs[1].original_length, 302);

    let info = c.info(pb::InfoRequest {}).await.expect("info").into_inner();
    assert_eq!(info.models.len(), 1);
    let m = &info.models[0];
    assert_eq!(
        (
            m.name.as_str(),
            m.dimension,
            m.max_input_tokens,
            m.pooling.as_str(),
            m.dtype.as_str(),
            m.is_default
        ),
        ("all-MiniLM-L6-v2", 384, 256, "mean", "int8", true)
    );
    assert_eq!(info.max_client_batch, 64);
    app.stop().await;
}

#[tokio::test]
async fn embed_stream_answers_in_order_and_stops_at_the_first_error() {
    let app = spawn_app().await;
    let reqs: Vec<pb::EmbedRequest> = (0..20)
        .map(|i| request(&[TEXTS[i % TEXTS.len()], &format!("request {i}")]))
        .collect();
    let expected: Vec<Vec<f32>> = {
        let mut v = Vec::new();
        for r in &reqs {
            v.push(app.embed(&[&r.inputs[1]]).await.remove(0));
        }
        v
    };
    let out: Vec<pb::EmbedResponse> = app
        .client()
        .embed_stream(futures::stream::iter(reqs))
        .await
        .expect("stream")
        .into_inner()
        .map(|r| r.expect("ok"))
        .collect()
        .await;
    assert_eq!(out.len(), 20);
    for (i, r) in out.iter().enumerate() {
        assert!(
            cosine(&r.embeddings[1].values, &expected[i]) > 0.9995,
            "response {i} in order"
        );
    }

    let mut bad = request(&["x"]);
    bad.model = "missing".into();
    let reqs = vec![request(&["a"]), bad, request(&["c"])];
    let results: Vec<Result<pb::EmbedResponse, tonic::Status>> = app
        .client()
        .embed_stream(futures::stream::iter(reqs))
        .await
        .expect("stream")
        .into_inner()
        .collect()
        .await;
    assert_eq!(
        results.len(),
        2,
        "one answer, then the error ends the stream"
    );
    assert!(results[0].is_ok());
    assert_eq!(
        results[1].as_ref().expect_err("second fails").code(),
        tonic::Code::NotFound
    );
    app.stop().await;
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "mlmesh.embedding.v1.EmbeddingService"] {
        let s = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .expect("health")
            .into_inner();
        assert_eq!(s.status(), ServingStatus::Serving, "{service:?}");
    }
    // Reflection lists the service, so grpcurl-style tools work unprepared.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        }]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers.next().await.expect("one answer").expect("ok");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("unexpected reflection answer {answer:?}");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"mlmesh.embedding.v1.EmbeddingService".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );

    let _ = app.embed(&["count me"]).await;
    let text = app.metrics().await;
    for name in [
        "mlmesh_embedding_requests_total",
        "mlmesh_embedding_request_duration_seconds_bucket",
        "mlmesh_embedding_queue_duration_seconds_bucket",
        "mlmesh_embedding_inference_duration_seconds_bucket",
        "mlmesh_embedding_batch_size_bucket",
        "mlmesh_embedding_tokens_total",
        "mlmesh_embedding_queue_depth",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    assert!(
        app.metric("mlmesh_embedding_requests_total{code=\"OK\",method=\"Embed\"}")
            .await
            >= 1.0
    );
    app.stop().await;
}

#[tokio::test]
async fn several_models_in_one_process() {
    let app = crate::helpers::spawn_app_with(|s| {
        let path = s.embedding.models[0].path.clone();
        s.embedding
            .models
            .push(mlmesh_embedding::settings::ModelSpec {
                name: "second".into(),
                path,
            });
        s.embedding.default_model = Some("second".into());
    })
    .await;
    let mut c = app.client();
    let info = c.info(pb::InfoRequest {}).await.expect("info").into_inner();
    let listed: Vec<(&str, bool)> = info
        .models
        .iter()
        .map(|m| (m.name.as_str(), m.is_default))
        .collect();
    assert_eq!(listed, [("all-MiniLM-L6-v2", false), ("second", true)]);
    let mut by_name = request(&["same text, two models"]);
    by_name.model = "all-MiniLM-L6-v2".into();
    let a = c.embed(by_name).await.expect("first model").into_inner();
    let b = c
        .embed(request(&["same text, two models"]))
        .await
        .expect("default model")
        .into_inner();
    assert_eq!(
        (a.model.as_str(), b.model.as_str()),
        ("all-MiniLM-L6-v2", "second")
    );
    assert!(cosine(&a.embeddings[0].values, &b.embeddings[0].values) > 0.9999);
    app.stop().await;
}

#[tokio::test]
async fn the_memory_budget_splits_long_inputs_into_smaller_runs() {
    // 60 MiB holds two 256-token MiniLM inputs by the service's estimate
    // (26 MiB each; the measured cost is 21), so 16 long inputs of one
    // request need at least 8 runs, while the token budget alone
    // (8192 = 32 × 256) would allow one.
    let app = spawn_app_with(|s| s.embedding.max_run_memory_mb = 60).await;
    let long = vec!["word"; 400].join(" ");
    let texts: Vec<&str> = vec![long.as_str(); 16];
    let out = app.embed(&texts).await;
    assert_eq!(out.len(), 16);
    let runs = app.metric("mlmesh_embedding_batch_size_count").await;
    let inputs = app.metric("mlmesh_embedding_batch_size_sum").await;
    assert_eq!(inputs, 16.0);
    assert!(runs >= 8.0, "16 long inputs in {runs} runs");
    // Short inputs cost little: they still share runs.
    let short: Vec<&str> = vec!["a short sentence"; 32];
    app.embed(&short).await;
    let runs_after = app.metric("mlmesh_embedding_batch_size_count").await;
    assert!(
        runs_after - runs <= 2.0,
        "32 short inputs took {} runs",
        runs_after - runs
    );
    app.stop().await;

    // A budget below one input of the model's longest is refused at start,
    // naming the setting.
    let mut settings = crate::helpers::test_settings();
    settings.embedding.max_run_memory_mb = 1;
    let err = <mlmesh_embedding::Application as mlmesh_runtime::service::Service>::build(settings)
        .await
        .err()
        .expect("a 1 MiB budget is refused");
    assert!(
        err.to_string().contains("embedding.max_run_memory_mb"),
        "{err}"
    );
}
