//! Text search beside meaning through the gateway: hybrid by default, the
//! mode on gRPC and JSON, each hit's retrievers, collections without a
//! text index.

use mlmesh_proto::{gateway::v1 as gw, vector::v1 as vec};
use serde_json::json;

use crate::helpers::{doc, spawn_mesh};

/// Text search beside meaning: a collection gets a BM25 index by default,
/// searches are hybrid, each hit says which retrievers found it, and a
/// collection made without a text index keeps answering dense searches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_search_by_meaning_and_words() {
    let mesh = spawn_mesh().await;
    let mut c = mesh.grpc();
    let name = mesh.collection("hybrid", None).await;
    let info = c
        .get_collection(gw::GetCollectionRequest { name: name.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.text_index(), vec::TextIndex::Bm25);
    let docs = vec![
        doc(
            "testing",
            "Run make test from a fresh clone to build everything and run every test.",
            json!({}),
        ),
        doc(
            "registry",
            "The registry stores model versions, their aliases and lineage in PostgreSQL.",
            json!({}),
        ),
        doc(
            "promotion",
            "Promoting a version moves the production alias once the validation gate passes.",
            json!({}),
        ),
        doc(
            "errors",
            "Error E4012 means the artifact digest does not match the uploaded bytes.",
            json!({}),
        ),
    ];
    c.ingest(gw::IngestRequest {
        collection: name.clone(),
        documents: docs,
        chunking: None,
    })
    .await
    .expect("ingest");
    let search = |query: &str, mode: vec::SearchMode| {
        let mut c = mesh.grpc();
        let r = gw::SearchRequest {
            collection: name.clone(),
            query: query.into(),
            limit: 3,
            mode: mode.into(),
            ..Default::default()
        };
        async move { c.search(r).await.map(|r| r.into_inner().hits) }
    };
    // An error code is a word, not a meaning: the text index finds it.
    let sparse = search("E4012", vec::SearchMode::Sparse)
        .await
        .expect("sparse");
    assert_eq!(sparse.len(), 1, "only one chunk holds the code: {sparse:?}");
    assert_eq!(sparse[0].document_id, "errors");
    assert_eq!(sparse[0].found_by[0].retriever(), vec::Retriever::Sparse);

    // Default: hybrid, both retrievers reported.
    let hybrid = search("how do I run the tests?", vec::SearchMode::Unspecified)
        .await
        .expect("hybrid");
    assert_eq!(hybrid[0].document_id, "testing", "{hybrid:?}");
    let retrievers: Vec<_> = hybrid[0].found_by.iter().map(|f| f.retriever()).collect();
    assert!(
        retrievers.contains(&vec::Retriever::Dense) && retrievers.contains(&vec::Retriever::Sparse),
        "{hybrid:?}"
    );
    let dense = search("how do I run the tests?", vec::SearchMode::Dense)
        .await
        .expect("dense");
    assert!(
        dense
            .iter()
            .all(|h| h.found_by.len() == 1 && h.found_by[0].retriever() == vec::Retriever::Dense)
    );

    // The HTTP face takes the mode by name and reports the retrievers.
    let mut h = mesh.gateway.http();
    let path = format!("/v1/collections/{name}/search");
    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json(
            &path,
            &json!({"query": "E4012", "mode": "sparse", "limit": 2}),
        )
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["document_id"], "errors");
    assert_eq!(body["hits"][0]["found_by"][0]["retriever"], "sparse");
    let (status, body) =
        tokio::task::block_in_place(|| h.post_json(&path, &json!({"query": "x", "mode": "fuzzy"})));
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("mode"), "{body}");

    // A collection without a text index: dense by default, text refused.
    let plain = format!("{name}-plain");
    c.create_collection(gw::CreateCollectionRequest {
        name: plain.clone(),
        text_index: vec::TextIndex::None.into(),
        ..Default::default()
    })
    .await
    .expect("create without a text index");
    c.ingest(gw::IngestRequest {
        collection: plain.clone(),
        documents: vec![doc(
            "testing",
            "Run make test to run every test.",
            json!({}),
        )],
        chunking: None,
    })
    .await
    .expect("ingest without text");
    let mut r = gw::SearchRequest {
        collection: plain.clone(),
        query: "run the tests".into(),
        limit: 3,
        ..Default::default()
    };
    let hits = c.search(r.clone()).await.expect("dense").into_inner().hits;
    assert_eq!(hits[0].found_by[0].retriever(), vec::Retriever::Dense);
    r.mode = vec::SearchMode::Hybrid.into();
    let e = c.search(r).await.expect_err("no text index");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("`mode`") && e.message().contains("text index"),
        "{e:?}"
    );
    mesh.stop().await;
}

