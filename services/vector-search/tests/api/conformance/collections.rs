//! Collections: lifecycle, shape and settings in effect, int8 quantization.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

pub(super) async fn collection_lifecycle(app: &TestApp) {
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

pub(super) async fn int8_quantization_is_kept_and_its_search_options_checked(app: &TestApp) {
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

    let name = unique_name("int8");
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
