//! Typed settings of the vector-search service (sections `[server]`,
//! `[telemetry]`, `[vector]`, `[qdrant]`), loaded by
//! `mlmesh_runtime::settings::load`.

use std::{fmt, path::PathBuf};

use mlmesh_runtime::{ServerSettings, SettingsError, TelemetrySettings, service::ServiceSettings};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub use crate::model::{Quantization, TextIndex};

/// Default gRPC and `/metrics` ports of the vector-search service.
pub const DEFAULT_GRPC_PORT: u16 = 50052;
pub const DEFAULT_METRICS_PORT: u16 = 9052;

/// Everything the vector-search service can be told.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub vector: VectorSettings,
    pub qdrant: QdrantSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::on_ports(DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT),
            telemetry: TelemetrySettings::default(),
            vector: VectorSettings::default(),
            qdrant: QdrantSettings::default(),
        }
    }
}

/// Which engine stores the vectors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The Qdrant engine in this process (`qdrant-edge`), data under `vector.data_dir`.
    #[default]
    Embedded,
    /// A Qdrant server or cluster over gRPC (`[qdrant]` section).
    Qdrant,
}

/// Section `[vector]`: engine choice, storage and request limits.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct VectorSettings {
    pub backend: BackendKind,
    /// Embedded engine: folder holding one sub-folder per collection.
    pub data_dir: PathBuf,
    /// Embedded engine: fsync the operation log before acknowledging a
    /// write, so acknowledged writes also survive power loss (a process crash
    /// never loses them either way). Costs one fsync per write call.
    pub sync_writes: bool,
    /// Embedded engine: seconds between checkpoints (engine flush, then the
    /// operation log is emptied) and optimisation passes.
    pub checkpoint_interval_secs: u64,
    /// Embedded engine: a segment bigger than this many kilobytes of vectors
    /// gets an HNSW graph (Qdrant's `indexing_threshold_kb`); smaller ones are
    /// searched exactly. 10000 KB ≈ 6 500 vectors of dimension 384.
    pub indexing_threshold_kb: usize,
    /// Embedded engine: the engine keeps its own write-ahead log and never
    /// truncates it (qdrant-edge 0.7.2), so a collection is rewritten into a
    /// fresh shard once that log is bigger than this many MiB *and* more
    /// than twice the collection's segment files. 0 drops the MiB floor.
    pub engine_wal_limit_mb: u64,
    /// Embedded engine: segments a collection's points are merged into
    /// (Qdrant's `default_segment_number`; 0: the engine's choice, one per
    /// two CPUs and at least 2). The embedded engine searches a collection's
    /// segments one after another, so each one adds a graph search to every
    /// query; more segments make each rebuild after writes smaller.
    pub segments: usize,
    /// Quantization of collections created without one: `none` or `int8`.
    pub quantization: Quantization,
    /// Text index of collections created without one: `bm25` (texts become
    /// BM25 sparse vectors; Search can be dense, sparse or hybrid),
    /// `sparse` (client-computed sparse vectors) or `none` (dense only).
    pub text_index: TextIndex,
    /// Longest `text` of a point or a search, in bytes.
    pub max_text_bytes: usize,
    /// Most terms of a sparse vector given by a client (a point's or a
    /// query's); texts are bounded by `max_text_bytes` instead.
    pub max_sparse_terms: usize,
    /// HNSW defaults for collections created without them.
    pub hnsw_m: usize,
    pub hnsw_ef_construct: usize,
    /// Most points in one Upsert (and ids in one Delete).
    pub max_upsert_points: usize,
    /// Most hits one search may ask for (`limit`).
    pub max_search_limit: usize,
    /// Most searches in one SearchBatch.
    pub max_batch_searches: usize,
    /// Most points in one Scroll page or Get.
    pub max_page_size: usize,
    /// Most conditions in one filter, counting nested ones.
    pub max_filter_conditions: usize,
    /// Most calls doing storage work at once; more get RESOURCE_EXHAUSTED.
    pub max_in_flight: usize,
}

impl Default for VectorSettings {
    fn default() -> Self {
        Self {
            backend: BackendKind::Embedded,
            data_dir: PathBuf::from(".cache/mlmesh/vector-data"),
            sync_writes: false,
            checkpoint_interval_secs: 5,
            indexing_threshold_kb: 10_000,
            engine_wal_limit_mb: 256,
            segments: 0,
            quantization: Quantization::None,
            text_index: TextIndex::Bm25,
            max_text_bytes: 65_536,
            max_sparse_terms: 4096,
            hnsw_m: 16,
            hnsw_ef_construct: 100,
            max_upsert_points: 10_000,
            max_search_limit: 1000,
            max_batch_searches: 64,
            max_page_size: 1000,
            max_filter_conditions: 256,
            max_in_flight: 512,
        }
    }
}

/// Section `[qdrant]`: the cluster used when `vector.backend = "qdrant"`.
#[derive(Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QdrantSettings {
    /// gRPC URL of any node (port 6334).
    pub url: String,
    /// API key; empty for none. Never logged.
    pub api_key: String,
    /// Per-call timeout, in seconds.
    pub timeout_secs: u64,
    /// Shards and replicas of collections created through this service.
    pub shard_number: u32,
    pub replication_factor: u32,
}

