//! The backend conformance suite: every test runs against the embedded
//! engine, and against a Qdrant server when `MLMESH_TEST_QDRANT_URL` is set
//! (skipped with a printed reason otherwise). Same requests, same answers,
//! same statuses.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

/// Generates `embedded::<test>` and `qdrant::<test>` for each suite function.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test]
                async fn $name() {
                    let app = crate::helpers::spawn_app().await;
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
        mod qdrant {
            $(
                #[tokio::test]
                async fn $name() {
                    let Some(app) = crate::helpers::spawn_qdrant_app(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}

conformance!(
    collection_lifecycle,
    points_round_trip_with_both_id_kinds,
    search_ranks_by_each_distance,
    filters_select_by_keyword_integer_bool_range_and_id,
    delete_by_ids_and_by_filter,
    scroll_pages_through_every_point,
    search_batch_answers_in_order,
    bad_input_gets_precise_statuses,
    int8_quantization_is_kept_and_its_search_options_checked,
);

async fn collection_lifecycle(app: &TestApp) {
    let mut c = app.client();
    let name = app.collection("life", 4, pb::Distance::Dot).await;
    let names = c
        .list_collections(pb::ListCollectionsRequest {})
        .await
        .expect("list")
        .into_inner()
        .names;
    assert!(names.contains(&name), "{names:?}");

    let info = c
        .get_collection(pb::GetCollectionRequest { name: name.clone() })
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.dimension, 4);
    assert_eq!(info.distance(), pb::Distance::Dot);
    let hnsw = info.hnsw.expect("hnsw in effect");
    assert_eq!((hnsw.m, hnsw.ef_construct), (16, 100), "defaults filled in");
    assert_eq!(info.points_count, 0);

    let again = c
        .create_collection(pb::CreateCollectionRequest {
            name: name.clone(),
            dimension: 4,
            distance: pb::Distance::Dot.into(),
            hnsw: None,
            metadata: Default::default(),
            ..Default::default()
        })
        .await
        .expect_err("duplicate");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    c.delete_collection(pb::DeleteCollectionRequest { name: name.clone() })
        .await
        .expect("delete");
    let gone = c
        .get_collection(pb::GetCollectionRequest { name: name.clone() })
        .await
        .expect_err("deleted");
    assert_eq!(gone.code(), Code::NotFound);
    assert!(gone.message().contains(&name), "{}", gone.message());
    let twice = c
        .delete_collection(pb::DeleteCollectionRequest { name: name.clone() })
        .await
        .expect_err("deleted twice");
    assert_eq!(twice.code(), Code::NotFound);

    // The name can be reused at once, with another shape.
    let mut c2 = app.client();
    c2.create_collection(pb::CreateCollectionRequest {
        name: name.clone(),
        dimension: 8,
        distance: pb::Distance::Cosine.into(),
        hnsw: Some(pb::HnswConfig {
            m: 8,
            ef_construct: 64,
        }),
        metadata: [("model".to_owned(), "all-MiniLM-L6-v2".to_owned())].into(),
        ..Default::default()
    })
    .await
    .expect("recreate");
    let info = c2
        .get_collection(pb::GetCollectionRequest { name: name.clone() })
        .await
        .expect("info")
        .into_inner();
    assert_eq!((info.dimension, info.hnsw.map(|h| h.m)), (8, Some(8)));
    assert_eq!(
        info.metadata.get("model").map(String::as_str),
        Some("all-MiniLM-L6-v2"),
        "metadata round-trips"
    );
    app.drop_collection(&name).await;
}

async fn points_round_trip_with_both_id_kinds(app: &TestApp) {
    let name = app.collection("points", 3, pb::Distance::Dot).await;
    let uuid = "5c56c793-69f3-4fbf-87e6-c4bf54c28c26";
    app.upsert(
        &name,
        vec![
            point(
                1,
                vec![1.0, 0.0, 0.0],
                json!({"title": "one", "year": 2021, "tags": ["a", "b"], "meta": {"lang": "en"}}),
            ),
            pb::Point {
                id: uuid_id(uuid),
                vector: vec![0.0, 1.0, 0.0],
                payload: payload(json!({"title": "uuid"})),
            },
            point(3, vec![0.0, 0.0, 1.0], json!({})),
        ],
    )
    .await;
    let got = app
        .client()
        .get(pb::GetRequest {
            collection: name.clone(),
            ids: vec![
                num(3).unwrap_or_default(),
                num(404).unwrap_or_default(),
                uuid_id(uuid).unwrap_or_default(),
                num(1).unwrap_or_default(),
            ],
            with_payload: true,
            with_vectors: true,
        })
        .await
        .expect("get")
        .into_inner()
        .points;
    assert_eq!(got.len(), 3, "missing ids are left out: {got:?}");
    assert_eq!(id_num(&got[0].id), 3, "request order");
    assert_eq!(
        got[1].id.as_ref().and_then(|i| i.kind.clone()),
        Some(pb::point_id::Kind::Uuid(uuid.into()))
    );
    assert_eq!(id_num(&got[2].id), 1);
    assert_eq!(
        json(&got[2].payload),
        json!({"title": "one", "year": 2021, "tags": ["a", "b"], "meta": {"lang": "en"}})
    );
    assert_eq!(got[2].vector, vec![1.0, 0.0, 0.0]);

    // An upsert replaces vector and payload.
    app.upsert(
        &name,
        vec![point(1, vec![0.5, 0.5, 0.0], json!({"title": "uno"}))],
    )
    .await;
    let got = app
        .client()
        .get(pb::GetRequest {
            collection: name.clone(),
            ids: vec![num(1).unwrap_or_default()],
            with_payload: true,
            with_vectors: false,
        })
        .await
        .expect("get")
        .into_inner()
        .points;
    assert_eq!(json(&got[0].payload), json!({"title": "uno"}));
    assert!(got[0].vector.is_empty(), "vectors only when asked");
    assert_eq!(app.count(&name).await, 3);
    app.drop_collection(&name).await;
}

async fn search_ranks_by_each_distance(app: &TestApp) {
    let vectors: Vec<Vec<f32>> = (0..40).map(|i| unit_vector(i, 8)).collect();
    let query = unit_vector(1000, 8);
    for (distance, model) in [
        (
            pb::Distance::Cosine,
            mlmesh_vector_search::model::Distance::Cosine,
        ),
        (
            pb::Distance::Dot,
            mlmesh_vector_search::model::Distance::Dot,
        ),
        (
            pb::Distance::Euclid,
            mlmesh_vector_search::model::Distance::Euclid,
        ),
    ] {
        let name = app.collection("rank", 8, distance).await;
        // Scaled copies make cosine, dot and euclid disagree.
        let stored: Vec<Vec<f32>> = vectors
            .iter()
            .enumerate()
            .map(|(i, v)| v.iter().map(|x| x * (1.0 + i as f32 / 10.0)).collect())
            .collect();
        app.upsert(
            &name,
            stored
                .iter()
                .enumerate()
                .map(|(i, v)| point(i as u64, v.clone(), json!({"i": i})))
                .collect(),
        )
        .await;
        let mut expected: Vec<(u64, f32)> = stored
            .iter()
            .enumerate()
            .map(|(i, v)| {
                (
                    i as u64,
                    mlmesh_vector_search::model::score(model, &query, v),
                )
            })
            .collect();
        expected.sort_by(|a, b| {
            if model.higher_is_better() {
                b.1.total_cmp(&a.1)
            } else {
                a.1.total_cmp(&b.1)
            }
        });
        let hits = app.search(&name, query.clone(), 5).await;
        let got: Vec<u64> = hits.iter().map(|h| id_num(&h.id)).collect();
        let want: Vec<u64> = expected.iter().take(5).map(|e| e.0).collect();
        assert_eq!(got, want, "{distance:?} ranking");
        for (h, e) in hits.iter().zip(&expected) {
            assert!(
                (h.score - e.1).abs() < 1e-4,
                "{distance:?}: score {} vs {}",
                h.score,
                e.1
            );
        }
        assert_eq!(json(&hits[0].payload)["i"], json!(want[0]));

        // A threshold cuts at the third score.
        let third = expected[2].1;
        let cut = app
            .client()
            .search(pb::SearchRequest {
                collection: name.clone(),
                vector: query.clone(),
                limit: 10,
                score_threshold: Some(third),
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits;
        assert!(
            (2..=3).contains(&cut.len()),
            "{distance:?}: threshold {third} kept {} hits",
            cut.len()
        );
        app.drop_collection(&name).await;
    }
}

async fn filters_select_by_keyword_integer_bool_range_and_id(app: &TestApp) {
    let name = app.collection("filter", 4, pb::Distance::Cosine).await;
    let points = (0..30u64)
        .map(|i| {
            point(
                i,
                unit_vector(i, 4),
                json!({
                    "lang": if i.is_multiple_of(3) { "en" } else { "fr" },
                    "year": 2000 + (i % 5),
                    "public": i.is_multiple_of(2),
                    "price": i as f64 * 1.5,
                    "meta": {"tags": ["x", if i < 10 { "early" } else { "late" }]},
                }),
            )
        })
        .collect();
    app.upsert(&name, points).await;
    let ids = |pred: &dyn Fn(u64) -> bool| -> Vec<u64> { (0..30).filter(|i| pred(*i)).collect() };
    let cases: Vec<(&str, pb::Filter, Vec<u64>)> = vec![
        (
            "keyword",
            pb::Filter {
                must: vec![keyword("lang", "en")],
                ..Default::default()
            },
            ids(&|i| i.is_multiple_of(3)),
        ),
        (
            "integer",
            pb::Filter {
                must: vec![integer("year", 2002)],
                ..Default::default()
            },
            ids(&|i| i % 5 == 2),
        ),
        (
            "bool and must_not",
            pb::Filter {
                must: vec![boolean("public", true)],
                must_not: vec![keyword("lang", "en")],
                ..Default::default()
            },
            ids(&|i| i.is_multiple_of(2) && i % 3 != 0),
        ),
        (
            "range",
            pb::Filter {
                must: vec![range(
                    "price",
                    pb::Range {
                        gte: Some(9.0),
                        lt: Some(15.0),
                        ..Default::default()
                    },
                )],
                ..Default::default()
            },
            ids(&|i| (6..10).contains(&i)),
        ),
        (
            "has_id in should",
            pb::Filter {
                should: vec![has_id(&[1, 2]), integer("year", 2004)],
                ..Default::default()
            },
            ids(&|i| i == 1 || i == 2 || i % 5 == 4),
        ),
        (
            "nested key in array, nested filter",
            pb::Filter {
                must: vec![
                    keyword("meta.tags", "early"),
                    nested(pb::Filter {
                        should: vec![keyword("lang", "en"), boolean("public", false)],
                        ..Default::default()
                    }),
                ],
                ..Default::default()
            },
            ids(&|i| i < 10 && (i.is_multiple_of(3) || i % 2 == 1)),
        ),
    ];
    for (label, filter, want) in cases {
        let count = app
            .client()
            .count(pb::CountRequest {
                collection: name.clone(),
                filter: Some(filter.clone()),
            })
            .await
            .expect("count")
            .into_inner()
            .count;
        assert_eq!(count, want.len() as u64, "{label}: count");
        let hits = app
            .client()
            .search(pb::SearchRequest {
                collection: name.clone(),
                vector: unit_vector(99, 4),
                limit: 100,
                filter: Some(filter),
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits;
        let mut got: Vec<u64> = hits.iter().map(|h| id_num(&h.id)).collect();
        got.sort_unstable();
        assert_eq!(got, want, "{label}: search");
    }
    app.drop_collection(&name).await;
}

async fn delete_by_ids_and_by_filter(app: &TestApp) {
    let name = app.collection("delete", 2, pb::Distance::Dot).await;
    app.upsert(
        &name,
        (0..10u64)
            .map(|i| point(i, vec![1.0, i as f32], json!({"even": i.is_multiple_of(2)})))
            .collect(),
    )
    .await;
    let count = |app: &TestApp| {
        let mut c = app.client();
        let name = name.clone();
        async move {
            c.count(pb::CountRequest {
                collection: name,
                filter: None,
            })
            .await
            .expect("count")
            .into_inner()
            .count
        }
    };
    app.client()
        .delete(pb::DeleteRequest {
            collection: name.clone(),
            selector: Some(pb::delete_request::Selector::Ids(pb::PointIdList {
                ids: vec![num(1).unwrap_or_default(), num(42).unwrap_or_default()],
            })),
        })
        .await
        .expect("delete ids");
    assert_eq!(count(app).await, 9, "missing ids are not an error");
    app.client()
        .delete(pb::DeleteRequest {
            collection: name.clone(),
            selector: Some(pb::delete_request::Selector::Filter(pb::Filter {
                must: vec![boolean("even", true)],
                ..Default::default()
            })),
        })
        .await
        .expect("delete filter");
    assert_eq!(count(app).await, 4, "odd points minus 1 remain");
    let hits = app.search(&name, vec![0.0, 1.0], 10).await;
    let mut ids: Vec<u64> = hits.iter().map(|h| id_num(&h.id)).collect();
    ids.sort_unstable();
    assert_eq!(ids, vec![3, 5, 7, 9]);
    app.drop_collection(&name).await;
}

async fn scroll_pages_through_every_point(app: &TestApp) {
    let name = app.collection("scroll", 2, pb::Distance::Euclid).await;
    app.upsert(
        &name,
        (0..25u64)
            .rev()
            .map(|i| point(i, vec![i as f32, 0.0], json!({"odd": i % 2 == 1})))
            .collect(),
    )
    .await;
    let mut seen = Vec::new();
    let mut offset = None;
    let mut pages = 0;
    loop {
        let page = app
            .client()
            .scroll(pb::ScrollRequest {
                collection: name.clone(),
                limit: 10,
                offset,
                with_payload: true,
                ..Default::default()
            })
            .await
            .expect("scroll")
            .into_inner();
        pages += 1;
        seen.extend(page.points.iter().map(|p| id_num(&p.id)));
        assert!(page.points.iter().all(|p| p.payload.is_some()));
        match page.next_offset {
            Some(next) => offset = Some(next),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        (0..25).collect::<Vec<u64>>(),
        "every point once, in id order"
    );

    let odd = app
        .client()
        .scroll(pb::ScrollRequest {
            collection: name.clone(),
            limit: 100,
            filter: Some(pb::Filter {
                must: vec![boolean("odd", true)],
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("scroll")
        .into_inner();
    assert_eq!(odd.points.len(), 12);
    assert!(odd.next_offset.is_none());
    app.drop_collection(&name).await;
}

async fn search_batch_answers_in_order(app: &TestApp) {
    let name = app.collection("batch", 2, pb::Distance::Euclid).await;
    app.upsert(
        &name,
        (0..10u64)
            .map(|i| point(i, vec![i as f32, 0.0], json!({})))
            .collect(),
    )
    .await;
    let searches = [7.1f32, 0.2, 4.9]
        .iter()
        .map(|x| pb::SearchRequest {
            vector: vec![*x, 0.0],
            limit: 1,
            ..Default::default()
        })
        .collect();
    let results = app
        .client()
        .search_batch(pb::SearchBatchRequest {
            collection: name.clone(),
            searches,
        })
        .await
        .expect("batch")
        .into_inner()
        .results;
    let top: Vec<u64> = results.iter().map(|r| id_num(&r.hits[0].id)).collect();
    assert_eq!(top, vec![7, 0, 5]);
    app.drop_collection(&name).await;
}

async fn bad_input_gets_precise_statuses(app: &TestApp) {
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

async fn int8_quantization_is_kept_and_its_search_options_checked(app: &TestApp) {
    let mut c = app.client();
    let plain = app.collection("plain", 8, pb::Distance::Cosine).await;
    let info = c
        .get_collection(pb::GetCollectionRequest {
            name: plain.clone(),
        })
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.quantization(), pb::Quantization::None, "the default");

    let name = format!("int8-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    c.create_collection(pb::CreateCollectionRequest {
        name: name.clone(),
        dimension: 8,
        distance: pb::Distance::Cosine.into(),
        quantization: pb::Quantization::Int8.into(),
        ..Default::default()
    })
    .await
    .expect("create int8");
    let info = c
        .get_collection(pb::GetCollectionRequest { name: name.clone() })
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.quantization(), pb::Quantization::Int8);

    let stored: Vec<Vec<f32>> = (0..40).map(|i| unit_vector(i, 8)).collect();
    app.upsert(
        &name,
        stored
            .iter()
            .enumerate()
            .map(|(i, v)| point(i as u64, v.clone(), json!({"i": i})))
            .collect(),
    )
    .await;
    let query = unit_vector(1000, 8);
    let mut expected: Vec<(u64, f32)> = stored
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = mlmesh_vector_search::model::score(
                mlmesh_vector_search::model::Distance::Cosine,
                &query,
                v,
            );
            (i as u64, s)
        })
        .collect();
    expected.sort_by(|a, b| b.1.total_cmp(&a.1));
    let want: Vec<u64> = expected.iter().take(5).map(|e| e.0).collect();
    // A collection too small for a graph is searched on the originals:
    // the exact ranking, whatever the options.
    for (oversampling, skip_rescore) in [(0.0, false), (2.0, false), (16.0, true)] {
        let hits = c
            .search(pb::SearchRequest {
                collection: name.clone(),
                vector: query.clone(),
                limit: 5,
                oversampling,
                skip_rescore,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits;
        let got: Vec<u64> = hits.iter().map(|h| id_num(&h.id)).collect();
        assert_eq!(
            got, want,
            "oversampling {oversampling}, skip_rescore {skip_rescore}"
        );
    }

    for bad in [0.5f32, 16.5, f32::NAN] {
        let e = c
            .search(pb::SearchRequest {
                collection: name.clone(),
                vector: query.clone(),
                oversampling: bad,
                ..Default::default()
            })
            .await
            .expect_err("bad oversampling");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(
            e.message().contains("oversampling") && e.message().contains("16"),
            "{}",
            e.message()
        );
    }
    let e = c
        .create_collection(pb::CreateCollectionRequest {
            name: format!("{name}-x"),
            dimension: 8,
            distance: pb::Distance::Cosine.into(),
            quantization: 7,
            ..Default::default()
        })
        .await
        .expect_err("unknown quantization");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("quantization"), "{}", e.message());
    app.drop_collection(&name).await;
    app.drop_collection(&plain).await;
}
