//! Downloads: a version's files (or one file, or a byte range of it) read
//! from the blob store on a blocking thread and streamed in chunks through
//! a small bounded queue, so memory stays flat whatever the size.

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::{
    error::{RegistryError, Result},
    manifest::FileEntry,
    registry::Registry,
    store::Selector,
};

/// What a Download call asks for.
#[derive(Debug)]
pub struct DownloadSpec {
    pub model: String,
    pub selector: Selector,
    /// Empty: every file.
    pub path: String,
    pub offset: u64,
    /// 0: to the end.
    pub length: u64,
}

/// One chunk of a download.
#[derive(Debug)]
pub struct Piece {
    pub version: i64,
    pub path: String,
    pub offset: u64,
    pub data: Bytes,
}

/// Chunks read ahead of the client.
const READ_AHEAD: usize = 4;

impl Registry {
    pub async fn download(&self, spec: DownloadSpec) -> Result<mpsc::Receiver<Result<Piece>>> {
        let v = self.get_version(spec.model.clone(), spec.selector).await?;
        let files: Vec<(FileEntry, u64, u64)> = if spec.path.is_empty() {
            if spec.offset != 0 || spec.length != 0 {
                return Err(RegistryError::invalid(
                    "offset/length: a byte range needs a path",
                ));
            }
            v.files.iter().map(|f| (f.clone(), 0, f.size)).collect()
        } else {
            let Some(f) = v.files.iter().find(|f| f.path == spec.path) else {
                return Err(RegistryError::UnknownFile {
                    model: v.model.clone(),
                    version: v.version,
                    path: spec.path,
                });
            };
            if spec.offset > f.size {
                return Err(RegistryError::invalid(format!(
                    "offset {} is past the end of {:?} ({} bytes)",
                    spec.offset, f.path, f.size
                )));
            }
            let rest = f.size - spec.offset;
            let len = if spec.length == 0 {
                rest
            } else {
                spec.length.min(rest)
            };
            vec![(f.clone(), spec.offset, len)]
        };
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let blobs = std::sync::Arc::clone(&self.blobs);
        let chunk = self.settings.download_chunk_bytes;
        let version = v.version;
        let sent = self.metrics.download_bytes.clone();
        tokio::task::spawn_blocking(move || {
            for (f, offset, len) in files {
                let mut reader = match blobs.read(&f.sha256, offset, len) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                };
                let mut at = offset;
                let end = offset + len;
                loop {
                    let want = chunk.min((end - at) as usize);
                    let mut buf = vec![0u8; want];
                    if let Err(e) = std::io::Read::read_exact(&mut reader, &mut buf) {
                        let _ = tx.blocking_send(Err(RegistryError::Blobs(format!(
                            "reading {:?} ({}): {e}",
                            f.path, f.sha256
                        ))));
                        return;
                    }
                    let piece = Piece {
                        version,
                        path: f.path.clone(),
                        offset: at,
                        data: Bytes::from(buf),
                    };
                    at += want as u64;
                    sent.inc_by(want as u64);
                    if tx.blocking_send(Ok(piece)).is_err() {
                        return; // the client went away
                    }
                    if at >= end {
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }
}
