//! The background loop: checkpoints, optimiser passes and compactions.

use super::*;

impl Maintenance {
    pub(super) fn run(self, interval: Duration) {
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
    pub(super) fn maybe_compact(&self, c: &Collection) {
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

    pub(super) fn snapshot(&self) -> Vec<Arc<Collection>> {
        self.collections
            .read()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }
}
