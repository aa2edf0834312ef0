//! Limits enforced by the server itself (transport size, admission), on the
//! embedded backend.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn a_100_mb_upsert_is_refused_by_the_size_limit_and_writes_nothing() {
    let app = spawn_app().await;
    let name = app.collection("huge", 384, pb::Distance::Cosine).await;
    // 100 MB of vectors: 68 000 points × 384 floats × 4 bytes.
    let points: Vec<pb::Point> = (0..68_000u64)
        .map(|i| pb::Point {
            id: num(i),
            vector: vec![0.5; 384],
            payload: None,
            ..Default::default()
        })
        .collect();
    let err = app
        .client()
        .upsert(pb::UpsertRequest {
            collection: name.clone(),
            points,
        })
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(
        err.message().contains("server.max_request_bytes"),
        "{}",
        err.message()
    );
    // The service is fine and nothing was written.
    app.upsert(&name, vec![point(1, vec![0.5; 384], json!({}))])
        .await;
    let n = app
        .client()
        .count(pb::CountRequest {
            collection: name,
            filter: None,
        })
        .await
        .expect("count")
        .into_inner()
        .count;
    assert_eq!(n, 1);
    app.stop().await;
}

#[tokio::test]
async fn batch_and_count_limits_name_their_setting() {
    let app = spawn_app_with(|s| {
        s.vector.max_upsert_points = 3;
        s.vector.max_batch_searches = 2;
    })
    .await;
    let name = app.collection("limits", 2, pb::Distance::Dot).await;
    let err = app
        .client()
        .upsert(pb::UpsertRequest {
            collection: name.clone(),
            points: (0..4)
                .map(|i| point(i, vec![1.0, 0.0], json!({})))
                .collect(),
        })
        .await
        .expect_err("4 > 3");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("vector.max_upsert_points"),
        "{}",
        err.message()
    );
    let err = app
        .client()
        .search_batch(pb::SearchBatchRequest {
            collection: name.clone(),
            searches: (0..3)
                .map(|_| pb::SearchRequest {
                    vector: vec![1.0, 0.0],
                    ..Default::default()
                })
                .collect(),
        })
        .await
        .expect_err("3 > 2");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().contains("vector.max_batch_searches"),
        "{}",
        err.message()
    );
    let err = app
        .client()
        .search_batch(pb::SearchBatchRequest {
            collection: name.clone(),
            searches: vec![pb::SearchRequest {
                vector: vec![1.0],
                ..Default::default()
            }],
        })
        .await
        .expect_err("dimension");
    assert!(
        err.message().contains("searches[0].vector"),
        "{}",
        err.message()
    );
    app.stop().await;
}
