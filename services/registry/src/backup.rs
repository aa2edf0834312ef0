//! Backup and restore of a running registry. A backup is the metadata
//! snapshot (one read transaction) followed by every content a version of
//! it refers to; while it streams, those contents are protected from
//! housekeeping. A restore writes and verifies every content first and the
//! metadata last, in one transaction, into an empty registry: an
//! interrupted restore leaves the registry empty (its contents are removed
//! by housekeeping as orphans).

use std::{
    collections::{BTreeMap, HashSet},
    fs::{self, File},
    io::Write,
    sync::Arc,
};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};

use crate::{
    error::{RegistryError, Result},
    manifest::check_sha256,
    outbound::Outbound,
    registry::Registry,
    store::{ModelFilter, snapshot::Snapshot},
};

/// One piece of a backup stream.
#[derive(Debug)]
pub enum Piece {
    Metadata(Bytes),
    Blob {
        sha256: String,
        size: u64,
        offset: u64,
        data: Bytes,
    },
}

/// What a restore brought in.
#[derive(Debug, Default)]
pub struct Restored {
    pub models: usize,
    pub versions: usize,
    pub blobs: usize,
    pub revision: i64,
}

const PIECE: usize = 1 << 20;

/// Holds its digests protected from housekeeping; releases them when
/// dropped. Protection is counted per digest, so two backups (or a backup
/// and a restore) sharing contents never unprotect each other's: a content
/// is free again only when its last holder is done.
struct Protect {
    registry: Arc<Registry>,
    digests: Vec<String>,
}

impl Protect {
    fn add(&mut self, digest: String) {
        if let Ok(mut p) = self.registry.protected.lock() {
            *p.entry(digest.clone()).or_default() += 1;
        }
        self.digests.push(digest);
    }
}

impl Drop for Protect {
    fn drop(&mut self) {
        if let Ok(mut p) = self.registry.protected.lock() {
            for d in &self.digests {
                if let Some(n) = p.get_mut(d) {
                    *n -= 1;
                    if *n == 0 {
                        p.remove(d);
                    }
                }
            }
        }
    }
}

impl Registry {
    fn protect(self: &Arc<Self>, digests: Vec<String>) -> Protect {
        let mut guard = Protect {
            registry: Arc::clone(self),
            digests: Vec::with_capacity(digests.len()),
        };
        for d in digests {
            guard.add(d);
        }
        guard
    }

    pub(crate) async fn backup(self: &Arc<Self>) -> Result<Outbound<Piece>> {
        let mut snap = self.meta(|s| s.export()).await?;
        let referenced: BTreeMap<String, u64> = snap
            .versions
            .iter()
            .flat_map(|v| v.files.iter().map(|f| (f.sha256.clone(), f.size)))
            .collect();
        snap.blobs.retain(|b| referenced.contains_key(&b.sha256));
        let guard = self.protect(referenced.keys().cloned().collect());
        let doc = serde_json::to_vec(&snap)
            .map_err(|e| RegistryError::Store(format!("encoding the snapshot: {e}")))?;
        let (feed, out) = self.outbound()?;
        let blobs = Arc::clone(&self.blobs);
        tokio::spawn(async move {
            let _guard = guard;
            for piece in doc.chunks(PIECE) {
                if !feed
                    .send(Ok(Piece::Metadata(Bytes::copy_from_slice(piece))))
                    .await
                {
                    return;
                }
            }
            for (sha256, size) in referenced {
                let piece = |offset: u64, data: Bytes| Piece::Blob {
                    sha256: sha256.clone(),
                    size,
                    offset,
                    data,
                };
                if !feed.content(&blobs, &sha256, 0, size, PIECE, piece).await {
                    return;
                }
            }
        });
        Ok(out)
    }

    pub async fn restore<S>(self: &Arc<Self>, pieces: S) -> Result<Restored>
    where
        S: Stream<Item = Result<Piece>> + Send,
    {
        let filter = ModelFilter {
            limit: 1,
            ..Default::default()
        };
        let (models, _) = self.meta(move |s| s.list_models(&filter)).await?;
        if !models.is_empty() {
            return Err(RegistryError::FailedPrecondition(
                "the registry holds models; restore fills an empty registry only".into(),
            ));
        }
        let id = format!("restore-{}", uuid::Uuid::new_v4());
        // Claimed like an upload, so housekeeping leaves its folder alone.
        let _claim = self.claim(&id)?;
        let dir = self.staging.dir(&id);
        let result = self.receive(pieces, &dir).await;
        let _ = fs::remove_dir_all(&dir);
        let (snap, stored, _guard) = result?;
        crate::restore_check::check(&snap, self.settings.max_files)?;
        for b in &snap.blobs {
            if !stored.contains(&b.sha256) {
                let sha = b.sha256.clone();
                let size = b.size;
                if self.blob(move |bl| bl.size(&sha)).await? != Some(size) {
                    return Err(RegistryError::invalid(format!(
                        "the backup lists content {} but does not carry it",
                        b.sha256
                    )));
                }
            }
        }
        let restored = Restored {
            models: snap.models.len(),
            versions: snap.versions.len(),
            blobs: snap.blobs.len(),
            revision: snap.revision,
        };
        self.meta(move |s| s.import(&snap)).await?;
        self.head.send_replace(restored.revision);
        tracing::info!(?restored, "registry restored");
        Ok(restored)
    }

