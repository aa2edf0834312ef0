//! The inference domain's errors and their one mapping to gRPC statuses.

use tonic::{Code, Status};

/// Everything that can go wrong serving a request.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    #[error("model {name:?} is not in the repository; available: {available}")]
    UnknownModel { name: String, available: String },
    #[error("model {name:?} has no version {version:?}; served versions: {available}")]
    UnknownVersion {
        name: String,
        version: String,
        available: String,
    },
    #[error("model {name:?} is not loaded ({state}); load it with RepositoryModelLoad")]
    NotLoaded { name: String, state: String },
    #[error("model {name:?} is unavailable ({state})")]
    Unavailable { name: String, state: String },
    #[error("{0}")]
    InvalidArgument(String),
    #[error(
        "model {model:?} version {version} has {queued} requests waiting (limit {max}, {setting}); retry later"
    )]
    QueueFull {
        model: String,
        version: i64,
        queued: usize,
        max: usize,
        setting: &'static str,
    },
    #[error(
        "the request waited {waited_us} µs in model {model:?}'s queue, past its timeout of {timeout_us} µs"
    )]
    Timeout {
        model: String,
        waited_us: u64,
        timeout_us: u64,
    },
    #[error("loading model {model:?} would exceed the memory budget: {reason}")]
    OverBudget { model: String, reason: String },
    #[error("model {model:?} failed to load: {reason}")]
    LoadFailed { model: String, reason: String },
    #[error("model {model:?} failed to run: {reason}")]
    Run { model: String, reason: String },
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl InferError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        InferError::InvalidArgument(msg.into())
    }
}

impl InferError {
    /// The gRPC status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            InferError::UnknownModel { .. } => Code::NotFound,
            InferError::UnknownVersion { .. } => Code::NotFound,
            InferError::NotLoaded { .. } => Code::Unavailable,
            InferError::Unavailable { .. } => Code::Unavailable,
            InferError::InvalidArgument(_) => Code::InvalidArgument,
            InferError::QueueFull { .. } => Code::ResourceExhausted,
            InferError::Timeout { .. } => Code::DeadlineExceeded,
            InferError::OverBudget { .. } => Code::ResourceExhausted,
            InferError::LoadFailed { .. } => Code::FailedPrecondition,
            InferError::Run { .. } => Code::Internal,
            InferError::ShuttingDown => Code::Unavailable,
        }
    }
}

impl From<InferError> for Status {
    fn from(e: InferError) -> Self {
        Status::new(e.code(), e.to_string())
    }
}

/// Why a model could not be loaded (never a panic; the other models keep
/// serving). The message names the file and the reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("{0}")]
    Invalid(String),
    #[error(
        "cannot load ONNX Runtime from {path} (inference.ort_dylib_path / ORT_DYLIB_PATH; run `make models`): {reason}"
    )]
    Runtime { path: String, reason: String },
}

impl From<mlmesh_onnx::RuntimeError> for LoadError {
    fn from(e: mlmesh_onnx::RuntimeError) -> Self {
        LoadError::Runtime {
            path: e.path,
            reason: e.reason,
        }
    }
}

impl LoadError {
    pub fn file(path: &std::path::Path, reason: impl std::fmt::Display) -> Self {
        LoadError::File {
            path: path.display().to_string(),
            reason: reason.to_string(),
        }
    }
}
