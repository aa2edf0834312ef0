//! What every mlmesh service shares: layered settings, telemetry (logs, OTLP
//! traces, W3C `traceparent` propagation), the gRPC server bootstrap
//! (health, reflection, Prometheus `/metrics`, graceful shutdown) and a lean
//! HTTP/2 client channel for service-to-service calls, and mutual TLS
//! between services.
//!
//! A service crate owns its domain; this crate owns the wiring around it, so
//! that every service starts, reports and stops the same way.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod client;
pub mod conn;
pub mod http;
pub mod introspection;
pub mod limits;
pub mod metrics;
pub mod propagation;
pub mod server;
pub mod service;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod testing;
pub mod tls;

pub use server::{GrpcServer, ServerError};
pub use settings::{ServerSettings, SettingsError, TelemetrySettings};

/// The canonical name of a gRPC status code (`INVALID_ARGUMENT`), as used in
/// metric labels by every service.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "OK",
        Cancelled => "CANCELLED",
        Unknown => "UNKNOWN",
        InvalidArgument => "INVALID_ARGUMENT",
        DeadlineExceeded => "DEADLINE_EXCEEDED",
        NotFound => "NOT_FOUND",
        AlreadyExists => "ALREADY_EXISTS",
        PermissionDenied => "PERMISSION_DENIED",
        ResourceExhausted => "RESOURCE_EXHAUSTED",
        FailedPrecondition => "FAILED_PRECONDITION",
        Aborted => "ABORTED",
        OutOfRange => "OUT_OF_RANGE",
        Unimplemented => "UNIMPLEMENTED",
        Internal => "INTERNAL",
        Unavailable => "UNAVAILABLE",
        DataLoss => "DATA_LOSS",
        Unauthenticated => "UNAUTHENTICATED",
    }
}
