//! Writing a model folder so that a failure leaves nothing that looks like
//! a model: everything goes into a staging folder beside the target, which
//! is renamed into place at the end.

use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
};

/// A fresh folder beside `out` to write into (`out` must not exist).
pub fn staging(out: &Path) -> Result<PathBuf, String> {
    if out.exists() {
        return Err(format!("{} exists: choose a new folder", out.display()));
    }
    let name = out
        .file_name()
        .ok_or_else(|| format!("{} has no folder name", out.display()))?;
    let stage = out.with_file_name(format!(".{}.partial", name.to_string_lossy()));
    let io = |e: std::io::Error| format!("{}: {e}", stage.display());
    if stage.exists() {
        fs::remove_dir_all(&stage).map_err(io)?;
    }
    fs::create_dir_all(&stage).map_err(io)?;
    Ok(stage)
}

/// Renames a finished staging folder into place.
pub fn publish(stage: &Path, out: &Path) -> Result<(), String> {
    fs::rename(stage, out).map_err(|e| format!("{}: {e}", out.display()))
}

/// Writes and syncs a file.
pub fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let io = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = fs::File::create(path).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Copies the regular files of `src` (recursively) into `dst`, except the
/// relative paths in `skip`.
pub fn copy_tree(src: &Path, dst: &Path, skip: &[&Path]) -> Result<(), String> {
    fn walk(root: &Path, dir: &Path, dst: &Path, skip: &[&Path]) -> Result<(), String> {
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        for entry in fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let rel = path.strip_prefix(root).map_err(|e| e.to_string())?;
            if skip.contains(&rel) {
                continue;
            }
            // Symbolic links are followed to files, never to folders
            // (a loop would never end).
            if entry.file_type().map_err(io)?.is_dir() {
                fs::create_dir_all(dst.join(rel)).map_err(io)?;
                walk(root, &path, dst, skip)?;
            } else if fs::metadata(&path).map_err(io)?.is_file() {
                fs::copy(&path, dst.join(rel)).map_err(io)?;
            }
        }
        Ok(())
    }
    walk(src, src, dst, skip)
}
