//! One writer per document: an ingest replaces a document's chunks with an
//! upsert and then a delete of the chunks past its new end. Two ingests of
//! the same document id interleaving those steps could leave it truncated
//! (the shorter one's delete after the longer one's upsert) or mixed, so
//! each ingest holds its documents' locks from its first upsert to its last
//! delete. Locks exist only while held or awaited: the map never grows with
//! the number of documents ever ingested.
//!
//! This serializes writers on one gateway replica; writers on different
//! replicas are not serialized by it (see ARCHITECTURE.md, invariants).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
};

use tokio::sync::OwnedMutexGuard;

type Lock = tokio::sync::Mutex<()>;

#[derive(Debug, Default)]
pub struct DocumentLocks {
    held: Mutex<HashMap<(String, String), Weak<Lock>>>,
}

/// The locks of one ingest's documents; released on drop.
#[derive(Debug)]
pub struct Held {
    _guards: Vec<OwnedMutexGuard<()>>,
}

impl DocumentLocks {
    /// Waits for and takes the lock of every document in `ids` of
    /// `collection`, in sorted order (so two ingests sharing several
    /// documents cannot deadlock).
    pub async fn lock(&self, collection: &str, ids: &[String]) -> Held {
        let mut keys: Vec<&String> = ids.iter().collect();
        keys.sort();
        keys.dedup();
        let locks: Vec<Arc<Lock>> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds any more before adding more.
            if held.len() > 64 {
                held.retain(|_, w| w.strong_count() > 0);
            }
            keys.into_iter()
                .map(|id| {
                    let key = (collection.to_owned(), id.clone());
                    if let Some(l) = held.get(&key).and_then(Weak::upgrade) {
                        return l;
                    }
                    let l = Arc::new(Lock::new(()));
                    held.insert(key, Arc::downgrade(&l));
                    l
                })
                .collect()
        };
        let mut guards = Vec::with_capacity(locks.len());
        for l in locks {
            guards.push(l.lock_owned().await);
        }
        Held { _guards: guards }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held
            .lock()
            .map_or(0, |h| h.values().filter(|w| w.strong_count() > 0).count())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn the_same_document_waits_and_others_do_not() {
        let locks = Arc::new(DocumentLocks::default());
        let first = locks.lock("c", &["a".into(), "b".into()]).await;
        // Another document of the collection, or the same id elsewhere: free.
        let _other = locks.lock("c", &["z".into()]).await;
        let _elsewhere = locks.lock("d", &["a".into()]).await;
        let l = Arc::clone(&locks);
        let waiting = tokio::spawn(async move { l.lock("c", &["b".into(), "x".into()]).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "took a held document's lock");
        drop(first);
        let held = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("released")
            .expect("task");
        drop(held);
        drop((_other, _elsewhere));
        assert_eq!(locks.len(), 0, "locks outlive their holders");
    }
}
