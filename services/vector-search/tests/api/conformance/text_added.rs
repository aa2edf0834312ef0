//! A text index added to a collection made without one: in place, filled
//! from the points' payload text, repeatable, and refused when it would
//! change an index. Expected BM25 scores come from the published formula
//! (see `text.rs`), not from the service's code.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic::Code;

use super::text::{idf, sparse_search, tf};
use crate::helpers::*;

const DIM: usize = 8;

async fn add(
    app: &TestApp,
    name: &str,
    index: pb::TextIndex,
    from: &str,
) -> Result<pb::AddTextIndexResponse, tonic::Status> {
    app.client()
        .add_text_index(pb::AddTextIndexRequest {
            collection: name.into(),
            text_index: index.into(),
            text_from_payload: from.into(),
        })
        .await
        .map(|r| r.into_inner())
}

async fn text_index_of(app: &TestApp, name: &str) -> pb::TextIndex {
    app.client()
        .get_collection(pb::GetCollectionRequest { name: name.into() })
        .await
        .expect("info")
        .into_inner()
        .text_index()
}

pub(super) async fn a_text_index_is_added_in_place_and_filled_from_payloads(app: &TestApp) {
    let name = app
        .text_collection("added", DIM as u32, pb::TextIndex::None)
        .await;
    let texts = [
        (0, "kubernetes deploy helm chart"),
        (1, "deploy deploy rollback"),
        (2, "gpu inference server"),
        (3, "helm values override"),
    ];
    let mut points: Vec<pb::Point> = texts
        .iter()
        .map(|(i, t)| point(*i, unit_vector(*i + 100, DIM), json!({ "text": t })))
        .collect();
    points.push(point(8, unit_vector(108, DIM), json!({ "text": 5 })));
    points.push(point(
        9,
        unit_vector(109, DIM),
        json!({ "title": "no text" }),
    ));
    app.upsert(&name, points).await;
    let dense_before = app.search(&name, unit_vector(7, DIM), 6).await;
    let refused = app
        .client()
        .search(pb::SearchRequest {
            collection: name.clone(),
            text: "deploy".into(),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect_err("no text index yet");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");

    let filled = add(app, &name, pb::TextIndex::Bm25, "text")
        .await
        .expect("add a BM25 index");
    assert_eq!((filled.points_indexed, filled.points_without_text), (4, 2));
    assert_eq!(text_index_of(app, &name).await, pb::TextIndex::Bm25);

    // Scored as if the texts had been given at upsert: four documents.
    let want = [
        (0, 2.0 * idf(4.0, 2.0) * tf(1.0, 4.0)),
        (1, idf(4.0, 2.0) * tf(2.0, 3.0)),
        (3, idf(4.0, 2.0) * tf(1.0, 3.0)),
    ];
    let hits = sparse_search(app, &name, "deploy helm").await;
    let got: Vec<(u64, f64)> = hits
        .iter()
        .map(|h| (id_num(&h.id), f64::from(h.score)))
        .collect();
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        "{got:?}"
    );
    for ((id, g), (_, w)) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-4, "point {id}: {g} vs BM25 {w}");
    }
    // Payloads and dense vectors are as they were.
    assert_eq!(
        json(&hits[0].payload),
        json!({ "text": "kubernetes deploy helm chart" })
    );
    assert_eq!(
        app.search(&name, unit_vector(7, DIM), 6).await,
        dense_before
    );
    assert_eq!(app.count(&name).await, 6);

    // Again: nothing left to fill, so a call cut short can be retried.
    let again = add(app, &name, pb::TextIndex::Bm25, "text")
        .await
        .expect("same index again");
    assert_eq!((again.points_indexed, again.points_without_text), (0, 2));
    // New writes carry text like in any BM25 collection.
    app.upsert(
        &name,
        vec![pb::Point {
            id: num(20),
            vector: unit_vector(120, DIM),
            payload: payload(json!({ "text": "helm upgrade" })),
            text: "helm upgrade".into(),
            ..Default::default()
        }],
    )
    .await;
    let upgraded = sparse_search(app, &name, "upgrade").await;
    assert_eq!(
        upgraded.iter().map(|h| id_num(&h.id)).collect::<Vec<_>>(),
        [20]
    );

    // A text index never changes kind.
    let changed = add(app, &name, pb::TextIndex::Sparse, "")
        .await
        .expect_err("BM25 → SPARSE");
    assert_eq!(changed.code(), Code::FailedPrecondition, "{changed:?}");
    assert!(changed.message().contains("TEXT_INDEX_BM25"), "{changed:?}");
    app.drop_collection(&name).await;
}

