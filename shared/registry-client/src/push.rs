//! A folder as a new version: every file hashed locally, an upload started
//! with that manifest (or an interrupted one resumed), and only the bytes
//! the registry does not hold yet sent, read by a thread into a small
//! bounded queue so memory stays flat whatever the folder's size.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
};

use mlmesh_proto::registry::v1 as pb;
use sha2::{Digest, Sha256};

use crate::{Client, Error};

/// What a version says of itself beyond its files: its lineage and
/// free-form metadata (a converter's or quantizer's figures).
#[derive(Debug, Clone, Default)]
pub struct About {
    pub lineage: pb::Lineage,
    pub metadata: Option<prost_types::Struct>,
}

impl From<pb::Lineage> for About {
    fn from(lineage: pb::Lineage) -> Self {
        Self {
            lineage,
            metadata: None,
        }
    }
}

/// What a push reports as it goes (a CLI draws progress from it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushEvent {
    /// Every file hashed.
    Hashed { files: usize },
    /// The upload is open: `to_send` of `files` files, `bytes` bytes in all
    /// still to send.
    Planned {
        upload_id: String,
        to_send: usize,
        files: usize,
        bytes: u64,
    },
    /// `n` more bytes sent.
    Sent(u64),
}

/// Pushes every regular file under `dir` as the next version of `model`
/// (or resumes `upload`), `chunk_bytes` per message; the committed version.
/// An interrupted push is resumed by passing the upload id of its
/// [`PushEvent::Planned`].
pub async fn push(
    c: &mut Client,
    model: &str,
    dir: &Path,
    upload: Option<String>,
    about: About,
    chunk_bytes: usize,
    mut on_event: impl FnMut(PushEvent),
) -> Result<pb::Version, Error> {
    let chunk_bytes = chunk_bytes.max(1);
    let d = dir.to_path_buf();
    let (files, manifest) = tokio::task::spawn_blocking(move || manifest_of(&d))
        .await
        .map_err(|e| Error::Refused(format!("hashing failed: {e}")))??;
    on_event(PushEvent::Hashed { files: files.len() });
    let up = match upload {
        Some(id) => c
            .get_upload(pb::GetUploadRequest { upload_id: id })
            .await
            .map_err(Error::rpc("get upload"))?
            .into_inner(),
        None => c
            .start_upload(pb::StartUploadRequest {
                model: model.to_owned(),
                files: manifest.clone(),
                metadata: about.metadata,
                lineage: Some(about.lineage),
            })
            .await
            .map_err(Error::rpc("start upload"))?
            .into_inner(),
    };
    let id = up.upload_id.clone();
    let held: HashMap<String, u64> = up
        .files
        .iter()
        .map(|f| (f.path.clone(), f.received))
        .collect();
    let todo: Vec<(String, PathBuf, u64, u64)> = files
        .iter()
        .zip(&manifest)
        .filter_map(|((rel, path), m)| {
            let from = held.get(rel).copied().unwrap_or(0);
            (from < m.size).then(|| (rel.clone(), path.clone(), from, m.size))
        })
        .collect();
    on_event(PushEvent::Planned {
        upload_id: id.clone(),
        to_send: todo.len(),
        files: files.len(),
        bytes: todo.iter().map(|(_, _, from, size)| size - from).sum(),
    });
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadChunk>(4);
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let reader =
        tokio::task::spawn_blocking(move || read_chunks(&id, todo, chunk_bytes, &tx, &ptx));
    let call = c.upload_files(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut call = std::pin::pin!(call);
    let resp = loop {
        tokio::select! {
            r = &mut call => break r,
            Some(n) = prx.recv() => on_event(PushEvent::Sent(n)),
        }
    };
    while let Ok(n) = prx.try_recv() {
        on_event(PushEvent::Sent(n));
    }
    reader
        .await
        .map_err(|e| Error::Refused(format!("the file reader failed: {e}")))??;
    let resp = resp.map_err(Error::rpc("upload"))?.into_inner();
    resp.version.ok_or_else(|| {
        Error::Refused(format!(
            "upload {} is not complete (the registry holds part of it)",
            up.upload_id
        ))
    })
}

/// Each file's manifest path and where it is here.
type Files = Vec<(String, PathBuf)>;

/// The files under `dir` and their manifest entries, in the same order.
fn manifest_of(dir: &Path) -> Result<(Files, Vec<pb::FileEntry>), Error> {
    let files = walk(dir)?;
    if files.is_empty() {
        return Err(Error::Refused(format!("{} has no files", dir.display())));
    }
    let mut manifest = Vec::with_capacity(files.len());
    for (rel, path) in &files {
        let (size, sha256) = hash_file(path)?;
        manifest.push(pb::FileEntry {
            path: rel.clone(),
            size,
            sha256,
        });
    }
    Ok((files, manifest))
}

/// Reads what is still to send into `tx`, chunk by chunk; the first
/// message names the upload. Stops early when the call has ended.
fn read_chunks(
    id: &str,
    todo: Vec<(String, PathBuf, u64, u64)>,
    chunk_bytes: usize,
    tx: &tokio::sync::mpsc::Sender<pb::UploadChunk>,
    progress: &tokio::sync::mpsc::UnboundedSender<u64>,
) -> Result<(), Error> {
    let mut first = true;
    if todo.is_empty() {
        // Nothing to send: one empty message names the upload so it commits.
        let _ = tx.blocking_send(pb::UploadChunk {
            upload_id: id.to_owned(),
            ..Default::default()
        });
    }
    for (rel, path, from, size) in todo {
        let mut f = File::open(&path).map_err(Error::io(&path))?;
        f.seek(SeekFrom::Start(from)).map_err(Error::io(&path))?;
        let mut at = from;
        while at < size {
            let want = chunk_bytes.min(usize::try_from(size - at).unwrap_or(usize::MAX));
            let mut buf = vec![0u8; want];
            f.read_exact(&mut buf).map_err(Error::io(&path))?;
            let msg = pb::UploadChunk {
                upload_id: if first { id.to_owned() } else { String::new() },
                path: rel.clone(),
                offset: at,
                data: buf.into(),
            };
            first = false;
            at += want as u64;
            if tx.blocking_send(msg).is_err() {
                return Ok(()); // the call ended; its answer says why
            }
            let _ = progress.send(want as u64);
        }
    }
    Ok(())
}

/// Every regular file under `dir`, as '/'-separated relative paths, sorted
/// (symbolic links are not followed).
pub fn walk(dir: &Path) -> Result<Files, Error> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).map_err(Error::io(&d))? {
            let p = e.map_err(Error::io(&d))?.path();
            let meta = fs::symlink_metadata(&p).map_err(Error::io(&p))?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p
                    .strip_prefix(dir)
                    .map_err(|e| Error::Refused(e.to_string()))?;
                let parts: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.push((parts.join("/"), p));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Size and hex SHA-256 of a file, read in 1 MiB pieces.
pub fn hash_file(p: &Path) -> Result<(u64, String), Error> {
    let mut f = File::open(p).map_err(Error::io(p))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf).map_err(Error::io(p))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_becomes_a_sorted_manifest() {
        let d = std::env::temp_dir().join(format!("mlmesh-push-walk-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("1")).expect("dirs");
        fs::write(d.join("config.pbtxt"), b"name: \"x\"").expect("config");
        fs::write(d.join("1/model.onnx"), b"abc").expect("model");
        let (files, manifest) = manifest_of(&d).expect("manifest");
        let paths: Vec<&str> = files.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(paths, ["1/model.onnx", "config.pbtxt"]);
        assert_eq!(manifest[0].size, 3);
        assert_eq!(
            manifest[0].sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        fs::remove_dir_all(&d).expect("clean");
        fs::create_dir_all(&d).expect("empty");
        let e = manifest_of(&d).expect_err("empty");
        assert!(e.to_string().contains("has no files"), "{e}");
    }
}
