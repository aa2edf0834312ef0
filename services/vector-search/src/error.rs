//! The vector-search domain's errors and their one mapping to gRPC statuses.

use tonic::{Code, Status};

use crate::model::TextIndex;

/// Everything that can go wrong serving a vector-search request.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    #[error("collection {name:?} does not exist")]
    CollectionNotFound { name: String },
    #[error("collection {name:?} already exists")]
    CollectionExists { name: String },
    #[error("`{field}` has {got} dimensions; collection {collection:?} has {expected}")]
    WrongDimension {
        field: String,
        got: usize,
        expected: usize,
        collection: String,
    },
    #[error("`{field}[{index}]` is {value}: every vector component must be finite")]
    NotFinite {
        field: String,
        index: usize,
        value: f32,
    },
    #[error("`{field}` is empty: {hint}")]
    Empty { field: String, hint: &'static str },
    #[error("`{field}` is {got}; the limit is {max} ({setting})")]
    OverLimit {
        field: String,
        got: usize,
        max: usize,
        setting: &'static str,
    },
    #[error("`{field}` is invalid: {reason}")]
    Invalid { field: String, reason: String },
    #[error("`{field}`: collection {collection:?} {reason}")]
    NoTextIndex {
        field: String,
        collection: String,
        reason: &'static str,
    },
    #[error(
        "`text_index`: collection {collection:?} has {}; a text index cannot change (asked for {})",
        has.proto_name(),
        asked.proto_name()
    )]
    TextIndexExists {
        collection: String,
        has: TextIndex,
        asked: TextIndex,
    },
    #[error("{in_flight} calls are in flight (limit {max}, vector.max_in_flight); retry later")]
    Busy { in_flight: usize, max: usize },
    #[error("the Qdrant cluster is overloaded: {0}; retry later")]
    Overloaded(String),
    #[error("the Qdrant cluster is unavailable: {0}")]
    Unavailable(String),
    #[error("storage failure: {0}")]
    Storage(String),
    #[error("the Qdrant cluster refused the call: {0}")]
    Backend(String),
    #[error("the service is shutting down")]
    ShuttingDown,
}

impl VectorError {
    /// Shorthand for [`VectorError::Invalid`].
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        VectorError::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<VectorError> for Status {
    fn from(e: VectorError) -> Self {
        let code = match &e {
            VectorError::CollectionNotFound { .. } => Code::NotFound,
            VectorError::CollectionExists { .. } => Code::AlreadyExists,
            VectorError::WrongDimension { .. } => Code::InvalidArgument,
            VectorError::NotFinite { .. } => Code::InvalidArgument,
            VectorError::Empty { .. } => Code::InvalidArgument,
            VectorError::OverLimit { .. } => Code::InvalidArgument,
            VectorError::Invalid { .. } => Code::InvalidArgument,
            VectorError::NoTextIndex { .. } => Code::FailedPrecondition,
            VectorError::TextIndexExists { .. } => Code::FailedPrecondition,
            VectorError::Busy { .. } => Code::ResourceExhausted,
            VectorError::Overloaded(_) => Code::ResourceExhausted,
            VectorError::Unavailable(_) => Code::Unavailable,
            VectorError::Storage(_) => Code::Internal,
            VectorError::Backend(_) => Code::Internal,
            VectorError::ShuttingDown => Code::Unavailable,
        };
        Status::new(code, e.to_string())
    }
}

/// Errors opening the storage at start (never sent to clients).
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot use data folder {path} (vector.data_dir): {reason}")]
    DataDir { path: String, reason: String },
    #[error("collection {name:?} in {path} cannot be loaded: {reason}")]
    Collection {
        name: String,
        path: String,
        reason: String,
    },
    #[error("invalid Qdrant settings (qdrant.url / qdrant.api_key): {0}")]
    Qdrant(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_name_the_field_and_the_limit() {
        let s = Status::from(VectorError::OverLimit {
            field: "limit".into(),
            got: 5000,
            max: 1000,
            setting: "vector.max_search_limit",
        });
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("`limit`"), "{}", s.message());
        assert!(s.message().contains("1000"), "{}", s.message());
        assert!(s.message().contains("vector.max_search_limit"));
        let s = Status::from(VectorError::CollectionNotFound { name: "x".into() });
        assert_eq!(s.code(), Code::NotFound);
    }
}
