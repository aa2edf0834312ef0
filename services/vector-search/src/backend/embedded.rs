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
    NamedQuery, PointInsertOperations, PointOperations, PointStructPersisted, QueryEnum,
    ScrollRequest, SearchParams, SearchRequest, UpdateOperation, ValueVariants,
    VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
    external::ordered_float::OrderedFloat,
};
use serde::{Deserialize, Serialize};

use super::{
    Backend, Result,
    oplog::{Op, OpLog},
};
use crate::{
    error::{OpenError, VectorError},
    metrics::Metrics,
    model::{
        CollectionConfig, CollectionInfo, Condition, Distance, Filter, Hit, IndexStatus, Metadata,
        Payload, Point, PointId, PointSelector, Record, ScrollQuery, SearchQuery,
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
    config: CollectionConfig,
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

/// The embedded Qdrant engine.
pub struct EmbeddedBackend {
    root: PathBuf,
    sync_writes: bool,
    indexing_threshold_kb: usize,
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

impl EmbeddedBackend {
    /// Opens every collection under `settings.data_dir`, replays their
    /// operation logs, and starts the maintenance thread. Blocking.
    pub fn open(settings: &VectorSettings, metrics: Metrics) -> Result<Self, OpenError> {
        let root = settings.data_dir.clone();
        let shown = root.display().to_string();
        let dir_err = |e: io::Error| OpenError::DataDir {
            path: shown.clone(),
            reason: e.to_string(),
        };
        fs::create_dir_all(&root).map_err(dir_err)?;
        let mut collections = HashMap::new();
        for entry in fs::read_dir(&root).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            if !path.is_dir() {
                continue;
            }
            if path.join(DELETED_MARKER).exists() || !path.join(META_FILE).exists() {
                tracing::info!(path = %path.display(), "removing a deleted or half-created collection");
                fs::remove_dir_all(&path).map_err(dir_err)?;
                continue;
            }
            let started = Instant::now();
            let c = Collection::open(&path, settings.sync_writes, settings.indexing_threshold_kb)?;
            tracing::info!(
                collection = %c.name,
                path = %path.display(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "collection loaded"
            );
            if let Some(other) = collections.insert(c.name.clone(), Arc::new(c)) {
                return Err(OpenError::Collection {
                    name: other.name.clone(),
                    path: path.display().to_string(),
                    reason: format!("a second folder ({}) claims this name", other.dir.display()),
                });
            }
        }
        let backend = Self {
            root,
            sync_writes: settings.sync_writes,
            indexing_threshold_kb: settings.indexing_threshold_kb,
            collections: Arc::new(RwLock::new(collections)),
            catalog: tokio::sync::Mutex::new(()),
            stop: Arc::new(AtomicBool::new(false)),
            maintenance: Mutex::new(None),
            checkpoint_requested: Arc::new(AtomicBool::new(false)),
        };
        let interval = Duration::from_secs(settings.checkpoint_interval_secs);
        let worker = Maintenance {
            collections: Arc::clone(&backend.collections),
            stop: Arc::clone(&backend.stop),
            checkpoint_requested: Arc::clone(&backend.checkpoint_requested),
            wal_limit_bytes: settings.engine_wal_limit_mb.saturating_mul(1024 * 1024),
            metrics,
        };
        let handle = thread::Builder::new()
            .name("vector-maintenance".into())
            .spawn(move || worker.run(interval))
            .map_err(dir_err)?;
        if let Ok(mut m) = backend.maintenance.lock() {
            *m = Some(handle);
        }
        Ok(backend)
    }

    fn collection(&self, name: &str) -> Result<Arc<Collection>> {
        self.collections
            .read()
            .map_err(|_| storage("collection table poisoned"))?
            .get(name)
            .cloned()
            .ok_or_else(|| VectorError::CollectionNotFound { name: name.into() })
    }

    /// Runs `f` on the blocking pool with the named collection.
    async fn with<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(&Collection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let c = self.collection(name)?;
        tokio::task::spawn_blocking(move || f(&c))
            .await
            .map_err(|e| storage(format!("engine task failed: {e}")))?
    }

    fn edge_config(&self, config: &CollectionConfig) -> EdgeConfig {
        let hnsw = HnswIndexConfig {
            m: config.hnsw.m,
            ef_construct: config.hnsw.ef_construct,
            ..HnswIndexConfig::default()
        };
        EdgeConfig::builder()
            .vector(
                edge::DEFAULT_VECTOR_NAME,
                EdgeVectorParamsBuilder::new(config.dimension, edge_distance(config.distance))
                    .build(),
            )
            .hnsw_config(hnsw)
            .optimizers(EdgeOptimizersConfig {
                indexing_threshold: Some(self.indexing_threshold_kb),
                ..EdgeOptimizersConfig::default()
            })
            .build()
    }
}

impl Collection {
    fn open(
        dir: &Path,
        sync_writes: bool,
        indexing_threshold_kb: usize,
    ) -> Result<Self, OpenError> {
        let fail = |name: &str, reason: String| OpenError::Collection {
            name: name.to_owned(),
            path: dir.display().to_string(),
            reason,
        };
        let meta: Meta = fs::read(dir.join(META_FILE))
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|e| fail("?", format!("{META_FILE}: {e}")))?;
        let name = meta.name;
        remove_stale_shards(dir, &meta.shard_dir)
            .map_err(|e| fail(&name, format!("removing an old shard folder: {e}")))?;
        let shard = EdgeShard::load(&dir.join(&meta.shard_dir), None)
            .map_err(|e| fail(&name, format!("engine: {e}")))?;
        // The engine persists its optimizer settings per shard; the
        // service's setting wins, so changing it takes effect at restart.
        let optimizers = shard.config().optimizers.clone();
        if optimizers.indexing_threshold != Some(indexing_threshold_kb) {
            shard
                .set_optimizers_config(EdgeOptimizersConfig {
                    indexing_threshold: Some(indexing_threshold_kb),
                    ..optimizers
                })
                .map_err(|e| fail(&name, format!("engine config: {e}")))?;
        }
        let (log, ops) = OpLog::open(&dir.join(OPLOG_FILE), sync_writes)
            .map_err(|e| fail(&name, format!("operation log: {e}")))?;
        let replayed = ops.len();
        let c = Self {
            name: name.clone(),
            config: meta.config,
            metadata: meta.metadata,
            dir: dir.to_owned(),
            shard: RwLock::new(Arc::new(shard)),
            log: Mutex::new(log),
            maintenance: Mutex::new(()),
            dirty: AtomicBool::new(replayed > 0),
            wal_unchecked: AtomicBool::new(true),
            optimizing: AtomicBool::new(false),
        };
        for op in ops {
            if let Err(e) = c.apply(op) {
                // The record was logged but the engine refused it at the time
                // too (the client got the error): nothing to restore.
                tracing::warn!(collection = %name, error = %e, "skipping a logged operation the engine refuses");
            }
        }
        // Only a run that did not end cleanly can have left duplicates; the
        // marker is removed (durably) before anything else can happen.
        let clean = dir.join(CLEAN_FILE);
        let repaired = if clean.exists() {
            fs::remove_file(&clean)
                .and_then(|()| fs::File::open(dir)?.sync_all())
                .map_err(|e| fail(&name, format!("{CLEAN_FILE}: {e}")))?;
            0
        } else {
            c.repair_duplicates()
                .map_err(|e| fail(&name, format!("repairing duplicated points: {e}")))?
        };
        if repaired > 0 {
            tracing::info!(collection = %name, points = repaired, "rewrote points held by more than one segment");
        }
        if replayed > 0 || repaired > 0 {
            if replayed > 0 {
                tracing::info!(collection = %name, operations = replayed, "replayed the operation log");
            }
            c.checkpoint().map_err(|e| fail(&name, e.to_string()))?;
        }
        Ok(c)
    }

    /// A crash while the engine's optimizer swaps segments can leave a point
    /// in both the new segment and an old one; qdrant-edge 0.7.2 does not
    /// deduplicate at load (Qdrant's server does). Searches and exact counts
    /// still see each id once, but per-segment counts (`info`) see it twice.
    /// Rewriting every point (delete, then upsert) removes the extra copies.
    /// Returns the points rewritten
    /// (0 when there were no duplicates, the normal case: one count each).
    /// Runs only when the last run did not end cleanly (no `CLEAN_FILE`).
    fn repair_duplicates(&self) -> Result<usize> {
        let listed = self.shard().info().points_count;
        // Per-segment sums (info, and count, which also adds per segment)
        // see a duplicated id twice; scroll merges ids across segments.
        let mut exact = 0;
        self.for_each_page(None, 10_000, false, |records| {
            exact += records.len();
            Ok(())
        })?;
        if listed == exact {
            return Ok(0);
        }
        tracing::warn!(
            collection = %self.name,
            segments_total = listed,
            distinct = exact,
            "points held by more than one segment (crash during optimisation); rewriting them"
        );
        let mut rewritten = 0;
        self.for_each_page(None, 1000, true, |records| {
            let points: Vec<Point> = records.into_iter().filter_map(point_of).collect();
            rewritten += points.len();
            // Delete removes an id from every segment (an upsert would update
            // both copies in place when both segments are appendable), then
            // the upsert writes it once. The upsert is logged first, so a
            // crash between the two replays it and loses nothing.
            let ids: Vec<PointId> = points.iter().map(|p| p.id).collect();
            let upsert = Op::Upsert(points);
            self.log
                .lock()
                .map_err(|_| storage("log lock poisoned"))?
                .append(&upsert)
                .map_err(storage)?;
            self.apply(Op::Delete(ids))?;
            self.apply(upsert)
        })?;
        let after = self.shard().info().points_count;
        if after != exact {
            // Searches and counts are right either way; only `info` is off.
            tracing::warn!(collection = %self.name, listed = after, distinct = exact, "segment counts still differ after the rewrite");
        }
        self.dirty.store(true, Ordering::Release);
        Ok(rewritten)
    }

    /// The current shard (a compaction may replace it; the clone keeps the
    /// one a call started with alive until the call ends).
    fn shard(&self) -> Arc<EdgeShard> {
        match self.shard.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    fn apply(&self, op: Op) -> Result<()> {
        apply_to(&self.shard(), op)
    }

    /// Logs `op`, then applies it; durable when this returns Ok.
    fn write(&self, op: Op) -> Result<u64> {
        let mut log = self.log.lock().map_err(|_| storage("log lock poisoned"))?;
        self.write_locked(&mut log, op)
    }

    fn write_locked(&self, log: &mut OpLog, op: Op) -> Result<u64> {
        log.append(&op).map_err(storage)?;
        self.apply(op)?;
        self.dirty.store(true, Ordering::Release);
        self.wal_unchecked.store(true, Ordering::Release);
        Ok(log.len())
    }

    /// Makes the engine files hold everything logged, then empties the log.
    fn checkpoint(&self) -> Result<()> {
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| storage("maintenance lock poisoned"))?;
        let mut log = self.log.lock().map_err(|_| storage("log lock poisoned"))?;
        if log.is_empty() {
            return Ok(());
        }
        // The engine's flush panics instead of returning errors; the log is
        // only emptied after it succeeded, so a failure loses nothing.
        std::panic::catch_unwind(AssertUnwindSafe(|| self.shard().flush()))
            .map_err(|_| storage("engine flush failed"))?;
        log.reset().map_err(storage)
    }

    /// Runs the engine's optimizers to completion if there were writes.
    fn optimize(&self) -> Result<bool> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| storage("maintenance lock poisoned"))?;
        self.optimizing.store(true, Ordering::Release);
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| self.shard().optimize()));
        self.optimizing.store(false, Ordering::Release);
        match result {
            Ok(r) => r.map_err(storage),
            Err(_) => Err(storage("engine optimizer panicked")),
        }
    }

    fn info(&self) -> CollectionInfo {
        let info = self.shard().info();
        let status = if self.optimizing.load(Ordering::Acquire) {
            IndexStatus::Optimizing
        } else if self.dirty.load(Ordering::Acquire) {
            IndexStatus::Pending
        } else {
            IndexStatus::Ready
        };
        CollectionInfo {
            name: self.name.clone(),
            config: self.config,
            points_count: info.points_count as u64,
            indexed_vectors_count: info.indexed_vectors_count as u64,
            segments_count: info.segments_count as u32,
            status,
            metadata: self.metadata.clone(),
        }
    }

    /// Every id matching `filter` (for delete-by-filter, logged as ids).
    fn matching_ids(&self, filter: edge::Filter) -> Result<Vec<PointId>> {
        let mut ids = Vec::new();
        self.for_each_page(Some(filter), 4096, false, |page| {
            ids.extend(page.into_iter().map(|r| from_edge_id(r.id)));
            Ok(())
        })?;
        Ok(ids)
    }

    /// Pages through every point (matching `filter`), `page` at a time,
    /// with payload and vector when `with_data`, handing each page to
    /// `each`. Paging is by id, so `each` may rewrite the points it gets.
    fn for_each_page(
        &self,
        filter: Option<edge::Filter>,
        page: usize,
        with_data: bool,
        each: impl FnMut(Vec<edge::Record>) -> Result<()>,
    ) -> Result<()> {
        for_each_page_in(&self.shard(), filter, page, with_data, each)
    }

    /// Sizes on disk of the engine's own log and of its segments, in bytes
    /// actually allocated (the log's files are sparse, 32 MiB apiece).
    fn engine_sizes(&self) -> (u64, u64) {
        let shard = self.shard();
        (
            allocated_bytes(&shard.path().join(ENGINE_WAL_DIR)),
            allocated_bytes(&shard.path().join(ENGINE_SEGMENTS_DIR)),
        )
    }

    /// Rewrites the collection into a fresh shard folder, which drops the
    /// engine's ever-growing log. Writes go on meanwhile (into the old
    /// shard and our log); they are replayed into the new shard under the
    /// log lock just before the switch, so they wait only for that replay.
    /// Searches never wait. A crash at any point leaves either the old
    /// shard with the whole operation log, or the new one: the switch is
    /// the atomic rewrite of `collection.json`.
    fn compact(&self) -> Result<Compacted> {
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| storage("maintenance lock poisoned"))?;
        let old = self.shard();
        // Checkpoints need the maintenance lock we hold, so the log is not
        // emptied before the replay below reads from `mark`.
        let mark = self
            .log
            .lock()
            .map_err(|_| storage("log lock poisoned"))?
            .len();
        let folder = format!("{SHARD_DIR}-{}", uuid::Uuid::new_v4().simple());
        let path = self.dir.join(&folder);
        let built = (|| -> Result<(Arc<EdgeShard>, usize, usize)> {
            let config = old.config().clone();
            fs::create_dir_all(&path).map_err(storage)?;
            let new = EdgeShard::new(&path, config).map_err(storage)?;
            let mut points = 0;
            for_each_page_in(&old, None, 1000, true, |records| {
                let page: Vec<Point> = records.into_iter().filter_map(point_of).collect();
                points += page.len();
                apply_to(&new, Op::Upsert(page))
            })?;
            let mut log = self.log.lock().map_err(|_| storage("log lock poisoned"))?;
            let later = log.read_from(mark).map_err(storage)?;
            let replayed = later.len();
            for op in later {
                if let Err(e) = apply_to(&new, op) {
                    // As at open: the engine refused it then too.
                    tracing::warn!(collection = %self.name, error = %e, "skipping a logged operation the engine refuses");
                }
            }
            std::panic::catch_unwind(AssertUnwindSafe(|| new.flush()))
                .map_err(|_| storage("engine flush failed"))?;
            let meta = Meta {
                name: self.name.clone(),
                config: self.config,
                metadata: self.metadata.clone(),
                shard_dir: folder.clone(),
            };
            write_atomic(
                &self.dir.join(META_FILE),
                &serde_json::to_vec_pretty(&meta).map_err(storage)?,
            )
            .map_err(storage)?;
            let new = Arc::new(new);
            match self.shard.write() {
                Ok(mut s) => *s = Arc::clone(&new),
                Err(p) => *p.into_inner() = Arc::clone(&new),
            }
            // The new shard holds (flushed) everything the log held.
            if let Err(e) = log.reset() {
                tracing::warn!(collection = %self.name, error = %e, "cannot empty the operation log after compaction; it is replayed (harmlessly) at the next start");
            }
            Ok((new, points, replayed))
        })();
        let (new, points, replayed) = match built {
            Ok(b) => b,
            Err(e) => {
                if let Err(rm) = fs::remove_dir_all(&path) {
                    tracing::warn!(path = %path.display(), error = %rm, "cannot remove an abandoned shard folder; it is removed at the next start");
                }
                return Err(e);
            }
        };
        let wal_after = allocated_bytes(&new.path().join(ENGINE_WAL_DIR));
        // Calls that cloned the old shard finish on it; its folder goes once
        // they have (or at the next start, if one outlives the wait).
        let old_path = old.path().to_owned();
        // The old shard's drop flushes into its own folder, still there.
        if drop_when_unique(old, Duration::from_secs(60)) {
            if let Err(e) = fs::remove_dir_all(&old_path) {
                tracing::warn!(path = %old_path.display(), error = %e, "cannot remove the old shard folder; it is removed at the next start");
            }
        } else {
            tracing::warn!(path = %old_path.display(), "old shard still in use; its folder is removed at the next start");
        }
        Ok(Compacted {
            wal_after,
            points,
            replayed,
        })
    }
}

