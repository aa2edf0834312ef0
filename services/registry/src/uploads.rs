//! Uploads: a manifest declared first, then file bytes streamed in chunks,
//! hashed as they arrive, kept in a staging folder until every file is
//! whole and verified; only then is the version committed.
//!
//! A broken stream loses nothing that was written: the staged bytes stay,
//! `GetUpload` reports how much of each file is held, and a new stream goes
//! on from there. A file whose content the registry already holds counts as
//! received at once and is never sent.

use std::{
    collections::HashMap,
    fs::{self, File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::Arc,
};

use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::{
    error::{RegistryError, Result},
    manifest::{self, FileEntry},
    registry::{Registry, check_metadata, now_ms},
    store::{Lineage, UploadQuota, UploadRecord, VersionRecord},
};

/// A new upload as a client declares it.
#[derive(Debug)]
pub struct UploadSpec {
    pub model: String,
    pub files: Vec<FileEntry>,
    pub metadata: Map<String, Value>,
    pub lineage: Lineage,
}

/// An upload and how much of each file is held.
#[derive(Debug, Clone)]
pub struct Progress {
    pub upload: UploadRecord,
    pub received: Vec<u64>,
}

impl Progress {
    pub fn complete(&self) -> bool {
        self.upload
            .files
            .iter()
            .zip(&self.received)
            .all(|(f, r)| f.size == *r)
    }
}

/// One chunk of an upload stream.
#[derive(Debug)]
pub struct Chunk {
    pub upload_id: String,
    pub path: String,
    pub offset: u64,
    pub data: bytes::Bytes,
}

/// A file being written by the current stream.
struct Open {
    idx: usize,
    file: File,
    hasher: Sha256,
}

/// Releases the one-writer claim on an upload.
pub(crate) struct Claim<'a> {
    registry: &'a Registry,
    id: String,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        if let Ok(mut w) = self.registry.writing.lock() {
            w.remove(&self.id);
        }
    }
}

impl Registry {
    pub async fn start_upload(&self, spec: UploadSpec) -> Result<Progress> {
        crate::names::check("model", &spec.model)?;
        manifest::check(&spec.files, self.settings.max_files)?;
        check_metadata("metadata", &spec.metadata)?;
        // Declared sizes against the quotas, before anything is staged.
        let (max_file, max_version) = (
            self.settings.max_file_bytes,
            self.settings.max_version_bytes,
        );
        let mut total = 0u64;
        for (i, f) in spec.files.iter().enumerate() {
            if f.size > max_file {
                return Err(RegistryError::invalid(format!(
                    "files[{i}].size: {} bytes; at most {max_file} (registry.max_file_bytes)",
                    f.size
                )));
            }
            total = total.saturating_add(f.size);
        }
        if total > max_version {
            return Err(RegistryError::invalid(format!(
                "files: {total} bytes in all; a version may hold at most {max_version} (registry.max_version_bytes)"
            )));
        }
        let now = now_ms();
        let upload = UploadRecord {
            id: uuid::Uuid::new_v4().to_string(),
            model: spec.model,
            files: spec.files,
            metadata: spec.metadata,
            lineage: spec.lineage,
            created_ms: now,
            expires_ms: now + self.settings.upload_expiry().as_millis() as i64,
        };
        let record = upload.clone();
        let quota = UploadQuota {
            max_open: self.settings.max_open_uploads,
            max_bytes: self.settings.max_staged_bytes,
        };
        let known = self.meta(move |s| s.start_upload(&record, &quota)).await?;
        self.metrics.uploads_started.inc();
        self.progress(upload, Some(known)).await
    }

    pub async fn get_upload(&self, id: String) -> Result<Progress> {
        let upload = self.meta(move |s| s.get_upload(&id)).await?;
        self.progress(upload, None).await
    }

    pub async fn abort_upload(&self, id: String) -> Result<()> {
        let upload = self.meta({
            let id = id.clone();
            move |s| s.get_upload(&id)
        });
        upload.await?;
        let _claim = self.claim(&id)?;
        self.drop_upload(&id).await
    }

    async fn drop_upload(&self, id: &str) -> Result<()> {
        let owned = id.to_owned();
        self.meta(move |s| s.delete_upload(&owned)).await?;
        self.staging.remove(id);
        Ok(())
    }

