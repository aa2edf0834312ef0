//! Typed settings of the registry (sections `[server]`, `[telemetry]`,
//! `[registry]`), loaded by `mlmesh_runtime::settings::load`.

use std::{path::PathBuf, time::Duration};

use mlmesh_runtime::{ServerSettings, SettingsError, TelemetrySettings, service::ServiceSettings};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default gRPC port (beside gateway 50050, embedding 50051, vector-search
/// 50052, inference 50053) and Prometheus port.
pub const DEFAULT_GRPC_PORT: u16 = 50054;
pub const DEFAULT_METRICS_PORT: u16 = 9054;

/// Everything the registry can be told.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
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
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySettings {
    /// Where the embedded storage lives: `registry.db` (SQLite: models,
    /// versions, aliases, events), `blobs/` (file contents by digest) and
    /// `uploads/` (bytes of uploads not yet committed).
    pub data_dir: PathBuf,
    /// Where models, versions, aliases and events are kept: empty for
    /// SQLite in `data_dir`, or a PostgreSQL connection string
    /// (`postgres://user:password@host/db`, or `host=/run/postgresql
    /// dbname=registry user=…`) shared by several replicas. Never logged
    /// with its password.
    pub metadata_url: DbUrl,
    /// Where file contents are kept: empty for the `blobs/` folder in
    /// `data_dir`, or `s3://bucket` / `s3://bucket/prefix` for an
    /// S3-compatible object store shared by several replicas (see
    /// `registry.s3`).
    pub blob_url: String,
    /// How to reach the object store of an `s3://` `blob_url`.
    pub s3: S3Settings,
    /// Most files in one version.
    pub max_files: usize,
    /// Largest file of a version, in bytes (refused at StartUpload).
    pub max_file_bytes: u64,
    /// Largest version (all its files), in bytes (refused at StartUpload).
    pub max_version_bytes: u64,
    /// Uploads open at once (started, not committed, aborted or expired);
    /// one more is refused at StartUpload.
    pub max_open_uploads: u64,
    /// Bytes the open uploads may declare in all (what staging can come
    /// to); an upload that would pass it is refused at StartUpload.
    pub max_staged_bytes: u64,
    /// Most bytes in one upload message's `data`.
    pub max_chunk_bytes: usize,
    /// Bytes per download message.
    pub download_chunk_bytes: usize,
    /// Downloads and backups streaming at once; one more is refused
    /// RESOURCE_EXHAUSTED.
    pub max_concurrent_sends: usize,
    /// A download or backup whose client takes nothing for this many
    /// seconds is ended (DEADLINE_EXCEEDED) and frees its slot.
    pub send_stall_secs: u64,
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
    /// Milliseconds between reads of the event log by an idle watcher, to
    /// see commits of other replicas (a shared PostgreSQL); this replica's
    /// own commits wake watchers at once.
    pub watch_poll_ms: u64,
    /// Default page size of the list calls (at most 1000).
    pub page_size: u32,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".mlmesh/registry"),
            metadata_url: DbUrl::default(),
            blob_url: String::new(),
            s3: S3Settings::default(),
            max_files: 10_000,
            max_file_bytes: 16 << 30,
            max_version_bytes: 64 << 30,
            max_open_uploads: 256,
            max_staged_bytes: 256 << 30,
            max_chunk_bytes: 4 * 1024 * 1024,
            download_chunk_bytes: 1024 * 1024,
            max_concurrent_sends: 64,
            send_stall_secs: 60,
            upload_expiry_secs: 24 * 3600,
            blob_grace_secs: 3600,
            housekeeping_secs: 60,
            event_retention: 100_000,
            watch_progress_secs: 10,
            watch_poll_ms: 1000,
            page_size: 100,
        }
    }
}

/// Section `[registry.s3]`. Empty values fall back to the standard AWS
/// environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, web identity and
/// instance credentials), as the AWS tools read it.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct S3Settings {
    /// The endpoint of an S3-compatible server (MinIO, Ceph, R2, …), e.g.
    /// `http://minio:9000`; empty for AWS itself.
    pub endpoint: String,
    /// The bucket's region; empty for the environment's or `us-east-1`.
    pub region: String,
    pub access_key_id: String,
    /// Never logged.
    pub secret_access_key: Secret,
    /// Allows `http://` endpoints (a server inside the cluster).
    pub allow_http: bool,
    /// `https://bucket.host/key` requests instead of `https://host/bucket/key`
    /// (AWS prefers it; most other servers want the path style).
    pub virtual_hosted_style: bool,
    /// Contents larger than this are sent as a multipart upload in parts of
    /// this many bytes (S3 allows 5 MiB to 5 GiB per part).
    pub part_bytes: usize,
    /// Parts of one content in flight at once (memory: this × part_bytes).
    pub part_concurrency: usize,
}

impl Default for S3Settings {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            region: String::new(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
            allow_http: false,
            virtual_hosted_style: false,
            part_bytes: 8 * 1024 * 1024,
            part_concurrency: 4,
        }
    }
}

