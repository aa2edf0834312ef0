//! The mesh end to end: embedding, vector-search and gateway as three
//! processes; a corpus ingested over HTTP, held-out questions asked over
//! gRPC, and the right document must rank first for every one.

use mlmesh_proto::gateway::v1::{self as gw, gateway_client::GatewayClient};
use mlmesh_tests::{HttpClient, MeshProcesses, repo_root};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_out_questions_find_their_document_first() {
    let _serial = mlmesh_tests::serial_async().await;
    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/data/e2e-corpus.json")).expect("corpus"),
    )
    .expect("json");
    let mesh = MeshProcesses::start(&[]);
    let http = mesh.gateway.http_addr.expect("http");
    let (status, body) = tokio::task::spawn_blocking(move || {
        let mut h = HttpClient::new(http);
        let (s, b) = h.post_json("/v1/collections", &json!({"name": "e2e"}));
        assert_eq!(s, 201, "{b}");
        h.post_json(
            "/v1/collections/e2e/documents",
            &json!({"documents": data["documents"]}),
        )
    })
    .await
    .expect("join");
    assert_eq!(status, 200, "{body}");

    let data: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("tests/data/e2e-corpus.json")).expect("corpus"),
    )
    .expect("json");
    let mut c = GatewayClient::connect(format!("http://{}", mesh.gateway.addr))
        .await
        .expect("connect");
    let mut misses = Vec::new();
    for q in data["questions"].as_array().expect("questions") {
        let question = q["question"].as_str().expect("question");
        let hits = c
            .search(gw::SearchRequest {
                collection: "e2e".into(),
                query: question.into(),
                limit: 3,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits;
        if hits.first().map(|h| h.document_id.as_str()) != q["expect"].as_str() {
            misses.push((
                question.to_owned(),
                hits.first().map(|h| h.document_id.clone()),
            ));
        }
    }
    assert!(misses.is_empty(), "wrong first document for: {misses:?}");

    // RAG over the same processes.
    let rag = c
        .rag_query(gw::RagQueryRequest {
            collection: "e2e".into(),
            query: "What are the strings of a fiddle tuned to?".into(),
            top_k: 2,
            ..Default::default()
        })
        .await
        .expect("rag")
        .into_inner();
    assert_eq!(rag.sources[0].document_id, "violin");
    assert!(rag.context.contains("G, D, A and E"), "{}", rag.context);
    mesh.stop();
}
