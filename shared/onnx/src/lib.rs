//! ONNX Runtime for the services that run models (embedding, inference).
//!
//! `ort` is built with `load-dynamic`: the library is the one `make models`
//! unpacks from PyPI's `onnxruntime` wheel, found through a setting, then
//! `ORT_DYLIB_PATH`, then the default below. ONNX Runtime allows one
//! environment per process, so it is created once and shared by every model
//! and session in the process (and by the benchmark's in-process floor).

use std::{
    fmt,
    path::{Path, PathBuf},
    sync::OnceLock,
};

pub use ort::environment::Environment;

/// Where `make models` puts the library, relative to the repository root.
pub const DEFAULT_ORT_DYLIB: &str = ".cache/mlmesh/onnxruntime/libonnxruntime.so.1.31.1";

/// The library to load: the configured path, else `ORT_DYLIB_PATH`, else
/// [`DEFAULT_ORT_DYLIB`].
pub fn resolve_dylib(configured: Option<&Path>) -> PathBuf {
    configured
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from))
        .unwrap_or_else(|| DEFAULT_ORT_DYLIB.into())
}

/// ONNX Runtime could not be loaded from `path`.
#[derive(Clone, Debug)]
pub struct RuntimeError {
    pub path: String,
    pub reason: String,
}

impl fmt::Display for RuntimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot load ONNX Runtime from {}: {}",
            self.path, self.reason
        )
    }
}

impl std::error::Error for RuntimeError {}

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads ONNX Runtime from `dylib` once per process; later calls reuse the
/// first result (a second path is ignored: the library cannot be swapped
/// once loaded).
pub fn init_runtime(dylib: &Path) -> Result<Environment, RuntimeError> {
    RUNTIME
        .get_or_init(|| {
            if !dylib.is_file() {
                return Err("file not found".to_owned());
            }
            ort::init_from(dylib)
                .map_err(|e| e.to_string())?
                .with_name("mlmesh")
                .with_telemetry(false)
                .build()
                .map_err(|e| e.to_string())
        })
        .clone()
        .map_err(|reason| RuntimeError {
            path: dylib.display().to_string(),
            reason,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_path_wins() {
        let p = resolve_dylib(Some(Path::new("/x/libonnxruntime.so")));
        assert_eq!(p, PathBuf::from("/x/libonnxruntime.so"));
    }
}
