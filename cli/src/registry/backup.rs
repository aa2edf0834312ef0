//! `mlmesh registry backup DIR` and `restore DIR`: a consistent snapshot of
//! a running registry into a folder, and back into an empty registry.

use std::{
    fs::{self, File},
    io::{Read, Write},
    path::Path,
};

use anyhow::{Context as _, bail};
use mlmesh_proto::registry::v1 as pb;
use sha2::{Digest, Sha256};

/// Streams a backup into `dir`: every content to `blobs/<sha256>`
/// (verified), then `metadata.json` last, so a folder with
/// `metadata.json` is a complete backup.
pub(super) async fn backup(
    c: &mut mlmesh_registry_client::Client,
    dir: &Path,
) -> anyhow::Result<(usize, usize, u64)> {
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        bail!("{} is not empty", dir.display());
    }
    let blobs = dir.join("blobs");
    fs::create_dir_all(&blobs)?;
    let mut s = c.backup(pb::BackupRequest {}).await?.into_inner();
    let mut doc = Vec::new();
    let mut open: Option<(String, File, Sha256)> = None;
    let (mut count, mut bytes) = (0usize, 0u64);
    let finish = |o: Option<(String, File, Sha256)>| -> anyhow::Result<()> {
        if let Some((sha, f, h)) = o {
            f.sync_all()?;
            let got = hex::encode(h.finalize());
            if got != sha {
                bail!("content {sha} arrived with sha256 {got}");
            }
            fs::rename(blobs.join(format!("{sha}.part")), blobs.join(&sha))?;
        }
        Ok(())
    };
    while let Some(chunk) = s.message().await? {
        match chunk.part {
            Some(pb::backup_chunk::Part::Metadata(b)) => doc.extend_from_slice(&b),
            Some(pb::backup_chunk::Part::Blob(b)) => {
                if open.as_ref().is_none_or(|o| o.0 != b.sha256) {
                    finish(open.take())?;
                    if b.sha256.len() != 64 || !b.sha256.bytes().all(|x| x.is_ascii_hexdigit()) {
                        bail!("the registry sent a content named {:?}", b.sha256);
                    }
                    let f = File::create(blobs.join(format!("{}.part", b.sha256)))?;
                    open = Some((b.sha256.clone(), f, Sha256::new()));
                    count += 1;
                }
                if let Some((_, f, h)) = open.as_mut() {
                    f.write_all(&b.data)?;
                    h.update(&b.data);
                    bytes += b.data.len() as u64;
                }
            }
            None => {}
        }
    }
    finish(open.take())?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&doc).context("the metadata is not JSON")?;
    let models = parsed["models"].as_array().map_or(0, Vec::len);
    let tmp = dir.join("metadata.json.part");
    fs::write(&tmp, &doc)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dir.join("metadata.json"))?;
    Ok((models, count, bytes))
}

/// Streams `dir`'s metadata, then every content it lists, to Restore.
pub(super) async fn restore(
    c: &mut mlmesh_registry_client::Client,
    dir: &Path,
) -> anyhow::Result<pb::RestoreResponse> {
    let doc = fs::read(dir.join("metadata.json")).with_context(|| {
        format!(
            "{} is not a complete backup (no metadata.json)",
            dir.display()
        )
    })?;
    let parsed: serde_json::Value =
        serde_json::from_slice(&doc).context("metadata.json is not JSON")?;
    let digests: Vec<String> = parsed["blobs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|b| b["sha256"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let blobs = dir.join("blobs");
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::BackupChunk>(4);
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let send = |part| {
            tx.blocking_send(pb::BackupChunk { part: Some(part) })
                .is_ok()
        };
        for piece in doc.chunks(1 << 20) {
            if !send(pb::backup_chunk::Part::Metadata(piece.to_vec().into())) {
                return Ok(());
            }
        }
        for sha in digests {
            let path = blobs.join(&sha);
            let mut f =
                File::open(&path).with_context(|| format!("{} is missing", path.display()))?;
            let size = f.metadata()?.len();
            let mut offset = 0u64;
            loop {
                let want = (1usize << 20).min((size - offset) as usize);
                let mut buf = vec![0u8; want];
                f.read_exact(&mut buf)?;
                let part = pb::backup_chunk::Part::Blob(pb::BlobChunk {
                    sha256: sha.clone(),
                    size,
                    offset,
                    data: buf.into(),
                });
                offset += want as u64;
                if !send(part) {
                    return Ok(());
                }
                if offset >= size {
                    break;
                }
            }
        }
        Ok(())
    });
    let r = c
        .restore(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the backup reader panicked"))??;
    Ok(r?.into_inner())
}
