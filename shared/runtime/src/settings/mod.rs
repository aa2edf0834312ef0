//! Layered, typed settings: compiled defaults → optional file → environment.
//!
//! Every service describes its settings as one `serde` struct whose
//! `Default` is the compiled default. [`load`] lays a TOML file and
//! then `MLMESH_<SECTION>__<KEY>` environment variables on top, and fails with
//! the offending key's name when a value does not fit its type.
//!
//! The environment is passed in as a map rather than read here, so tests can
//! give each service its own environment without touching the process's.

pub mod reference;
pub mod tls;

use std::{collections::HashMap, net::SocketAddr, path::Path, time::Duration};

use config::{Config, Environment, File};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Prefix of every environment variable mlmesh reads for settings.
pub const ENV_PREFIX: &str = "MLMESH";

/// Why settings could not be loaded. The message names the key.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid configuration: {0}")]
    Invalid(#[from] config::ConfigError),
    #[error("invalid configuration: `{key}`: {reason}")]
    Value { key: String, reason: String },
}

/// Loads settings of type `T`: `T::default()`, then `file` when given, then
/// the `MLMESH_`-prefixed entries of `env` (`MLMESH_SERVER__LISTEN=...` sets
/// `server.listen`). Pass `std::env::vars().collect()` in a binary.
/// `list_keys` are dotted keys whose environment value is a comma-separated
/// list (`MLMESH_EMBEDDING__MODELS=a=/x,b=/y`).
pub fn load<T>(
    file: Option<&Path>,
    env: HashMap<String, String>,
    list_keys: &[&str],
) -> Result<T, SettingsError>
where
    T: Default + Serialize + DeserializeOwned,
{
    let defaults = Config::try_from(&T::default())?;
    let mut builder = Config::builder().add_source(defaults);
    if let Some(file) = file {
        builder = builder.add_source(File::from(file).required(true));
    }
    // Only our own variables: OTEL_* and friends are read by telemetry.
    let ours: HashMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(&format!("{ENV_PREFIX}_")) && k != "MLMESH_CONFIG")
        .collect();
    let mut environment = Environment::with_prefix(ENV_PREFIX)
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(ours));
    if !list_keys.is_empty() {
        environment = environment.list_separator(",");
        for key in list_keys {
            environment = environment.with_list_parse_key(key);
        }
    }
    builder = builder.add_source(environment);
    Ok(builder.build()?.try_deserialize()?)
}