/// Drops `value` once no one else holds it (waiting up to `wait` for
/// in-flight calls); false if that took too long.
fn drop_when_unique<T>(mut value: Arc<T>, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    loop {
        match Arc::try_unwrap(value) {
            Ok(owned) => {
                drop(owned);
                return true;
            }
            Err(shared) if Instant::now() < deadline => {
                value = shared;
                thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return false,
        }
    }
}

/// Removes shard folders other than `current` (left by a compaction that
/// was interrupted, or whose old folder was still in use).
fn remove_stale_shards(dir: &Path, current: &str) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name != current
            && (name == SHARD_DIR || name.starts_with(&format!("{SHARD_DIR}-")))
            && entry.file_type()?.is_dir()
        {
            tracing::info!(path = %entry.path().display(), "removing a shard folder left by a compaction");
            fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

/// Bytes allocated on disk under `path` (0 when it is missing).
fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt as _;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.blocks() * 512;
    }
    fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| allocated_bytes(&e.path())).sum())
        .unwrap_or(0)
}

fn apply_to(shard: &EdgeShard, op: Op) -> Result<()> {
    let op = match op {
        Op::Upsert(points) => PointOperations::UpsertPoints(PointInsertOperations::PointsList(
            points.into_iter().map(to_edge_point).collect(),
        )),
        Op::Delete(ids) => PointOperations::DeletePoints {
            ids: ids.into_iter().map(to_edge_id).collect(),
        },
    };
    shard
        .update(UpdateOperation::PointOperation(op))
        .map_err(storage)
}