pub(super) async fn an_added_index_without_a_payload_fill_takes_new_writes(app: &TestApp) {
    let name = app
        .text_collection("added-empty", DIM as u32, pb::TextIndex::None)
        .await;
    app.upsert(
        &name,
        vec![point(
            1,
            unit_vector(101, DIM),
            json!({ "text": "helm chart" }),
        )],
    )
    .await;
    let added = add(app, &name, pb::TextIndex::Sparse, "")
        .await
        .expect("add a SPARSE index");
    assert_eq!((added.points_indexed, added.points_without_text), (0, 0));
    assert_eq!(text_index_of(app, &name).await, pb::TextIndex::Sparse);
    let sparse = |indices: Vec<u32>, values: Vec<f32>| Some(pb::SparseVector { indices, values });
    let query = |s| pb::SearchRequest {
        collection: name.clone(),
        sparse: s,
        limit: 5,
        ..Default::default()
    };
    // The old point has no sparse vector: not found by one.
    let none = app
        .client()
        .search(query(sparse(vec![7], vec![1.0])))
        .await
        .expect("sparse search")
        .into_inner()
        .hits;
    assert!(none.is_empty(), "{none:?}");
    // Written again with one, it is.
    app.upsert(
        &name,
        vec![pb::Point {
            id: num(1),
            vector: unit_vector(101, DIM),
            sparse: sparse(vec![7, 9], vec![2.0, 1.0]),
            ..Default::default()
        }],
    )
    .await;
    let hits = app
        .client()
        .search(query(sparse(vec![7], vec![1.5])))
        .await
        .expect("sparse search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), 1);
    assert!((hits[0].score - 3.0).abs() < 1e-5, "{hits:?}");
    app.drop_collection(&name).await;
}

pub(super) async fn adding_a_text_index_refuses_what_it_cannot_do(app: &TestApp) {
    let name = app
        .text_collection("added-bad", DIM as u32, pb::TextIndex::None)
        .await;
    for (index, from, code, field) in [
        (pb::TextIndex::None, "", Code::InvalidArgument, "text_index"),
        (
            pb::TextIndex::Sparse,
            "text",
            Code::InvalidArgument,
            "text_from_payload",
        ),
        (
            pb::TextIndex::Bm25,
            "a.b",
            Code::InvalidArgument,
            "text_from_payload",
        ),
        (
            pb::TextIndex::Bm25,
            &"k".repeat(65),
            Code::InvalidArgument,
            "text_from_payload",
        ),
    ] {
        let e = add(app, &name, index, from).await.expect_err("refused");
        assert_eq!(e.code(), code, "{index:?} {from:?}: {e:?}");
        assert!(e.message().contains(field), "{e:?}");
    }
    let bad_enum = app
        .client()
        .add_text_index(pb::AddTextIndexRequest {
            collection: name.clone(),
            text_index: 42,
            text_from_payload: String::new(),
        })
        .await
        .expect_err("unknown enum value");
    assert_eq!(bad_enum.code(), Code::InvalidArgument);
    let missing = add(app, &unique_name("absent"), pb::TextIndex::Bm25, "text")
        .await
        .expect_err("no such collection");
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");
    // Nothing was changed by the refusals.
    assert_eq!(text_index_of(app, &name).await, pb::TextIndex::None);
    app.drop_collection(&name).await;
}

pub(super) async fn writes_during_a_fill_keep_their_own_text(app: &TestApp) {
    let name = app
        .text_collection("added-race", DIM as u32, pb::TextIndex::None)
        .await;
    let all = 900u64;
    app.upsert(
        &name,
        (0..all)
            .map(|i| point(i, unit_vector(i, DIM), json!({ "text": "stale words" })))
            .collect(),
    )
    .await;
    // The index first, then the fill racing with writers that give the
    // first 300 points new text, each in its own upsert.
    add(app, &name, pb::TextIndex::Bm25, "").await.expect("add");
    let fill = add(app, &name, pb::TextIndex::Bm25, "text");
    let writers = (0..3u64).map(|w| {
        let mut c = app.client();
        let name = name.clone();
        async move {
            for i in (w * 100)..(w + 1) * 100 {
                c.upsert(pb::UpsertRequest {
                    collection: name.clone(),
                    points: vec![pb::Point {
                        id: num(i),
                        vector: unit_vector(i, DIM),
                        payload: payload(json!({ "text": "fresh words" })),
                        text: "fresh words".into(),
                        ..Default::default()
                    }],
                })
                .await
                .expect("upsert");
            }
        }
    });
    let (filled, ()) = tokio::join!(fill, async {
        futures::future::join_all(writers).await;
    });
    let filled = filled.expect("fill");
    assert!(filled.points_indexed >= 600, "{filled:?}");
    let ids = |hits: Vec<pb::ScoredPoint>| {
        let mut v: Vec<u64> = hits.iter().map(|h| id_num(&h.id)).collect();
        v.sort_unstable();
        v
    };
    let search = |text: &'static str| {
        let mut c = app.client();
        let name = name.clone();
        async move {
            c.search(pb::SearchRequest {
                collection: name,
                text: text.into(),
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits
        }
    };
    assert_eq!(ids(search("fresh").await), (0..300).collect::<Vec<_>>());
    assert_eq!(ids(search("stale").await), (300..all).collect::<Vec<_>>());
    app.drop_collection(&name).await;
}
