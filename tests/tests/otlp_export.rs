//! Trace export for real: the embedding binary, configured only by the
//! standard `OTEL_*` variables, sends its spans to an OTLP collector (here a
//! tonic server in the test) under its own `service.name`, joined to the
//! caller's `traceparent`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::Service;
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// (service.name, span name, trace id hex, span id hex, parent id hex)
type Row = (String, String, String, String, String);

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn rows(c: &Collector) -> Vec<Row> {
    let mut out = Vec::new();
    for req in c.received.lock().expect("lock").iter() {
        for rs in &req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    out.push((
                        service.clone(),
                        s.name.clone(),
                        hex(&s.trace_id),
                        hex(&s.span_id),
                        hex(&s.parent_span_id),
                    ));
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedding_spans_reach_an_otlp_collector_in_the_callers_trace() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = collector.clone();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
    });

    let mut svc = Service::start(
        "mlmesh-embedding",
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))],
    );
    let mut client = EmbeddingServiceClient::connect(format!("http://{}", svc.addr))
        .await
        .expect("connect");
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut req = tonic::Request::new(EmbedRequest {
        inputs: vec!["traced across processes".into()],
        ..Default::default()
    });
    req.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01")
            .parse()
            .expect("ascii"),
    );
    client.embed(req).await.expect("embed");

    // SIGTERM flushes the batch exporter on the way out.
    svc.terminate();
    let code = tokio::task::spawn_blocking(move || svc.wait(Duration::from_secs(30)))
        .await
        .expect("join");
    assert_eq!(code, Some(0));

    let rows = rows(&collector);
    let ours: Vec<&Row> = rows.iter().filter(|r| r.2 == trace_id).collect();
    assert!(
        !ours.is_empty(),
        "no span in the caller's trace; got {rows:?}"
    );
    assert!(ours.iter().all(|r| r.0 == "mlmesh-embedding"), "{ours:?}");
    let find = |name: &str| {
        ours.iter()
            .find(|r| r.1 == name)
            .unwrap_or_else(|| panic!("span {name} missing: {ours:?}"))
    };
    let server = find("mlmesh.embedding.v1.EmbeddingService/Embed");
    assert_eq!(
        server.4, caller_span,
        "the server span's parent is the caller"
    );
    let request = find("embed.request");
    assert_eq!(request.4, server.3);
    assert_eq!(find("embed.tokenize").4, request.3);
    assert_eq!(find("embed.wait").4, request.3);
}
