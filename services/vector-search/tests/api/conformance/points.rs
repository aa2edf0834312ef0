//! Points: round trips with both id kinds, deletes, scrolling.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;

use crate::helpers::*;

pub(super) async fn points_round_trip_with_both_id_kinds(app: &TestApp) {
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
                ..Default::default()
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

pub(super) async fn delete_by_ids_and_by_filter(app: &TestApp) {
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

pub(super) async fn scroll_pages_through_every_point(app: &TestApp) {
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
