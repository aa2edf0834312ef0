//! How the CLI reaches the registry: its address, credential and TLS, the
//! same flags (and environment variables) for every command that calls it.

use std::path::PathBuf;

use clap::Args;
use mlmesh_registry_client::Client;
use mlmesh_runtime::{
    admin::AdminToken,
    tls::{ClientTls, ClientTlsSettings},
};

#[derive(Args, Debug, Clone)]
pub struct RegistryConn {
    /// Registry gRPC address.
    #[arg(
        long = "addr",
        visible_alias = "registry",
        global = true,
        default_value = "127.0.0.1:50054",
        env = "MLMESH_REGISTRY"
    )]
    pub addr: String,
    /// A file holding a registry token (its server.admin_token_file or
    /// server.writer_token_file), sent with every call.
    #[arg(long, global = true, env = "MLMESH_ADMIN_TOKEN_FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// The mesh CA (PEM): the registry serves TLS and its certificate must
    /// chain to this CA and name the host of --addr.
    #[arg(long, global = true, env = "MLMESH_TLS_CA_FILE")]
    pub tls_ca_file: Option<String>,
    /// This client's certificate (PEM), for a registry that asks for one
    /// (mutual TLS); its name must be in the registry's
    /// server.tls.admin_identities or writer_identities to change anything.
    #[arg(
        long,
        global = true,
        env = "MLMESH_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<String>,
    /// The private key of --tls-cert-file (PEM).
    #[arg(
        long,
        global = true,
        env = "MLMESH_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<String>,
}

impl RegistryConn {
    /// A client connected on its first call (which names the address if
    /// it fails).
    pub fn connect(&self) -> anyhow::Result<Client> {
        let token = match &self.admin_token_file {
            Some(path) => Some(AdminToken::from_file(path, "--admin-token-file")?),
            None => None,
        };
        let tls = ClientTls::from_settings(
            &ClientTlsSettings {
                ca_file: self.tls_ca_file.clone().unwrap_or_default(),
                cert_file: self.tls_cert_file.clone().unwrap_or_default(),
                key_file: self.tls_key_file.clone().unwrap_or_default(),
                reload_secs: 0,
            },
            "--tls",
        )?;
        mlmesh_registry_client::connect(&self.addr, tls, token)
            .map_err(|e| anyhow::anyhow!("registry address {:?}: {e}", self.addr))
    }
}
