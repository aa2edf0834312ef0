//! An OTLP trace collector for tests: a tonic server for the OTLP trace
//! service that keeps every span it is sent.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
};

/// One exported span, ids as lowercase hex.
#[derive(Debug, Clone)]
pub struct SpanRow {
    /// The exporting process's `service.name`.
    pub service: String,
    pub name: String,
    pub trace: String,
    pub id: String,
    /// Empty for a root span.
    pub parent: String,
}

#[derive(Clone, Default)]
pub struct OtlpCollector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for OtlpCollector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Ok(mut r) = self.received.lock() {
            r.push(req.into_inner());
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl OtlpCollector {
    /// Serves on `127.0.0.1:0` on the current runtime; returns the collector
    /// and its address (for `OTEL_EXPORTER_OTLP_ENDPOINT=http://<addr>`).
    pub async fn start() -> (Self, SocketAddr) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("collector address");
        let me = Self::default();
        let svc = me.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await
        });
        (me, addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<SpanRow> {
        let mut out = Vec::new();
        let Ok(received) = self.received.lock() else {
            return out;
        };
        for req in received.iter() {
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
                        out.push(SpanRow {
                            service: service.clone(),
                            name: s.name.clone(),
                            trace: hex(&s.trace_id),
                            id: hex(&s.span_id),
                            parent: hex(&s.parent_span_id),
                        });
                    }
                }
            }
        }
        out
    }
}
