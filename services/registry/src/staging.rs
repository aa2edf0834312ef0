//! The folder of uploads in progress, `<dir>/<upload id>/<file index>`:
//! where an upload's bytes wait until the whole version is verified.

use std::{
    fs,
    path::{Path, PathBuf},
};

use crate::error::{RegistryError, Result};

/// The folder of uploads in progress: `<dir>/<upload id>/<file index>`.
#[derive(Debug)]
pub struct Staging {
    root: PathBuf,
}

impl Staging {
    pub fn open(root: &Path) -> Result<Self> {
        fs::create_dir_all(root)
            .map_err(|e| RegistryError::Blobs(format!("cannot create {}: {e}", root.display())))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    pub fn file(&self, id: &str, idx: usize) -> PathBuf {
        self.dir(id).join(idx.to_string())
    }

    pub fn remove(&self, id: &str) {
        let _ = fs::remove_dir_all(self.dir(id));
    }

    /// Upload ids with a staging folder.
    pub fn ids(&self) -> Vec<String> {
        fs::read_dir(&self.root)
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}
