//! The service kit: what every mlmesh service binary does, written once.
//!
//! A service implements [`Service`] (build from settings, say where it
//! listens, serve until told to stop) and its settings implement
//! [`ServiceSettings`]; [`main`] is then the whole binary: flags
//! (`--config`, `--listen`, `--metrics-listen` and the service's own), the
//! settings layered and validated, `--help` generated from the settings
//! types (so it cannot drift from them), telemetry, the start log, and a
//! serve that drains on SIGTERM. [`reference_page`] renders the same
//! reference as `docs/configuration/<service>.md`.

use std::{collections::HashMap, error::Error, fmt::Debug, net::SocketAddr, path::Path};

use clap::{Args, FromArgMatches as _};
use schemars::JsonSchema;
use serde::{Serialize, de::DeserializeOwned};

use crate::{
    ServerSettings, SettingsError, TelemetrySettings,
    cli::ServerArgs,
    settings::{self, reference},
};

/// A service's settings: one typed struct with sections `server`,
/// `telemetry` and its own.
pub trait ServiceSettings:
    Default + Serialize + DeserializeOwned + JsonSchema + Debug + Send + Sized + 'static
{
    /// Dotted keys whose environment value is a comma-separated list
    /// (`MLMESH_EMBEDDING__MODELS=a=/x,b=/y`).
    const LIST_KEYS: &'static [&'static str] = &[];

    fn server(&self) -> &ServerSettings;
    fn server_mut(&mut self) -> &mut ServerSettings;
    fn telemetry(&self) -> &TelemetrySettings;

    /// Checks no type can express, after loading; names the key.
    fn validate(&self) -> Result<(), SettingsError> {
        self.server().validate()
    }

    /// Compiled defaults → `file` → the `MLMESH_*` entries of `env`,
    /// validated.
    fn load(file: Option<&Path>, env: HashMap<String, String>) -> Result<Self, SettingsError> {
        let s: Self = settings::load(file, env, Self::LIST_KEYS)?;
        s.validate()?;
        Ok(s)
    }
}

/// Inside `impl ServiceSettings for Settings`: the accessors of the common
/// sections, for a struct whose fields are named `server` and `telemetry`
/// (every service's).
#[macro_export]
macro_rules! common_sections {
    () => {
        fn server(&self) -> &$crate::ServerSettings {
            &self.server
        }
        fn server_mut(&mut self) -> &mut $crate::ServerSettings {
            &mut self.server
        }
        fn telemetry(&self) -> &$crate::TelemetrySettings {
            &self.telemetry
        }
    };
}

/// Flags a service adds to the common ones.
pub trait ServiceArgs<S>: Args + Debug {
    /// Lays the flags over the loaded settings (flags win).
    fn apply(&self, settings: &mut S);
}

/// No flags beyond the common ones.
#[derive(Args, Debug, Default)]
pub struct NoArgs {}

impl<S> ServiceArgs<S> for NoArgs {
    fn apply(&self, _: &mut S) {}
}

/// One mlmesh service, library-first: `build(settings)` binds the
/// listeners, `local_addr()` says where, `run_until_stopped(shutdown)`
/// serves and drains.
pub trait Service: Sized + Send + 'static {
    /// The binary's name, e.g. `mlmesh-embedding`.
    const NAME: &'static str;
    /// One line for `--help` and the reference page.
    const ABOUT: &'static str;
    type Settings: ServiceSettings;
    /// The service's own flags ([`NoArgs`] for none).
    type Args: ServiceArgs<Self::Settings>;
    type BuildError: Error + Send + Sync + 'static;
    type RunError: Error + Send + Sync + 'static;

    fn build(
        settings: Self::Settings,
    ) -> impl Future<Output = Result<Self, Self::BuildError>> + Send;
    /// The bound gRPC server (health, reflection, `/metrics`, drain).
    fn grpc_server(&self) -> &crate::GrpcServer;
    /// The gRPC address bound.
    fn local_addr(&self) -> SocketAddr {
        self.grpc_server().local_addr()
    }
    /// The Prometheus `/metrics` address, when enabled.
    fn metrics_addr(&self) -> Option<SocketAddr> {
        self.grpc_server().metrics_addr()
    }
    /// Serves until `shutdown` completes, then drains in-flight calls.
    fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), Self::RunError>> + Send;
}

