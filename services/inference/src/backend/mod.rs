//! Model engines. A [`Runner`] runs one batch synchronously on the thread
//! that owns it; [`load`] builds `count` runners of one model version and
//! reports what the model takes and returns ([`Signature`]).
//!
//! - [`onnx`]: ONNX Runtime through `ort`, signature read from the model.
//! - [`npz`]: linear / logistic regression and multi-layer perceptrons
//!   stored as NumPy arrays, computed with ndarray (no ONNX Runtime).

pub mod npy;
pub mod npz;
pub mod onnx;

use std::path::Path;

use crate::{
    error::LoadError,
    repository::Backend,
    tensor::{DataType, Tensor},
};

/// One input or output as the model declares it. `shape` is the full shape,
/// batch axis included; -1 marks a variable axis.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: DataType,
    pub shape: Vec<i64>,
}

/// What a model takes and returns.
#[derive(Clone, Debug, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// Initializers a caller may override (ONNX graph inputs with a default
    /// value): served as optional inputs only when the config lists them.
    pub overridable: Vec<TensorSpec>,
}

/// Runs batches of one model version; owned by one worker thread.
pub trait Runner: Send {
    /// Runs `inputs` (named, batch axis first); returns every output of
    /// the model, named.
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
}

/// How ONNX Runtime sessions are built.
#[derive(Clone, Debug)]
pub struct OrtOptions {
    pub dylib: std::path::PathBuf,
    pub intra_op_threads: usize,
    pub allow_spinning: bool,
}

/// A loaded model version: its signature and `instances` runners.
pub struct Loaded {
    pub signature: Signature,
    pub runners: Vec<Box<dyn Runner>>,
    /// Memory the runners hold, when the engine knows it exactly (ndarray
    /// weights); `None`: measured as the process's resident-set growth.
    pub memory_bytes: Option<u64>,
}

/// Loads `file` with `backend`, `instances` times.
pub fn load(
    backend: Backend,
    file: &Path,
    instances: usize,
    ort: &OrtOptions,
) -> Result<Loaded, LoadError> {
    match backend {
        Backend::Onnx => onnx::load(file, instances, ort),
        Backend::Npz => npz::load(file, instances),
    }
}
