//! Typed settings of the registry (sections `[server]`, `[telemetry]`,
//! `[registry]`), loaded by `mlmesh_runtime::settings::load`.

use std::{collections::HashMap, path::PathBuf, time::Duration};

use mlmesh_runtime::{ServerSettings, SettingsError, TelemetrySettings, settings};
use serde::{Deserialize, Serialize};

/// Default gRPC port (beside gateway 50050, embedding 50051, vector-search
/// 50052, inference 50053) and Prometheus port.
pub const DEFAULT_GRPC_PORT: u16 = 50054;
pub const DEFAULT_METRICS_PORT: u16 = 9054;

/// Everything the registry can be told.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub registry: RegistrySettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            // Upload chunks are at most `registry.max_chunk_bytes` (4 MiB);
            // the message limit leaves room for the envelope.
            server: ServerSettings {
                max_request_bytes: 8 * 1024 * 1024,
                ..ServerSettings::on_ports(DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT)
            },
            telemetry: TelemetrySettings::default(),
            registry: RegistrySettings::default(),
        }
    }
}

/// Section `[registry]`: storage, limits and housekeeping.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Where the embedded storage lives: `registry.db` (SQLite: models,
    /// versions, aliases, events), `blobs/` (file contents by digest) and
    /// `uploads/` (bytes of uploads not yet committed).
    pub data_dir: PathBuf,
    /// Most files in one version.
    pub max_files: usize,
    /// Most bytes in one upload message's `data`.
    pub max_chunk_bytes: usize,
    /// Bytes per download message.
    pub download_chunk_bytes: usize,
    /// An upload not committed within this many seconds of its start is
    /// dropped with its bytes.
    pub upload_expiry_secs: u64,
    /// A file no version holds any more is removed this many seconds after
    /// its release (a new upload of the same bytes in that time reuses it).
    pub blob_grace_secs: u64,
    /// Seconds between housekeeping passes (expired uploads, released
    /// files, old events).
    pub housekeeping_secs: u64,
    /// Events kept for Watch; older revisions answer OUT_OF_RANGE.
    pub event_retention: u64,
    /// Seconds between PROGRESS events sent to an idle watcher.
    pub watch_progress_secs: u64,
    /// Default page size of the list calls (at most 1000).
    pub page_size: u32,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".mlmesh/registry"),
            max_files: 10_000,
            max_chunk_bytes: 4 * 1024 * 1024,
            download_chunk_bytes: 1024 * 1024,
            upload_expiry_secs: 24 * 3600,
            blob_grace_secs: 3600,
            housekeeping_secs: 60,
            event_retention: 100_000,
            watch_progress_secs: 10,
            page_size: 100,
        }
    }
}

/// Most items a list call returns in one page.
pub const MAX_PAGE_SIZE: u32 = 1000;

impl RegistrySettings {
    pub fn upload_expiry(&self) -> Duration {
        Duration::from_secs(self.upload_expiry_secs)
    }

    pub fn blob_grace(&self) -> Duration {
        Duration::from_secs(self.blob_grace_secs)
    }

    /// Checks what the types cannot; errors name the key.
    pub fn validate(&self, max_request_bytes: usize) -> Result<(), SettingsError> {
        let bad = |key: &str, reason: String| {
            Err(SettingsError::Value {
                key: format!("registry.{key}"),
                reason,
            })
        };
        for (key, v) in [
            ("max_files", self.max_files as u64),
            ("max_chunk_bytes", self.max_chunk_bytes as u64),
            ("download_chunk_bytes", self.download_chunk_bytes as u64),
            ("upload_expiry_secs", self.upload_expiry_secs),
            ("housekeeping_secs", self.housekeeping_secs),
            ("event_retention", self.event_retention),
            ("watch_progress_secs", self.watch_progress_secs),
            ("page_size", u64::from(self.page_size)),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.page_size > MAX_PAGE_SIZE {
            return bad("page_size", format!("must be at most {MAX_PAGE_SIZE}"));
        }
        if self.max_chunk_bytes + 64 * 1024 > max_request_bytes {
            return bad(
                "max_chunk_bytes",
                format!(
                    "{} does not fit in server.max_request_bytes ({max_request_bytes}) with 64 KiB to spare",
                    self.max_chunk_bytes
                ),
            );
        }
        Ok(())
    }
}

impl Settings {
    /// Compiled defaults → `file` → `MLMESH_*` entries of `env`, validated.
    pub fn load(
        file: Option<&std::path::Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, SettingsError> {
        let s: Self = settings::load(file, env, &[])?;
        s.server.validate()?;
        s.registry.validate(s.server.max_request_bytes)?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_and_env() {
        let s = Settings::load(None, env(&[("MLMESH_REGISTRY__DATA_DIR", "/tmp/r")])).expect("ok");
        assert_eq!(s.registry.data_dir, PathBuf::from("/tmp/r"));
        assert_eq!(s.server.listen.port(), DEFAULT_GRPC_PORT);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load(
            None,
            env(&[("MLMESH_REGISTRY__MAX_CHUNK_BYTES", "16777216")]),
        )
        .expect_err("too big");
        assert!(e.to_string().contains("registry.max_chunk_bytes"), "{e}");
        let e = Settings::load(None, env(&[("MLMESH_REGISTRY__PAGE_SIZE", "0")])).expect_err("0");
        assert!(e.to_string().contains("registry.page_size"), "{e}");
    }
}
