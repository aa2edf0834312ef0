//! Searches: ranking by each distance, filters, batches.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;

use crate::helpers::*;

pub(super) async fn search_ranks_by_each_distance(app: &TestApp) {
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

pub(super) async fn filters_select_by_keyword_integer_bool_range_and_id(app: &TestApp) {
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

pub(super) async fn search_batch_answers_in_order(app: &TestApp) {
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
