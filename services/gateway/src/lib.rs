//! The mlmesh gateway: the one address clients call, over gRPC
//! (`mlmesh.gateway.v1.Gateway`) or HTTP/JSON (OpenAI-compatible
//! `/v1/embeddings`, collections, documents, search, RAG retrieval).
//!
//! Layout: [`settings`], [`downstream`] (balanced, retried, traced calls to
//! the embedding, vector-search and inference replicas; every RPC declared
//! once in `downstream::rpc`), [`discovery`] (those replicas from
//! Kubernetes EndpointSlices), [`chunk`] (token and character windows),
//! [`core`] (what each call does, protocol-free), [`grpc`], [`http`] and
//! [`mcp`] (the faces; [`json`] the JSON forms the JSON faces share),
//! [`console`] (the web console at `/ui` and the mesh read APIs),
//! [`pipeline`] (pipeline specs), [`tensor`], [`auth`], [`error`],
//! [`metrics`].
//! [`Application`] follows the other services: `build(settings)` →
//! `local_addr()` / `http_addr()` → `run_until_stopped(shutdown)`.
#![forbid(unsafe_code)]

pub mod auth;
pub mod chunk;
pub mod console;
pub mod core;
pub mod discovery;
pub mod downstream;
pub mod error;
pub mod grpc;
pub mod http;
pub mod json;
pub mod mcp;
pub mod metrics;
pub mod passthrough;
pub mod pipeline;
pub mod settings;
pub mod tensor;

use std::{future::Future, net::SocketAddr, sync::Arc};

use futures::FutureExt as _;
use mlmesh_proto::gateway::v1::gateway_server::{GatewayServer, SERVICE_NAME};
use mlmesh_runtime::{GrpcServer, ServerError};
use tokio::net::TcpListener;
use tonic::service::Routes;

pub use crate::settings::Settings;
use crate::{
    auth::layer::{AuthLayer, Face},
    core::Core,
    grpc::{GatewayApi, inference::InferenceProxy},
    metrics::Metrics,
};

/// The Open Inference Protocol's gRPC service, forwarded to inference.
const INFERENCE_SERVICE: &str = <InferenceProxy as tonic::server::NamedService>::NAME;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("cannot listen on {addr} (`http.listen`): {source}")]
    HttpBind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("invalid downstream address: {0}")]
    Downstream(String),
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("invalid auth settings: {0}")]
    Auth(#[from] auth::AuthConfigError),
}

/// A built, bound, not yet serving gateway.
pub struct Application {
    server: GrpcServer,
    http: Option<TcpListener>,
    core: Arc<Core>,
    max_request_bytes: usize,
    /// Kubernetes discovery's watchers; they stop with the gateway.
    watchers: discovery::Watchers,
}

impl Application {
    /// The HTTP/JSON address actually bound, when enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// The service kit's view of this service: its binary is
/// `mlmesh_runtime::service::main::<Application>()`.
impl mlmesh_runtime::service::Service for Application {
    const NAME: &'static str = "mlmesh-gateway";
    const ABOUT: &'static str = "The mlmesh front door: gRPC (mlmesh.gateway.v1) and HTTP/JSON.";
    type Settings = Settings;
    type Args = GatewayArgs;
    type BuildError = BuildError;
    type RunError = ServerError;

    /// Binds the gRPC, `/metrics` and HTTP listeners; downstream services
    /// are connected lazily.
    async fn build(settings: Settings) -> Result<Self, BuildError> {
        let metrics = Metrics::new()?;
        let server = GrpcServer::bind(&settings.server, metrics.registry.clone()).await?;
        let http = match settings.http.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| BuildError::HttpBind { addr, source })?,
            ),
            None => None,
        };
        let max_request_bytes = settings.server.max_request_bytes;
        let auth = auth::Auth::from_settings(&settings)?;
        let core = Core::new(settings, metrics, auth).map_err(BuildError::Downstream)?;
        let d = &core.settings().downstream;
        let watchers = match d.discovery {
            settings::Discovery::Static => discovery::Watchers::default(),
            settings::Discovery::Kubernetes => discovery::start(d, core.pools())
                .await
                .map_err(BuildError::Downstream)?,
        };
        Ok(Self {
            server,
            http,
            core: Arc::new(core),
            max_request_bytes,
            watchers,
        })
    }

    fn grpc_server(&self) -> &GrpcServer {
        &self.server
    }

    /// Serves gRPC and HTTP until `shutdown` completes, then drains both.
    async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let shutdown = shutdown.boxed().shared();
        let http_task = self.http.map(|listener| {
            let mcp_stop = tokio_util::sync::CancellationToken::new();
            let mcp = self.core.settings().mcp.enabled.then(|| {
                mcp::service(
                    Arc::clone(&self.core),
                    &self.core.settings().mcp,
                    mcp_stop.clone(),
                )
            });
            let console = self
                .core
                .settings()
                .console
                .enabled
                .then(|| console::Console::new(Arc::clone(&self.core)));
            if let Some(c) = &console {
                tokio::spawn(Arc::clone(c).run(shutdown.clone()));
            }
            let mut router =
                http::router(Arc::clone(&self.core), mcp).merge(console::routes(console));
            if let Some(a) = &self.core.auth {
                router = router.layer(AuthLayer::new(
                    Arc::clone(a),
                    Face::Http,
                    self.core.metrics.auth.clone(),
                ));
            }
            let router =
                console::with_prefix(router, self.core.settings().console.path_prefix.clone());
            let stop = shutdown.clone().map(move |()| mcp_stop.cancel());
            // Logged before the gRPC "listening" line, so whoever waits
            // for that one has seen this one too.
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(http = %addr, "HTTP API listening");
            }
            // The same connection rules as the gRPC server (cap,
            // keep-alive, write stalls), plus header and body deadlines.
            let server = self.core.settings().server.clone();
            let policy = mlmesh_runtime::conn::ConnPolicy::new(&server);
            tokio::spawn(async move {
                mlmesh_runtime::http::serve(listener, router, &server, policy, stop).await;
            })
        });
        let max = self.max_request_bytes;
        let api = GatewayServer::new(GatewayApi::new(Arc::clone(&self.core)))
            .max_decoding_message_size(max)
            .max_encoding_message_size(usize::MAX);
        let inference = InferenceProxy::new(Arc::clone(&self.core), max);
        let mut routes = Routes::new(api).add_service(inference);
        if let Some(a) = &self.core.auth {
            routes = Routes::from(routes.into_axum_router().layer(AuthLayer::new(
                Arc::clone(a),
                Face::Grpc,
                self.core.metrics.auth.clone(),
            )));
        }
        let result = self
            .server
            .serve(
                routes,
                &[SERVICE_NAME, INFERENCE_SERVICE],
                &[mlmesh_proto::FILE_DESCRIPTOR_SET],
                shutdown,
            )
            .await;
        if let Some(t) = http_task {
            let _ = t.await;
        }
        // Discovery runs as long as calls may be made; it ends with them.
        drop(self.watchers);
        result
    }
}

/// The gateway's own flag beside the common ones.
#[derive(clap::Args, Debug, Default)]
pub struct GatewayArgs {
    /// HTTP/JSON listen address; overrides `http.listen`.
    #[arg(long, value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
}

impl mlmesh_runtime::service::ServiceArgs<Settings> for GatewayArgs {
    fn apply(&self, settings: &mut Settings) {
        if let Some(h) = self.http_listen {
            settings.http.listen = Some(h);
        }
    }
}

mlmesh_runtime::settings_reference_test!(crate::Application);