    /// How much of each file is held: a content already stored counts
    /// whole, otherwise the staged bytes. `known`: which contents the
    /// metadata store holds, when the caller already asked it (StartUpload
    /// does, in its transaction). One trip to the blocking pool.
    async fn progress(&self, upload: UploadRecord, known: Option<Vec<bool>>) -> Result<Progress> {
        let staged: Vec<PathBuf> = (0..upload.files.len())
            .map(|i| self.staging.file(&upload.id, i))
            .collect();
        let (store, blobs) = (Arc::clone(&self.store), Arc::clone(&self.blobs));
        let files = upload.files.clone();
        let received = tokio::task::spawn_blocking(move || -> Result<Vec<u64>> {
            let mut received = Vec::with_capacity(files.len());
            for (i, (f, path)) in files.iter().zip(&staged).enumerate() {
                let on_disk = fs::metadata(path).map_or(0, |m| m.len());
                if on_disk > 0 {
                    received.push(on_disk);
                    continue;
                }
                let known = match &known {
                    Some(k) => k.get(i).copied().unwrap_or(false),
                    None => store.knows_blob(&f.sha256)?,
                };
                let held = known && blobs.size(&f.sha256)? == Some(f.size);
                received.push(if held { f.size } else { 0 });
            }
            Ok(received)
        })
        .await??;
        Ok(Progress { upload, received })
    }

    pub(crate) fn claim(&self, id: &str) -> Result<Claim<'_>> {
        let mut w = self
            .writing
            .lock()
            .map_err(|_| RegistryError::Store("upload lock poisoned".into()))?;
        if !w.insert(id.to_owned()) {
            return Err(RegistryError::Aborted(format!(
                "upload {id:?} is being written by another call; wait for it, then GetUpload and resume"
            )));
        }
        Ok(Claim {
            registry: self,
            id: id.to_owned(),
        })
    }

    /// Writes a stream of chunks into their upload; when the stream ends
    /// with every file whole, commits the version.
    pub async fn upload_files<S>(&self, chunks: S) -> Result<(Progress, Option<VersionRecord>)>
    where
        S: Stream<Item = Result<Chunk>> + Send,
    {
        let mut chunks = std::pin::pin!(chunks);
        let Some(first) = chunks.next().await else {
            return Err(RegistryError::invalid(
                "the stream is empty: its first message names the upload (upload_id)",
            ));
        };
        let first = first?;
        if first.upload_id.is_empty() {
            return Err(RegistryError::invalid(
                "upload_id: required in the first message",
            ));
        }
        let id = first.upload_id.clone();
        let _claim = self.claim(&id)?;
        let fetched = self.meta({
            let id = id.clone();
            move |s| s.get_upload(&id)
        });
        let mut progress = self.progress(fetched.await?, None).await?;
        let index: HashMap<String, usize> = progress
            .upload
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.path.clone(), i))
            .collect();
        // Files whole before this stream began: chunks of them are skipped,
        // so a client may resend what the registry already holds.
        let whole_at_start: Vec<bool> = progress
            .upload
            .files
            .iter()
            .zip(&progress.received)
            .map(|(f, r)| f.size == *r)
            .collect();
        let mut open: Option<Open> = None;
        let mut next = Some(first);
        loop {
            let chunk = match next.take() {
                Some(c) => c,
                None => match chunks.next().await {
                    Some(c) => c?,
                    None => break,
                },
            };
            // An empty message only names the upload (nothing left to send).
            let naming_only = chunk.path.is_empty() && chunk.data.is_empty();
            if naming_only || index.get(&chunk.path).is_some_and(|&i| whole_at_start[i]) {
                continue;
            }
            if let Err(e) = self
                .write_chunk(&mut progress, &index, &mut open, chunk)
                .await
            {
                if matches!(e, RegistryError::Corrupt(_)) {
                    self.drop_upload(&id).await?;
                }
                return Err(e);
            }
        }
        drop(open);
        if !progress.complete() {
            return Ok((progress, None));
        }
        let version = self.commit(&progress).await?;
        Ok((progress, Some(version)))
    }

    async fn write_chunk(
        &self,
        progress: &mut Progress,
        index: &HashMap<String, usize>,
        open: &mut Option<Open>,
        chunk: Chunk,
    ) -> Result<()> {
        let id = progress.upload.id.clone();
        let Some(&idx) = index.get(&chunk.path) else {
            return Err(RegistryError::invalid(format!(
                "path {:?} is not a file of upload {id:?}",
                chunk.path
            )));
        };
        if chunk.data.len() > self.settings.max_chunk_bytes {
            return Err(RegistryError::invalid(format!(
                "data: {} bytes in one message, more than registry.max_chunk_bytes ({})",
                chunk.data.len(),
                self.settings.max_chunk_bytes
            )));
        }
        let entry = progress.upload.files[idx].clone();
        let held = progress.received[idx];
        if chunk.offset != held {
            return Err(RegistryError::invalid(format!(
                "offset {} of file {:?}: the registry holds {held} bytes of it; send from offset {held}",
                chunk.offset, entry.path
            )));
        }
        let end = held + chunk.data.len() as u64;
        if end > entry.size {
            return Err(RegistryError::Corrupt(format!(
                "file {:?}: {end} bytes sent, more than its declared size of {}; the upload is dropped",
                entry.path, entry.size
            )));
        }
        if chunk.data.is_empty() {
            return Ok(());
        }
        // Switch files: open the new one and hash what it already holds.
        let current = open.take().filter(|o| o.idx == idx);
        let path = self.staging.file(&id, idx);
        let rehashed = self.metrics.upload_rehashed_bytes.clone();
        let mut writer = tokio::task::spawn_blocking(move || -> Result<Open> {
            let mut o = match current {
                Some(o) => o,
                None => open_staged(&path, idx, held, &rehashed)?,
            };
            o.file.write_all(&chunk.data).map_err(|e| {
                RegistryError::Blobs(format!("cannot write {}: {e}", path.display()))
            })?;
            o.hasher.update(&chunk.data);
            save_state(&path, end, &o.hasher);
            Ok(o)
        })
        .await??;
        progress.received[idx] = end;
        self.metrics.upload_bytes.inc_by(end - held);
        if end == entry.size {
            writer
                .file
                .flush()
                .map_err(|e| RegistryError::Blobs(e.to_string()))?;
            let got = hex::encode(std::mem::take(&mut writer.hasher).finalize());
            if got != entry.sha256 {
                return Err(RegistryError::Corrupt(format!(
                    "file {:?}: its bytes have sha256 {got}, not the declared {}; the upload is dropped",
                    entry.path, entry.sha256
                )));
            }
        } else {
            *open = Some(writer);
        }
        Ok(())
    }

    /// Moves every staged file into the blob store, then commits the
    /// version in one metadata transaction.
    async fn commit(&self, progress: &Progress) -> Result<VersionRecord> {
        let id = progress.upload.id.clone();
        let _blobs = self.blob_lock.lock().await;
        for (i, f) in progress.upload.files.iter().enumerate() {
            let staged = self.staging.file(&id, i);
            let sha = f.sha256.clone();
            let size = f.size;
            let path = f.path.clone();
            self.blob(move |b| {
                if size == 0 && !staged.is_file() {
                    // Nothing was ever sent for an empty file.
                    if let Some(dir) = staged.parent() {
                        fs::create_dir_all(dir)
                            .and_then(|()| File::create(&staged).map(|_| ()))
                            .map_err(|e| {
                                RegistryError::Blobs(format!("{}: {e}", staged.display()))
                            })?;
                    }
                }
                if staged.is_file() {
                    b.put(&sha, &staged)
                } else if b.size(&sha)? == Some(size) {
                    Ok(())
                } else {
                    Err(RegistryError::FailedPrecondition(format!(
                        "file {path:?}: its content is no longer stored; start a new upload"
                    )))
                }
            })
            .await?;
        }
        let committed = self.meta({
            let id = id.clone();
            move |s| s.commit_upload(&id, now_ms())
        });
        let version = committed.await?;
        drop(_blobs);
        self.staging.remove(&id);
        self.metrics.versions_committed.inc();
        self.changed().await;
        tracing::info!(model = %version.model, version = version.version, files = version.files.len(), bytes = version.total_size(), "version committed");
        Ok(version)
    }
}

