//! A text index added in place (embedded engine) survives a restart, and an
//! add cut short between the engine's part and `collection.json`'s is
//! finished at the next start.

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;

use crate::helpers::*;

const DIM: usize = 8;

async fn words(app: &TestApp, name: &str, text: &str) -> Vec<u64> {
    app.client()
        .search(pb::SearchRequest {
            collection: name.into(),
            text: text.into(),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("text search")
        .into_inner()
        .hits
        .iter()
        .map(|h| id_num(&h.id))
        .collect()
}

async fn text_index(app: &TestApp, name: &str) -> pb::TextIndex {
    app.client()
        .get_collection(pb::GetCollectionRequest { name: name.into() })
        .await
        .expect("info")
        .into_inner()
        .text_index()
}

#[tokio::test]
async fn an_added_text_index_survives_restarts_and_an_interrupted_add() {
    let data = mlmesh_tests::TempDir::new("vector-text-added");
    let settings = || mlmesh_vector_search::Settings::for_tests(data.path().to_owned());
    let app = start(settings(), None).await;
    let name = app
        .text_collection("restart", DIM as u32, pb::TextIndex::None)
        .await;
    app.upsert(
        &name,
        ["helm chart", "gpu drivers", "helm rollback"]
            .iter()
            .enumerate()
            .map(|(i, t)| point(i as u64, unit_vector(i as u64, DIM), json!({ "body": t })))
            .collect(),
    )
    .await;
    app.client()
        .add_text_index(pb::AddTextIndexRequest {
            collection: name.clone(),
            text_index: pb::TextIndex::Bm25.into(),
            text_from_payload: "body".into(),
        })
        .await
        .expect("add");
    let mut before = words(&app, &name, "helm").await;
    before.sort_unstable();
    assert_eq!(before, [0, 2]);
    app.stop().await;

    let app = start(settings(), None).await;
    assert_eq!(text_index(&app, &name).await, pb::TextIndex::Bm25);
    let mut after = words(&app, &name, "helm").await;
    after.sort_unstable();
    assert_eq!(after, before, "after a restart");
    app.stop().await;

    // The state a crash between the engine's flush and the rename of
    // collection.json leaves: the engine has the sparse vector, our
    // config does not name it.
    let meta = std::fs::read_dir(data.path())
        .expect("data dir")
        .flatten()
        .map(|e| e.path().join("collection.json"))
        .find(|p| p.exists())
        .expect("collection.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("read")).expect("json");
    assert_eq!(config["config"]["text_index"], "bm25", "{config}");
    config["config"]["text_index"] = json!("none");
    std::fs::write(&meta, serde_json::to_vec(&config).expect("json")).expect("write");

    let app = start(settings(), None).await;
    assert_eq!(
        text_index(&app, &name).await,
        pb::TextIndex::Bm25,
        "adopted"
    );
    let mut adopted = words(&app, &name, "helm").await;
    adopted.sort_unstable();
    assert_eq!(adopted, before);
    app.stop().await;
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta).expect("read")).expect("json");
    assert_eq!(config["config"]["text_index"], "bm25", "written back");
}
