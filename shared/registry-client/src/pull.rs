//! A version into a folder, verified: every file's bytes are bounded by,
//! and checked against, the size and SHA-256 the version's manifest
//! declares; each file is fsynced; the whole version is written into a
//! staging folder beside the destination first. A new (or empty)
//! destination is then that folder, renamed into place at once, so a
//! reader sees all of the version or none; into a folder that already
//! holds files, each file is renamed over its namesake, and only once
//! every file has been verified. A crash leaves only the staging folder,
//! removed by the next pull. Files are written on a blocking
//! thread fed through a small bounded queue: the reactor never waits on
//! the disk and memory stays flat whatever the version's size.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File},
    io::Write,
    path::{Component, Path, PathBuf},
};

use mlmesh_proto::registry::v1 as pb;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::{Client, Error};

/// Downloads every file of `version` into `dest` (see the module's header
/// for how it lands). `place` says where a manifest path goes inside
/// `dest` (the identity for a plain copy); whatever it returns must be a
/// plain relative path. `on_bytes` hears of every chunk written (progress).
pub async fn pull(
    c: &mut Client,
    version: &pb::Version,
    dest: &Path,
    place: impl Fn(&str) -> Result<PathBuf, String> + Send + 'static,
    mut on_bytes: impl FnMut(u64),
) -> Result<(), Error> {
    let staging = staging_for(dest)?;
    let mut stream = c
        .download(pb::DownloadRequest {
            model: version.model.clone(),
            selector: Some(pb::download_request::Selector::Version(version.version)),
            ..Default::default()
        })
        .await
        .map_err(Error::rpc("download"))?
        .into_inner();
    let (tx, rx) = mpsc::channel::<pb::DownloadChunk>(4);
    let writer = Writer {
        files: version
            .files
            .iter()
            .map(|f| (f.path.clone(), (f.size, f.sha256.clone())))
            .collect(),
        staging: staging.clone(),
        dest: dest.to_path_buf(),
        place: Box::new(place),
    };
    let written = tokio::task::spawn_blocking(move || writer.run(rx));
    let received: Result<(), Error> = async {
        while let Some(chunk) = stream.message().await.map_err(Error::rpc("download"))? {
            let n = chunk.data.len() as u64;
            if tx.send(chunk).await.is_err() {
                break; // the writer stopped: its error says why
            }
            on_bytes(n);
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = written
        .await
        .map_err(|e| Error::Refused(format!("the file writer failed: {e}")))?;
    let result = received.and(written);
    if result.is_err() {
        let _ = tokio::task::spawn_blocking(move || fs::remove_dir_all(staging)).await;
    }
    result
}

/// `<parent>/.<name>.pull-<pid>`, emptied, beside `dest` (the same file
/// system, so the final rename is atomic).
fn staging_for(dest: &Path) -> Result<PathBuf, Error> {
    let name = dest
        .file_name()
        .ok_or_else(|| Error::Refused(format!("{} names no folder", dest.display())))?;
    let parent = dest.parent().unwrap_or(Path::new("."));
    let staging = parent.join(format!(
        ".{}.pull-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    match fs::remove_dir_all(&staging) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&staging)(e)),
        _ => Ok(staging),
    }
}

/// A manifest path's place under `dir`, refusing anything that would leave
/// it (the registry checks too; a client does not trust a server).
pub fn under(dir: &Path, rel: &Path) -> Result<PathBuf, Error> {
    if rel.as_os_str().is_empty() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(Error::Refused(format!(
            "refusing to write {}: not a plain relative path",
            rel.display()
        )));
    }
    Ok(dir.join(rel))
}

type Place = Box<dyn Fn(&str) -> Result<PathBuf, String> + Send>;

/// The blocking side of a pull.
struct Writer {
    /// Manifest path → (size, sha256).
    files: HashMap<String, (u64, String)>,
    staging: PathBuf,
    dest: PathBuf,
    place: Place,
}

/// The file being written: its manifest path, file, hash and byte count.
struct Open {
    path: String,
    at: PathBuf,
    file: File,
    hash: Sha256,
    written: u64,
}

impl Writer {
    fn run(self, mut rx: mpsc::Receiver<pb::DownloadChunk>) -> Result<(), Error> {
        fs::create_dir_all(&self.staging).map_err(Error::io(&self.staging))?;
        let mut open: Option<Open> = None;
        let mut done: HashSet<String> = HashSet::new();
        while let Some(chunk) = rx.blocking_recv() {
            if open.as_ref().is_none_or(|o| o.path != chunk.path) {
                if let Some(o) = open.take() {
                    done.insert(self.close(o)?);
                }
                open = Some(self.open(&chunk.path, &done)?);
            }
            if let Some(o) = open.as_mut() {
                // Never more than the manifest declares: a hostile or
                // broken registry cannot fill the disk.
                let size = self.files.get(&o.path).map_or(0, |f| f.0);
                if o.written + chunk.data.len() as u64 > size {
                    return Err(Error::Refused(format!(
                        "{}: more bytes than the {size} the manifest declares",
                        o.path
                    )));
                }
                o.file.write_all(&chunk.data).map_err(Error::io(&o.at))?;
                o.hash.update(&chunk.data);
                o.written += chunk.data.len() as u64;
            }
        }
        if let Some(o) = open.take() {
            done.insert(self.close(o)?);
        }
        let mut missing: Vec<&String> = self.files.keys().filter(|p| !done.contains(*p)).collect();
        missing.sort();
        if let Some(first) = missing.first() {
            return Err(Error::Refused(format!(
                "{first} was not received ({} of {} files missing)",
                missing.len(),
                self.files.len()
            )));
        }
        self.commit()
    }

    fn open(&self, path: &str, done: &HashSet<String>) -> Result<Open, Error> {
        if !self.files.contains_key(path) {
            return Err(Error::Refused(format!(
                "the registry sent {path:?}, which is not in the version's manifest"
            )));
        }
        if done.contains(path) {
            return Err(Error::Refused(format!("the registry sent {path:?} twice")));
        }
        let rel = (self.place)(path).map_err(Error::Refused)?;
        let at = under(&self.staging, &rel)?;
        if let Some(p) = at.parent() {
            fs::create_dir_all(p).map_err(Error::io(p))?;
        }
        let file = File::create(&at).map_err(Error::io(&at))?;
        Ok(Open {
            path: path.to_owned(),
            at,
            file,
            hash: Sha256::new(),
            written: 0,
        })
    }

    /// Fsyncs and checks one whole file; its manifest path.
    fn close(&self, o: Open) -> Result<String, Error> {
        o.file.sync_all().map_err(Error::io(&o.at))?;
        let (size, sha256) = &self.files[&o.path];
        let got = hex::encode(o.hash.finalize());
        if got != *sha256 || o.written != *size {
            return Err(Error::Refused(format!(
                "{}: {} bytes with sha256 {got}, the registry's manifest says {size} bytes, {sha256}",
                o.path, o.written
            )));
        }
        Ok(o.path)
    }

    /// The verified staging folder lands at `dest`, made durable.
    fn commit(&self) -> Result<(), Error> {
        // An empty folder is replaced like an absent one.
        let occupied = self.dest.is_dir() && fs::remove_dir(&self.dest).is_err();
        if !occupied {
            fs::rename(&self.staging, &self.dest).map_err(Error::io(&self.dest))?;
            sync_dir(self.dest.parent());
            return Ok(());
        }
        // The caller's folder holds files: each verified file replaces its
        // namesake; other files stay.
        for path in self.files.keys() {
            let rel = (self.place)(path).map_err(Error::Refused)?;
            let from = under(&self.staging, &rel)?;
            let to = under(&self.dest, &rel)?;
            if let Some(p) = to.parent() {
                fs::create_dir_all(p).map_err(Error::io(p))?;
            }
            fs::rename(&from, &to).map_err(Error::io(&to))?;
            sync_dir(to.parent());
        }
        fs::remove_dir_all(&self.staging).map_err(Error::io(&self.staging))
    }
}

/// Makes the renames inside `dir` durable (best effort: some file systems
/// cannot fsync a folder).
fn sync_dir(dir: Option<&Path>) {
    if let Some(d) = dir
        && let Ok(f) = File::open(d)
    {
        let _ = f.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer(dir: &Path, files: &[(&str, &[u8])]) -> Writer {
        Writer {
            files: files
                .iter()
                .map(|(p, b)| {
                    (
                        (*p).to_owned(),
                        (b.len() as u64, hex::encode(Sha256::digest(b))),
                    )
                })
                .collect(),
            staging: dir.join(".v.pull"),
            dest: dir.join("v"),
            place: Box::new(|p| Ok(PathBuf::from(p))),
        }
    }

    fn chunk(path: &str, data: &[u8]) -> pb::DownloadChunk {
        pb::DownloadChunk {
            path: path.into(),
            data: data.to_vec().into(),
            ..Default::default()
        }
    }

    fn run(w: Writer, chunks: Vec<pb::DownloadChunk>) -> Result<(), Error> {
        let (tx, rx) = mpsc::channel(chunks.len().max(1));
        for c in chunks {
            tx.try_send(c).expect("room");
        }
        drop(tx);
        w.run(rx)
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("mlmesh-pull-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).expect("tmp");
        d
    }

    #[test]
    fn a_whole_version_lands_at_once() {
        let d = tmp("whole");
        let w = writer(&d, &[("a/x.bin", b"hello "), ("b.txt", b"world")]);
        run(
            w,
            vec![
                chunk("a/x.bin", b"hel"),
                chunk("a/x.bin", b"lo "),
                chunk("b.txt", b"world"),
            ],
        )
        .expect("pulled");
        assert_eq!(fs::read(d.join("v/a/x.bin")).expect("x"), b"hello ");
        assert_eq!(fs::read(d.join("v/b.txt")).expect("b"), b"world");
        assert!(!d.join(".v.pull").exists());
    }

    #[test]
    fn what_does_not_match_the_manifest_is_refused() {
        let d = tmp("refused");
        let files: &[(&str, &[u8])] = &[("a", b"abc"), ("b", b"de")];
        for (chunks, words) in [
            (vec![chunk("a", b"abX"), chunk("b", b"de")], "sha256"),
            (vec![chunk("a", b"abcd")], "more bytes than the 3"),
            (vec![chunk("a", b"abc")], "b was not received"),
            (vec![chunk("zz", b"abc")], "not in the version's manifest"),
            (
                vec![chunk("a", b"abc"), chunk("b", b"de"), chunk("a", b"")],
                "twice",
            ),
        ] {
            let e = run(writer(&d, files), chunks).expect_err(words);
            assert!(e.to_string().contains(words), "{e} lacks {words:?}");
            assert!(!d.join("v").exists(), "nothing lands on {words}");
        }
        let mut w = writer(&d, &[("a", b"abc")]);
        w.place = Box::new(|_| Ok(PathBuf::from("../escape")));
        let e = run(w, vec![chunk("a", b"abc")]).expect_err("escape");
        assert!(e.to_string().contains("not a plain relative path"), "{e}");
    }

    #[test]
    fn into_a_folder_with_files_each_verified_file_replaces_its_namesake() {
        let d = tmp("occupied");
        fs::create_dir_all(d.join("v/sub")).expect("dest");
        fs::write(d.join("v/mine"), b"keep").expect("mine");
        fs::write(d.join("v/sub/a"), b"old").expect("old a");
        let mut w = writer(&d, &[("sub/a", b"abc"), ("b", b"de")]);
        w.place = Box::new(|p| Ok(PathBuf::from(p)));
        // A failure leaves the caller's folder as it was.
        let e = run(
            writer(&d, &[("sub/a", b"abc"), ("b", b"de")]),
            vec![chunk("sub/a", b"abc"), chunk("b", b"dX")],
        )
        .expect_err("digest");
        assert!(e.to_string().contains("sha256"), "{e}");
        assert_eq!(fs::read(d.join("v/sub/a")).expect("untouched"), b"old");
        assert!(!d.join("v/b").exists());
        run(w, vec![chunk("sub/a", b"abc"), chunk("b", b"de")]).expect("pulled");
        assert_eq!(fs::read(d.join("v/sub/a")).expect("a"), b"abc");
        assert_eq!(fs::read(d.join("v/b")).expect("b"), b"de");
        assert_eq!(fs::read(d.join("v/mine")).expect("kept"), b"keep");
        assert!(!d.join(".v.pull").exists());
    }
}