/// A scrolled record back as a point (None without a dense vector).
fn point_of(r: edge::Record) -> Option<Point> {
    Some(Point {
        id: from_edge_id(r.id),
        vector: r.vector.and_then(dense_of)?,
        payload: payload_of(r.payload),
    })
}

/// Pages through every point of `shard` (matching `filter`), `page` at a
/// time, with payload and vector when `with_data`, handing each page to
/// `each`. Paging is by id, so `each` may rewrite the points it gets.
fn for_each_page_in(
    shard: &EdgeShard,
    filter: Option<edge::Filter>,
    page: usize,
    with_data: bool,
    mut each: impl FnMut(Vec<edge::Record>) -> Result<()>,
) -> Result<()> {
    let mut offset = None;
    loop {
        let (records, next) = shard
            .scroll(ScrollRequest {
                offset,
                limit: Some(page),
                filter: filter.clone(),
                with_payload: Some(WithPayloadInterface::Bool(with_data)),
                with_vector: WithVector::Bool(with_data),
                order_by: None,
            })
            .map_err(storage)?;
        each(records)?;
        match next {
            Some(n) => offset = Some(n),
            None => return Ok(()),
        }
    }
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

impl Maintenance {
    fn run(self, interval: Duration) {
        let tick = Duration::from_millis(50);
        let mut last = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            thread::sleep(tick);
            if last.elapsed() < interval && !self.checkpoint_requested.swap(false, Ordering::AcqRel)
            {
                continue;
            }
            last = Instant::now();
            for c in self.snapshot() {
                if self.stop.load(Ordering::Acquire) {
                    return;
                }
                if let Err(e) = c.checkpoint() {
                    tracing::error!(collection = %c.name, error = %e, "checkpoint failed; the operation log keeps the writes");
                }
                let started = Instant::now();
                match c.optimize() {
                    Ok(true) => {
                        // Segment sizes changed: look at the log again.
                        c.wal_unchecked.store(true, Ordering::Release);
                        let info = c.shard().info();
                        self.metrics.optimizations.inc();
                        tracing::info!(
                            collection = %c.name,
                            elapsed_ms = started.elapsed().as_millis() as u64,
                            points = info.points_count,
                            indexed = info.indexed_vectors_count,
                            segments = info.segments_count,
                            "optimized"
                        );
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(collection = %c.name, error = %e, "optimisation failed")
                    }
                }
                self.maybe_compact(&c);
            }
        }
    }

    /// Compacts `c` when the engine's log has outgrown both the limit and
    /// twice the segments (so each compaction at least halves it).
    fn maybe_compact(&self, c: &Collection) {
        if !c.wal_unchecked.swap(false, Ordering::AcqRel) {
            return;
        }
        let (wal, segments) = c.engine_sizes();
        if wal <= self.wal_limit_bytes || wal <= segments.saturating_mul(2) {
            return;
        }
        let started = Instant::now();
        match c.compact() {
            Ok(done) => {
                self.metrics.compactions.inc();
                tracing::info!(
                    collection = %c.name,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    points = done.points,
                    replayed = done.replayed,
                    engine_log_before = wal,
                    engine_log_after = done.wal_after,
                    segments,
                    "compacted: rewrote the collection into a fresh shard"
                );
            }
            Err(e) => {
                tracing::error!(collection = %c.name, error = %e, "compaction failed; the collection is unchanged");
            }
        }
    }

    fn snapshot(&self) -> Vec<Arc<Collection>> {
        self.collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}

#[async_trait]
impl Backend for EmbeddedBackend {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn create_collection(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: Metadata,
    ) -> Result<()> {
        let _catalog = self.catalog.lock().await;
        if self.collection(name).is_ok() {
            return Err(VectorError::CollectionExists { name: name.into() });
        }
        let dir = self.root.join(format!("{name}-{}", uuid::Uuid::new_v4()));
        let edge_config = self.edge_config(&config);
        let meta = Meta {
            name: name.to_owned(),
            config,
            metadata,
            shard_dir: default_shard_dir(),
        };
        let sync = self.sync_writes;
        let threshold = self.indexing_threshold_kb;
        let c = tokio::task::spawn_blocking(move || -> Result<Collection> {
            let built = (|| -> Result<()> {
                fs::create_dir_all(dir.join(SHARD_DIR)).map_err(storage)?;
                // Create, flush and close the shard, then write the meta file
                // last: a crash before that leaves a folder that is removed
                // at the next start.
                drop(EdgeShard::new(&dir.join(SHARD_DIR), edge_config).map_err(storage)?);
                write_atomic(
                    &dir.join(META_FILE),
                    &serde_json::to_vec_pretty(&meta).map_err(storage)?,
                )
                .map_err(storage)
            })();
            if let Err(e) = built {
                let _ = fs::remove_dir_all(&dir);
                return Err(e);
            }
            Collection::open(&dir, sync, threshold).map_err(storage)
        })
        .await
        .map_err(storage)??;
        self.collections
            .write()
            .map_err(|_| storage("collection table poisoned"))?
            .insert(name.to_owned(), Arc::new(c));
        Ok(())
    }

    async fn delete_collection(&self, name: &str) -> Result<()> {
        let _catalog = self.catalog.lock().await;
        let c = self
            .collections
            .write()
            .map_err(|_| storage("collection table poisoned"))?
            .remove(name)
            .ok_or_else(|| VectorError::CollectionNotFound { name: name.into() })?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            // The marker makes the delete durable now; the folder is removed
            // once the last in-flight call on the collection has finished.
            write_atomic(&c.dir.join(DELETED_MARKER), b"").map_err(storage)?;
            let dir = c.dir.clone();
            if !drop_when_unique(c, Duration::from_secs(60)) {
                tracing::warn!(path = %dir.display(), "collection still in use; its folder is removed at the next start");
                return Ok(());
            }
            fs::remove_dir_all(&dir).map_err(storage)
        })
        .await
        .map_err(storage)?
    }

    async fn list_collections(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .collections
            .read()
            .map_err(|_| storage("collection table poisoned"))?
            .keys()
            .cloned()
            .collect();
        names.sort();
        Ok(names)
    }

    async fn collection_config(&self, name: &str) -> Result<CollectionConfig> {
        Ok(self.collection(name)?.config)
    }

    async fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        self.with(name, |c| Ok(c.info())).await
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<()> {
        let log_len = self
            .with(collection, move |c| c.write(Op::Upsert(points)))
            .await?;
        if log_len > CHECKPOINT_BYTES {
            self.checkpoint_requested.store(true, Ordering::Release);
        }
        Ok(())
    }

    async fn get(
        &self,
        collection: &str,
        ids: Vec<PointId>,
        with_payload: bool,
        with_vectors: bool,
    ) -> Result<Vec<Record>> {
        self.with(collection, move |c| {
            let ids: Vec<_> = ids.into_iter().map(to_edge_id).collect();
            let records = c
                .shard()
                .retrieve(
                    &ids,
                    Some(WithPayloadInterface::Bool(with_payload)),
                    Some(WithVector::Bool(with_vectors)),
                )
                .map_err(storage)?;
            Ok(records
                .into_iter()
                .map(|r| Record {
                    id: from_edge_id(r.id),
                    payload: with_payload.then(|| payload_of(r.payload)),
                    vector: r.vector.and_then(dense_of),
                })
                .collect())
        })
        .await
    }

    async fn delete(&self, collection: &str, selector: PointSelector) -> Result<()> {
        self.with(collection, move |c| {
            // Resolved under the write lock, so no write can slip in between
            // resolving a filter and deleting what it matched.
            let mut log = c.log.lock().map_err(|_| storage("log lock poisoned"))?;
            let ids = match selector {
                PointSelector::Ids(ids) => ids,
                PointSelector::Filter(f) => c.matching_ids(to_edge_filter(&f)?)?,
            };
            if ids.is_empty() {
                return Ok(());
            }
            c.write_locked(&mut log, Op::Delete(ids)).map(|_| ())
        })
        .await
    }

    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64> {
        self.with(collection, move |c| {
            let filter = filter.as_ref().map(to_edge_filter).transpose()?;
            c.shard()
                .count(CountRequest {
                    filter,
                    exact: true,
                })
                .map(|n| n as u64)
                .map_err(storage)
        })
        .await
    }

    async fn scroll(
        &self,
        collection: &str,
        query: ScrollQuery,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        self.with(collection, move |c| {
            let filter = query.filter.as_ref().map(to_edge_filter).transpose()?;
            let (records, next) = c
                .shard()
                .scroll(ScrollRequest {
                    offset: query.offset.map(to_edge_id),
                    limit: Some(query.limit),
                    filter,
                    with_payload: Some(WithPayloadInterface::Bool(query.with_payload)),
                    with_vector: WithVector::Bool(query.with_vectors),
                    order_by: None,
                })
                .map_err(storage)?;
            let records = records
                .into_iter()
                .map(|r| Record {
                    id: from_edge_id(r.id),
                    payload: query.with_payload.then(|| payload_of(r.payload)),
                    vector: r.vector.and_then(dense_of),
                })
                .collect();
            Ok((records, next.map(from_edge_id)))
        })
        .await
    }

    async fn search(&self, collection: &str, queries: Vec<SearchQuery>) -> Result<Vec<Vec<Hit>>> {
        self.with(collection, move |c| {
            queries
                .into_iter()
                .map(|q| {
                    let (wp, wv) = (q.with_payload, q.with_vectors);
                    let request = SearchRequest {
                        query: QueryEnum::Nearest(NamedQuery::default_dense(q.vector)),
                        filter: q.filter.as_ref().map(to_edge_filter).transpose()?,
                        params: Some(SearchParams {
                            hnsw_ef: q.ef,
                            exact: q.exact,
                            ..SearchParams::default()
                        }),
                        limit: q.limit,
                        offset: 0,
                        with_payload: Some(WithPayloadInterface::Bool(wp)),
                        with_vector: Some(WithVector::Bool(wv)),
                        score_threshold: q.score_threshold,
                    };
                    let hits = c.shard().search(request).map_err(storage)?;
                    Ok(hits
                        .into_iter()
                        .map(|h| Hit {
                            id: from_edge_id(h.id),
                            score: h.score,
                            payload: wp.then(|| payload_of(h.payload)),
                            vector: h.vector.and_then(dense_of),
                        })
                        .collect())
                })
                .collect()
        })
        .await
    }

    async fn point_counts(&self) -> Vec<(String, u64)> {
        let collections: Vec<Arc<Collection>> = self
            .collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        tokio::task::spawn_blocking(move || {
            collections
                .iter()
                .map(|c| (c.name.clone(), c.shard().info().points_count as u64))
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    async fn close(&self) {
        self.stop.store(true, Ordering::Release);
        let handle = self.maintenance.lock().ok().and_then(|mut m| m.take());
        let collections: Vec<Arc<Collection>> = self
            .collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(h) = handle {
                // An optimisation in progress cannot be interrupted; if one
                // is still running the checkpoint is skipped (the log keeps
                // every write) and the process exits without waiting.
                let deadline = Instant::now() + Duration::from_secs(5);
                while !h.is_finished() && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(20));
                }
                if !h.is_finished() {
                    tracing::warn!("an optimisation is still running; skipping the final checkpoint");
                    return;
                }
            }
            for c in collections {
                match c.checkpoint() {
                    Ok(()) => {
                        if let Err(e) = write_atomic(&c.dir.join(CLEAN_FILE), b"") {
                            tracing::warn!(collection = %c.name, error = %e, "cannot mark the shutdown clean; the next start checks for duplicates");
                        }
                    }
                    Err(e) => {
                        tracing::error!(collection = %c.name, error = %e, "final checkpoint failed; the operation log keeps the writes");
                    }
                }
            }
        })
        .await;
    }
}

