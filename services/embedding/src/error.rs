//! The embedding domain's errors and their one mapping to gRPC statuses.

use tonic::{Code, Status};

/// Everything that can go wrong serving an embedding request.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("`{field}` is empty: at least one input is required")]
    EmptyBatch { field: &'static str },
    #[error("`{field}` has {size} inputs; the limit is {max} (embedding.max_client_batch)")]
    BatchTooLarge {
        field: &'static str,
        size: usize,
        max: usize,
    },
    #[error(
        "`{}` is {tokens} tokens long; the limit of model {model:?} is {max} tokens (set truncate=true to cut it)",
        location(field, *index)
    )]
    InputTooLong {
        field: &'static str,
        /// Position in a repeated field; `None` for a single field.
        index: Option<usize>,
        tokens: usize,
        max: usize,
        model: String,
    },
    #[error("model {name:?} is not served here; available: {available}")]
    UnknownModel { name: String, available: String },
    #[error("`dimensions` is {requested}; model {model:?} has {max} dimensions")]
    DimensionsTooLarge {
        requested: u32,
        max: usize,
        model: String,
    },
    #[error(
        "model {model:?} has {queued} inputs queued or running (limit {max}, embedding.max_queued_inputs); retry later"
    )]
    QueueFull {
        model: String,
        queued: usize,
        max: usize,
    },
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
    #[error("model run failed: {0}")]
    Inference(String),
    #[error("the service is shutting down")]
    ShuttingDown,
}

/// Errors loading a model or starting the engine (never sent to clients).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("model {model:?}: cannot read {path}: {reason}")]
    File {
        model: String,
        path: String,
        reason: String,
    },
    #[error("model {model:?}: {reason}")]
    Invalid { model: String, reason: String },
    #[error(
        "cannot load ONNX Runtime from {path} (embedding.ort_dylib_path / ORT_DYLIB_PATH; run `make models`): {reason}"
    )]
    Runtime { path: String, reason: String },
    #[error("model {model:?}: ONNX Runtime refused the model: {reason}")]
    Session { model: String, reason: String },
}

/// `inputs[3]` for a list element, `source` for a single field.
fn location(field: &str, index: Option<usize>) -> String {
    match index {
        Some(i) => format!("{field}[{i}]"),
        None => field.to_owned(),
    }
}

impl From<EmbedError> for Status {
    fn from(e: EmbedError) -> Self {
        let code = match &e {
            EmbedError::EmptyBatch { .. } => Code::InvalidArgument,
            EmbedError::BatchTooLarge { .. } => Code::InvalidArgument,
            EmbedError::InputTooLong { .. } => Code::InvalidArgument,
            EmbedError::UnknownModel { .. } => Code::NotFound,
            EmbedError::DimensionsTooLarge { .. } => Code::InvalidArgument,
            EmbedError::QueueFull { .. } => Code::ResourceExhausted,
            EmbedError::Tokenizer(_) => Code::Internal,
            EmbedError::Inference(_) => Code::Unavailable,
            EmbedError::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

impl From<mlmesh_onnx::RuntimeError> for LoadError {
    fn from(e: mlmesh_onnx::RuntimeError) -> Self {
        LoadError::Runtime {
            path: e.path,
            reason: e.reason,
        }
    }
}
