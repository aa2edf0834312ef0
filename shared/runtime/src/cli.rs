//! Command-line flags every service binary takes, layered over its settings.

use std::{net::SocketAddr, path::PathBuf};

use crate::settings::ServerSettings;

/// `--config`, `--listen`, `--metrics-listen`; flatten into a service's
/// `clap` parser.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ServerArgs {
    /// Settings file (TOML), layered over the compiled
    /// defaults and under `MLMESH_*` environment variables.
    #[arg(long, value_name = "FILE", env = "MLMESH_CONFIG")]
    pub config: Option<PathBuf>,
    /// gRPC listen address; overrides `server.listen`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Prometheus /metrics listen address; overrides `server.metrics_listen`.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
}

impl ServerArgs {
    /// Lays the given flags over `server` (flags win over file and env).
    pub fn apply(&self, server: &mut ServerSettings) {
        if let Some(l) = self.listen {
            server.listen = l;
        }
        if let Some(m) = self.metrics_listen {
            server.metrics_listen = Some(m);
        }
    }
}
