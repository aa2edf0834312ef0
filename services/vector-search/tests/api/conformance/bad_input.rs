//! Bad input: the status and the words of each refusal.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

pub(super) async fn bad_input_gets_precise_statuses(app: &TestApp) {
    let name = app.collection("bad", 3, pb::Distance::Cosine).await;
    let mut c = app.client();
    let upsert = |points: Vec<pb::Point>| pb::UpsertRequest {
        collection: name.clone(),
        points,
    };
    let cases: Vec<(&str, tonic::Status, Code, &[&str])> = vec![
        (
            "unknown collection",
            c.upsert(pb::UpsertRequest {
                collection: "nope-x".into(),
                points: vec![point(1, vec![1.0; 3], json!({}))],
            })
            .await
            .expect_err("unknown"),
            Code::NotFound,
            &["nope-x"],
        ),
        (
            "wrong dimension",
            c.upsert(upsert(vec![
                point(1, vec![1.0; 3], json!({})),
                point(2, vec![1.0; 4], json!({})),
            ]))
            .await
            .expect_err("dim"),
            Code::InvalidArgument,
            &["points[1].vector", "4", "3"],
        ),
        (
            "NaN",
            c.upsert(upsert(vec![point(1, vec![1.0, f32::NAN, 0.0], json!({}))]))
                .await
                .expect_err("nan"),
            Code::InvalidArgument,
            &["points[0].vector[1]", "finite"],
        ),
        (
            "infinity in a query",
            c.search(pb::SearchRequest {
                collection: name.clone(),
                vector: vec![0.0, 0.0, f32::INFINITY],
                ..Default::default()
            })
            .await
            .expect_err("inf"),
            Code::InvalidArgument,
            &["vector[2]", "finite"],
        ),
        (
            "empty batch",
            c.upsert(upsert(vec![])).await.expect_err("empty"),
            Code::InvalidArgument,
            &["points", "empty"],
        ),
        (
            "malformed filter",
            c.count(pb::CountRequest {
                collection: name.clone(),
                filter: Some(pb::Filter {
                    must: vec![pb::Condition { condition: None }],
                    ..Default::default()
                }),
            })
            .await
            .expect_err("filter"),
            Code::InvalidArgument,
            &["filter.must[0]"],
        ),
        (
            "filter without a test",
            c.search(pb::SearchRequest {
                collection: name.clone(),
                vector: vec![1.0, 0.0, 0.0],
                filter: Some(pb::Filter {
                    should: vec![pb::Condition {
                        condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                            key: "k".into(),
                            test: None,
                        })),
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect_err("filter"),
            Code::InvalidArgument,
            &["filter.should[0].field"],
        ),
        (
            "top-k above the limit",
            c.search(pb::SearchRequest {
                collection: name.clone(),
                vector: vec![1.0, 0.0, 0.0],
                limit: 1001,
                ..Default::default()
            })
            .await
            .expect_err("limit"),
            Code::InvalidArgument,
            &["`limit`", "1001", "1000", "vector.max_search_limit"],
        ),
        (
            "bad uuid",
            c.upsert(upsert(vec![pb::Point {
                id: uuid_id("not-a-uuid"),
                vector: vec![1.0; 3],
                payload: None,
                ..Default::default()
            }]))
            .await
            .expect_err("uuid"),
            Code::InvalidArgument,
            &["points[0].id", "UUID"],
        ),
        (
            "missing id",
            c.upsert(upsert(vec![pb::Point {
                id: None,
                vector: vec![1.0; 3],
                payload: None,
                ..Default::default()
            }]))
            .await
            .expect_err("id"),
            Code::InvalidArgument,
            &["points[0].id"],
        ),
        (
            "duplicate ids",
            c.upsert(upsert(vec![
                point(5, vec![1.0; 3], json!({})),
                point(5, vec![1.0; 3], json!({})),
            ]))
            .await
            .expect_err("dup"),
            Code::InvalidArgument,
            &["points[1].id", "points[0].id"],
        ),
        (
            "zero dimension",
            c.create_collection(pb::CreateCollectionRequest {
                name: "zero-dim".into(),
                dimension: 0,
                distance: 1,
                hnsw: None,
                metadata: Default::default(),
                ..Default::default()
            })
            .await
            .expect_err("dim 0"),
            Code::InvalidArgument,
            &["dimension"],
        ),
        (
            "bad name",
            c.create_collection(pb::CreateCollectionRequest {
                name: "../etc".into(),
                dimension: 3,
                distance: 1,
                hnsw: None,
                metadata: Default::default(),
                ..Default::default()
            })
            .await
            .expect_err("name"),
            Code::InvalidArgument,
            &["name", "A-Za-z0-9_-"],
        ),
        (
            "no distance",
            c.create_collection(pb::CreateCollectionRequest {
                name: "nodist".into(),
                dimension: 3,
                distance: 0,
                hnsw: None,
                metadata: Default::default(),
                ..Default::default()
            })
            .await
            .expect_err("distance"),
            Code::InvalidArgument,
            &["distance"],
        ),
        (
            "empty delete filter",
            c.delete(pb::DeleteRequest {
                collection: name.clone(),
                selector: Some(pb::delete_request::Selector::Filter(pb::Filter::default())),
            })
            .await
            .expect_err("empty filter"),
            Code::InvalidArgument,
            &["filter"],
        ),
        (
            "scroll page above the limit",
            c.scroll(pb::ScrollRequest {
                collection: name.clone(),
                limit: 5000,
                ..Default::default()
            })
            .await
            .expect_err("page"),
            Code::InvalidArgument,
            &["limit", "vector.max_page_size"],
        ),
    ];
    for (label, status, code, needles) in cases {
        assert_eq!(status.code(), code, "{label}: {status:?}");
        for n in needles {
            assert!(
                status.message().contains(n),
                "{label}: {:?} lacks {n:?}",
                status.message()
            );
        }
    }
    // Nothing was written by any refused call.
    assert_eq!(app.count(&name).await, 0);
    app.drop_collection(&name).await;
}
