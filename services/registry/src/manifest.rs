//! A version's manifest: the files it is made of, checked so that no path
//! can leave the version's folder, and its own digest.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::error::{RegistryError, Result};

/// One file of a version.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

/// SHA-256 of no bytes.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Most bytes in a manifest path.
pub const MAX_PATH: usize = 1024;

/// A relative `/`-separated path with no empty, `.` or `..` segment, no
/// backslash or NUL: joined to any folder it stays inside it.
pub fn check_path(field: &str, path: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(RegistryError::invalid(format!(
            "{field} {path:?} {why}: paths are relative, '/'-separated, without empty, '.' or '..' segments"
        )))
    };
    if path.is_empty() {
        return bad("is empty");
    }
    if path.len() > MAX_PATH {
        return bad(&format!("is longer than {MAX_PATH} bytes"));
    }
    if path.starts_with('/') {
        return bad("is absolute");
    }
    if path.contains(['\\', '\0']) {
        return bad("contains a backslash or NUL");
    }
    for seg in path.split('/') {
        match seg {
            "" => return bad("has an empty segment"),
            "." | ".." => return bad(&format!("has a {seg:?} segment")),
            _ => {}
        }
    }
    Ok(())
}

/// 64 lower-case hex digits.
pub fn check_sha256(field: &str, digest: &str) -> Result<()> {
    if digest.len() == 64
        && digest
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(RegistryError::invalid(format!(
            "{field} {digest:?} is not a SHA-256 digest (64 lower-case hex digits)"
        )))
    }
}

/// Checks every entry and that no path is given twice, or is both a file
/// and a folder of another file.
pub fn check(files: &[FileEntry], max_files: usize) -> Result<()> {
    if files.is_empty() {
        return Err(RegistryError::invalid(
            "files: a version needs at least one file",
        ));
    }
    if files.len() > max_files {
        return Err(RegistryError::invalid(format!(
            "files: {} files, more than the limit of {max_files} (registry.max_files)",
            files.len()
        )));
    }
    let mut seen = HashSet::new();
    for (i, f) in files.iter().enumerate() {
        check_path(&format!("files[{i}].path"), &f.path)?;
        check_sha256(&format!("files[{i}].sha256"), &f.sha256)?;
        if f.size == 0 && f.sha256 != EMPTY_SHA256 {
            return Err(RegistryError::invalid(format!(
                "files[{i}].sha256 {:?} is not the digest of an empty file (size 0): {EMPTY_SHA256}",
                f.sha256
            )));
        }
        if !seen.insert(f.path.as_str()) {
            return Err(RegistryError::invalid(format!(
                "files[{i}].path {:?} is given twice",
                f.path
            )));
        }
    }
    for (i, f) in files.iter().enumerate() {
        let mut prefix = f.path.as_str();
        while let Some((parent, _)) = prefix.rsplit_once('/') {
            if seen.contains(parent) {
                return Err(RegistryError::invalid(format!(
                    "files[{i}].path {:?} is inside {parent:?}, which is a file",
                    f.path
                )));
            }
            prefix = parent;
        }
    }
    Ok(())
}

/// SHA-256 over `"<sha256>  <size>  <path>\n"` per file in path order: the
/// same set of files always has the same digest.
pub fn digest(files: &[FileEntry]) -> String {
    let mut sorted: Vec<&FileEntry> = files.iter().collect();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    let mut h = Sha256::new();
    for f in sorted {
        h.update(format!("{}  {}  {}\n", f.sha256, f.size, f.path).as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> FileEntry {
        FileEntry {
            path: path.into(),
            size: 1,
            sha256: "a".repeat(64),
        }
    }

    #[test]
    fn paths_that_escape_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a/",
            "./a",
            "a\\b",
            "a\0",
        ] {
            let e = check_path("files[0].path", bad).expect_err(bad);
            assert!(e.to_string().starts_with("files[0].path"), "{e}");
        }
        for ok in ["model.onnx", "1/model.onnx", "a.b/c..d/.hidden"] {
            check_path("p", ok).expect(ok);
        }
    }

    #[test]
    fn duplicates_and_file_folder_clashes_are_refused() {
        assert!(check(&[f("a"), f("a")], 10).is_err());
        let e = check(&[f("a"), f("a/b")], 10).expect_err("clash");
        assert!(e.to_string().contains("files[1].path"), "{e}");
        assert!(check(&[], 10).is_err());
        assert!(check(&[f("a"), f("b")], 1).is_err());
        check(&[f("a/x"), f("a/y"), f("b")], 10).expect("fine");
    }

    #[test]
    fn the_digest_ignores_order() {
        let (a, b) = (f("a"), f("b"));
        assert_eq!(digest(&[a.clone(), b.clone()]), digest(&[b, a]));
    }
}
