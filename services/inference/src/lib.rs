//! The mlmesh inference service: ONNX and NumPy (`.npz`) models behind the
//! Open Inference Protocol (`inference.GRPCInferenceService`, the gRPC API
//! of Triton and KServe v2), so tritonclient and KServe clients work
//! unchanged.
//!
//! Layout: [`settings`], [`convert`] (requests decoded and checked
//! against the served model), [`repository`] (Triton's folder layout and
//! `config.pbtxt`), [`backend`] (ONNX Runtime and ndarray engines),
//! [`tensor`] (protocol tensors), [`scheduler`] (per-version queue, dynamic
//! batching, worker threads), [`models`] (load, reload, unload, memory
//! budget), [`follow`] (models that follow a registry alias), [`api`]
//! (the tonic service), [`error`], [`metrics`].
//! [`Application`]: `build(settings)` → `local_addr()` →
//! `run_until_stopped(shutdown)`.
#![forbid(unsafe_code)]

pub mod api;
pub mod backend;
pub mod convert;
pub mod error;
pub mod follow;
pub mod metrics;
pub mod models;
pub mod repository;
pub mod scheduler;
pub mod settings;
pub mod tensor;
pub mod validator;

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use mlmesh_proto::inference::grpc_inference_service_server::{
    GrpcInferenceServiceServer, SERVICE_NAME,
};
use mlmesh_runtime::{GrpcServer, ServerError};
use tonic::{codec::CompressionEncoding, service::Routes};

pub use crate::settings::Settings;
use crate::{api::InferenceApi, metrics::Metrics, models::ModelManager};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid configuration: `{key}`: {reason}")]
    Setting { key: &'static str, reason: String },
}

/// A built, bound, not yet serving inference service; its startup models
/// are loaded.
pub struct Application {
    server: GrpcServer,
    models: Arc<ModelManager>,
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    max_request_bytes: usize,
    stream_concurrency: usize,
    validator: Option<validator::ValidatorApi>,
}

/// Loading and unloading models: with `server.admin_token_file` set they
/// need its token (inference and metadata calls stay open).
pub const ADMIN_METHODS: &[&str] = &[
    "/inference.GRPCInferenceService/RepositoryModelLoad",
    "/inference.GRPCInferenceService/RepositoryModelUnload",
    // Starts processes and may write evidence to the registry.
    "/mlmesh.validation.v1.Validator/Validate",
];

impl Application {
    /// The model manager (tests reach in to inspect it).
    pub fn models(&self) -> Arc<ModelManager> {
        Arc::clone(&self.models)
    }
}

/// The service kit's view of this service: its binary is
/// `mlmesh_runtime::service::main::<Application>()`.
impl mlmesh_runtime::service::Service for Application {
    const NAME: &'static str = "mlmesh-inference";
    const ABOUT: &'static str =
        "ONNX and NumPy models over the Open Inference Protocol (Triton / KServe v2 gRPC).";
    type Settings = Settings;
    type Args = InferenceArgs;
    type BuildError = BuildError;
    type RunError = ServerError;

    /// Binds the listeners and loads the startup models (a model that fails
    /// is reported, the others serve).
    async fn build(settings: Settings) -> Result<Self, BuildError> {
        let metrics = Metrics::new()?;
        metrics.memory_budget.set(
            i64::try_from(settings.inference.memory_budget_mb.saturating_mul(1 << 20))
                .unwrap_or(i64::MAX),
        );
        let models = Arc::new(ModelManager::new(&settings.inference, metrics.clone()));
        let server = GrpcServer::bind(&settings.server, metrics.registry.clone())
            .await?
            .protect(ADMIN_METHODS);
        models.load_startup().await;
        models.spawn_poller();
        follow::spawn_all(&settings.inference, &models, &metrics)?;
        let validator = match settings.inference.max_validations {
            0 => None,
            max => {
                let registry = match settings.inference.registry_addr.is_empty() {
                    true => None,
                    false => Some(follow::registry_client(&settings.inference)?),
                };
                // Versions under validation run in processes of this binary.
                let bin = std::env::current_exe().map_err(|e| BuildError::Setting {
                    key: "inference.max_validations",
                    reason: format!("cannot locate this binary to start validations: {e}"),
                })?;
                Some(validator::ValidatorApi::new(
                    registry,
                    max,
                    bin,
                    &settings.inference.ort_dylib(),
                ))
            }
        };
        Ok(Self {
            validator,
            server,
            models,
            metrics,
            ready: Arc::new(AtomicBool::new(true)),
            max_request_bytes: settings.server.max_request_bytes,
            stream_concurrency: settings.inference.stream_concurrency,
        })
    }

    fn grpc_server(&self) -> &GrpcServer {
        &self.server
    }

    /// Serves until `shutdown` completes, then drains in-flight calls.
    async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let ready = Arc::clone(&self.ready);
        let shutdown = async move {
            shutdown.await;
            ready.store(false, Ordering::Release);
        };
        let api = GrpcInferenceServiceServer::new(InferenceApi::new(
            Arc::clone(&self.models),
            self.metrics,
            Arc::clone(&self.ready),
            self.stream_concurrency,
        ))
        .max_decoding_message_size(self.max_request_bytes)
        .max_encoding_message_size(usize::MAX)
        // tritonclient may compress requests (compression_algorithm).
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .send_compressed(CompressionEncoding::Gzip);
        let mut routes = Routes::new(api);
        let mut names = vec![SERVICE_NAME];
        if let Some(v) = self.validator {
            routes = routes.add_service(
                mlmesh_proto::validation::v1::validator_server::ValidatorServer::new(v),
            );
            names.push(mlmesh_proto::validation::v1::validator_server::SERVICE_NAME);
        }
        self.server
            .serve(
                routes,
                &names,
                &[mlmesh_proto::FILE_DESCRIPTOR_SET],
                shutdown,
            )
            .await
    }
}

/// This service's own flag beside the common ones.
#[derive(clap::Args, Debug, Default)]
pub struct InferenceArgs {
    /// A Triton-layout model repository; overrides `inference.model_repository`.
    #[arg(long, value_name = "DIR")]
    model_repository: Option<std::path::PathBuf>,
}

impl mlmesh_runtime::service::ServiceArgs<Settings> for InferenceArgs {
    fn apply(&self, settings: &mut Settings) {
        if let Some(d) = &self.model_repository {
            settings.inference.model_repository = d.clone();
        }
    }
}

mlmesh_runtime::settings_reference_test!(crate::Application);
