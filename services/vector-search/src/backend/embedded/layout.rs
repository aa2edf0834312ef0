//! Files on disk: atomic writes.

use super::*;

/// Writes `bytes` to `path` via a temporary file and a rename, fsyncing both.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_atomic_write_replaces_the_whole_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("mlmesh-layout-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join(META_FILE);
        write_atomic(&path, b"a much longer first version").expect("first");
        write_atomic(&path, b"second").expect("second");
        assert_eq!(fs::read(&path).expect("read"), b"second");
        assert!(!path.with_extension("tmp").exists());
        let _ = fs::remove_dir_all(dir);
    }
}
