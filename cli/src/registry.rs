//! `mlmesh registry …`: the model registry from a shell. Push a folder as a
//! new version (hashed locally, only missing bytes sent, resumable, with
//! progress), pull a version into a folder (every file verified against its
//! digest), list and show, move and roll back aliases, watch changes.

use std::{
    collections::HashMap,
    fs::{self, File},
    io::{Read, Write},
    path::{Component, Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

#[derive(Args, Debug)]
pub struct RegistryCmd {
    /// Registry gRPC address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:50054",
        env = "MLMESH_REGISTRY"
    )]
    addr: String,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create a model.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
        /// key=value, repeatable.
        #[arg(long = "tag")]
        tags: Vec<String>,
    },
    /// Push a folder as the model's next version.
    Push {
        model: String,
        dir: PathBuf,
        /// Resume this upload (printed when a push is interrupted).
        #[arg(long)]
        upload: Option<String>,
        #[arg(long, default_value = "")]
        task: String,
        #[arg(long, default_value = "")]
        framework: String,
        #[arg(long, default_value = "")]
        source_commit: String,
        /// Bytes per upload message.
        #[arg(long, default_value_t = 1 << 20)]
        chunk_bytes: usize,
    },
    /// Write a version (NUMBER or @ALIAS) into a folder, verifying every file.
    Pull {
        model: String,
        version: String,
        dir: PathBuf,
    },
    /// Models (or, with a model, its versions).
    List { model: Option<String> },
    /// One model, or one version (NUMBER or @ALIAS) with its files.
    Show {
        model: String,
        version: Option<String>,
    },
    /// Aliases: set (compare-and-set with --expect), history, rollback.
    #[command(subcommand)]
    Alias(AliasCmd),
    /// Write a consistent snapshot of the running registry (metadata and
    /// contents) into an empty folder.
    Backup { dir: PathBuf },
    /// Fill an empty registry from a backup folder.
    Restore { dir: PathBuf },
    /// Print changes as they happen (from --from REVISION, or from now).
    Watch {
        #[arg(long, default_value_t = 0)]
        from: i64,
        #[arg(long)]
        model: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AliasCmd {
    Set {
        model: String,
        alias: String,
        version: i64,
        /// The version the alias must point at now (0: must not exist).
        #[arg(long)]
        expect: Option<i64>,
        #[arg(long, default_value = "")]
        reason: String,
    },
    History {
        model: String,
        alias: Option<String>,
    },
    Rollback {
        model: String,
        alias: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
}

pub async fn run(cmd: RegistryCmd) -> anyhow::Result<()> {
    let mut c = RegistryClient::connect(format!("http://{}", cmd.addr))
        .await
        .with_context(|| format!("connecting to the registry at {}", cmd.addr))?;
    match cmd.command {
        Cmd::Create {
            name,
            description,
            tags,
        } => {
            let tags = tags
                .iter()
                .map(|t| {
                    t.split_once('=')
                        .map(|(k, v)| (k.to_owned(), v.to_owned()))
                        .with_context(|| format!("--tag {t:?}: expected key=value"))
                })
                .collect::<anyhow::Result<HashMap<_, _>>>()?;
            let m = c
                .create_model(pb::CreateModelRequest {
                    name,
                    description,
                    tags,
                    metadata: None,
                })
                .await?
                .into_inner();
            println!("created model {}", m.name);
        }
        Cmd::Push {
            model,
            dir,
            upload,
            task,
            framework,
            source_commit,
            chunk_bytes,
        } => {
            let lineage = pb::Lineage {
                task,
                framework,
                source_commit,
                ..Default::default()
            };
            let v = push(&mut c, &model, &dir, upload, lineage, chunk_bytes).await?;
            println!(
                "{model} version {} committed: {} files, {} bytes, manifest {}",
                v.version,
                v.files.len(),
                v.total_size,
                v.manifest_digest
            );
        }
        Cmd::Pull {
            model,
            version,
            dir,
        } => {
            let v = pull(&mut c, &model, &version, &dir).await?;
            println!(
                "{model} version {} written to {} ({} files verified)",
                v.version,
                dir.display(),
                v.files.len()
            );
        }
        Cmd::List { model: None } => {
            let mut token = String::new();
            loop {
                let page = c
                    .list_models(pb::ListModelsRequest {
                        page_token: token,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                for m in &page.models {
                    println!(
                        "{:<32} latest {:<4} aliases {:?}",
                        m.name, m.latest_version, m.aliases
                    );
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
        }
        Cmd::List { model: Some(model) } => {
            let vs = c
                .list_versions(pb::ListVersionsRequest {
                    model,
                    ..Default::default()
                })
                .await?
                .into_inner();
            for v in vs.versions {
                println!(
                    "{:<6} {:<10} {:>12} bytes  {}  {:?}",
                    v.version,
                    status_name(v.status),
                    v.total_size,
                    v.manifest_digest,
                    v.aliases
                );
            }
        }
        Cmd::Show {
            model,
            version: None,
        } => {
            let m = c.get_model(pb::GetModelRequest { name: model }).await?;
            println!("{:#?}", m.into_inner());
        }
        Cmd::Show {
            model,
            version: Some(v),
        } => {
            let v = c
                .get_version(pb::GetVersionRequest {
                    model,
                    selector: Some(selector(&v)?),
                })
                .await?
                .into_inner();
            println!(
                "version {} ({}), {} bytes, manifest {}, aliases {:?}",
                v.version,
                status_name(v.status),
                v.total_size,
                v.manifest_digest,
                v.aliases
            );
            for f in v.files {
                println!("  {}  {:>12}  {}", f.sha256, f.size, f.path);
            }
        }
        Cmd::Alias(a) => alias(&mut c, a).await?,
        Cmd::Backup { dir } => {
            let (models, blobs, bytes) = backup(&mut c, &dir).await?;
            println!(
                "backup written to {}: {models} models, {blobs} contents, {bytes} bytes",
                dir.display()
            );
        }
        Cmd::Restore { dir } => {
            let r = restore(&mut c, &dir).await?;
            println!(
                "restored {} models, {} versions, {} contents; revision {}",
                r.models, r.versions, r.blobs, r.revision
            );
        }
        Cmd::Watch { from, model } => {
            let mut s = c
                .watch(pb::WatchRequest {
                    start_revision: from,
                    filter: Some(pb::WatchFilter {
                        models: model,
                        ..Default::default()
                    }),
                })
                .await?
                .into_inner();
            while let Some(e) = s.message().await? {
                let kind = pb::EventKind::try_from(e.kind).map_or("?", |k| k.as_str_name());
                println!(
                    "{:>8} {kind:<22} {} v{} {}{}",
                    e.revision,
                    e.model,
                    e.version,
                    e.alias,
                    if e.kind == pb::EventKind::AliasMoved as i32 {
                        format!(" (from v{})", e.from_version)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    Ok(())
}

async fn alias(c: &mut RegistryClient<Channel>, cmd: AliasCmd) -> anyhow::Result<()> {
    match cmd {
        AliasCmd::Set {
            model,
            alias,
            version,
            expect,
            reason,
        } => {
            let r = c
                .set_aliases(pb::SetAliasesRequest {
                    model,
                    aliases: vec![pb::AliasTarget {
                        alias,
                        version,
                        expected_version: expect,
                    }],
                    reason,
                })
                .await?
                .into_inner();
            for m in r.moves {
                println!(
                    "{} {}: v{} -> v{} (revision {})",
                    m.model, m.alias, m.from_version, m.to_version, m.revision
                );
            }
        }
        AliasCmd::History { model, alias } => {
            let h = c
                .alias_history(pb::AliasHistoryRequest {
                    model,
                    alias: alias.unwrap_or_default(),
                    ..Default::default()
                })
                .await?
                .into_inner();
            for m in h.moves {
                let at = m.moved_at.map_or(0, |t| t.seconds);
                println!(
                    "{:>8}  {at}  {:<16} v{} -> v{}  {}",
                    m.revision, m.alias, m.from_version, m.to_version, m.reason
                );
            }
        }
        AliasCmd::Rollback {
            model,
            alias,
            reason,
        } => {
            let m = c
                .rollback_alias(pb::RollbackAliasRequest {
                    model,
                    alias,
                    expected_version: None,
                    reason,
                })
                .await?
                .into_inner();
            println!(
                "{} {}: v{} -> v{} (revision {})",
                m.model, m.alias, m.from_version, m.to_version, m.revision
            );
        }
    }
    Ok(())
}

fn status_name(s: i32) -> &'static str {
    pb::VersionStatus::try_from(s).map_or("?", |s| s.as_str_name())
}

/// `3` → version 3, `@production` → that alias.
fn selector(v: &str) -> anyhow::Result<pb::get_version_request::Selector> {
    use pb::get_version_request::Selector as S;
    if let Some(alias) = v.strip_prefix('@') {
        return Ok(S::Alias(alias.to_owned()));
    }
    let n: i64 = v
        .parse()
        .with_context(|| format!("{v:?}: a version number or @alias"))?;
    Ok(S::Version(n))
}

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

async fn push(
    c: &mut RegistryClient<Channel>,
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

async fn pull(
    c: &mut RegistryClient<Channel>,
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

/// Streams a backup into `dir`: every content to `blobs/<sha256>`
/// (verified), then `metadata.json` last, so a folder with
/// `metadata.json` is a complete backup.
async fn backup(
    c: &mut RegistryClient<Channel>,
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
async fn restore(
    c: &mut RegistryClient<Channel>,
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
