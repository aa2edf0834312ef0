//! Watch: the event log from a revision on, then every change as it is
//! committed, in order and without gaps; PROGRESS to idle watchers.
//!
//! A watcher reads the log itself (it never depends on an in-memory feed
//! that could drop events); the head revision only wakes it up. Each watcher
//! has its own small bounded queue, so a slow one holds back nobody else.

use std::{collections::HashSet, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use crate::{
    error::{RegistryError, Result},
    registry::Registry,
    store::{EventKind, EventRecord},
};

/// What a Watch call follows.
#[derive(Debug, Default)]
pub struct WatchSpec {
    /// 0: only changes after the call.
    pub start_revision: i64,
    pub models: HashSet<String>,
    pub aliases: HashSet<String>,
    pub kinds: HashSet<EventKind>,
}

impl WatchSpec {
    fn wants(&self, e: &EventRecord) -> bool {
        (self.models.is_empty() || self.models.contains(&e.model))
            && (self.kinds.is_empty() || self.kinds.contains(&e.kind))
            && (self.aliases.is_empty()
                || (matches!(e.kind, EventKind::AliasMoved | EventKind::PolicyChanged)
                    && self.aliases.contains(&e.alias)))
    }
}

#[derive(Debug)]
pub enum WatchItem {
    Event(EventRecord),
    /// Nothing new: the registry is at this revision.
    Progress(i64),
}

/// Events read from the log per query.
const BATCH: u32 = 256;
/// Items queued for one watcher.
const QUEUE: usize = 64;

impl Registry {
    pub async fn watch(
        self: Arc<Self>,
        spec: WatchSpec,
    ) -> Result<mpsc::Receiver<Result<WatchItem>>> {
        if spec.start_revision < 0 {
            return Err(RegistryError::invalid(
                "start_revision: must not be negative",
            ));
        }
        let revs = self.meta(|s| s.revisions()).await?;
        let after = if spec.start_revision == 0 {
            revs.head
        } else if spec.start_revision < revs.oldest {
            return Err(RegistryError::Compacted {
                requested: spec.start_revision,
                oldest: revs.oldest,
            });
        } else {
            spec.start_revision - 1
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        self.metrics.watchers.inc();
        tokio::spawn(async move {
            let out = self.follow(&spec, after, &tx).await;
            if let Err(e) = out {
                let _ = tx.send(Err(e)).await;
            }
            self.metrics.watchers.dec();
        });
        Ok(rx)
    }

    async fn follow(
        &self,
        spec: &WatchSpec,
        mut after: i64,
        tx: &mpsc::Sender<Result<WatchItem>>,
    ) -> Result<()> {
        let progress = Duration::from_secs(self.settings.watch_progress_secs);
        // Commits of this replica wake the watcher at once; those of other
        // replicas (a shared PostgreSQL) are found by reading the log again
        // every `watch_poll_ms`.
        let poll = Duration::from_millis(self.settings.watch_poll_ms).min(progress);
        let mut quiet_since = tokio::time::Instant::now();
        let mut head = self.head.subscribe();
        let mut closing = self.closing.subscribe();
        loop {
            // Marked seen before reading, so a commit after the read wakes us.
            head.borrow_and_update();
            let events = self.meta(move |s| s.events_after(after, BATCH)).await?;
            if let Some(first) = events.first()
                && first.revision != after + 1
            {
                // Pruned while this watcher lagged behind.
                let oldest = self.meta(|s| s.revisions()).await?.oldest;
                return Err(RegistryError::Compacted {
                    requested: after + 1,
                    oldest,
                });
            }
            let full = events.len() == BATCH as usize;
            for e in events {
                after = e.revision;
                if spec.wants(&e) {
                    if tx.send(Ok(WatchItem::Event(e))).await.is_err() {
                        return Ok(());
                    }
                    quiet_since = tokio::time::Instant::now();
                }
            }
            if full {
                continue;
            }
            tokio::select! {
                changed = head.changed() => {
                    if changed.is_err() {
                        return Err(RegistryError::ShuttingDown);
                    }
                }
                _ = async { closing.wait_for(|c| *c).await.is_ok() } => return Err(RegistryError::ShuttingDown),
                () = tokio::time::sleep(poll) => {
                    if quiet_since.elapsed() >= progress {
                        if tx.send(Ok(WatchItem::Progress(after))).await.is_err() {
                            return Ok(());
                        }
                        quiet_since = tokio::time::Instant::now();
                    }
                }
                () = tx.closed() => return Ok(()),
            }
        }
    }
}
