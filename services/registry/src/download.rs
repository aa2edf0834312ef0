//! Downloads: a version's files (or one file, or a byte range of it) read
//! from the blob store chunk by chunk and streamed through a small bounded
//! queue, so memory stays flat whatever the size (bounds: [`crate::outbound`]).

use bytes::Bytes;

use crate::{
    error::{RegistryError, Result},
    manifest::FileEntry,
    outbound::Outbound,
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

impl Registry {
    pub(crate) async fn download(&self, spec: DownloadSpec) -> Result<Outbound<Piece>> {
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
        let (feed, out) = self.outbound()?;
        let blobs = std::sync::Arc::clone(&self.blobs);
        let chunk = self.settings.download_chunk_bytes;
        let version = v.version;
        let sent = self.metrics.download_bytes.clone();
        tokio::spawn(async move {
            for (f, offset, len) in files {
                let piece = |at: u64, data: Bytes| {
                    sent.inc_by(data.len() as u64);
                    Piece {
                        version,
                        path: f.path.clone(),
                        offset: at,
                        data,
                    }
                };
                if !feed
                    .content(&blobs, &f.sha256, offset, len, chunk, piece)
                    .await
                {
                    return;
                }
            }
        });
        Ok(out)
    }
}
