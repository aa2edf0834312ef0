//! The model repository in Triton's layout:
//!
//! ```text
//! <repository>/<model>/config.pbtxt        (optional for ONNX and .npz)
//! <repository>/<model>/<version>/model.onnx (or model.npz, or the config's
//!                                            default_model_filename)
//! ```
//!
//! Scanning reads each model's config and lists its numeric version
//! folders; the version policy picks the ones served. A fingerprint of the
//! files (sizes and modification times) tells the poller what changed.

pub mod pbtxt;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::SystemTime,
};

use mlmesh_proto::inference as pb;

use crate::error::LoadError;

/// Which engine runs a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// ONNX Runtime (`onnxruntime_onnx` / `onnxruntime`).
    Onnx,
    /// The NumPy `.npz` format computed with ndarray (`mlmesh_npz`).
    Npz,
}

impl Backend {
    pub fn platform(self) -> &'static str {
        match self {
            Backend::Onnx => "onnxruntime_onnx",
            Backend::Npz => "mlmesh_npz",
        }
    }

    pub fn backend(self) -> &'static str {
        match self {
            Backend::Onnx => "onnxruntime",
            Backend::Npz => "mlmesh_npz",
        }
    }

    fn default_file(self) -> &'static str {
        match self {
            Backend::Onnx => "model.onnx",
            Backend::Npz => "model.npz",
        }
    }
}

/// One model folder, read but not loaded.
#[derive(Clone, Debug)]
pub struct ModelSource {
    pub name: String,
    pub dir: PathBuf,
    /// The config as read (`config.pbtxt`) or empty; filled from the model
    /// itself at load.
    pub config: pb::ModelConfig,
    /// Config fields the reader skipped (logged once at load).
    pub skipped_fields: Vec<String>,
    pub backend: Backend,
    /// Versions the policy serves, ascending, each with its model file.
    pub versions: BTreeMap<i64, PathBuf>,
    /// Every version folder present, served or not.
    pub all_versions: Vec<i64>,
    /// Changes when the config or a served version's file changes.
    pub fingerprint: Vec<(PathBuf, u64, Option<SystemTime>)>,
}

/// The repository: the model repository folder, and (when models come
/// from the registry) the folder their pulled versions are kept in.
#[derive(Clone, Debug)]
pub struct Repository {
    pub root: PathBuf,
    /// Models pulled from the registry: their config's `name` may differ
    /// from the registry model's name, which is the one served.
    pub pulled: Option<PathBuf>,
}

