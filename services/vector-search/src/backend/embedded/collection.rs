//! One open collection: its operation log, engine calls, checkpoints
//! and optimisation passes.

use super::*;

impl Collection {
    pub(super) fn open(dir: &Path, sync_writes: bool, tuning: Tuning) -> Result<Self, OpenError> {
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
        let config = adopt_text_index(&name, meta.config, &shard);
        let adopted = config != meta.config;
        // The engine persists its optimizer settings per shard; the
        // service's settings win, so changing them takes effect at restart.
        let optimizers = shard.config().optimizers.clone();
        if tuning.differs_from(&optimizers) {
            shard
                .set_optimizers_config(tuning.applied_to(optimizers))
                .map_err(|e| fail(&name, format!("engine config: {e}")))?;
        }
        let (log, ops) = OpLog::open(&dir.join(OPLOG_FILE), sync_writes)
            .map_err(|e| fail(&name, format!("operation log: {e}")))?;
        let replayed = ops.len();
        let c = Self {
            name: name.clone(),
            config: RwLock::new(config),
            metadata: meta.metadata,
            dir: dir.to_owned(),
            shard: RwLock::new(Arc::new(shard)),
            log: Mutex::new(log),
            maintenance: Mutex::new(()),
            dirty: AtomicBool::new(replayed > 0),
            wal_unchecked: AtomicBool::new(true),
            optimizing: AtomicBool::new(false),
        };
        if adopted {
            c.write_meta(config, meta.shard_dir.clone())
                .map_err(|e| fail(&name, format!("{META_FILE}: {e}")))?;
        }
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
    pub(super) fn repair_duplicates(&self) -> Result<usize> {
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
    pub(super) fn shard(&self) -> Arc<EdgeShard> {
        match self.shard.read() {
            Ok(s) => Arc::clone(&s),
            Err(p) => Arc::clone(&p.into_inner()),
        }
    }

    pub(super) fn apply(&self, op: Op) -> Result<()> {
        apply_to(&self.shard(), op)
    }

    /// Logs `op`, then applies it; durable when this returns Ok.
    pub(super) fn write(&self, op: Op) -> Result<u64> {
        let mut log = self.log.lock().map_err(|_| storage("log lock poisoned"))?;
        self.write_locked(&mut log, op)
    }

    pub(super) fn write_locked(&self, log: &mut OpLog, op: Op) -> Result<u64> {
        log.append(&op).map_err(storage)?;
        self.apply(op)?;
        self.dirty.store(true, Ordering::Release);
        self.wal_unchecked.store(true, Ordering::Release);
        Ok(log.len())
    }

    /// Makes the engine files hold everything logged, then empties the log.
    pub(super) fn checkpoint(&self) -> Result<()> {
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
    pub(super) fn optimize(&self) -> Result<bool> {
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

    pub(super) fn info(&self) -> CollectionInfo {
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
            config: self.config(),
            points_count: info.points_count as u64,
            indexed_vectors_count: info.indexed_vectors_count as u64,
            segments_count: info.segments_count as u32,
            status,
            metadata: self.metadata.clone(),
        }
    }

    /// The collection's configuration as it is now.
    pub(super) fn config(&self) -> CollectionConfig {
        match self.config.read() {
            Ok(c) => *c,
            Err(p) => *p.into_inner(),
        }
    }

    /// Writes `collection.json` (atomically) naming the shard folder
    /// `shard_dir`.
    pub(super) fn write_meta(&self, config: CollectionConfig, shard_dir: String) -> Result<()> {
        let meta = Meta {
            name: self.name.clone(),
            config,
            metadata: self.metadata.clone(),
            shard_dir,
        };
        write_atomic(
            &self.dir.join(META_FILE),
            &serde_json::to_vec_pretty(&meta).map_err(storage)?,
        )
        .map_err(storage)
    }

    /// Every id matching `filter` (for delete-by-filter, logged as ids).
    pub(super) fn matching_ids(&self, filter: edge::Filter) -> Result<Vec<PointId>> {
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
    pub(super) fn for_each_page(
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
    pub(super) fn engine_sizes(&self) -> (u64, u64) {
        let shard = self.shard();
        (
            allocated_bytes(&shard.path().join(ENGINE_WAL_DIR)),
            allocated_bytes(&shard.path().join(ENGINE_SEGMENTS_DIR)),
        )
    }
}

pub(super) fn apply_to(shard: &EdgeShard, op: Op) -> Result<()> {
    let op = match op {
        Op::Upsert(points) => PointOperations::UpsertPoints(PointInsertOperations::PointsList(
            points.into_iter().map(to_edge_point).collect(),
        )),
        Op::Delete(ids) => {
            let ids: Vec<edge::PointId> = ids.into_iter().map(to_edge_id).collect();
            // The engine keeps a deleted point's terms in the text index's
            // posting lists (and so in every term's document frequency)
            // until the segment is rebuilt; removing the sparse vector first
            // takes them out now, so BM25 scores follow deletes. (Points in
            // an already indexed segment still count until the optimizer
            // rewrites it: see docs/services.md, "Text search".)
            let has_text = shard.config().sparse_vectors.contains_key(SPARSE_NAME);
            if has_text {
                clear_terms(shard, &ids)?;
            }
            PointOperations::DeletePoints { ids }
        }
    };
    shard
        .update(UpdateOperation::PointOperation(op))
        .map_err(storage)
}

/// Replaces the sparse vector of those of `ids` that exist with an empty
/// one: the engine then takes their terms out of the posting lists (a
/// plain vector delete only marks the vector deleted).
fn clear_terms(shard: &EdgeShard, ids: &[edge::PointId]) -> Result<()> {
    let existing = shard
        .retrieve(
            ids,
            Some(WithPayloadInterface::Bool(false)),
            Some(WithVector::Bool(false)),
        )
        .map_err(storage)?;
    if existing.is_empty() {
        return Ok(());
    }
    let points = existing
        .into_iter()
        .map(|r| edge::PointVectorsPersisted {
            id: r.id,
            vector: VectorStructPersisted::Named(
                [(
                    SPARSE_NAME.to_owned(),
                    VectorPersisted::Sparse(edge::SparseVector::default()),
                )]
                .into(),
            ),
        })
        .collect();
    shard
        .update(UpdateOperation::VectorOperation(
            edge::VectorOperations::UpdateVectors(edge::UpdateVectorsOp {
                points,
                update_filter: None,
            }),
        ))
        .map_err(storage)
}

/// A scrolled record back as a point, sparse vector included (None
/// without a dense vector).
pub(super) fn point_of(r: edge::Record) -> Option<Point> {
    let (vector, sparse) = vectors_of(r.vector);
    Some(Point {
        id: from_edge_id(r.id),
        vector: vector?,
        payload: payload_of(r.payload),
        sparse,
    })
}

/// Pages through every point of `shard` (matching `filter`), `page` at a
/// time, with payload and vector when `with_data`, handing each page to
/// `each`. Paging is by id, so `each` may rewrite the points it gets.
pub(super) fn for_each_page_in(
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
