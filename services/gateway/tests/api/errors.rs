//! Bad input, missing things and dead services: clear statuses, named
//! fields and services, nothing written.

use mlmesh_gateway::Settings;
use mlmesh_proto::{
    embedding::v1 as emb,
    gateway::v1 as gw,
    vector::v1::{self as vec, vector_search_client::VectorSearchClient},
};
use serde_json::json;
use tonic::Code;

use crate::helpers::{dead_addr, doc, spawn_embedding, spawn_gateway, spawn_mesh};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_and_the_limit() {
    let mesh = spawn_mesh().await;
    let mut c = mesh.grpc();
    let name = mesh.collection("bad", None).await;
    let search = |q: &str, limit: u32| gw::SearchRequest {
        collection: name.clone(),
        query: q.into(),
        limit,
        ..Default::default()
    };
    for (req, code, needles) in [
        (search("", 0), Code::InvalidArgument, vec!["query"]),
        (
            search("x", 1000),
            Code::InvalidArgument,
            vec!["limit", "100", "limits.max_top_k"],
        ),
        (
            gw::SearchRequest {
                collection: "nope".into(),
                ..search("x", 1)
            },
            Code::NotFound,
            vec!["vector-search", "nope"],
        ),
    ] {
        let e = c.search(req).await.expect_err("refused");
        assert_eq!(e.code(), code, "{e:?}");
        for n in needles {
            assert!(e.message().contains(n), "{n:?} not in {:?}", e.message());
        }
    }

    let ingest = |docs: Vec<gw::Document>, chunking: Option<gw::Chunking>| gw::IngestRequest {
        collection: name.clone(),
        documents: docs,
        chunking,
    };
    for (req, needles) in [
        (ingest(vec![], None), vec!["documents"]),
        (
            ingest(vec![doc("a", "  ", json!({}))], None),
            vec!["documents[0].text", "empty"],
        ),
        (
            ingest(
                vec![doc("a", "x", json!({})), doc("a", "y", json!({}))],
                None,
            ),
            vec!["documents[1].id", "twice"],
        ),
        (
            ingest(
                vec![doc("a", "text", json!({}))],
                Some(gw::Chunking {
                    size: 10,
                    overlap: 10,
                    ..Default::default()
                }),
            ),
            vec!["chunking.overlap"],
        ),
        (
            ingest(
                vec![doc("a", "text", json!({}))],
                Some(gw::Chunking {
                    unit: gw::ChunkUnit::Tokens.into(),
                    size: 1000,
                    overlap: 0,
                }),
            ),
            vec!["chunking.size", "254"],
        ),
        (
            ingest(vec![doc("a", &"word ".repeat(300_000), json!({}))], None),
            vec!["documents[0].text", "limits.max_document_bytes"],
        ),
    ] {
        let e = c.ingest(req).await.expect_err("refused");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        for n in needles {
            assert!(e.message().contains(n), "{n:?} not in {:?}", e.message());
        }
    }
    let info = c
        .get_collection(gw::GetCollectionRequest { name: name.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.chunks_count, 0, "refused ingests wrote nothing");

    // Collection management.
    let dup = c
        .create_collection(gw::CreateCollectionRequest {
            name: name.clone(),
            ..Default::default()
        })
        .await
        .expect_err("exists");
    assert_eq!(dup.code(), Code::AlreadyExists);
    let unknown = c
        .create_collection(gw::CreateCollectionRequest {
            name: "other".into(),
            model: "no-such-model".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown model");
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("all-MiniLM-L6-v2"),
        "lists what is served: {unknown:?}"
    );

    // A vector collection not made by the gateway has no model to embed with.
    let mut v = VectorSearchClient::connect(format!("http://{}", mesh.vector.addr))
        .await
        .expect("vector");
    v.create_collection(vec::CreateCollectionRequest {
        name: "raw".into(),
        dimension: 4,
        distance: vec::Distance::Dot.into(),
        ..Default::default()
    })
    .await
    .expect("raw collection");
    let raw = c
        .search(gw::SearchRequest {
            collection: "raw".into(),
            ..search("x", 1)
        })
        .await
        .expect_err("no model");
    assert_eq!(raw.code(), Code::FailedPrecondition, "{raw:?}");

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_errors_are_json_with_matching_statuses() {
    let mesh = spawn_mesh_small_body().await;
    let mut h = mesh.gateway.http();
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/embeddings",
            b"{not json".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/embeddings",
            br#"{"model":"x"}"#.to_vec(),
            400,
            "invalid_json",
        ),
        (
            "POST",
            "/v1/embeddings",
            br#"{"input":"a","encoding_format":"hex"}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/embeddings",
            br#"{"input":"a","model":"gpt-9"}"#.to_vec(),
            404,
            "model_not_found",
        ),
        (
            "POST",
            "/v1/embeddings",
            br#"{"input":[1,2,3]}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/collections/nope/search",
            br#"{"query":"q"}"#.to_vec(),
            404,
            "not_found",
        ),
        (
            "POST",
            "/v1/collections/nope/search",
            br#"{"query":"q","filter":{"must":[{"key":"k"}]}}"#.to_vec(),
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/v1/embeddings",
            vec![b' '; 8192],
            413,
            "request_too_large",
        ),
        ("GET", "/v1/nothing-here", vec![], 404, "not_found"),
    ];
    for (method, path, body, status, code) in cases {
        let (got, data) =
            tokio::task::block_in_place(|| h.request(method, path, &[], &body)).expect("http");
        let v: serde_json::Value = serde_json::from_slice(&data).expect("JSON error body");
        assert_eq!(got, status, "{method} {path}: {v}");
        assert_eq!(v["error"]["code"], code, "{method} {path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        assert!(v["error"]["type"].is_string());
    }
    let (_, v) = tokio::task::block_in_place(|| {
        h.post_json(
            "/v1/embeddings",
            &json!({"input": "a", "encoding_format": "hex"}),
        )
    });
    assert_eq!(v["error"]["param"], "encoding_format");
    mesh.stop().await;
}

async fn spawn_mesh_small_body() -> crate::helpers::Mesh {
    crate::helpers::spawn_mesh_with(|s| s.http.max_body_bytes = 4096).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_service_is_unavailable_by_name_and_replicas_fail_over() {
    // Nothing listens for the embedding service.
    let dead = dead_addr();
    let gw = spawn_gateway(Settings::for_tests(vec![dead.clone()], vec![dead_addr()])).await;
    let mut c = gw.grpc.clone();
    let e = c
        .embed(emb::EmbedRequest {
            inputs: vec!["x".into()],
            ..Default::default()
        })
        .await
        .expect_err("no embedding service");
    assert_eq!(e.code(), Code::Unavailable, "{e:?}");
    assert!(
        e.message().contains("embedding service is unavailable"),
        "{e:?}"
    );
    assert!(
        e.message().contains(&dead),
        "names the replica tried: {e:?}"
    );
    let mut h = gw.http();
    let (status, v) =
        tokio::task::block_in_place(|| h.post_json("/v1/embeddings", &json!({"input": "x"})));
    assert_eq!(status, 503, "{v}");
    assert_eq!(v["error"]["code"], "unavailable");
    let (status, ready) = tokio::task::block_in_place(|| h.json("GET", "/readyz", None));
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["services"]["embedding"]["ready"], false);
    let (status, _) = tokio::task::block_in_place(|| h.json("GET", "/healthz", None));
    assert_eq!(status, 200, "alive even when downstream is not");
    gw.stop().await;

    // One dead and one live replica: every call succeeds, the dead one is
    // retried away from and ejected.
    let live = spawn_embedding().await;
    let gw = spawn_gateway(Settings::for_tests(
        vec![dead_addr(), live.addr.to_string()],
        vec![dead_addr()],
    ))
    .await;
    let mut c = gw.grpc.clone();
    for i in 0..20 {
        c.embed(emb::EmbedRequest {
            inputs: vec![format!("text {i}")],
            ..Default::default()
        })
        .await
        .expect("fails over to the live replica");
    }
    assert!(gw.metric("mlmesh_gateway_downstream_retries_total{").await >= 1.0);
    assert!(
        gw.metric("mlmesh_gateway_downstream_ejections_total{")
            .await
            >= 1.0
    );
    gw.stop().await;

    // Past limits.max_in_flight, calls are refused at once, not queued.
    let mut s = Settings::for_tests(vec![live.addr.to_string()], vec![dead_addr()]);
    s.limits.max_in_flight = 1;
    let gw = spawn_gateway(s).await;
    let calls = (0..6).map(|_| {
        let mut c = gw.grpc.clone();
        async move {
            c.embed(emb::EmbedRequest {
                inputs: vec!["a long text to embed ".repeat(40); 64],
                ..Default::default()
            })
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let refused: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(results.iter().any(Result::is_ok), "one call gets the slot");
    assert!(!refused.is_empty(), "the others are refused");
    for e in refused {
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(e.message().contains("limits.max_in_flight"), "{e:?}");
    }
    gw.stop().await;

    // The gateway's deadline bounds every downstream call, and the answer
    // names the service that was being waited on.
    let mut s = Settings::for_tests(vec![live.addr.to_string()], vec![dead_addr()]);
    s.downstream.request_timeout_ms = 1;
    let gw = spawn_gateway(s).await;
    let e = gw
        .grpc
        .clone()
        .embed(emb::EmbedRequest {
            inputs: vec!["a long text to embed ".repeat(40); 64],
            ..Default::default()
        })
        .await
        .expect_err("1 ms is too short");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("embedding"), "{e:?}");
    gw.stop().await;

    // An HTTP caller's `grpc-timeout` header is its deadline: 504, named.
    let gw = spawn_gateway(Settings::for_tests(
        vec![live.addr.to_string()],
        vec![dead_addr()],
    ))
    .await;
    let body = json!({"input": vec!["a long text to embed ".repeat(40); 64]}).to_string();
    let mut h = gw.http();
    let (status, data) = tokio::task::block_in_place(|| {
        h.request(
            "POST",
            "/v1/embeddings",
            &[("grpc-timeout", "2m")],
            body.as_bytes(),
        )
    })
    .expect("http");
    let v: serde_json::Value = serde_json::from_slice(&data).expect("json");
    assert_eq!(status, 504, "{v}");
    assert_eq!(v["error"]["code"], "deadline_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("embedding")),
        "{v}"
    );
    gw.stop().await;
    live.stop().await;
}