impl Repository {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            pulled: None,
        }
    }

    /// Adds the folder of models pulled from the registry.
    pub fn with_pulled(mut self, dir: impl Into<PathBuf>) -> Self {
        self.pulled = Some(dir.into());
        self
    }

    /// The folder of model `name`, in the repository or among the pulled.
    pub fn dir(&self, name: &str) -> Option<PathBuf> {
        std::iter::once(&self.root)
            .chain(self.pulled.as_ref())
            .map(|r| r.join(name))
            .find(|d| d.is_dir())
    }

    /// Names of the model folders (sorted). Hidden folders are skipped.
    pub fn model_names(&self) -> Result<Vec<String>, LoadError> {
        let mut names = Vec::new();
        let rd = std::fs::read_dir(&self.root).map_err(|e| LoadError::file(&self.root, e))?;
        let pulled = self
            .pulled
            .iter()
            .flat_map(|p| std::fs::read_dir(p).into_iter().flatten());
        for entry in rd.flatten().chain(pulled.flatten()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with('.') && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Reads one model folder.
    pub fn read(&self, name: &str) -> Result<ModelSource, LoadError> {
        self.read_version(name, None)
    }

    /// Reads one model folder; `pinned`: serve exactly that version
    /// whatever the config's policy says (a registry alias chose it).
    pub fn read_version(&self, name: &str, pinned: Option<i64>) -> Result<ModelSource, LoadError> {
        if name.is_empty() || name.contains('/') || name.contains("..") {
            return Err(LoadError::Invalid(format!("{name:?} is not a model name")));
        }
        let Some(dir) = self.dir(name) else {
            return Err(LoadError::file(
                &self.root.join(name),
                "no such model folder",
            ));
        };
        let from_registry = self.pulled.as_ref().is_some_and(|p| dir.starts_with(p));
        let config_path = dir.join("config.pbtxt");
        let mut fingerprint = Vec::new();
        let (config, skipped_fields) = if config_path.is_file() {
            fingerprint.push(stamp(&config_path));
            // Bounded before reading: the file may come from the registry.
            let text = read_bounded(&config_path, pbtxt::MAX_CONFIG_BYTES)
                .map_err(|e| LoadError::file(&config_path, e))?;
            pbtxt::parse(&text).map_err(|reason| LoadError::Config {
                path: config_path.display().to_string(),
                reason,
            })?
        } else {
            (pb::ModelConfig::default(), Vec::new())
        };
        if !config.name.is_empty() && config.name != name && !from_registry {
            return Err(LoadError::Config {
                path: config_path.display().to_string(),
                reason: format!(
                    "name {:?} differs from the folder name {name:?}",
                    config.name
                ),
            });
        }

        let mut all_versions: Vec<i64> = std::fs::read_dir(&dir)
            .map_err(|e| LoadError::file(&dir, e))?
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().to_str()?.parse::<i64>().ok())
            .filter(|v| *v > 0)
            .collect();
        all_versions.sort_unstable();
        let served = match pinned {
            Some(v) if all_versions.contains(&v) => vec![v],
            Some(v) => {
                return Err(LoadError::file(
                    &dir,
                    format!("version {v} is not present (present: {all_versions:?})"),
                ));
            }
            None => select_versions(&config, &all_versions),
        };
        if served.is_empty() {
            return Err(LoadError::file(
                &dir,
                if all_versions.is_empty() {
                    "no numeric version folder (e.g. 1/model.onnx)".to_owned()
                } else {
                    format!(
                        "the version policy selects none of the versions present {all_versions:?}"
                    )
                },
            ));
        }

        let declared = match (config.platform.as_str(), config.backend.as_str()) {
            ("onnxruntime_onnx", _) | (_, "onnxruntime") => Some(Backend::Onnx),
            ("mlmesh_npz", _) | (_, "mlmesh_npz") => Some(Backend::Npz),
            ("", "") => None,
            (p, b) => {
                return Err(LoadError::Config {
                    path: config_path.display().to_string(),
                    reason: format!(
                        "platform {p:?} / backend {b:?} is not served here (onnxruntime_onnx, mlmesh_npz)"
                    ),
                });
            }
        };
        let mut versions = BTreeMap::new();
        let mut backend = declared;
        for v in served {
            let vdir = dir.join(v.to_string());
            let file = if !config.default_model_filename.is_empty() {
                // A file name inside the version folder, nothing else: a
                // config from the registry must not point at other files.
                let f = &config.default_model_filename;
                let mut parts = std::path::Path::new(f).components();
                let plain = matches!(parts.next(), Some(std::path::Component::Normal(_)))
                    && parts.next().is_none();
                if !plain || f.contains('\\') {
                    return Err(LoadError::Config {
                        path: config_path.display().to_string(),
                        reason: format!(
                            "default_model_filename {f:?} must name a file inside the version folder (no /, .. or absolute paths)"
                        ),
                    });
                }
                vdir.join(f)
            } else {
                match backend {
                    Some(b) => vdir.join(b.default_file()),
                    None => {
                        let onnx = vdir.join("model.onnx");
                        let npz = vdir.join("model.npz");
                        if onnx.is_file() { onnx } else { npz }
                    }
                }
            };
            if !file.is_file() {
                return Err(LoadError::file(&file, "model file not found"));
            }
            if backend.is_none() {
                backend = Some(if file.extension().is_some_and(|e| e == "npz") {
                    Backend::Npz
                } else {
                    Backend::Onnx
                });
            }
            fingerprint.push(stamp(&file));
            versions.insert(v, file);
        }
        Ok(ModelSource {
            name: name.to_owned(),
            dir,
            config,
            skipped_fields,
            backend: backend.unwrap_or(Backend::Onnx),
            versions,
            all_versions,
            fingerprint,
        })
    }
}

/// A text file of at most `max` bytes (checked while reading, not only
/// from its declared size).
fn read_bounded(p: &Path, max: u64) -> Result<String, String> {
    use std::io::Read as _;
    let f = std::fs::File::open(p).map_err(|e| e.to_string())?;
    let mut text = String::new();
    f.take(max + 1)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    if text.len() as u64 > max {
        return Err(format!("larger than {max} bytes"));
    }
    Ok(text)
}

fn stamp(p: &Path) -> (PathBuf, u64, Option<SystemTime>) {
    let md = std::fs::metadata(p).ok();
    (
        p.to_path_buf(),
        md.as_ref().map_or(0, |m| m.len()),
        md.and_then(|m| m.modified().ok()),
    )
}

/// The versions `config`'s policy serves among `present` (ascending).
pub fn select_versions(config: &pb::ModelConfig, present: &[i64]) -> Vec<i64> {
    use pb::model_version_policy::PolicyChoice;
    match config
        .version_policy
        .as_ref()
        .and_then(|p| p.policy_choice.as_ref())
    {
        Some(PolicyChoice::All(_)) => present.to_vec(),
        Some(PolicyChoice::Specific(s)) => present
            .iter()
            .copied()
            .filter(|v| s.versions.contains(v))
            .collect(),
        Some(PolicyChoice::Latest(l)) => {
            let n = l.num_versions.max(1) as usize;
            present[present.len().saturating_sub(n)..].to_vec()
        }
        None => present.last().map(|&v| vec![v]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_policies() {
        let present = [1, 2, 5];
        let cfg = |p| pb::ModelConfig {
            version_policy: Some(pb::ModelVersionPolicy {
                policy_choice: Some(p),
            }),
            ..Default::default()
        };
        use pb::model_version_policy::{All, Latest, PolicyChoice, Specific};
        assert_eq!(
            select_versions(&pb::ModelConfig::default(), &present),
            vec![5]
        );
        assert_eq!(
            select_versions(
                &cfg(PolicyChoice::Latest(Latest { num_versions: 2 })),
                &present
            ),
            vec![2, 5]
        );
        assert_eq!(
            select_versions(&cfg(PolicyChoice::All(All {})), &present),
            vec![1, 2, 5]
        );
        assert_eq!(
            select_versions(
                &cfg(PolicyChoice::Specific(Specific {
                    versions: vec![2, 9]
                })),
                &present
            ),
            vec![2]
        );
    }
}
