//! What users do: create a collection, ingest, search, ask — over gRPC and
//! over HTTP/JSON.

use base64::Engine as _;
use mlmesh_proto::{
    embedding::v1::{self as emb, embedding_service_client::EmbeddingServiceClient},
    gateway::v1 as gw,
    vector::v1 as vec,
};
use serde_json::json;

use crate::helpers::{doc, spawn_gateway, spawn_mesh};
use mlmesh_gateway::Settings;

fn corpus() -> Vec<gw::Document> {
    vec![
        doc(
            "rust",
            "Rust is a systems programming language focused on memory safety without a garbage collector. Its borrow checker rejects data races at compile time.",
            json!({"topic": "programming", "year": 2015}),
        ),
        doc(
            "paris",
            "Paris is the capital of France. The Eiffel Tower, built for the 1889 World's Fair, stands on the Champ de Mars by the Seine.",
            json!({"topic": "travel", "year": 2020}),
        ),
        doc(
            "bread",
            "To bake sourdough bread, mix flour, water, salt and an active starter, let the dough rise overnight, then bake it in a hot Dutch oven.",
            json!({"topic": "cooking", "year": 2021}),
        ),
    ]
}

fn keyword(key: &str, value: &str) -> vec::Condition {
    vec::Condition {
        condition: Some(vec::condition::Condition::Field(vec::FieldCondition {
            key: key.into(),
            test: Some(vec::field_condition::Test::Keyword(value.into())),
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_ingest_search_filter_and_rag() {
    let mesh = spawn_mesh().await;
    let mut c = mesh.grpc();
    let name = mesh.collection("grpc", None).await;
    let info = c
        .get_collection(gw::GetCollectionRequest { name: name.clone() })
        .await
        .expect("get")
        .into_inner();
    assert_eq!(info.model, "all-MiniLM-L6-v2");
    assert_eq!(info.dimension, 384);
    let chunking = info.chunking.expect("chunking");
    assert_eq!(
        (chunking.unit(), chunking.size, chunking.overlap),
        (gw::ChunkUnit::Tokens, 128, 16)
    );

    let ingested = c
        .ingest(gw::IngestRequest {
            collection: name.clone(),
            documents: corpus(),
            chunking: None,
        })
        .await
        .expect("ingest")
        .into_inner();
    assert_eq!(ingested.documents.len(), 3);
    assert_eq!(ingested.chunks, 3, "short documents are one chunk each");
    assert!(ingested.prompt_tokens > 30);
    assert_eq!(ingested.documents[1].id, "paris");

    let found = c
        .search(gw::SearchRequest {
            collection: name.clone(),
            query: "Which city has the Eiffel Tower?".into(),
            limit: 3,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner();
    assert_eq!(found.hits.len(), 3);
    let top = &found.hits[0];
    assert_eq!(top.document_id, "paris");
    assert!(top.text.contains("Eiffel"), "{top:?}");
    assert_eq!(top.chunk_id, ingested.documents[1].chunk_ids[0]);
    let meta = mlmesh_proto::json::struct_to_json("m", top.metadata.clone().expect("metadata"))
        .expect("json");
    assert_eq!(meta["topic"], "travel");
    assert!(found.hits[0].score > found.hits[1].score);

    // Filters refer to the caller's metadata keys, and to document_id.
    for (filter, expect) in [
        (keyword("topic", "cooking"), "bread"),
        (keyword("document_id", "rust"), "rust"),
    ] {
        let hits = c
            .search(gw::SearchRequest {
                collection: name.clone(),
                query: "Which city has the Eiffel Tower?".into(),
                limit: 3,
                filter: Some(vec::Filter {
                    must: vec![filter],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("filtered search")
            .into_inner()
            .hits;
        assert_eq!(hits.len(), 1, "{hits:?}");
        assert_eq!(hits[0].document_id, expect);
    }

    let rag = c
        .rag_query(gw::RagQueryRequest {
            collection: name.clone(),
            query: "How long should sourdough rise?".into(),
            top_k: 3,
            max_context_chars: 200,
            ..Default::default()
        })
        .await
        .expect("rag")
        .into_inner();
    assert_eq!(rag.sources[0].document_id, "bread");
    assert!(
        rag.context.starts_with("[1] To bake sourdough"),
        "{}",
        rag.context
    );
    assert!(rag.context.chars().count() <= 200);
    assert!(rag.truncated, "three chunks do not fit in 200 characters");
    assert_eq!(rag.chunks.len(), 3);
    assert!(rag.used_chunks >= 1 && rag.used_chunks < 3);

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunking_by_tokens_and_characters_and_reingest_replaces_chunks() {
    let mesh = spawn_mesh().await;
    let mut c = mesh.grpc();
    let name = mesh.collection("chunks", None).await;
    let long: String = (0..120)
        .map(|i| format!("Sentence number {i} talks about topic {}. ", i % 7))
        .collect();

    // Tokens: every chunk fits the window, checked with the model's own tokenizer.
    let r = c
        .ingest(gw::IngestRequest {
            collection: name.clone(),
            documents: vec![doc("long", &long, json!({}))],
            chunking: Some(gw::Chunking {
                unit: gw::ChunkUnit::Tokens.into(),
                size: 32,
                overlap: 8,
            }),
        })
        .await
        .expect("ingest by tokens")
        .into_inner();
    let n_tokens = r.documents[0].chunk_ids.len();
    assert!(n_tokens > 20, "{n_tokens} chunks");
    let hits = c
        .search(gw::SearchRequest {
            collection: name.clone(),
            query: "sentence number 42".into(),
            limit: 100,
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert_eq!(hits.len(), n_tokens);
    let mut e = EmbeddingServiceClient::connect(format!("http://{}", mesh.embedding.addr))
        .await
        .expect("embedding");
    let tok = e
        .tokenize(emb::TokenizeRequest {
            inputs: hits.iter().map(|h| h.text.clone()).collect(),
            truncate: Some(false),
            ..Default::default()
        })
        .await
        .expect("tokenize")
        .into_inner();
    for (t, h) in tok.inputs.iter().zip(&hits) {
        let plain = t.tokens.iter().filter(|t| !t.special).count();
        assert!(
            plain <= 32,
            "chunk {} has {plain} tokens: {:?}",
            h.chunk_index,
            h.text
        );
        assert!(long.contains(&h.text), "chunks are verbatim slices");
    }

    // Characters, then re-ingest shorter: the surplus chunks are gone.
    let r = c
        .ingest(gw::IngestRequest {
            collection: name.clone(),
            documents: vec![doc("long", &long, json!({}))],
            chunking: Some(gw::Chunking {
                unit: gw::ChunkUnit::Characters.into(),
                size: 300,
                overlap: 30,
            }),
        })
        .await
        .expect("ingest by characters")
        .into_inner();
    let n_chars = r.documents[0].chunk_ids.len();
    assert!(
        n_chars > 10 && n_chars < n_tokens,
        "{n_chars} vs {n_tokens}"
    );
    let count = |c: &mut mlmesh_proto::gateway::v1::gateway_client::GatewayClient<_>| {
        let mut c = c.clone();
        let name = name.clone();
        async move {
            c.get_collection(gw::GetCollectionRequest { name })
                .await
                .expect("get")
                .into_inner()
                .chunks_count
        }
    };
    assert_eq!(count(&mut c).await, n_chars as u64);
    c.ingest(gw::IngestRequest {
        collection: name.clone(),
        documents: vec![doc("long", "Now it is short.", json!({}))],
        chunking: None,
    })
    .await
    .expect("re-ingest");
    assert_eq!(count(&mut c).await, 1);

    mesh.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_api_and_openai_embeddings() {
    let mesh = spawn_mesh().await;
    let name = format!("http-{}", std::process::id());
    let mut grpc = mesh.grpc();
    let mut h = mesh.gateway.http();
    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json(
            "/v1/collections",
            &json!({"name": name, "chunking": {"unit": "characters", "size": 300, "overlap": 30}}),
        )
    });
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["model"], "all-MiniLM-L6-v2");
    assert_eq!(body["chunking"]["unit"], "characters");
    assert_eq!(body["distance"], "cosine");

    let docs: Vec<serde_json::Value> = corpus()
        .into_iter()
        .map(|d| {
            json!({
                "id": d.id,
                "text": d.text,
                "metadata": mlmesh_proto::json::struct_to_json("m", d.metadata.unwrap_or_default()).expect("json"),
            })
        })
        .collect();
    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json(
            &format!("/v1/collections/{name}/documents"),
            &json!({"documents": docs}),
        )
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["chunks"], 3);

    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json(
            &format!("/v1/collections/{name}/search"),
            &json!({"query": "memory safety in programming", "limit": 2,
                    "filter": {"must": [{"key": "year", "range": {"lt": 2021}}]}}),
        )
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["hits"][0]["document_id"], "rust");
    assert_eq!(body["hits"][0]["metadata"]["topic"], "programming");
    assert_eq!(body["hits"].as_array().map(Vec::len), Some(2));

    let (status, body) = tokio::task::block_in_place(|| {
        h.post_json(
            "/v1/rag/query",
            &json!({"collection": name, "query": "What is the capital of France?", "top_k": 2}),
        )
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sources"][0]["document_id"], "paris");
    assert!(
        body["context"]
            .as_str()
            .is_some_and(|c| c.contains("Eiffel"))
    );

    // OpenAI embeddings: float and base64 agree with gRPC Embed.
    let direct = grpc
        .embed(emb::EmbedRequest {
            inputs: vec!["hello world".into(), "bonjour".into()],
            ..Default::default()
        })
        .await
        .expect("embed")
        .into_inner();
    let (status, f) = tokio::task::block_in_place(|| {
        h.post_json(
            "/v1/embeddings",
            &json!({"input": ["hello world", "bonjour"], "model": "all-MiniLM-L6-v2"}),
        )
    });
    assert_eq!(status, 200, "{f}");
    assert_eq!(f["object"], "list");
    assert_eq!(f["data"][1]["index"], 1);
    assert!(f["usage"]["prompt_tokens"].as_u64().is_some_and(|t| t > 4));
    let floats: Vec<f32> = f["data"][0]["embedding"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().unwrap_or(f64::NAN) as f32)
        .collect();
    assert_eq!(floats.len(), 384);
    for (a, b) in floats.iter().zip(&direct.embeddings[0].values) {
        assert!((a - b).abs() < 1e-6);
    }
    let (_, b) = tokio::task::block_in_place(|| {
        h.post_json(
            "/v1/embeddings",
            &json!({"input": "hello world", "model": "all-MiniLM-L6-v2", "encoding_format": "base64", "dimensions": 128}),
        )
    });
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b["data"][0]["embedding"].as_str().expect("base64 string"))
        .expect("valid base64");
    let v: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(v.len(), 128);
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (norm - 1.0).abs() < 1e-4,
        "renormalized after truncation: {norm}"
    );

    let (status, s) = tokio::task::block_in_place(|| {
        h.post_json(
            "/v1/similarity",
            &json!({"source": "a cat", "texts": ["a kitten", "stock markets"]}),
        )
    });
    assert_eq!(status, 200, "{s}");
    let scores = s["scores"].as_array().expect("scores");
    assert!(scores[0].as_f64() > scores[1].as_f64());

    let (status, list) = tokio::task::block_in_place(|| h.json("GET", "/v1/collections", None));
    assert_eq!(status, 200);
    assert!(
        list["collections"]
            .as_array()
            .expect("list")
            .iter()
            .any(|c| c["name"] == name.as_str())
    );
    let (status, one) =
        tokio::task::block_in_place(|| h.json("GET", &format!("/v1/collections/{name}"), None));
    assert_eq!((status, one["chunks_count"].as_u64()), (200, Some(3)));
    let (status, _) =
        tokio::task::block_in_place(|| h.json("DELETE", &format!("/v1/collections/{name}"), None));
    assert_eq!(status, 200);
    let (status, gone) =
        tokio::task::block_in_place(|| h.json("GET", &format!("/v1/collections/{name}"), None));
    assert_eq!(status, 404, "{gone}");
    assert_eq!(gone["error"]["type"], "not_found_error");

    let (status, _) = tokio::task::block_in_place(|| h.json("GET", "/healthz", None));
    assert_eq!(status, 200);
    let (status, ready) = tokio::task::block_in_place(|| h.json("GET", "/readyz", None));
    assert_eq!(status, 200, "{ready}");
    assert_eq!(ready["services"]["embedding"]["ready"], true);

    assert!(mesh.gateway.metric("mlmesh_gateway_requests_total{").await >= 10.0);
    assert!(
        mesh.gateway
            .metric("mlmesh_gateway_downstream_requests_total{")
            .await
            >= 10.0
    );
    mesh.stop().await;
}

/// Concurrent ingests of one document id never leave it truncated or
/// mixed, also through two gateway replicas (which share no lock):
/// afterwards the document is exactly one of the versions, whole. Each
/// ingest's writes (an Upsert, Deletes, a Count) take about as long as its
/// embedding, so unserialized writers interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingests_of_one_document_leave_one_whole_version() {
    use mlmesh_proto::vector::v1::vector_search_client::VectorSearchClient;
    let mesh = spawn_mesh().await;
    let other = spawn_gateway(Settings::for_tests(
        vec![mesh.embedding.addr.to_string()],
        vec![mesh.vector.addr.to_string()],
    ))
    .await;
    let name = mesh
        .collection(
            "same-doc",
            Some(gw::Chunking {
                unit: gw::ChunkUnit::Characters.into(),
                size: 24,
                overlap: 0,
            }),
        )
        .await;
    // 24-character chunks: "alpha 000 alpha 000. " each.
    let text = |word: &str, chunks: usize| -> String {
        (0..chunks)
            .map(|i| format!("{word} {i:03} {word} {i:03}. "))
            .collect()
    };
    // Short versions of different lengths: each ingest's writes (an
    // Upsert, then a Delete of chunks past its end) take about as long as
    // its embedding, so concurrent ones interleave.
    let versions = [
        ("alpha", text("alpha", 1)),
        ("gamma", text("gamma", 3)),
        ("delta", text("delta", 5)),
        ("kappa", text("kappa", 7)),
    ];
    let mut vs = VectorSearchClient::connect(format!("http://{}", mesh.vector.addr))
        .await
        .expect("vector-search");
    for round in 0..40 {
        let calls = versions.iter().enumerate().map(|(k, (_, t))| {
            // Alternate replicas: pairs on one replica are serialized by
            // its document lock, pairs across replicas are not.
            let mut c = if k % 2 == 0 {
                mesh.grpc()
            } else {
                other.grpc.clone()
            };
            let r = gw::IngestRequest {
                collection: name.clone(),
                documents: vec![doc("d", t, json!({}))],
                chunking: None,
            };
            async move { c.ingest(r).await.map(|r| r.into_inner().chunks) }
        });
        let counts: Vec<u64> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(|r| r.expect("ingest"))
            .collect();
        // Every chunk of the document now, by payload.
        let mut texts = Vec::new();
        let mut offset = None;
        loop {
            let page = vs
                .scroll(vec::ScrollRequest {
                    collection: name.clone(),
                    limit: 1000,
                    offset,
                    with_payload: true,
                    ..Default::default()
                })
                .await
                .expect("scroll")
                .into_inner();
            for p in page.points {
                let payload = mlmesh_proto::json::struct_to_json("p", p.payload.expect("payload"))
                    .expect("json");
                texts.push((
                    payload["chunk_index"].as_u64().expect("index"),
                    payload["text"].as_str().expect("text").to_owned(),
                ));
            }
            offset = page.next_offset;
            if offset.is_none() {
                break;
            }
        }
        texts.sort();
        let words: std::collections::BTreeSet<&str> = texts
            .iter()
            .map(|(_, t)| t.split(' ').next().unwrap_or(""))
            .collect();
        assert_eq!(words.len(), 1, "round {round}: mixed versions {words:?}");
        let word = words.iter().next().copied().unwrap_or("");
        let (i, _) = versions
            .iter()
            .enumerate()
            .find(|(_, (w, _))| *w == word)
            .expect("a known version");
        assert_eq!(
            texts.len() as u64,
            counts[i],
            "round {round}: {word} has {} of its {} chunks",
            texts.len(),
            counts[i]
        );
        assert!(
            texts
                .iter()
                .enumerate()
                .all(|(k, (idx, _))| *idx == k as u64),
            "round {round}: chunk indexes are not 0..n"
        );
    }
    other.stop().await;
    mesh.stop().await;
}
