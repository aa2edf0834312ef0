//! A tour of the vector-search API against a running service:
//! create a collection, upsert points with payloads, search with and without
//! a filter, count, and (with `--cleanup`) delete the collection.
//!
//! `cargo run --release -q -p mlmesh-vector-search --example vector -- [--addr http://127.0.0.1:50052]`

use mlmesh_proto::json::{json_to_struct, struct_to_json};
use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use serde_json::json;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args
        .windows(2)
        .find(|w| w[0] == "--addr")
        .map_or("http://127.0.0.1:50052".to_string(), |w| w[1].clone());
    let cleanup = args.iter().any(|a| a == "--cleanup");
    let mut c = VectorSearchClient::connect(addr.clone()).await?;
    let name = "tour";

    match c
        .create_collection(pb::CreateCollectionRequest {
            name: name.into(),
            dimension: 3,
            distance: pb::Distance::Cosine.into(),
            hnsw: None,
            metadata: Default::default(),
            ..Default::default()
        })
        .await
    {
        Ok(_) => println!("created collection {name:?} on {addr}"),
        Err(s) if s.code() == tonic::Code::AlreadyExists => println!("collection {name:?} exists"),
        Err(s) => return Err(s.into()),
    }

    let docs = [
        (
            1,
            [0.9, 0.1, 0.0],
            json!({"title": "Rust ownership", "lang": "en", "year": 2015}),
        ),
        (
            2,
            [0.8, 0.3, 0.1],
            json!({"title": "Borrow checker", "lang": "en", "year": 2018}),
        ),
        (
            3,
            [0.0, 0.2, 0.9],
            json!({"title": "Cuisine française", "lang": "fr", "year": 2020}),
        ),
    ];
    let points = docs
        .iter()
        .map(|(id, v, p)| pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(*id)),
            }),
            vector: v.to_vec(),
            payload: p.as_object().cloned().map(json_to_struct),
            ..Default::default()
        })
        .collect();
    let n = c
        .upsert(pb::UpsertRequest {
            collection: name.into(),
            points,
        })
        .await?
        .into_inner()
        .upserted;
    println!("upserted {n} points");

    let query = vec![1.0, 0.2, 0.0];
    for (label, filter) in [
        ("nearest to [1.0, 0.2, 0.0]", None),
        (
            "same, lang = \"fr\"",
            Some(pb::Filter {
                must: vec![pb::Condition {
                    condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                        key: "lang".into(),
                        test: Some(pb::field_condition::Test::Keyword("fr".into())),
                    })),
                }],
                ..Default::default()
            }),
        ),
    ] {
        let hits = c
            .search(pb::SearchRequest {
                collection: name.into(),
                vector: query.clone(),
                limit: 3,
                filter,
                with_payload: true,
                ..Default::default()
            })
            .await?
            .into_inner()
            .hits;
        println!("{label}:");
        for h in hits {
            let payload = struct_to_json("payload", h.payload.unwrap_or_default())?;
            println!("  {:.4}  {}", h.score, serde_json::Value::Object(payload));
        }
    }
    let info = c
        .get_collection(pb::GetCollectionRequest { name: name.into() })
        .await?
        .into_inner();
    println!(
        "collection {name:?}: {} points, dimension {}, status {:?}",
        info.points_count,
        info.dimension,
        info.status()
    );
    if cleanup {
        c.delete_collection(pb::DeleteCollectionRequest { name: name.into() })
            .await?;
        println!("deleted collection {name:?}");
    }
    Ok(())
}