/// Writes `bytes` to `path` via a temporary file and a rename, fsyncing both.
fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

fn edge_distance(d: Distance) -> edge::Distance {
    match d {
        Distance::Cosine => edge::Distance::Cosine,
        Distance::Dot => edge::Distance::Dot,
        Distance::Euclid => edge::Distance::Euclid,
    }
}

fn to_edge_id(id: PointId) -> edge::PointId {
    match id {
        PointId::Num(n) => edge::PointId::NumId(n),
        PointId::Uuid(u) => edge::PointId::Uuid(u),
    }
}

fn from_edge_id(id: edge::PointId) -> PointId {
    match id {
        edge::PointId::NumId(n) => PointId::Num(n),
        edge::PointId::Uuid(u) => PointId::Uuid(u),
    }
}

fn to_edge_point(p: Point) -> PointStructPersisted {
    PointStructPersisted {
        id: to_edge_id(p.id),
        vector: VectorStructPersisted::Single(p.vector),
        payload: Some(edge::Payload(p.payload)),
    }
}

fn payload_of(p: Option<edge::Payload>) -> Payload {
    p.map(|p| p.0).unwrap_or_default()
}

fn dense_of(v: VectorStructInternal) -> Option<Vec<f32>> {
    match v {
        VectorStructInternal::Single(d) => Some(d),
        VectorStructInternal::Named(mut m) => match m.remove(edge::DEFAULT_VECTOR_NAME) {
            Some(edge::VectorInternal::Dense(d)) => Some(d),
            _ => None,
        },
        VectorStructInternal::MultiDense(_) => None,
    }
}

