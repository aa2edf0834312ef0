//! One request, one trace, three processes: a search sent to the gateway
//! with a `traceparent` produces the gateway's server and client spans and
//! the embedding and vector-search server spans (with their inner spans),
//! all in the caller's trace, correctly parented, each process under its own
//! `service.name`, exported over OTLP to a collector in this test.

use mlmesh_proto::gateway::v1::{self as gw, gateway_client::GatewayClient};
use mlmesh_tests::{
    HttpClient, MeshProcesses,
    otlp::{OtlpCollector, SpanRow},
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_search_is_one_trace_across_three_processes() {
    let _serial = mlmesh_tests::serial_async().await;
    let (collector, otlp) = OtlpCollector::start().await;
    let mesh = MeshProcesses::start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"))]);

    // Set up over HTTP (its own traces), then the one traced search.
    let http = mesh.gateway.http_addr.expect("http");
    tokio::task::spawn_blocking(move || {
        let mut h = HttpClient::new(http);
        let (s, b) = h.post_json("/v1/collections", &json!({"name": "traced"}));
        assert_eq!(s, 201, "{b}");
        let (s, b) = h.post_json(
            "/v1/collections/traced/documents",
            &json!({"documents": [{"id": "d", "text": "Traces follow requests across services."}]}),
        );
        assert_eq!(s, 200, "{b}");
    })
    .await
    .expect("join");

    let trace_id = "5bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "10f067aa0ba902b7";
    let mut c = GatewayClient::connect(format!("http://{}", mesh.gateway.addr))
        .await
        .expect("connect");
    let mut req = tonic::Request::new(gw::SearchRequest {
        collection: "traced".into(),
        query: "how do traces work?".into(),
        limit: 1,
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller}-01").parse().expect("ascii"),
    );
    let hits = c.search(req).await.expect("search").into_inner().hits;
    assert_eq!(hits.len(), 1);

    // An HTTP caller's traceparent is honoured too.
    let http_trace = "6bf92f3577b34da6a3ce929d0e0e4736";
    let http_caller = "20f067aa0ba902b7";
    let (status, body) = tokio::task::spawn_blocking(move || {
        let traceparent = format!("00-{http_trace}-{http_caller}-01");
        HttpClient::new(http).request(
            "POST",
            "/v1/collections/traced/search",
            &[("traceparent", &traceparent)],
            br#"{"query": "how do traces work?", "limit": 1}"#,
        )
    })
    .await
    .expect("join")
    .expect("http search");
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));

    // SIGTERM flushes each process's batch exporter on the way out.
    tokio::task::spawn_blocking(move || mesh.stop())
        .await
        .expect("join");

    let all = collector.spans();
    let ours: Vec<&SpanRow> = all.iter().filter(|s| s.trace == trace_id).collect();
    let find = |service: &str, name: &str| -> &SpanRow {
        ours.iter()
            .copied()
            .find(|s| s.service == service && s.name == name)
            .unwrap_or_else(|| panic!("no {service} span {name:?} in the trace: {ours:#?}"))
    };
    let server = find("mlmesh-gateway", "mlmesh.gateway.v1.Gateway/Search");
    assert_eq!(
        server.parent, caller,
        "the caller's traceparent is the parent"
    );

    let embed_client = find(
        "mlmesh-gateway",
        "mlmesh.embedding.v1.EmbeddingService/Embed",
    );
    let search_client = find("mlmesh-gateway", "mlmesh.vector.v1.VectorSearch/Search");
    assert_eq!(embed_client.parent, server.id);
    assert_eq!(search_client.parent, server.id);

    let embed_server = find(
        "mlmesh-embedding",
        "mlmesh.embedding.v1.EmbeddingService/Embed",
    );
    assert_eq!(
        embed_server.parent, embed_client.id,
        "embedding joins over the wire"
    );
    let batch = find("mlmesh-embedding", "embed.request");
    assert_eq!(batch.parent, embed_server.id);

    let vector_server = find(
        "mlmesh-vector-search",
        "mlmesh.vector.v1.VectorSearch/Search",
    );
    assert_eq!(
        vector_server.parent, search_client.id,
        "vector-search joins over the wire"
    );
    assert!(
        ours.iter()
            .any(|s| s.service == "mlmesh-vector-search" && s.parent == vector_server.id),
        "vector-search's engine span is under its server span: {ours:#?}"
    );
    let http_spans: Vec<&SpanRow> = all.iter().filter(|s| s.trace == http_trace).collect();
    let http_server = http_spans
        .iter()
        .find(|s| s.service == "mlmesh-gateway" && s.name == "/v1/collections/{name}/search")
        .unwrap_or_else(|| panic!("no HTTP server span: {http_spans:#?}"));
    assert_eq!(http_server.parent, http_caller);
    assert!(
        http_spans
            .iter()
            .any(|s| s.service == "mlmesh-embedding" && s.name.ends_with("EmbeddingService/Embed")),
        "the HTTP call's trace reaches the embedding service: {http_spans:#?}"
    );

    // Every span in the trace hangs off another span in it (or the caller).
    for s in &ours {
        assert!(
            s.parent == caller || ours.iter().any(|p| p.id == s.parent),
            "orphan span {s:?}"
        );
    }
}