/// An environment as [`load`] takes it, from pairs (tests, tools).
pub fn env_of(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Settings of the gRPC server every service runs (section `[server]`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address the gRPC server listens on. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Address of the Prometheus `/metrics` HTTP endpoint; `""` or `off`
    /// disables it.
    #[serde(deserialize_with = "optional_addr")]
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM/SIGINT: how long in-flight calls may take to finish after
    /// health turns NOT_SERVING, in seconds, before the process exits anyway.
    pub shutdown_grace_secs: u64,
    /// Largest request message accepted, in bytes; larger ones get
    /// RESOURCE_EXHAUSTED from the transport before any work is done.
    pub max_request_bytes: usize,
    /// Most elements (messages, repeated values, map entries) one request
    /// may decode into, counted on the wire before decoding: two bytes of
    /// empty elements must not inflate to a struct each.
    pub max_request_elements: usize,
    /// Most concurrent calls per connection (HTTP/2 streams); lowered so
    /// that `streams × max_request_bytes ≤ max_connection_request_bytes`.
    pub max_concurrent_streams: u32,
    /// Memory bound of one connection's decoded requests, in bytes: with
    /// the defaults 64 streams × 16 MiB = 1 GiB.
    pub max_connection_request_bytes: u64,
    /// Open connections at once (lowered to fit the open-file limit); one
    /// beyond is closed at once.
    pub max_connections: usize,
    /// TCP keep-alive idle time, in seconds; 0 disables.
    pub tcp_keepalive_secs: u64,
    /// HTTP/2 PING interval on idle connections, in seconds; 0 disables.
    pub http2_keepalive_interval_secs: u64,
    /// How long a PING may go unanswered before the connection is closed.
    pub http2_keepalive_timeout_secs: u64,
    /// A write that waits this long for the peer to read fails the
    /// connection (a client that stopped reading), in seconds.
    pub write_stall_timeout_secs: u64,
    /// HTTP/1 request headers must arrive within this, in seconds.
    pub header_read_timeout_secs: u64,
    /// An HTTP request body must arrive whole within this, in seconds.
    pub body_timeout_secs: u64,
    /// A file holding the token that state-changing RPCs (registry writes,
    /// inference repository load/unload) must carry as
    /// `x-mlmesh-admin-token`; empty: they are open (loopback development).
    /// The token is never logged.
    pub admin_token_file: String,
    /// A file holding a second token, admitting the state-changing RPCs
    /// except those only an admin may call (the registry's Backup and
    /// Restore, an alias policy override): for CI jobs that push and
    /// promote. Travels in the same metadata; empty: no writer token.
    pub writer_token_file: String,
    /// TLS of the gRPC server (`[server.tls]`); plaintext when no
    /// certificate is set.
    pub tls: tls::ServerTlsSettings,
}

/// Deserializes an address, or `""` / `off` for none (environment variables cannot be unset
/// to mean "none", so a word is needed).
pub fn optional_addr<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<SocketAddr>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    match s.as_deref().map(str::trim) {
        None | Some("") | Some("off") => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            serde::de::Error::custom(format!(
                "{v:?} is not an address like 127.0.0.1:9051, nor \"off\""
            ))
        }),
    }
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9051))),
            shutdown_grace_secs: 30,
            max_request_bytes: 16 * 1024 * 1024,
            max_request_elements: mlmesh_proto::codec::DEFAULT_MAX_ELEMENTS,
            max_concurrent_streams: 1024,
            max_connection_request_bytes: 1 << 30,
            max_connections: 10_240,
            tcp_keepalive_secs: 60,
            http2_keepalive_interval_secs: 30,
            http2_keepalive_timeout_secs: 20,
            write_stall_timeout_secs: 60,
            header_read_timeout_secs: 10,
            body_timeout_secs: 60,
            admin_token_file: String::new(),
            writer_token_file: String::new(),
            tls: tls::ServerTlsSettings::default(),
        }
    }
}

impl ServerSettings {
    /// The defaults, listening on `127.0.0.1:grpc_port` with `/metrics` on
    /// `127.0.0.1:metrics_port`: each service has its own default ports so
    /// the whole mesh runs on one machine out of the box.
    pub fn on_ports(grpc_port: u16, metrics_port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], grpc_port)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], metrics_port))),
            ..Self::default()
        }
    }

    /// Settings for tests: everything on `127.0.0.1:0`, short grace period.
    pub fn ephemeral() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            shutdown_grace_secs: 10,
            ..Self::default()
        }
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }

    /// Streams per connection in force: the setting, lowered so that every
    /// stream's largest request fits `max_connection_request_bytes`.
    pub fn effective_streams(&self) -> u32 {
        let fit = self.max_connection_request_bytes / (self.max_request_bytes.max(1) as u64);
        self.max_concurrent_streams
            .min(u32::try_from(fit).unwrap_or(u32::MAX))
            .max(1)
    }

    pub fn http2_keepalive_interval(&self) -> Option<Duration> {
        (self.http2_keepalive_interval_secs > 0)
            .then(|| Duration::from_secs(self.http2_keepalive_interval_secs))
    }

    pub fn http2_keepalive_timeout(&self) -> Duration {
        Duration::from_secs(self.http2_keepalive_timeout_secs.max(1))
    }

    /// Checks values no type can express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_request_bytes < 1024 {
            return Err(SettingsError::Value {
                key: "server.max_request_bytes".into(),
                reason: format!("{} is below the minimum of 1024", self.max_request_bytes),
            });
        }
        if self.max_concurrent_streams == 0 {
            return Err(SettingsError::Value {
                key: "server.max_concurrent_streams".into(),
                reason: "must be at least 1".into(),
            });
        }
        if self.max_connection_request_bytes < self.max_request_bytes as u64 {
            return Err(SettingsError::Value {
                key: "server.max_connection_request_bytes".into(),
                reason: format!(
                    "{} is below server.max_request_bytes ({}): not one request would fit",
                    self.max_connection_request_bytes, self.max_request_bytes
                ),
            });
        }
        for (key, v) in [
            ("server.max_connections", self.max_connections as u64),
            (
                "server.max_request_elements",
                self.max_request_elements as u64,
            ),
            (
                "server.write_stall_timeout_secs",
                self.write_stall_timeout_secs,
            ),
            (
                "server.header_read_timeout_secs",
                self.header_read_timeout_secs,
            ),
            ("server.body_timeout_secs", self.body_timeout_secs),
        ] {
            if v == 0 {
                return Err(SettingsError::Value {
                    key: key.into(),
                    reason: "must be at least 1".into(),
                });
            }
        }
        Ok(())
    }
}