/// Where a service's generated reference lives in the repository.
pub fn reference_path(service: &str) -> String {
    format!("docs/configuration/{service}.md")
}

/// `--help`'s settings section for `S`.
pub fn settings_help<S: Service>() -> String {
    reference::help(
        &reference::entries::<S::Settings>(),
        &reference_path(S::NAME),
    )
}

/// Panics (a test fails) unless `docs/configuration/<service>.md` in the
/// repository two levels above `manifest_dir` (a service crate's) is what
/// `S`'s settings types generate; with `MLMESH_BLESS=1` rewrites it.
pub fn check_reference<S: Service>(manifest_dir: &str) {
    let repo = Path::new(manifest_dir).join("../..");
    if let Err(e) = reference::check_page(&repo, S::NAME, &reference_page::<S>()) {
        panic!("{e}");
    }
}

/// `docs/configuration/<service>.md` for `S`.
pub fn reference_page<S: Service>() -> String {
    reference::markdown(S::NAME, S::ABOUT, &reference::entries::<S::Settings>())
}

/// The test that `docs/configuration/<service>.md` is what the settings
/// types of `$service` generate (`MLMESH_BLESS=1 cargo test -p <crate>
/// settings_reference` rewrites it): one line in each service's `lib.rs`.
#[macro_export]
macro_rules! settings_reference_test {
    ($service:ty) => {
        #[cfg(test)]
        mod settings_reference {
            #[test]
            fn settings_reference_is_current() {
                $crate::service::check_reference::<$service>(env!("CARGO_MANIFEST_DIR"));
            }
        }
    };
}

/// Why a service binary stopped (each cause is its `source`).
#[derive(Debug, thiserror::Error)]
pub enum MainError {
    #[error("loading settings")]
    Settings(#[from] SettingsError),
    #[error("starting telemetry")]
    Telemetry(#[source] Box<dyn Error + Send + Sync>),
    #[error("starting {service}")]
    Build {
        service: &'static str,
        #[source]
        source: Box<dyn Error + Send + Sync>,
    },
    #[error("serving")]
    Run(#[source] Box<dyn Error + Send + Sync>),
}

/// The whole binary of a service: flags, settings, telemetry, serve until
/// SIGTERM/SIGINT, drain. A failure is printed with its causes
/// (`Error: loading settings: invalid configuration: `server.listen`: …`)
/// and exits 1.
pub async fn main<S: Service>() -> std::process::ExitCode {
    match run::<S>().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let mut line = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                // A cause some errors already quote in their own message.
                let text = c.to_string();
                if !line.contains(&text) {
                    line.push_str(": ");
                    line.push_str(&text);
                }
                cause = c.source();
            }
            eprintln!("Error: {line}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run<S: Service>() -> Result<(), MainError> {
    let command = S::Args::augment_args(ServerArgs::augment_args(clap::Command::new(S::NAME)))
        // After the flags: a flag struct's doc comment would replace it.
        .about(S::ABOUT)
        .version(env!("CARGO_PKG_VERSION"))
        .after_long_help(settings_help::<S>());
    let matches = command.get_matches();
    let common = ServerArgs::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let own = S::Args::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // Flags are laid on before validation: they may supply what the
    // file and environment lack (`--model-repository`).
    let mut settings: S::Settings = settings::load(
        common.config.as_deref(),
        std::env::vars().collect(),
        S::Settings::LIST_KEYS,
    )?;
    common.apply(settings.server_mut());
    own.apply(&mut settings);
    settings.validate()?;
    let _telemetry = crate::telemetry::init(S::NAME, settings.telemetry())
        .map_err(|e| MainError::Telemetry(e.into()))?;
    tracing::info!(?settings, "starting");
    let app = S::build(settings).await.map_err(|e| MainError::Build {
        service: S::NAME,
        source: e.into(),
    })?;
    app.run_until_stopped(crate::shutdown::signal())
        .await
        .map_err(|e| MainError::Run(e.into()))
}