    /// Reads the stream: the metadata document, then contents written to
    /// `dir`, verified, and moved into the blob store.
    async fn receive<S>(
        self: &Arc<Self>,
        pieces: S,
        dir: &std::path::Path,
    ) -> Result<(Snapshot, HashSet<String>, Protect)>
    where
        S: Stream<Item = Result<Piece>> + Send,
    {
        let mut pieces = std::pin::pin!(pieces);
        fs::create_dir_all(dir).map_err(|e| RegistryError::Blobs(e.to_string()))?;
        let mut doc = Vec::new();
        let mut stored = HashSet::new();
        let mut guard = self.protect(Vec::new());
        let mut open: Option<(String, u64, File, Sha256, u64)> = None;
        while let Some(piece) = pieces.next().await {
            match piece? {
                Piece::Metadata(b) => {
                    if !stored.is_empty() || open.is_some() {
                        return Err(RegistryError::invalid(
                            "metadata: comes before every content",
                        ));
                    }
                    if doc.len() + b.len() > crate::restore_check::MAX_METADATA_DOC_BYTES {
                        return Err(RegistryError::invalid(format!(
                            "metadata: more than {} bytes",
                            crate::restore_check::MAX_METADATA_DOC_BYTES
                        )));
                    }
                    doc.extend_from_slice(&b);
                }
                Piece::Blob {
                    sha256,
                    size,
                    offset,
                    data,
                } => {
                    check_sha256("blob.sha256", &sha256)?;
                    if open.as_ref().is_none_or(|o| o.0 != sha256) {
                        if let Some(o) = open.take() {
                            return Err(RegistryError::invalid(format!(
                                "content {} ended after {} of {} bytes",
                                o.0, o.4, o.1
                            )));
                        }
                        let path = dir.join(&sha256);
                        let f = File::create(&path).map_err(|e| {
                            RegistryError::Blobs(format!("{}: {e}", path.display()))
                        })?;
                        open = Some((sha256.clone(), size, f, Sha256::new(), 0));
                    }
                    let Some(o) = open.as_mut() else {
                        continue;
                    };
                    if offset != o.4 || o.4 + data.len() as u64 > o.1 {
                        return Err(RegistryError::invalid(format!(
                            "content {sha256}: piece at {offset}, expected {} (size {})",
                            o.4, o.1
                        )));
                    }
                    o.2.write_all(&data)
                        .map_err(|e| RegistryError::Blobs(e.to_string()))?;
                    o.3.update(&data);
                    o.4 += data.len() as u64;
                    if o.4 == o.1 {
                        let Some((sha, _, f, h, _)) = open.take() else {
                            continue;
                        };
                        drop(f);
                        let got = hex::encode(h.finalize());
                        if got != sha {
                            return Err(RegistryError::Corrupt(format!(
                                "content {sha}: its bytes have sha256 {got}"
                            )));
                        }
                        guard.add(sha.clone());
                        let path = dir.join(&sha);
                        let key = sha.clone();
                        self.blob(move |b| b.put(&key, &path)).await?;
                        stored.insert(sha);
                    }
                }
            }
        }
        if let Some(o) = open {
            return Err(RegistryError::invalid(format!(
                "content {} ended after {} of {} bytes",
                o.0, o.4, o.1
            )));
        }
        let snap: Snapshot = serde_json::from_slice(&doc)
            .map_err(|e| RegistryError::invalid(format!("metadata: not a registry backup: {e}")))?;
        Ok((snap, stored, guard))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{metrics::Metrics, settings::RegistrySettings};

    #[test]
    fn protection_is_counted_so_holders_never_unprotect_each_other()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("mlmesh-protect-{}", std::process::id()));
        let settings = RegistrySettings {
            data_dir: dir.clone(),
            ..RegistrySettings::default()
        };
        let r = Arc::new(Registry::open(&settings, Metrics::new()?)?);
        let held = |d: &str| r.protected.lock().is_ok_and(|p| p.contains_key(d));
        // Two backups at once, sharing content x.
        let first = r.protect(vec!["x".into(), "y".into()]);
        let second = r.protect(vec!["x".into()]);
        drop(first);
        assert!(held("x"), "the second backup still streams x");
        assert!(!held("y"));
        // A restore adding contents one by one, failing half way: what it
        // protected is released all the same.
        let mut restore = r.protect(Vec::new());
        restore.add("z".into());
        restore.add("x".into());
        drop(restore);
        assert!(!held("z"));
        assert!(held("x"));
        drop(second);
        assert!(!held("x"));
        drop(r);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }
}
