//! The mlmesh model registry: models, immutable content-addressed versions
//! (a manifest of files with sizes and SHA-256 digests), aliases moved by
//! compare-and-set with a history and one-call rollback, and a gap-free,
//! resumable watch stream of every change.
//!
//! Layout: [`settings`], [`names`] and [`manifest`] (what clients may
//! send), [`store`] (metadata and the event log; SQLite embedded),
//! [`blobs`] (file contents by digest; a local folder embedded),
//! [`registry`] (the protocol-free core: models, versions, aliases),
//! [`uploads`], [`download`], [`watch`], [`housekeeping`], [`backup`],
//! [`api`] (the
//! tonic face), [`convert`], [`error`], [`metrics`].
//! [`Application`]: `build(settings)` → `local_addr()` →
//! `run_until_stopped(shutdown)`.
#![forbid(unsafe_code)]

pub mod api;
pub mod backup;
pub mod blobs;
pub mod convert;
pub mod download;
pub mod error;
pub mod housekeeping;
pub mod manifest;
pub mod metrics;
pub mod names;
mod outbound;
pub mod registry;
pub mod restore_check;
pub mod settings;
pub mod staging;
pub mod store;
pub mod uploads;
pub mod validation;
pub mod watch;

use std::{future::Future, sync::Arc};

use mlmesh_proto::registry::v1::registry_server::{RegistryServer, SERVICE_NAME};
use mlmesh_runtime::{GrpcServer, ServerError};
use tonic::service::Routes;

pub use crate::settings::Settings;
use crate::{api::RegistryApi, metrics::Metrics, registry::Registry};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot open the registry's storage: {0}")]
    Storage(#[from] error::RegistryError),
}

/// The methods that change the registry: with credentials configured they
/// need a writer's or an admin's. The follower's reads (GetVersion,
/// Download, Watch, ListEvidence …) stay open.
pub const ADMIN_METHODS: &[&str] = &[
    "/mlmesh.registry.v1.Registry/CreateModel",
    "/mlmesh.registry.v1.Registry/UpdateModel",
    "/mlmesh.registry.v1.Registry/StartUpload",
    "/mlmesh.registry.v1.Registry/UploadFiles",
    "/mlmesh.registry.v1.Registry/AbortUpload",
    "/mlmesh.registry.v1.Registry/SetVersionStatus",
    "/mlmesh.registry.v1.Registry/DeleteVersion",
    "/mlmesh.registry.v1.Registry/SetAliases",
    "/mlmesh.registry.v1.Registry/RollbackAlias",
    "/mlmesh.registry.v1.Registry/RecordEvidence",
    "/mlmesh.registry.v1.Registry/SetAliasPolicy",
];

/// What only an admin credential admits: a whole copy of the registry, and
/// replacing its contents. (An alias policy override is a field of
/// SetAliases / RollbackAlias; the handler checks its scope.)
pub const ADMIN_ONLY_METHODS: &[&str] = &[
    "/mlmesh.registry.v1.Registry/Backup",
    "/mlmesh.registry.v1.Registry/Restore",
];

/// A built, bound, not yet serving registry.
pub struct Application {
    server: GrpcServer,
    registry: Arc<Registry>,
    max_request_bytes: usize,
}

impl Application {
    /// The core (tests reach in to run housekeeping).
    pub fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }
}

/// The service kit's view of this service: its binary is
/// `mlmesh_runtime::service::main::<Application>()`.
impl mlmesh_runtime::service::Service for Application {
    const NAME: &'static str = "mlmesh-registry";
    const ABOUT: &'static str =
        "Models, immutable content-addressed versions, aliases and a watch stream.";
    type Settings = Settings;
    type Args = mlmesh_runtime::service::NoArgs;
    type BuildError = BuildError;
    type RunError = ServerError;

    /// Opens the storage and binds the listeners.
    async fn build(settings: Settings) -> Result<Self, BuildError> {
        let metrics = Metrics::new()?;
        let reg_settings = settings.registry.clone();
        let registry =
            tokio::task::spawn_blocking(move || Registry::open(&reg_settings, metrics.clone()))
                .await
                .map_err(error::RegistryError::from)??;
        let registry = Arc::new(registry);
        let server = GrpcServer::bind(&settings.server, registry.metrics.registry.clone())
            .await?
            .protect(ADMIN_METHODS)
            .admin_only(ADMIN_ONLY_METHODS);
        Ok(Self {
            server,
            registry,
            max_request_bytes: settings.server.max_request_bytes,
        })
    }

    fn grpc_server(&self) -> &GrpcServer {
        &self.server
    }

    /// Serves until `shutdown` completes: watch streams end, then in-flight
    /// calls drain.
    async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        self.registry.spawn_housekeeping();
        let registry = Arc::clone(&self.registry);
        let shutdown = async move {
            shutdown.await;
            registry.close();
        };
        let api = RegistryServer::new(RegistryApi::new(Arc::clone(&self.registry)))
            .max_decoding_message_size(self.max_request_bytes)
            .max_encoding_message_size(usize::MAX);
        self.server
            .serve(
                Routes::new(api),
                &[SERVICE_NAME],
                &[mlmesh_proto::FILE_DESCRIPTOR_SET],
                shutdown,
            )
            .await
    }
}

mlmesh_runtime::settings_reference_test!(crate::Application);
