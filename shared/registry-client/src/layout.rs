//! Where a version's files go in a Triton-layout model folder: a Triton
//! model folder pushed as is (`config.pbtxt`, `<n>/model.onnx`) loses its
//! own version folder, so the files land in whichever version folder the
//! caller serves them from; a bare model file stays as it is.

use std::path::{Component, Path, PathBuf};

use mlmesh_proto::registry::v1 as pb;

/// Where a registry file goes inside `<model>/<version>/`: a Triton model
/// folder pushed as is (`config.pbtxt`, `<n>/model.onnx`) loses its own
/// version folder; a bare model file (`model.onnx`) stays as it is.
pub struct Layout {
    strip: Option<String>,
}

impl Layout {
    pub fn of(files: &[pb::FileEntry]) -> Self {
        let tops: std::collections::BTreeSet<&str> = files
            .iter()
            .filter(|f| f.path != "config.pbtxt")
            .map(|f| f.path.split('/').next().unwrap_or(""))
            .collect();
        let nested = files
            .iter()
            .filter(|f| f.path != "config.pbtxt")
            .all(|f| f.path.contains('/'));
        let strip = match (tops.len(), tops.iter().next()) {
            (1, Some(t)) if nested && t.parse::<u64>().is_ok() => Some(format!("{t}/")),
            _ => None,
        };
        Self { strip }
    }

    pub fn place(&self, path: &str) -> Result<PathBuf, String> {
        let rel = match &self.strip {
            Some(prefix) => path.strip_prefix(prefix.as_str()).unwrap_or(path),
            None => path,
        };
        let p = Path::new(rel);
        if rel.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("{path:?} is not a plain relative path"));
        }
        Ok(p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(path: &str) -> pb::FileEntry {
        pb::FileEntry {
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_triton_folder_loses_its_version_folder() {
        let l = Layout::of(&[f("config.pbtxt"), f("1/model.onnx")]);
        assert_eq!(
            l.place("1/model.onnx").expect("ok"),
            PathBuf::from("model.onnx")
        );
        assert_eq!(
            l.place("config.pbtxt").expect("ok"),
            PathBuf::from("config.pbtxt")
        );
        let bare = Layout::of(&[f("model.npz")]);
        assert_eq!(
            bare.place("model.npz").expect("ok"),
            PathBuf::from("model.npz")
        );
        assert!(bare.place("../x").is_err());
    }
}
