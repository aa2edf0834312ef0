//! What every mlmesh service shares: layered settings, telemetry (logs, OTLP
//! traces, W3C `traceparent` propagation), and the gRPC server bootstrap
//! (health, reflection, Prometheus `/metrics`, graceful shutdown).
//!
//! A service crate owns its domain; this crate owns the wiring around it, so
//! that every service starts, reports and stops the same way.
#![forbid(unsafe_code)]

pub mod limits;
pub mod propagation;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod telemetry;

pub use server::{GrpcServer, ServerError};
pub use settings::{ServerSettings, SettingsError, TelemetrySettings};
