//! Compaction: the collection rewritten into a fresh shard, which drops
//! the engine's ever-growing write-ahead log (see the parent module).

use super::*;

impl Collection {
    /// Rewrites the collection into a fresh shard folder, which drops the
    /// engine's ever-growing log. Writes go on meanwhile (into the old
    /// shard and our log); they are replayed into the new shard under the
    /// log lock just before the switch, so they wait only for that replay.
    /// Searches never wait. A crash at any point leaves either the old
    /// shard with the whole operation log, or the new one: the switch is
    /// the atomic rewrite of `collection.json`.
    pub(super) fn compact(&self) -> Result<Compacted> {
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
            self.write_meta(self.config(), folder.clone())?;
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
pub(super) fn drop_when_unique<T>(mut value: Arc<T>, wait: Duration) -> bool {
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
pub(super) fn remove_stale_shards(dir: &Path, current: &str) -> io::Result<()> {
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
pub(super) fn allocated_bytes(path: &Path) -> u64 {
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
