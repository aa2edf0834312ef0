//! The gRPC server every mlmesh service runs: the service's own routes plus
//! `grpc.health.v1`, `mlmesh.mesh.v1.Introspection` (see
//! [`crate::introspection`]), reflection, a Prometheus `/metrics` endpoint on its own
//! port, per-call trace spans, and graceful shutdown.
//!
//! Shutdown order, on the shutdown future completing: health turns
//! NOT_SERVING (so load balancers stop sending), the listener closes, calls
//! already accepted run to completion for at most the grace period, then
//! [`GrpcServer::serve`] returns.

use std::{future::Future, net::SocketAddr};

use axum::{Router, http::header, response::IntoResponse, routing::get};
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    admin::{AdminLayer, AdminToken, Credentials},
    conn::{self, ConnPolicy},
    limits::MessageLimitLayer,
    propagation::ServerTraceLayer,
    settings::ServerSettings,
    tls::{ServerTls, parse_names},
};

/// Why the server could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} (`{key}`): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot build gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC transport failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Settings(#[from] crate::settings::SettingsError),
}

/// A bound, not yet serving, gRPC server with its metrics endpoint.
pub struct GrpcServer {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    settings: ServerSettings,
    registry: Registry,
    health: HealthReporter,
    health_service:
        tonic_health::pb::health_server::HealthServer<tonic_health::server::HealthService>,
    credentials: Credentials,
    tls: Option<ServerTls>,
    protected: &'static [&'static str],
    admin_only: &'static [&'static str],
    /// False once draining: `mlmesh.mesh.v1.Introspection` says so.
    serving: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl GrpcServer {
    /// Binds `settings.listen` and `settings.metrics_listen`.
    pub async fn bind(settings: &ServerSettings, registry: Registry) -> Result<Self, ServerError> {
        let listener =
            TcpListener::bind(settings.listen)
                .await
                .map_err(|source| ServerError::Bind {
                    key: "server.listen",
                    addr: settings.listen,
                    source,
                })?;
        let metrics_listener = match settings.metrics_listen {
            Some(addr) => {
                Some(
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServerError::Bind {
                            key: "server.metrics_listen",
                            addr,
                            source,
                        })?,
                )
            }
            None => None,
        };
        // The codecs of this process count a request's elements before
        // decoding it (mlmesh_proto::codec).
        mlmesh_proto::codec::set_max_elements(settings.max_request_elements);
        let mut server = Self::from_listeners(settings, listener, metrics_listener, registry);
        let c = &mut server.credentials;
        c.admin_token =
            AdminToken::from_setting(&settings.admin_token_file, "server.admin_token_file")?;
        c.writer_token =
            AdminToken::from_setting(&settings.writer_token_file, "server.writer_token_file")?;
        server.tls = ServerTls::from_settings(&settings.tls, "server.tls")?;
        let mutual = server.tls.as_ref().is_some_and(|t| t.is_mutual());
        for (key, names, into) in [
            (
                "server.tls.admin_identities",
                &settings.tls.admin_identities,
                &mut server.credentials.admin_identities,
            ),
            (
                "server.tls.writer_identities",
                &settings.tls.writer_identities,
                &mut server.credentials.writer_identities,
            ),
        ] {
            *into = parse_names(names, key)?.into();
            if into.is_empty() || mutual {
                continue;
            }
            return Err(crate::SettingsError::Value {
                key: key.into(),
                reason: "set without server.tls.client_ca_file: clients present no certificate to name them".into(),
            }
            .into());
        }
        Ok(server)
    }

    /// Names the methods (full gRPC paths, `/pkg.Service/Method`) that
    /// change state: with credentials configured they need a writer's or an
    /// admin's (see [`crate::admin`]).
    pub fn protect(mut self, paths: &'static [&'static str]) -> Self {
        self.protected = paths;
        if !self.credentials.any() && !self.local_addr().ip().is_loopback() {
            tracing::warn!(
                addr = %self.local_addr(),
                "state-changing RPCs are open to every caller that can reach this address: set server.tls.admin_identities (mutual TLS) or server.admin_token_file (and keep the chart's NetworkPolicies on)"
            );
        }
        self
    }

    /// Names the methods only an admin credential admits (a writer's is
    /// refused with PERMISSION_DENIED), e.g. the registry's Backup.
    pub fn admin_only(mut self, paths: &'static [&'static str]) -> Self {
        self.admin_only = paths;
        self
    }

    /// Uses listeners the caller already bound (tests, socket activation).
    pub fn from_listeners(
        settings: &ServerSettings,
        listener: TcpListener,
        metrics_listener: Option<TcpListener>,
        registry: Registry,
    ) -> Self {
        // The process's age counts from its first server.
        crate::introspection::started();
        let health = HealthReporter::new();
        let health_service = tonic_health::pb::health_server::HealthServer::new(
            tonic_health::server::HealthService::from_health_reporter(health.clone()),
        );
        Self {
            listener,
            metrics_listener,
            settings: settings.clone(),
            registry,
            health,
            health_service,
            credentials: Credentials::default(),
            admin_only: &[],
            tls: None,
            protected: &[],
            serving: std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
        }
    }

    /// The gRPC address actually bound (resolves port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or(self.settings.listen)
    }

    /// The `/metrics` address actually bound, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// The health reporter, for a service to report its own readiness.
    pub fn health(&self) -> HealthReporter {
        self.health.clone()
    }

    /// Serves `routes` until `shutdown` completes, then drains. `services`
    /// are the fully-qualified names whose health is reported;
    /// `descriptors` are encoded `FileDescriptorSet`s served by reflection.
    pub async fn serve(
        self,
        routes: Routes,
        services: &[&str],
        descriptors: &[&[u8]],
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let mut reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        let mut reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET);
        for d in descriptors {
            reflection_v1 = reflection_v1.register_encoded_file_descriptor_set(d);
            reflection_v1alpha = reflection_v1alpha.register_encoded_file_descriptor_set(d);
        }
        let reflection_v1 = reflection_v1
            .build_v1()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;
        let reflection_v1alpha = reflection_v1alpha
            .build_v1alpha()
            .map_err(|e| ServerError::Reflection(e.to_string()))?;

        let all: Vec<String> = std::iter::once(String::new())
            .chain(services.iter().map(|s| (*s).to_owned()))
            .collect();
        for name in &all {
            self.health
                .set_service_status(name, ServingStatus::Serving)
                .await;
        }
        self.serving
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let introspection = crate::introspection::Status::new(
            self.registry.clone(),
            services.iter().map(|s| (*s).to_owned()).collect(),
            self.serving.clone(),
        )
        .into_server();
        let serving = self.serving.clone();

        let addr = self.local_addr();
        let metrics_addr = self.metrics_addr();
        let grace = self.settings.shutdown_grace();
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let (stopped_tx, stopped_rx) = tokio::sync::watch::channel(false);

        let metrics_task = self.metrics_listener.map(|listener| {
            let registry = self.registry.clone();
            let health = std::sync::Arc::new(
                tonic_health::server::HealthService::from_health_reporter(self.health.clone()),
            );
            let mut stopped = stopped_rx.clone();
            let settings = self.settings.clone();
            tokio::spawn(async move {
                // `/healthz` answers what `grpc.health.v1` answers for the
                // whole server, over plain HTTP: the probe of a server that
                // speaks only mutual TLS (kubelet's gRPC probe cannot).
                let app = Router::new()
                    .route("/metrics", get(move || render(registry.clone())))
                    .route("/healthz", get(move || healthz(health.clone())));
                let stop = async move {
                    let _ = stopped.wait_for(|s| *s).await;
                };
                // Its own small cap: scrapers are few.
                let policy = ConnPolicy::new(&ServerSettings {
                    max_connections: 64,
                    ..settings.clone()
                });
                crate::http::serve(listener, app, &settings, policy, stop).await;
            })
        });

        let health = self.health.clone();
        let signal = async move {
            shutdown.await;
            tracing::info!(
                grace_secs = grace.as_secs(),
                "shutting down: health NOT_SERVING, draining in-flight calls"
            );
            serving.store(false, std::sync::atomic::Ordering::Relaxed);
            for name in &all {
                health
                    .set_service_status(name, ServingStatus::NotServing)
                    .await;
            }
            let _ = draining_tx.send(());
        };

        // Capped, kept alive, write-stall-checked (see `conn`).
        let policy = ConnPolicy::new(&self.settings);
        let incoming = conn::incoming(self.listener, policy, self.tls.clone());
        let streams = self.settings.effective_streams();
        if streams < self.settings.max_concurrent_streams {
            tracing::info!(
                streams,
                setting = self.settings.max_concurrent_streams,
                "server.max_concurrent_streams lowered so streams × server.max_request_bytes fit server.max_connection_request_bytes"
            );
        }

        tracing::info!(
            %addr,
            metrics = ?metrics_addr,
            tls = match &self.tls {
                None => "off",
                Some(t) if t.is_mutual() => "mutual",
                Some(_) => "server-only",
            },
            "gRPC server listening"
        );
        let server = tonic::transport::Server::builder()
            .max_concurrent_streams(streams)
            .http2_keepalive_interval(self.settings.http2_keepalive_interval())
            .http2_keepalive_timeout(Some(self.settings.http2_keepalive_timeout()))
            .layer(ServerTraceLayer)
            .layer(AdminLayer {
                credentials: std::sync::Arc::new(self.credentials),
                protected: self.protected,
                admin_only: self.admin_only,
            })
            .layer(MessageLimitLayer {
                max_request_bytes: self.settings.max_request_bytes,
            })
            .add_routes(routes)
            .add_service(self.health_service)
            .add_service(introspection)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .serve_with_incoming_shutdown(incoming, signal);
        tokio::pin!(server);

        let grace_expired = async {
            if draining_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = &mut server => r.map_err(ServerError::from),
            () = grace_expired => {
                tracing::warn!("grace period expired with calls still in flight; stopping anyway");
                Ok(())
            }
        };
        let _ = stopped_tx.send(true);
        if let Some(task) = metrics_task {
            let _ = task.await;
        }
        tracing::info!("server stopped");
        result
    }
}

async fn healthz(health: std::sync::Arc<tonic_health::server::HealthService>) -> impl IntoResponse {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus as S, health_server::Health as _,
    };
    let serving = health
        .check(tonic::Request::new(HealthCheckRequest {
            service: String::new(),
        }))
        .await
        .is_ok_and(|r| r.into_inner().status == S::Serving as i32);
    if serving {
        (http::StatusCode::OK, "SERVING\n")
    } else {
        (http::StatusCode::SERVICE_UNAVAILABLE, "NOT_SERVING\n")
    }
}

async fn render(registry: Registry) -> impl IntoResponse {
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "cannot encode metrics");
    }
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], buf)
}
