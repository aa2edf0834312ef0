//! A configuration built from files and rebuilt when they change.
//!
//! Readers take the current value with one uncontended read lock and an
//! `Arc` clone (once per connection, not per call). A watcher task compares
//! each file's inode, size and modification time every `reload_secs`: a
//! Kubernetes Secret volume swaps a symlink on update, so the files read
//! next are new ones. A rebuild that fails (a half-written rotation, a key
//! that does not fit) keeps the previous value and logs why; the next
//! change tries again. The watcher ends when the last reader is dropped.

use std::{
    os::unix::fs::MetadataExt as _,
    sync::{Arc, RwLock, Weak},
    time::Duration,
};

use crate::settings::SettingsError;

/// A value rebuilt from `files` when they change.
pub struct Reloading<T> {
    current: Arc<RwLock<Arc<T>>>,
}

impl<T> Clone for Reloading<T> {
    fn clone(&self) -> Self {
        Self {
            current: Arc::clone(&self.current),
        }
    }
}

type Stamp = Vec<Option<(u64, u64, i64, i64)>>;

fn stamp(files: &[String]) -> Stamp {
    files
        .iter()
        .map(|f| {
            std::fs::metadata(f)
                .ok()
                .map(|m| (m.ino(), m.len(), m.mtime(), m.mtime_nsec()))
        })
        .collect()
}

impl<T: Send + Sync + 'static> Reloading<T> {
    /// Builds the value now (an error fails start), then watches `files`
    /// every `every_secs` (0: never) from the current Tokio runtime.
    pub fn start<F>(files: Vec<String>, every_secs: u64, build: F) -> Result<Self, SettingsError>
    where
        F: Fn() -> Result<T, SettingsError> + Send + Sync + 'static,
    {
        let mut seen = stamp(&files);
        let current = Arc::new(RwLock::new(Arc::new(build()?)));
        let this = Self { current };
        if every_secs == 0 {
            return Ok(this);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(?files, "no async runtime: TLS files will not be reloaded");
            return Ok(this);
        };
        let weak: Weak<RwLock<Arc<T>>> = Arc::downgrade(&this.current);
        let every = Duration::from_secs(every_secs);
        let files = Arc::new(files);
        let build = Arc::new(build);
        runtime.spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(current) = weak.upgrade() else {
                    return;
                };
                // File reads are blocking work: off the reactor.
                let (f, b, last) = (Arc::clone(&files), Arc::clone(&build), seen.clone());
                let checked = tokio::task::spawn_blocking(move || {
                    let now = stamp(&f);
                    let rebuilt = (now != last).then(|| b());
                    (now, rebuilt)
                })
                .await;
                let Ok((now, rebuilt)) = checked else {
                    continue;
                };
                seen = now;
                match rebuilt {
                    None => {}
                    Some(Ok(v)) => {
                        *current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(v);
                        tracing::info!(files = ?*files, "TLS files changed: new connections use them");
                    }
                    Some(Err(e)) => tracing::error!(
                        files = ?*files,
                        error = %e,
                        "TLS files changed but cannot be used; keeping the previous ones"
                    ),
                }
            }
        });
        Ok(this)
    }

    /// The value in force.
    pub fn get(&self) -> Arc<T> {
        Arc::clone(&self.current.read().unwrap_or_else(|e| e.into_inner()))
    }
}