fn key(k: &str) -> Result<JsonPath> {
    k.parse().map_err(|_| {
        VectorError::invalid("filter key", format!("{k:?} is not a valid payload path"))
    })
}

fn to_edge_filter(f: &Filter) -> Result<edge::Filter> {
    let list = |cs: &[Condition]| -> Result<Option<Vec<edge::Condition>>> {
        if cs.is_empty() {
            return Ok(None);
        }
        cs.iter()
            .map(to_edge_condition)
            .collect::<Result<_>>()
            .map(Some)
    };
    Ok(edge::Filter {
        must: list(&f.must)?,
        should: list(&f.should)?,
        must_not: list(&f.must_not)?,
        min_should: None,
    })
}

fn to_edge_condition(c: &Condition) -> Result<edge::Condition> {
    let value = |k: &str, v: ValueVariants| -> Result<edge::Condition> {
        Ok(edge::Condition::Field(FieldCondition::new_match(
            key(k)?,
            Match::new_value(v),
        )))
    };
    match c {
        Condition::Keyword { key: k, value: v } => value(k, ValueVariants::String(v.clone())),
        Condition::Integer { key: k, value: v } => value(k, ValueVariants::Integer(*v)),
        Condition::Bool { key: k, value: v } => value(k, ValueVariants::Bool(*v)),
        Condition::Range { key: k, range } => {
            Ok(edge::Condition::Field(FieldCondition::new_range(
                key(k)?,
                edge::Range {
                    gt: range.gt.map(OrderedFloat),
                    gte: range.gte.map(OrderedFloat),
                    lt: range.lt.map(OrderedFloat),
                    lte: range.lte.map(OrderedFloat),
                },
            )))
        }
        Condition::HasId(ids) => {
            let set: AHashSet<edge::PointId> = ids.iter().copied().map(to_edge_id).collect();
            Ok(edge::Condition::HasId(HasIdCondition::from(set)))
        }
        Condition::Filter(f) => Ok(edge::Condition::Filter(to_edge_filter(f)?)),
    }
}
