//! The mlmesh vector-search service: collections of vectors with JSON
//! payloads and nearest-neighbour search over gRPC (`mlmesh.vector.v1`),
//! stored by the embedded Qdrant engine or a Qdrant cluster.
//!
//! Layout: [`settings`] (typed configuration), [`model`] (the domain types),
//! [`convert`] (request validation and protobuf conversion), [`api`] (the
//! tonic service), [`backend`] (the engine trait and its two
//! implementations), [`error`], [`metrics`]. [`Application`] ties them to the
//! shared server bootstrap: `build(settings)` → `local_addr()` →
//! `run_until_stopped(shutdown)`.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod convert;
pub mod error;
pub mod fusion;
pub mod metrics;
pub mod model;
pub mod settings;
pub mod text;

use std::{future::Future, sync::Arc, time::Duration};

use mlmesh_proto::vector::v1::vector_search_server::{SERVICE_NAME, VectorSearchServer};
use mlmesh_runtime::{GrpcServer, ServerError};
use tonic::service::Routes;

pub use crate::settings::Settings;
use crate::{
    api::VectorApi,
    backend::{Backend, embedded::EmbeddedBackend, qdrant::QdrantBackend},
    error::OpenError,
    metrics::Metrics,
    settings::BackendKind,
};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("storage loading task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Text(String),
}

/// A built, bound, not yet serving vector-search service.
pub struct Application {
    server: GrpcServer,
    backend: Arc<dyn Backend>,
    metrics: Metrics,
    settings: Settings,
    bm25: Arc<text::Bm25>,
}

impl Application {}

/// Keeps `mlmesh_vector_points{collection}` current for both backends.
/// Refreshed as often as the storage is checkpointed.
async fn refresh_gauges(backend: Arc<dyn Backend>, metrics: Metrics, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let counts = backend.point_counts().await;
        metrics.points.reset();
        for (name, n) in counts {
            metrics
                .points
                .with_label_values(&[name.as_str()])
                .set(n as i64);
        }
    }
}

/// The service kit's view of this service: its binary is
/// `mlmesh_runtime::service::main::<Application>()`.
impl mlmesh_runtime::service::Service for Application {
    const NAME: &'static str = "mlmesh-vector-search";
    const ABOUT: &'static str =
        "Vector collections and nearest-neighbour search over gRPC (mlmesh.vector.v1).";
    type Settings = Settings;
    type Args = VectorArgs;
    type BuildError = BuildError;
    type RunError = ServerError;

    /// Opens the storage (replaying logs) and binds the listeners.
    async fn build(settings: Settings) -> Result<Self, BuildError> {
        let metrics = Metrics::new()?;
        let backend: Arc<dyn Backend> = match settings.vector.backend {
            BackendKind::Embedded => {
                let v = settings.vector.clone();
                let m = metrics.clone();
                // Loading segments and replaying logs blocks: not on the reactor.
                Arc::new(tokio::task::spawn_blocking(move || EmbeddedBackend::open(&v, m)).await??)
            }
            BackendKind::Qdrant => Arc::new(QdrantBackend::connect(&settings.qdrant)?),
        };
        let bm25 = Arc::new(text::Bm25::english().map_err(BuildError::Text)?);
        let server = GrpcServer::bind(&settings.server, metrics.registry.clone()).await?;
        Ok(Self {
            server,
            backend,
            metrics,
            settings,
            bm25,
        })
    }

    fn grpc_server(&self) -> &GrpcServer {
        &self.server
    }

    /// Serves until `shutdown` completes, drains in-flight calls, then
    /// checkpoints the storage.
    async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let max = self.settings.server.max_request_bytes;
        let api = VectorSearchServer::new(VectorApi::new(
            Arc::clone(&self.backend),
            self.metrics.clone(),
            self.settings.vector.clone(),
            Arc::clone(&self.bm25),
        ))
        .max_decoding_message_size(max)
        // Responses are bounded by the page and hit limits.
        .max_encoding_message_size(usize::MAX);
        let every = Duration::from_secs(self.settings.vector.checkpoint_interval_secs);
        let gauges = tokio::spawn(refresh_gauges(
            Arc::clone(&self.backend),
            self.metrics,
            every,
        ));
        let result = self
            .server
            .serve(
                Routes::new(api),
                &[SERVICE_NAME],
                &[mlmesh_proto::FILE_DESCRIPTOR_SET],
                shutdown,
            )
            .await;
        gauges.abort();
        self.backend.close().await;
        result
    }
}

/// This service's own flag beside the common ones.
#[derive(clap::Args, Debug, Default)]
pub struct VectorArgs {
    /// Data folder of the embedded engine; overrides `vector.data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<std::path::PathBuf>,
}

impl mlmesh_runtime::service::ServiceArgs<Settings> for VectorArgs {
    fn apply(&self, settings: &mut Settings) {
        if let Some(d) = &self.data_dir {
            settings.vector.data_dir = d.clone();
        }
    }
}

mlmesh_runtime::settings_reference_test!(crate::Application);