/// Log output format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable, for terminals.
    #[default]
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Logging settings (section `[telemetry]`). Trace export is configured by
/// the standard `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_SERVICE_NAME` variables.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    pub log_format: LogFormat,
    /// `tracing` filter directive, e.g. `info` or `info,mlmesh_embedding=debug`.
    /// `RUST_LOG`, when set, wins.
    pub log_level: String,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Pretty,
            log_level: "info".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default, Serialize, Deserialize, Debug)]
    #[serde(default)]
    struct Demo {
        server: ServerSettings,
        telemetry: TelemetrySettings,
    }

    use super::env_of as env;

    #[test]
    fn defaults_then_env() {
        let s: Demo = load(
            None,
            env(&[
                ("MLMESH_SERVER__LISTEN", "0.0.0.0:7000"),
                ("MLMESH_SERVER__SHUTDOWN_GRACE_SECS", "3"),
                ("OTHER_SERVER__LISTEN", "1.1.1.1:1"),
            ]),
            &[],
        )
        .expect("valid settings");
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:7000");
        assert_eq!(s.server.shutdown_grace_secs, 3);
        assert_eq!(s.server.max_request_bytes, 16 * 1024 * 1024);
    }

    #[test]
    fn file_then_env_wins() {
        let dir = std::env::temp_dir().join(format!("mlmesh-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[server]\nshutdown_grace_secs = 5\nmax_request_bytes = 2048\n",
        )
        .expect("write");
        let s: Demo = load(
            Some(&path),
            env(&[("MLMESH_SERVER__SHUTDOWN_GRACE_SECS", "9")]),
            &[],
        )
        .expect("valid settings");
        assert_eq!(s.server.shutdown_grace_secs, 9);
        assert_eq!(s.server.max_request_bytes, 2048);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn metrics_endpoint_can_be_turned_off() {
        for off in ["", "off"] {
            let s: Demo =
                load(None, env(&[("MLMESH_SERVER__METRICS_LISTEN", off)]), &[]).expect("valid");
            assert_eq!(s.server.metrics_listen, None, "{off:?}");
        }
        let s: Demo = load(
            None,
            env(&[("MLMESH_SERVER__METRICS_LISTEN", "127.0.0.1:9999")]),
            &[],
        )
        .expect("valid");
        assert_eq!(
            s.server.metrics_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 9999)))
        );
        let e = load::<Demo>(None, env(&[("MLMESH_SERVER__METRICS_LISTEN", "nope")]), &[])
            .expect_err("bad");
        assert!(e.to_string().contains("server.metrics_listen"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = load::<Demo>(
            None,
            env(&[("MLMESH_SERVER__SHUTDOWN_GRACE_SECS", "soon")]),
            &[],
        )
        .expect_err("must fail");
        let msg = err.to_string();
        assert!(msg.contains("server.shutdown_grace_secs"), "{msg}");
    }

    #[test]
    fn unknown_key_in_a_section_is_refused() {
        let err = load::<Demo>(None, env(&[("MLMESH_SERVER__LISTN", "1.2.3.4:5")]), &[])
            .expect_err("must fail");
        assert!(err.to_string().contains("listn"), "{err}");
    }
}