impl Default for QdrantSettings {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:6334".into(),
            api_key: String::new(),
            timeout_secs: 30,
            shard_number: 1,
            replication_factor: 1,
        }
    }
}

impl fmt::Debug for QdrantSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantSettings")
            .field("url", &self.url)
            .field(
                "api_key",
                &if self.api_key.is_empty() {
                    ""
                } else {
                    "<redacted>"
                },
            )
            .field("timeout_secs", &self.timeout_secs)
            .field("shard_number", &self.shard_number)
            .field("replication_factor", &self.replication_factor)
            .finish()
    }
}

/// Largest dimension accepted (Qdrant's own limit).
pub const MAX_DIMENSION: usize = 65_536;

impl VectorSettings {
    /// Checks what the types cannot; errors name the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, reason: String| {
            Err(SettingsError::Value {
                key: format!("vector.{key}"),
                reason,
            })
        };
        for (key, v) in [
            (
                "checkpoint_interval_secs",
                self.checkpoint_interval_secs as usize,
            ),
            ("max_upsert_points", self.max_upsert_points),
            ("max_search_limit", self.max_search_limit),
            ("max_batch_searches", self.max_batch_searches),
            ("max_text_bytes", self.max_text_bytes),
            ("max_sparse_terms", self.max_sparse_terms),
            ("max_page_size", self.max_page_size),
            ("max_filter_conditions", self.max_filter_conditions),
            ("max_in_flight", self.max_in_flight),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.segments > 64 {
            return bad("segments", format!("{} is more than 64", self.segments));
        }
        if !(2..=128).contains(&self.hnsw_m) {
            return bad("hnsw_m", format!("{} is outside 2..=128", self.hnsw_m));
        }
        if !(4..=4096).contains(&self.hnsw_ef_construct) {
            return bad(
                "hnsw_ef_construct",
                format!("{} is outside 4..=4096", self.hnsw_ef_construct),
            );
        }
        if self.backend == BackendKind::Embedded && self.data_dir.as_os_str().is_empty() {
            return bad("data_dir", "must not be empty".into());
        }
        Ok(())
    }
}

impl QdrantSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, reason: String| {
            Err(SettingsError::Value {
                key: format!("qdrant.{key}"),
                reason,
            })
        };
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return bad(
                "url",
                format!("{:?} must start with http:// or https://", self.url),
            );
        }
        if self.timeout_secs == 0 {
            return bad("timeout_secs", "must be at least 1".into());
        }
        if self.shard_number == 0 || self.replication_factor == 0 {
            return bad(
                "shard_number",
                "shard_number and replication_factor must be at least 1".into(),
            );
        }
        Ok(())
    }
}

impl Settings {
    /// Settings for tests: ephemeral ports, data under `data_dir`, quick checkpoints.
    pub fn for_tests(data_dir: PathBuf) -> Self {
        Self {
            server: ServerSettings::ephemeral(),
            vector: VectorSettings {
                data_dir,
                checkpoint_interval_secs: 1,
                ..VectorSettings::default()
            },
            ..Self::default()
        }
    }
}

impl ServiceSettings for Settings {
    const LIST_KEYS: &'static [&'static str] = &[];

    mlmesh_runtime::common_sections!();

    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.vector.validate()?;
        if self.vector.backend == BackendKind::Qdrant {
            self.qdrant.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    use mlmesh_runtime::settings::env_of as env;

    #[test]
    fn defaults_are_valid_and_on_their_own_ports() {
        let s = Settings::load(None, HashMap::new()).expect("defaults");
        assert_eq!(s.server.listen.port(), DEFAULT_GRPC_PORT);
        assert_eq!(s.vector.backend, BackendKind::Embedded);
    }

    #[test]
    fn environment_selects_the_backend_and_limits() {
        let s = Settings::load(
            None,
            env(&[
                ("MLMESH_VECTOR__BACKEND", "qdrant"),
                ("MLMESH_QDRANT__URL", "http://qdrant:6334"),
                ("MLMESH_QDRANT__API_KEY", "s3cret"),
                ("MLMESH_VECTOR__MAX_SEARCH_LIMIT", "50"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.vector.backend, BackendKind::Qdrant);
        assert_eq!(s.vector.max_search_limit, 50);
        let shown = format!("{s:?}");
        assert!(!shown.contains("s3cret"), "api key leaked: {shown}");
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v, key) in [
            ("MLMESH_VECTOR__BACKEND", "faiss", "backend"),
            ("MLMESH_VECTOR__HNSW_M", "1", "vector.hnsw_m"),
            ("MLMESH_VECTOR__MAX_IN_FLIGHT", "0", "vector.max_in_flight"),
            ("MLMESH_VECTOR__NOPE", "1", "nope"),
        ] {
            let e = Settings::load(None, env(&[(k, v)]))
                .expect_err(k)
                .to_string();
            assert!(e.contains(key), "{k}={v}: {e}");
        }
        let e = Settings::load(
            None,
            env(&[
                ("MLMESH_VECTOR__BACKEND", "qdrant"),
                ("MLMESH_QDRANT__URL", "qdrant:6334"),
            ]),
        )
        .expect_err("bad url")
        .to_string();
        assert!(e.contains("qdrant.url"), "{e}");
    }
}
