//! Housekeeping, every `registry.housekeeping_secs`: drops expired uploads
//! and staging folders nothing refers to, removes contents no version or
//! upload has held for `registry.blob_grace_secs` (and contents a crash left
//! in the blob store without metadata), and trims the event log to
//! `registry.event_retention`.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use crate::{
    error::{RegistryError, Result},
    registry::{Registry, now_ms},
};

/// What one pass did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Report {
    pub uploads_expired: usize,
    pub staging_removed: usize,
    pub blobs_removed: usize,
    pub events_pruned: u64,
}

impl Registry {
    /// One housekeeping pass.
    pub async fn housekeep(&self) -> Result<Report> {
        let mut report = Report::default();
        let now = now_ms();
        for id in self.meta(move |s| s.expired_uploads(now)).await? {
            if self.abort_upload(id).await.is_ok() {
                report.uploads_expired += 1;
                self.metrics.uploads_expired.inc();
            }
        }
        for id in self.staging.ids() {
            let busy = self.writing.lock().map(|w| w.contains(&id)).unwrap_or(true);
            if busy {
                continue;
            }
            let lookup = id.clone();
            match self.meta(move |s| s.get_upload(&lookup)).await {
                Err(RegistryError::UnknownUpload(_)) => {
                    self.staging.remove(&id);
                    report.staging_removed += 1;
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        let grace = self.settings.blob_grace();
        let before = now - grace.as_millis() as i64;
        let _blobs = self.blob_lock.lock().await;
        for sha in self.meta(move |s| s.releasable_blobs(before)).await? {
            if self.is_protected(&sha) {
                continue;
            }
            let key = sha.clone();
            if self.meta(move |s| s.forget_blob(&key)).await? {
                self.blob(move |b| b.delete(&sha)).await?;
                report.blobs_removed += 1;
            }
        }
        // Contents moved in by a commit that crashed before its transaction
        // (and that no upload in progress, here or on another replica
        // sharing the stores, may be about to commit).
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        for (sha, stored) in self.blob(|b| b.list()).await? {
            if stored > cutoff || self.is_protected(&sha) {
                continue;
            }
            let key = sha.clone();
            if !self.meta(move |s| s.refers_to_blob(&key)).await? {
                self.blob(move |b| b.delete(&sha)).await?;
                report.blobs_removed += 1;
            }
        }
        drop(_blobs);
        self.metrics
            .blobs_removed
            .inc_by(report.blobs_removed as u64);
        let keep = self.settings.event_retention;
        report.events_pruned = self.meta(move |s| s.prune_events(keep)).await?;
        Ok(report)
    }

    fn is_protected(&self, sha: &str) -> bool {
        self.protected.lock().map_or(true, |p| p.contains_key(sha))
    }

    /// Runs [`Registry::housekeep`] every `registry.housekeeping_secs` until
    /// the registry closes.
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let this = Arc::clone(self);
        let every = Duration::from_secs(self.settings.housekeeping_secs);
        tokio::spawn(async move {
            let mut closing = this.closing.subscribe();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    _ = closing.wait_for(|c| *c) => return,
                }
                match this.housekeep().await {
                    Ok(r) if r != Report::default() => tracing::info!(?r, "housekeeping"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "housekeeping failed"),
                }
            }
        });
    }
}