/// Opens a staged file for appending, hashing the `held` bytes it has.
fn open_staged(
    path: &Path,
    idx: usize,
    held: u64,
    rehashed: &prometheus::IntCounter,
) -> Result<Open> {
    let io = |e: std::io::Error| RegistryError::Blobs(format!("{}: {e}", path.display()));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io)?;
    }
    let hasher = match load_state(path, held) {
        Some(h) => h,
        None => {
            // No usable checkpoint (a crash between the bytes and their
            // checkpoint): hash what the file holds.
            let mut hasher = Sha256::new();
            if held > 0 {
                let mut f = File::open(path).map_err(io)?;
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let n = f.read(&mut buf).map_err(io)?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    rehashed.inc_by(n as u64);
                }
            }
            hasher
        }
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io)?;
    Ok(Open { idx, file, hasher })
}

/// Where the hash state of a staged file's bytes is kept: beside it.
fn state_path(staged: &Path) -> PathBuf {
    staged.with_extension("sha256-state")
}

/// Records the hash of a staged file's first `len` bytes, so a resumed
/// upload continues hashing from there instead of reading them again.
/// Best effort: without it a resume rehashes.
fn save_state(staged: &Path, len: u64, hasher: &Sha256) {
    use sha2::digest::common::hazmat::SerializableState as _;
    let mut out = len.to_le_bytes().to_vec();
    out.extend_from_slice(hasher.serialize().as_slice());
    let _ = fs::write(state_path(staged), out);
}

/// The hash state of the first `held` bytes, when its checkpoint covers
/// exactly what the file holds.
fn load_state(staged: &Path, held: u64) -> Option<Sha256> {
    use sha2::digest::common::hazmat::{SerializableState, SerializedState};
    let bytes = fs::read(state_path(staged)).ok()?;
    let (len, state) = bytes.split_at_checked(8)?;
    let len = u64::from_le_bytes(len.try_into().ok()?);
    let on_disk = fs::metadata(staged).ok()?.len();
    if held == 0 || len != held || on_disk != held {
        return None;
    }
    let state = SerializedState::<Sha256>::try_from(state).ok()?;
    SerializableState::deserialize(&state).ok()
}
