//! One trace across a gRPC hop: the server span is parented on the caller's
//! `traceparent`, whether a foreign client sent it or our client layer
//! injected it. Spans are exported to memory and inspected.
//! (Its own test binary: it installs the global tracing subscriber.)

use std::time::Duration;

use mlmesh_runtime::{GrpcServer, ServerSettings, propagation::ClientTraceLayer};
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::{
    propagation::TraceContextPropagator,
    trace::{InMemorySpanExporter, SdkTracerProvider, SpanData},
};
use tonic::service::Routes;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tracing_subscriber::layer::SubscriberExt as _;

async fn spans_named(exporter: &InMemorySpanExporter, name: &str, want: usize) -> Vec<SpanData> {
    for _ in 0..100 {
        let spans: Vec<SpanData> = exporter
            .get_finished_spans()
            .expect("spans")
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        if spans.len() >= want {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "span {name} not exported: {:?}",
        exporter.get_finished_spans()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_spans_join_the_callers_trace() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    tracing::subscriber::set_global_default(subscriber).expect("subscriber");
    mlmesh_runtime::telemetry::enable_call_spans();
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());

    let server = GrpcServer::bind(&ServerSettings::ephemeral(), prometheus::Registry::new())
        .await
        .expect("bind");
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(Routes::default(), &[], &[], async {
        let _ = stopped.await;
    }));
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let check = || HealthCheckRequest {
        service: String::new(),
    };

    // 1. A foreign caller's traceparent becomes the parent.
    let mut req = tonic::Request::new(check());
    req.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .expect("ascii"),
    );
    HealthClient::new(channel.clone())
        .check(req)
        .await
        .expect("check");
    let spans = spans_named(&exporter, "grpc.health.v1.Health/Check", 1).await;
    let s = &spans[0];
    assert_eq!(
        s.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
    );
    assert_eq!(
        s.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").expect("hex")
    );

    // 2. Our client layer carries the current span to the server.
    let traced = tower::ServiceBuilder::new()
        .layer(ClientTraceLayer)
        .service(channel);
    let mut client = HealthClient::new(traced);
    let outer = tracing::info_span!("client.operation");
    {
        use tracing::Instrument as _;
        client
            .check(check())
            .instrument(outer)
            .await
            .expect("check");
    }
    let parent = spans_named(&exporter, "client.operation", 1)
        .await
        .remove(0);
    let server_spans = spans_named(&exporter, "grpc.health.v1.Health/Check", 2).await;
    let child = server_spans
        .iter()
        .find(|s| s.span_context.trace_id() == parent.span_context.trace_id())
        .expect("a server span in the client's trace");
    assert_eq!(child.parent_span_id, parent.span_context.span_id());

    let _ = stop.send(());
    task.await.expect("join").expect("serve");
}
