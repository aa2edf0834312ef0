//! The default backend: the Qdrant engine in this process (`qdrant-edge`),
//! one edge shard per collection under `vector.data_dir`.
//!
//! On disk, `data_dir/<name>-<uuid>/` holds `collection.json` (our config,
//! written last, so a folder without it is an interrupted create; it names
//! the current shard folder), `shard/` or `shard-<uuid>/` (the engine's
//! files), `oplog` (see [`super::oplog`]) and, while a delete is being
//! finished, a `deleted` marker. Folder names carry a UUID so a name can
//! be reused while the old folder is still being removed.
//!
//! Threads: engine calls are synchronous and run on tokio's blocking pool.
//! Writes to one collection are serialized by its log mutex (log order =
//! engine order, which replay relies on). One maintenance thread checkpoints
//! (engine flush, then empty the log) and runs the engine's optimizers
//! (segment merges, HNSW builds) when a collection has had writes; searches
//! never wait for it.
//!
//! qdrant-edge 0.7.2 writes every update to a write-ahead log of its own
//! (`<shard>/wal`) that it never reads back at load and never truncates, and
//! whose operation numbers are the points' versions, so it cannot simply be
//! deleted. Once it outgrows `vector.engine_wal_limit_mb` and twice the
//! segment files, the maintenance thread compacts the collection: copies
//! every point into a fresh shard (whose log holds just that copy), replays
//! the writes made meanwhile from our operation log, and switches
//! `collection.json` to the new folder in one atomic rename.

//! The code is split by concern: `collection` (one open collection: its
//! log, engine calls, checkpoints), `compaction` (the rewrite into a fresh
//! shard), `maintenance` (the background loop), `text_index` (adding one
//! in place and filling it from payloads), `adapter` (the `Backend`
//! trait over them), `convert` (our model to the engine's and back) and
//! `layout` (files on disk).

mod adapter;
mod collection;
mod compaction;
mod convert;
mod layout;
mod maintenance;
mod text_index;

// What the parts define for each other.
use self::{collection::*, compaction::*, convert::*, layout::*, text_index::*};

use std::{
    collections::HashMap,
    fs,
    io::{self, Write as _},
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use ahash::AHashSet;
use async_trait::async_trait;
use qdrant_edge::{
    self as edge, CountRequest, EdgeConfig, EdgeOptimizersConfig, EdgeShard,
    EdgeVectorParamsBuilder, FieldCondition, HasIdCondition, HnswIndexConfig, JsonPath, Match,
    NamedQuery, PointInsertOperations, PointOperations, PointStructPersisted,
    QuantizationSearchParams, QueryEnum, ScalarQuantizationConfig, ScalarType, ScrollRequest,
    SearchParams, SearchRequest, UpdateOperation, ValueVariants, VectorInternal, VectorPersisted,
    VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
    external::ordered_float::OrderedFloat,
};
use serde::{Deserialize, Serialize};

use super::{
    Backend, Filled, Result, SparseOf,
    oplog::{Op, OpLog},
};
use crate::{
    error::{OpenError, VectorError},
    metrics::Metrics,
    model::{
        CollectionConfig, CollectionInfo, Condition, Distance, Filter, Hit, IndexStatus, Metadata,
        Payload, Point, PointId, PointSelector, Quantization, Query, Record, ScrollQuery,
        SearchQuery, SparseVector, TextIndex,
    },
    settings::VectorSettings,
};

const META_FILE: &str = "collection.json";
const DELETED_MARKER: &str = "deleted";
const SHARD_DIR: &str = "shard";
const OPLOG_FILE: &str = "oplog";
/// Written after the final checkpoint of a clean shutdown, removed at open:
/// its absence means the last run may have died mid-optimisation.
const CLEAN_FILE: &str = "clean-shutdown";
/// A checkpoint also happens between ticks once the log is this large.
const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;
/// INT8 quantization: the share of component values that keep full byte
/// resolution (the rest are clamped), a common choice for text embeddings.
const INT8_QUANTILE: f32 = 0.99;
/// The engine's write-ahead log folder inside a shard folder.
const ENGINE_WAL_DIR: &str = "wal";
/// The engine's segment folder inside a shard folder.
const ENGINE_SEGMENTS_DIR: &str = "segments";

fn default_shard_dir() -> String {
    SHARD_DIR.to_owned()
}

/// What `collection.json` holds.
#[derive(Serialize, Deserialize)]
struct Meta {
    name: String,
    config: CollectionConfig,
    #[serde(default)]
    metadata: Metadata,
    /// The folder holding the current shard (changed by a compaction).
    #[serde(default = "default_shard_dir")]
    shard_dir: String,
}

/// One open collection.
struct Collection {
    name: String,
    /// Changed only by adding a text index (under both locks below).
    config: RwLock<CollectionConfig>,
    metadata: Metadata,
    dir: PathBuf,
    /// Replaced (under both locks below) by a compaction; readers clone it.
    shard: RwLock<Arc<EdgeShard>>,
    /// Serializes writes: append to the log, then apply, in that order.
    log: Mutex<OpLog>,
    /// Held by checkpoints and optimisations: the engine's `flush` must not
    /// run while its optimizer swaps segments.
    maintenance: Mutex<()>,
    /// Writes arrived since the last optimisation pass.
    dirty: AtomicBool,
    /// Writes or an optimisation happened since the engine log's size was
    /// last compared with the segments'.
    wal_unchecked: AtomicBool,
    optimizing: AtomicBool,
}

/// The service's optimizer settings, applied to every collection when it is
/// created or opened (the engine persists them per shard; ours win).
#[derive(Clone, Copy, Debug)]
struct Tuning {
    indexing_threshold_kb: usize,
    /// 0: the engine's choice.
    segments: usize,
}

impl Tuning {
    fn of(settings: &VectorSettings) -> Self {
        Self {
            indexing_threshold_kb: settings.indexing_threshold_kb,
            segments: settings.segments,
        }
    }

    fn applied_to(self, current: EdgeOptimizersConfig) -> EdgeOptimizersConfig {
        EdgeOptimizersConfig {
            indexing_threshold: Some(self.indexing_threshold_kb),
            default_segment_number: Some(self.segments),
            ..current
        }
    }

    fn differs_from(self, current: &EdgeOptimizersConfig) -> bool {
        current.indexing_threshold != Some(self.indexing_threshold_kb)
            || current.default_segment_number != Some(self.segments)
    }
}

/// The embedded Qdrant engine.
pub struct EmbeddedBackend {
    root: PathBuf,
    sync_writes: bool,
    tuning: Tuning,
    collections: Arc<RwLock<HashMap<String, Arc<Collection>>>>,
    /// Serializes creates and deletes.
    catalog: tokio::sync::Mutex<()>,
    stop: Arc<AtomicBool>,
    maintenance: Mutex<Option<thread::JoinHandle<()>>>,
    checkpoint_requested: Arc<AtomicBool>,
}

/// What one compaction did.
#[derive(Debug)]
struct Compacted {
    wal_after: u64,
    points: usize,
    replayed: usize,
}

fn storage(e: impl std::fmt::Display) -> VectorError {
    VectorError::Storage(e.to_string())
}

/// The background checkpoint and optimisation loop.
struct Maintenance {
    collections: Arc<RwLock<HashMap<String, Arc<Collection>>>>,
    stop: Arc<AtomicBool>,
    checkpoint_requested: Arc<AtomicBool>,
    /// `vector.engine_wal_limit_mb`, in bytes.
    wal_limit_bytes: u64,
    metrics: Metrics,
}
