//! Every bad input gets a precise status naming the field and the limit.

use mlmesh_proto::embedding::v1 as pb;
use tonic::Code;

use crate::helpers::{TestApp, request, spawn_app, spawn_app_with};

fn long_text(words: usize) -> String {
    "token ".repeat(words)
}

/// Starts one request of `n` copies of `text` in the background, to keep a
/// (deliberately slow: batch size 1, one thread) model busy.
fn busy(
    app: &TestApp,
    text: &str,
    n: usize,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::EmbedResponse>, tonic::Status>> {
    let mut c = app.client();
    let req = request(&vec![text; n]);
    tokio::spawn(async move { c.embed(req).await })
}

#[tokio::test]
async fn bad_requests_get_clear_statuses() {
    let app = spawn_app().await;
    let mut c = app.client();

    let e = c.embed(request(&[])).await.expect_err("empty batch");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`inputs` is empty"), "{}", e.message());

    let many: Vec<String> = (0..65).map(|i| format!("text {i}")).collect();
    let refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let e = c.embed(request(&refs)).await.expect_err("too many");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("65 inputs") && e.message().contains("limit is 64"),
        "{}",
        e.message()
    );

    let long = long_text(300);
    let mut r = request(&["short", &long]);
    r.truncate = Some(false);
    let e = c.embed(r).await.expect_err("too long");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("`inputs[1]` is 302 tokens")
            && e.message().contains("limit")
            && e.message().contains("256"),
        "{}",
        e.message()
    );

    let mut r = request(&["x"]);
    r.model = "no-such-model".into();
    let e = c.embed(r).await.expect_err("unknown model");
    assert_eq!(e.code(), Code::NotFound);
    assert!(
        e.message().contains("no-such-model") && e.message().contains("all-MiniLM-L6-v2"),
        "{}",
        e.message()
    );

    let mut r = request(&["x"]);
    r.dimensions = Some(385);
    let e = c.embed(r).await.expect_err("dimensions");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("`dimensions` is 385") && e.message().contains("384"),
        "{}",
        e.message()
    );

    let mut r = request(&["x"]);
    r.truncation_direction = 7;
    let e = c.embed(r).await.expect_err("direction");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("truncation_direction"),
        "{}",
        e.message()
    );

    let e = c
        .similarity(pb::SimilarityRequest {
            source: "a".into(),
            ..Default::default()
        })
        .await
        .expect_err("no texts");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("`texts` is empty"), "{}", e.message());

    for (source, texts, named) in [
        (
            long.clone(),
            vec!["ok".to_string()],
            "`source` is 302 tokens",
        ),
        (
            "ok".to_string(),
            vec!["fine".to_string(), long.clone()],
            "`texts[1]` is 302 tokens",
        ),
    ] {
        let e = c
            .similarity(pb::SimilarityRequest {
                source,
                texts,
                truncate: Some(false),
                ..Default::default()
            })
            .await
            .expect_err("too long");
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(named), "{}", e.message());
    }

    let e = c
        .tokenize(pb::TokenizeRequest {
            inputs: vec!["a".into()],
            model: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("tokenize unknown model");
    assert_eq!(e.code(), Code::NotFound);

    // A message over the transport limit is refused before any work.
    let huge = "a".repeat(17 * 1024 * 1024);
    let e = c.embed(request(&[&huge])).await.expect_err("too big");
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(
        e.message().contains("server.max_request_bytes"),
        "{}",
        e.message()
    );

    // The service is still healthy after all of that.
    let v = app.embed(&["still alive"]).await;
    assert_eq!(v[0].len(), 384);

    let rejected = app
        .metric("mlmesh_embedding_requests_total{code=\"INVALID_ARGUMENT\",method=\"Embed\"}")
        .await;
    assert!(rejected >= 4.0, "invalid requests are counted: {rejected}");
    app.stop().await;
}

#[tokio::test]
async fn odd_but_valid_inputs_are_embedded() {
    let app = spawn_app().await;
    let mega = "lorem ipsum dolor sit amet ".repeat(40_000); // ~1 MB
    assert!(mega.len() >= 1_000_000);
    let inputs = [
        "",
        "   ",
        "日本語のテキスト",
        "emoji 🦀🚀 and \u{0} nul",
        "Ünïcödé àccents",
        &mega,
    ];
    let out = app
        .client()
        .embed(request(&inputs))
        .await
        .expect("valid inputs")
        .into_inner();
    assert_eq!(out.embeddings.len(), inputs.len());
    for e in &out.embeddings {
        assert_eq!(e.values.len(), 384);
        assert!(e.values.iter().all(|x| x.is_finite()));
    }
    let usage = out.usage.expect("usage");
    // The 1 MB input was cut to 256 tokens; before, it was far longer.
    assert!(usage.total_input_tokens > 200_000, "{usage:?}");
    assert!(usage.prompt_tokens < 256 * 6, "{usage:?}");

    // The same megabyte with truncate=false is refused with its length.
    let mut r = request(&[&mega]);
    r.truncate = Some(false);
    let e = app.client().embed(r).await.expect_err("too long");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("tokens long"), "{}", e.message());
    app.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_resource_exhausted_at_once() {
    let app = spawn_app_with(|s| {
        s.embedding.max_queued_inputs = 8;
        s.embedding.max_client_batch = 8;
        s.embedding.max_batch_size = 1;
        s.embedding.intra_op_threads = 1;
    })
    .await;
    let long = long_text(250);
    let first = busy(&app, &long, 8);

    // Wait until the first request holds every slot.
    let mut full = false;
    for _ in 0..200 {
        if app.metric("mlmesh_embedding_inputs_in_flight").await >= 8.0 {
            full = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(full, "the first request never filled the queue");
    let t = std::time::Instant::now();
    let e = app
        .client()
        .embed(request(&["one more"]))
        .await
        .expect_err("queue full");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(
        e.message().contains("max_queued_inputs") && e.message().contains("limit 8"),
        "{}",
        e.message()
    );
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "rejected at once, not queued"
    );

    first
        .await
        .expect("join")
        .expect("the admitted request completes");
    // Slots are released: the next request is served.
    assert_eq!(app.embed(&["after"]).await.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn an_expired_call_has_its_queued_work_dropped() {
    let app = spawn_app_with(|s| {
        s.embedding.max_batch_size = 1;
        s.embedding.intra_op_threads = 1;
    })
    .await;
    let long = long_text(250);
    // 32 long inputs, one per run on one thread: several hundred ms of work.
    let first = busy(&app, &long, 32);
    // Only once they are queued (tokenizing 32 long texts can take longer
    // than any fixed pause on a loaded machine, and the later call's inputs
    // would then be queued first and run).
    let queued = std::time::Instant::now();
    while app.metric("mlmesh_embedding_queue_depth").await < 16.0 {
        assert!(
            queued.elapsed() < std::time::Duration::from_secs(30),
            "the first call's inputs were never queued"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }

    // Queued behind them, this call's deadline passes first (100 ms leaves
    // ample time to be admitted and tokenized even on a loaded machine).
    let mut late = tonic::Request::new(request(&[&long, &long, &long]));
    late.set_timeout(std::time::Duration::from_millis(100));
    let e = app.client().embed(late).await.expect_err("deadline");
    assert!(
        matches!(e.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{e:?}"
    );
    first.await.expect("join").expect("first completes");
    // Give the worker a moment to look at the queue again.
    let _ = app.embed(&["flush"]).await;
    let dropped = app.metric("mlmesh_embedding_dropped_inputs_total").await;
    assert!(
        dropped >= 3.0,
        "the expired call's 3 inputs were dropped, not run: {dropped}"
    );
    app.stop().await;
}
