//! `push` and `pull` from a shell: the registry client's own push and
//! verified pull (`mlmesh_registry_client`), with progress on stderr.

use std::{
    io::Write,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::Context as _;
use mlmesh_proto::registry::v1 as pb;
use mlmesh_registry_client::{Client, PushEvent, Selector};

/// Progress on stderr: bytes sent of the total, and the rate.
struct Bar {
    total: u64,
    done: u64,
    start: Instant,
    last: Instant,
}

impl Bar {
    fn new(total: u64) -> Self {
        Self {
            total,
            done: 0,
            start: Instant::now(),
            last: Instant::now(),
        }
    }

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

pub(crate) async fn push(
    c: &mut Client,
    model: &str,
    dir: &Path,
    upload: Option<String>,
    about: mlmesh_registry_client::push::About,
    chunk_bytes: usize,
) -> anyhow::Result<pb::Version> {
    eprintln!("hashing the files of {}…", dir.display());
    let mut bar = Bar::new(0);
    let mut id = upload.clone();
    let pushed =
        mlmesh_registry_client::push(c, model, dir, upload, about, chunk_bytes, |e| match e {
            PushEvent::Hashed { .. } => {}
            PushEvent::Planned {
                upload_id,
                to_send,
                files,
                bytes,
            } => {
                eprintln!(
                    "upload {upload_id}: {to_send} of {files} files to send ({:.1} MB); resume with --upload {upload_id}",
                    bytes as f64 / 1e6
                );
                bar = Bar::new(bytes);
                id = Some(upload_id);
            }
            PushEvent::Sent(n) => bar.add(n),
        })
        .await;
    eprintln!();
    match id {
        Some(id) => pushed.with_context(|| format!("upload {id}; resume with --upload {id}")),
        None => Ok(pushed?),
    }
}

pub(super) async fn pull(
    c: &mut Client,
    model: &str,
    version: &str,
    dir: &Path,
) -> anyhow::Result<pb::Version> {
    let selector = Selector::from_arg(version).map_err(anyhow::Error::msg)?;
    let v = c
        .get_version(pb::GetVersionRequest {
            model: model.to_owned(),
            selector: Some(selector.to_get()),
        })
        .await?
        .into_inner();
    let mut bar = Bar::new(v.total_size);
    mlmesh_registry_client::pull(c, &v, dir, |p| Ok(PathBuf::from(p)), |n| bar.add(n)).await?;
    eprintln!();
    Ok(v)
}
