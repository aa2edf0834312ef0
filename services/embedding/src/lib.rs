//! The mlmesh embedding service: sentence embeddings from ONNX models over
//! gRPC (`mlmesh.embedding.v1.EmbeddingService`).
//!
//! Layout: [`settings`] (typed configuration), [`engine`] (model folders,
//! tokenization, the batching queue and ONNX Runtime workers), [`api`] (the
//! tonic service) over [`convert`] (protocol ↔ engine types),
//! [`error`] (domain errors and their gRPC statuses),
//! [`metrics`]. [`Application`] ties them to the shared server bootstrap:
//! `build(settings)` → `local_addr()` → `run_until_stopped(shutdown)`.
#![forbid(unsafe_code)]

pub mod api;
pub mod convert;
pub mod engine;
pub mod error;
pub mod metrics;
pub mod settings;

use std::{future::Future, sync::Arc};

use mlmesh_proto::embedding::v1::embedding_service_server::{EmbeddingServiceServer, SERVICE_NAME};
use mlmesh_runtime::{GrpcServer, ServerError};
use tonic::service::Routes;

pub use crate::settings::Settings;
use crate::{api::EmbeddingApi, engine::Engine, error::LoadError, metrics::Metrics};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("model loading task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A built, bound, not yet serving embedding service.
pub struct Application {
    server: GrpcServer,
    engine: Arc<Engine>,
    metrics: Metrics,
    max_request_bytes: usize,
}

impl Application {}

/// The service kit's view of this service: its binary is
/// `mlmesh_runtime::service::main::<Application>()`.
impl mlmesh_runtime::service::Service for Application {
    const NAME: &'static str = "mlmesh-embedding";
    const ABOUT: &'static str =
        "Sentence embeddings from ONNX models over gRPC (mlmesh.embedding.v1).";
    type Settings = Settings;
    type Args = mlmesh_runtime::service::NoArgs;
    type BuildError = BuildError;
    type RunError = ServerError;

    /// Loads the models and binds the listeners named in `settings`.
    async fn build(settings: Settings) -> Result<Self, BuildError> {
        let metrics = Metrics::new()?;
        let emb = settings.embedding.clone();
        let m = metrics.clone();
        // Loading ONNX sessions blocks for a while: not on the reactor.
        let engine = tokio::task::spawn_blocking(move || Engine::start(&emb, m)).await??;
        let server = GrpcServer::bind(&settings.server, metrics.registry.clone()).await?;
        Ok(Self {
            server,
            engine: Arc::new(engine),
            metrics,
            max_request_bytes: settings.server.max_request_bytes,
        })
    }

    fn grpc_server(&self) -> &GrpcServer {
        &self.server
    }

    /// Serves until `shutdown` completes, drains in-flight calls, then stops
    /// the model workers.
    async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let max = self.max_request_bytes;
        let api = EmbeddingServiceServer::new(EmbeddingApi::new(
            Arc::clone(&self.engine),
            self.metrics,
            max,
        ))
        .max_decoding_message_size(max)
        // Responses are vectors: bounded by max_client_batch × dimension.
        .max_encoding_message_size(usize::MAX);
        let routes = Routes::new(api);
        let result = self
            .server
            .serve(
                routes,
                &[SERVICE_NAME],
                &[mlmesh_proto::FILE_DESCRIPTOR_SET],
                shutdown,
            )
            .await;
        self.engine.close();
        result
    }
}

mlmesh_runtime::settings_reference_test!(crate::Application);