/// A collection made without a text index gains one in place: the chunks'
/// stored text is indexed, nothing is embedded again, searches turn hybrid,
/// and a repeat (gRPC or JSON) is answered as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_collection_gains_a_text_index_in_place() {
    let mesh = spawn_mesh().await;
    let mut c = mesh.grpc();
    // Each test has a mesh of its own.
    let name = "made-before-text-indexes".to_owned();
    c.create_collection(gw::CreateCollectionRequest {
        name: name.clone(),
        text_index: vec::TextIndex::None.into(),
        ..Default::default()
    })
    .await
    .expect("create without a text index");
    let ingested = c
        .ingest(gw::IngestRequest {
            collection: name.clone(),
            documents: vec![
                doc(
                    "errors",
                    "Error E4012 means the artifact digest does not match the uploaded bytes.",
                    json!({}),
                ),
                doc(
                    "registry",
                    "The registry stores model versions and their aliases.",
                    json!({}),
                ),
            ],
            chunking: None,
        })
        .await
        .expect("ingest")
        .into_inner();
    let search = |mode: vec::SearchMode| {
        let mut c = mesh.grpc();
        let r = gw::SearchRequest {
            collection: name.clone(),
            query: "E4012".into(),
            limit: 3,
            mode: mode.into(),
            ..Default::default()
        };
        async move { c.search(r).await.map(|r| r.into_inner().hits) }
    };
    let dense_before = search(vec::SearchMode::Dense).await.expect("dense");
    let refused = search(vec::SearchMode::Sparse).await.expect_err("no index");
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused:?}");

    let added = c
        .add_text_index(gw::AddTextIndexRequest { name: name.clone() })
        .await
        .expect("add a text index")
        .into_inner();
    assert_eq!(added.chunks_indexed, ingested.chunks);
    assert_eq!(added.chunks_without_text, 0);
    let info = added.collection.expect("the collection");
    assert_eq!(info.text_index(), vec::TextIndex::Bm25);
    assert_eq!(info.chunks_count, ingested.chunks);

    let sparse = search(vec::SearchMode::Sparse).await.expect("sparse");
    assert_eq!(sparse.len(), 1, "{sparse:?}");
    assert_eq!(sparse[0].document_id, "errors");
    let hybrid = search(vec::SearchMode::Unspecified).await.expect("hybrid");
    assert_eq!(hybrid[0].document_id, "errors");
    assert_eq!(
        hybrid[0].found_by.len(),
        2,
        "hybrid by default now: {hybrid:?}"
    );
    let dense_after = search(vec::SearchMode::Dense).await.expect("dense");
    assert_eq!(
        dense_after
            .iter()
            .map(|h| (h.chunk_id.clone(), h.score))
            .collect::<Vec<_>>(),
        dense_before
            .iter()
            .map(|h| (h.chunk_id.clone(), h.score))
            .collect::<Vec<_>>(),
        "nothing was embedded again"
    );

    let mut h = mesh.gateway.http();
    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json(&format!("/v1/collections/{name}/text-index"), &json!({}))
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks_indexed"], 0, "{body}");
    assert_eq!(body["collection"]["text_index"], "bm25", "{body}");
    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json("/v1/collections/no-such-collection/text-index", &json!({}))
    });
    assert_eq!(status, 404, "{body}");
    mesh.stop().await;
}
