//! The registry's errors and their one mapping to gRPC statuses.

use tonic::{Code, Status};

/// Everything a registry call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    InvalidArgument(String),
    /// A file's bytes do not match its declared size or digest; the upload
    /// is dropped.
    #[error("{0}")]
    Corrupt(String),
    #[error("model {0:?} does not exist")]
    UnknownModel(String),
    #[error("model {model:?} has no version {version}")]
    UnknownVersion { model: String, version: i64 },
    #[error("model {model:?} has no alias {alias:?}")]
    UnknownAlias { model: String, alias: String },
    #[error("version {version} of model {model:?} has no file {path:?}")]
    UnknownFile {
        model: String,
        version: i64,
        path: String,
    },
    #[error("upload {0:?} does not exist (never started, committed, aborted or expired)")]
    UnknownUpload(String),
    #[error("alias {alias:?} of model {model:?} has no policy")]
    UnknownPolicy { model: String, alias: String },
    #[error("model {0:?} already exists")]
    ModelExists(String),
    /// A compare-and-set lost, or a state forbids the change.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Another call is writing the same upload.
    #[error("{0}")]
    Aborted(String),
    #[error(
        "revision {requested} is no longer kept (oldest kept: {oldest}); list again and watch from the revision the list returns"
    )]
    Compacted { requested: i64, oldest: i64 },
    #[error("metadata store: {0}")]
    Store(String),
    #[error("blob store: {0}")]
    Blobs(String),
    #[error("the registry is shutting down")]
    ShuttingDown,
    /// A quota of the registry is used up (the message names the setting).
    #[error("{0}")]
    Exhausted(String),
    /// The caller's credential does not admit this use of a call (an
    /// override without the admin scope).
    #[error("{0}")]
    PermissionDenied(String),
    /// A client stopped reading a stream (the message names the setting).
    #[error("{0}")]
    Stalled(String),
}

impl RegistryError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        RegistryError::InvalidArgument(msg.into())
    }

    /// The gRPC status code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            RegistryError::InvalidArgument(_) | RegistryError::Corrupt(_) => Code::InvalidArgument,
            RegistryError::UnknownModel(_)
            | RegistryError::UnknownVersion { .. }
            | RegistryError::UnknownAlias { .. }
            | RegistryError::UnknownFile { .. }
            | RegistryError::UnknownUpload(_)
            | RegistryError::UnknownPolicy { .. } => Code::NotFound,
            RegistryError::ModelExists(_) => Code::AlreadyExists,
            RegistryError::FailedPrecondition(_) => Code::FailedPrecondition,
            RegistryError::Aborted(_) => Code::Aborted,
            RegistryError::Compacted { .. } => Code::OutOfRange,
            RegistryError::Store(_) | RegistryError::Blobs(_) => Code::Internal,
            RegistryError::ShuttingDown => Code::Unavailable,
            RegistryError::Exhausted(_) => Code::ResourceExhausted,
            RegistryError::Stalled(_) => Code::DeadlineExceeded,
            RegistryError::PermissionDenied(_) => Code::PermissionDenied,
        }
    }
}

impl From<RegistryError> for Status {
    fn from(e: RegistryError) -> Self {
        if e.code() == Code::Internal {
            tracing::error!(error = %e, "registry call failed");
        }
        Status::new(e.code(), e.to_string())
    }
}

impl From<rusqlite::Error> for RegistryError {
    fn from(e: rusqlite::Error) -> Self {
        RegistryError::Store(e.to_string())
    }
}

impl From<tokio::task::JoinError> for RegistryError {
    fn from(e: tokio::task::JoinError) -> Self {
        RegistryError::Store(format!("worker task failed: {e}"))
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;
