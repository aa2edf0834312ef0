//! Blobs in a local folder: `<dir>/sha256/<first two digits>/<digest>`,
//! written by rename so a content is either whole or absent.

use std::{
    fs::{self, File},
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    time::SystemTime,
};

use super::BlobStore;
use crate::{
    error::{RegistryError, Result},
    manifest::check_sha256,
};

#[derive(Debug)]
pub struct LocalBlobs {
    root: PathBuf,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> RegistryError {
    RegistryError::Blobs(format!("{what} {}: {e}", path.display()))
}

impl LocalBlobs {
    pub fn open(dir: &Path) -> Result<Self> {
        let root = dir.join("sha256");
        fs::create_dir_all(&root).map_err(|e| io("cannot create", &root, e))?;
        Ok(Self { root })
    }

    fn path(&self, sha256: &str) -> Result<PathBuf> {
        // Digests reach here validated; checked again because they become
        // file names.
        check_sha256("sha256", sha256)?;
        Ok(self.root.join(&sha256[..2]).join(sha256))
    }
}

/// fsync of a folder, so a rename into it survives a power cut.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("cannot sync", dir, e))
}

impl BlobStore for LocalBlobs {
    fn put(&self, sha256: &str, staged: &Path) -> Result<()> {
        let target = self.path(sha256)?;
        if target.is_file() {
            return fs::remove_file(staged).map_err(|e| io("cannot remove", staged, e));
        }
        File::open(staged)
            .and_then(|f| f.sync_all())
            .map_err(|e| io("cannot sync", staged, e))?;
        let parent = target.parent().unwrap_or(&self.root);
        fs::create_dir_all(parent).map_err(|e| io("cannot create", parent, e))?;
        fs::rename(staged, &target).map_err(|e| io("cannot move into", &target, e))?;
        sync_dir(parent)
    }

    fn size(&self, sha256: &str) -> Result<Option<u64>> {
        let p = self.path(sha256)?;
        match fs::metadata(&p) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io("cannot stat", &p, e)),
        }
    }

    fn read(&self, sha256: &str, offset: u64, len: u64) -> Result<Box<dyn Read + Send>> {
        let p = self.path(sha256)?;
        let mut f = File::open(&p).map_err(|e| io("cannot open", &p, e))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(|e| io("cannot seek", &p, e))?;
        Ok(Box::new(f.take(len)))
    }

    fn delete(&self, sha256: &str) -> Result<()> {
        let p = self.path(sha256)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &p, e)),
        }
    }

    fn list(&self) -> Result<Vec<(String, SystemTime)>> {
        let mut out = Vec::new();
        let shards = fs::read_dir(&self.root).map_err(|e| io("cannot list", &self.root, e))?;
        for shard in shards.flatten() {
            let Ok(files) = fs::read_dir(shard.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if check_sha256("", &name).is_err() {
                    continue;
                }
                let time = f
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                out.push((name, time));
            }
        }
        Ok(out)
    }
}