/// A credential; `Debug` shows only whether it is set.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// A database connection string; its password never reaches a log.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct DbUrl(pub String);

impl DbUrl {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The string with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let s = &self.0;
        if let Some(rest) = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
        {
            if let Some((cred, host)) = rest.split_once('@')
                && let Some((user, _)) = cred.split_once(':')
            {
                let scheme = &s[..s.len() - rest.len()];
                return format!("{scheme}{user}:***@{host}");
            }
            return s.clone();
        }
        s.split_whitespace()
            .map(|kv| {
                if kv.starts_with("password=") {
                    "password=***".to_owned()
                } else {
                    kv.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl std::fmt::Debug for DbUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.redacted())
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
            ("max_file_bytes", self.max_file_bytes),
            ("max_version_bytes", self.max_version_bytes),
            ("max_open_uploads", self.max_open_uploads),
            ("max_staged_bytes", self.max_staged_bytes),
            ("max_chunk_bytes", self.max_chunk_bytes as u64),
            ("download_chunk_bytes", self.download_chunk_bytes as u64),
            ("max_concurrent_sends", self.max_concurrent_sends as u64),
            ("send_stall_secs", self.send_stall_secs),
            ("upload_expiry_secs", self.upload_expiry_secs),
            ("housekeeping_secs", self.housekeeping_secs),
            ("event_retention", self.event_retention),
            ("watch_progress_secs", self.watch_progress_secs),
            ("watch_poll_ms", self.watch_poll_ms),
            ("page_size", u64::from(self.page_size)),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        let url = &self.metadata_url.0;
        if !url.is_empty()
            && !url.starts_with("postgres://")
            && !url.starts_with("postgresql://")
            && !url.contains("host=")
        {
            return bad(
                "metadata_url",
                "expected empty (SQLite in data_dir), a postgres:// URL or a key=value string with host=".into(),
            );
        }
        if !self.blob_url.is_empty() {
            let rest = self.blob_url.strip_prefix("s3://").unwrap_or_default();
            if rest.split('/').next().is_none_or(str::is_empty) {
                return bad(
                    "blob_url",
                    "expected empty (a folder in data_dir) or s3://bucket[/prefix]".into(),
                );
            }
        }
        const MIN_PART: usize = 5 * 1024 * 1024;
        if self.s3.part_bytes < MIN_PART {
            return bad(
                "s3.part_bytes",
                format!("must be at least {MIN_PART} (S3's smallest part)"),
            );
        }
        if self.s3.part_concurrency == 0 {
            return bad("s3.part_concurrency", "must be at least 1".into());
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

impl ServiceSettings for Settings {
    const LIST_KEYS: &'static [&'static str] = &[];

    mlmesh_runtime::common_sections!();

    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.registry.validate(self.server.max_request_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mlmesh_runtime::settings::env_of as env;

    #[test]
    fn defaults_and_env() {
        let s = Settings::load(None, env(&[("MLMESH_REGISTRY__DATA_DIR", "/tmp/r")])).expect("ok");
        assert_eq!(s.registry.data_dir, PathBuf::from("/tmp/r"));
        assert_eq!(s.server.listen.port(), DEFAULT_GRPC_PORT);
    }

    #[test]
    fn passwords_are_never_printed() {
        for (url, shown) in [
            (
                "postgres://reg:s3cret@db:5432/r",
                "postgres://reg:***@db:5432/r",
            ),
            (
                "host=/run/pg user=reg password=s3cret dbname=r",
                "host=/run/pg user=reg password=*** dbname=r",
            ),
            ("postgres://db/r", "postgres://db/r"),
        ] {
            let u = DbUrl(url.into());
            assert_eq!(u.redacted(), shown);
            assert!(!format!("{u:?}").contains("s3cret"));
        }
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
        let e = Settings::load(None, env(&[("MLMESH_REGISTRY__BLOB_URL", "gs://b")]))
            .expect_err("scheme");
        assert!(e.to_string().contains("registry.blob_url"), "{e}");
        let e = Settings::load(None, env(&[("MLMESH_REGISTRY__S3__PART_BYTES", "1024")]))
            .expect_err("small part");
        assert!(e.to_string().contains("registry.s3.part_bytes"), "{e}");
    }

    #[test]
    fn s3_settings_from_env_and_secret_hidden() {
        let s = Settings::load(
            None,
            env(&[
                ("MLMESH_REGISTRY__BLOB_URL", "s3://models/prod"),
                ("MLMESH_REGISTRY__S3__ENDPOINT", "http://minio:9000"),
                ("MLMESH_REGISTRY__S3__ALLOW_HTTP", "true"),
                ("MLMESH_REGISTRY__S3__SECRET_ACCESS_KEY", "s3cret"),
            ]),
        )
        .expect("ok");
        assert_eq!(s.registry.s3.endpoint, "http://minio:9000");
        assert!(s.registry.s3.allow_http);
        assert_eq!(s.registry.s3.secret_access_key.0, "s3cret");
        assert!(!format!("{s:?}").contains("s3cret"));
    }
}
