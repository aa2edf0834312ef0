//! Moving a version's files: `push` (hash locally, send only what the
//! registry lacks, resumable, progress on stderr) and `pull` (every file
//! checked against its digest, written as `.part` then renamed).

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{Read, Write},
    path::{Component, Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use mlmesh_proto::registry::v1 as pb;
use sha2::{Digest, Sha256};

use super::selector;

/// Every regular file under `dir`, as '/'-separated relative paths, sorted.
fn walk(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            let meta = fs::symlink_metadata(&p)?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                let rel = p.strip_prefix(dir)?;
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

fn hash_file(p: &Path) -> anyhow::Result<(u64, String)> {
    let mut f = File::open(p).with_context(|| format!("opening {}", p.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        let k = f.read(&mut buf)?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((n, hex::encode(h.finalize())))
}

/// Progress on stderr: bytes sent of the total, and the rate.
struct Bar {
    total: u64,
    done: u64,
    start: Instant,
    last: Instant,
}

impl Bar {
    fn add(&mut self, n: u64) {
        self.done += n;
        if self.last.elapsed().as_millis() >= 200 || self.done == self.total {
            self.last = Instant::now();
            let mb = |b: u64| b as f64 / 1e6;
            let secs = self.start.elapsed().as_secs_f64().max(1e-3);
            eprint!(
                "\r  {:>9.1} / {:.1} MB  {:>5.1}%  {:>7.1} MB/s",
                mb(self.done),
                mb(self.total),
                100.0 * self.done as f64 / self.total.max(1) as f64,
                mb(self.done) / secs
            );
            let _ = std::io::stderr().flush();
        }
    }
}

pub(super) async fn push(
    c: &mut super::Client,
    model: &str,
    dir: &Path,
    upload: Option<String>,
    lineage: pb::Lineage,
    chunk_bytes: usize,
) -> anyhow::Result<pb::Version> {
    let files = walk(dir)?;
    if files.is_empty() {
        bail!("{} has no files", dir.display());
    }
    eprintln!("hashing {} files…", files.len());
    let mut manifest = Vec::new();
    for (rel, path) in &files {
        let (size, sha256) = hash_file(path)?;
        manifest.push(pb::FileEntry {
            path: rel.clone(),
            size,
            sha256,
        });
    }
    let up = match upload {
        Some(id) => c
            .get_upload(pb::GetUploadRequest { upload_id: id })
            .await?
            .into_inner(),
        None => c
            .start_upload(pb::StartUploadRequest {
                model: model.to_owned(),
                files: manifest.clone(),
                metadata: None,
                lineage: Some(lineage),
            })
            .await?
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
    let total: u64 = todo.iter().map(|(_, _, from, size)| size - from).sum();
    eprintln!(
        "upload {id}: {} of {} files to send ({:.1} MB); resume with --upload {id}",
        todo.len(),
        files.len(),
        total as f64 / 1e6
    );
    // A reader thread feeds a small bounded queue: memory stays flat.
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadChunk>(4);
    let (ptx, mut prx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let first_id = id.clone();
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut first = true;
        let send = |chunk: pb::UploadChunk| -> bool { tx.blocking_send(chunk).is_ok() };
        if todo.is_empty() {
            // Nothing to send: one empty message names the upload so it commits.
            send(pb::UploadChunk {
                upload_id: first_id.clone(),
                ..Default::default()
            });
        }
        for (rel, path, from, size) in todo {
            let mut f = File::open(&path)?;
            std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(from))?;
            let mut at = from;
            while at < size {
                let want = chunk_bytes.min((size - at) as usize);
                let mut buf = vec![0u8; want];
                f.read_exact(&mut buf)?;
                let msg = pb::UploadChunk {
                    upload_id: if first {
                        first_id.clone()
                    } else {
                        String::new()
                    },
                    path: rel.clone(),
                    offset: at,
                    data: buf.into(),
                };
                first = false;
                at += want as u64;
                if !send(msg) {
                    return Ok(());
                }
                let _ = ptx.send(want as u64);
            }
        }
        Ok(())
    });
    let mut bar = Bar {
        total,
        done: 0,
        start: Instant::now(),
        last: Instant::now(),
    };
    let call = c.upload_files(tokio_stream::wrappers::ReceiverStream::new(rx));
    let mut call = std::pin::pin!(call);
    let resp = loop {
        tokio::select! {
            r = &mut call => break r,
            Some(n) = prx.recv() => bar.add(n),
        }
    };
    eprintln!();
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("the file reader panicked"))??;
    let resp = resp
        .with_context(|| format!("upload {id} interrupted; resume with --upload {id}"))?
        .into_inner();
    resp.version
        .with_context(|| format!("upload {id} is not complete; resume with --upload {id}"))
}

/// A manifest path as a path under `dir`, refusing anything that would
/// leave it (the registry checks too; a client does not trust a server).
fn under(dir: &Path, rel: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
        bail!("refusing to write {rel:?}: not a plain relative path");
    }
    Ok(dir.join(p))
}

pub(super) async fn pull(
    c: &mut super::Client,
    model: &str,
    version: &str,
    dir: &Path,
) -> anyhow::Result<pb::Version> {
    let v = c
        .get_version(pb::GetVersionRequest {
            model: model.to_owned(),
            selector: Some(selector(version)?),
        })
        .await?
        .into_inner();
    let mut s = c
        .download(pb::DownloadRequest {
            model: model.to_owned(),
            selector: Some(pb::download_request::Selector::Version(v.version)),
            ..Default::default()
        })
        .await?
        .into_inner();
    let want: HashMap<&str, &pb::FileEntry> =
        v.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut bar = Bar {
        total: v.total_size,
        done: 0,
        start: Instant::now(),
        last: Instant::now(),
    };
    // Each file goes to `<path>.part`, hashed as written, renamed when whole.
    let mut current: Option<(String, File, Sha256, PathBuf)> = None;
    let finish = |cur: Option<(String, File, Sha256, PathBuf)>| -> anyhow::Result<()> {
        if let Some((path, f, h, part)) = cur {
            drop(f);
            let entry = want[path.as_str()];
            let got = hex::encode(h.finalize());
            if got != entry.sha256 {
                let _ = fs::remove_file(&part);
                bail!("{path}: sha256 {got}, expected {}", entry.sha256);
            }
            fs::rename(&part, part.with_extension(""))?;
        }
        Ok(())
    };
    while let Some(chunk) = s.message().await? {
        if current.as_ref().is_none_or(|c| c.0 != chunk.path) {
            finish(current.take())?;
            if !want.contains_key(chunk.path.as_str()) {
                bail!(
                    "the registry sent {:?}, which is not in the manifest",
                    chunk.path
                );
            }
            let target = under(dir, &chunk.path)?;
            if let Some(parent) = target.parent() {
                fs::create_dir_all(parent)?;
            }
            let mut part = target.clone().into_os_string();
            part.push(".part");
            let part = PathBuf::from(part);
            let f = File::create(&part).with_context(|| format!("creating {}", part.display()))?;
            current = Some((chunk.path.clone(), f, Sha256::new(), part));
        }
        if let Some((_, f, h, _)) = current.as_mut() {
            f.write_all(&chunk.data)?;
            h.update(&chunk.data);
        }
        bar.add(chunk.data.len() as u64);
    }
    finish(current.take())?;
    eprintln!();
    for f in &v.files {
        if !under(dir, &f.path)?.is_file() {
            bail!("{} was not received", f.path);
        }
    }
    Ok(v)
}
