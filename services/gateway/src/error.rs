//! Gateway errors and their gRPC statuses (and, through the same code,
//! their HTTP statuses: see `http::status_of`).

use tonic::{Code, Status};

use crate::downstream::DownstreamError;

/// Everything a gateway call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// A request field is out of range; names the field and the limit.
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// No service of the mesh serves this model.
    #[error("model {model:?} is not served (served: {served})")]
    ModelNotFound { model: String, served: String },
    /// The collection exists but has no embedding model recorded.
    #[error(
        "collection {name:?} was not created through the gateway (it records no embedding model); create it with the gateway's CreateCollection"
    )]
    NotAGatewayCollection { name: String },
    /// The gateway is serving `limits.max_in_flight` calls already.
    #[error(
        "the gateway is at its limit of {limit} calls in flight (limits.max_in_flight); retry with backoff"
    )]
    Overloaded { limit: usize },
    /// This gateway is not configured to call the service.
    #[error("this gateway has no {service} service configured (`{key}` is empty)")]
    NotConfigured {
        service: &'static str,
        key: &'static str,
    },
    /// No pipeline of that name is declared.
    #[error("no pipeline {name:?} (declared: {declared})")]
    PipelineNotFound { name: String, declared: String },
    /// A step of a pipeline failed; the pipeline fails with its code.
    #[error("pipeline {pipeline:?}, step {step:?}: {source}")]
    Step {
        pipeline: String,
        step: String,
        source: Box<GatewayError>,
    },
    /// A pipeline step's own timeout passed before its service answered.
    #[error("no answer within the step's timeout_ms of {timeout_ms} ms")]
    StepTimeout { timeout_ms: u64 },
    /// Refused by authentication or a rate limit.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// A downstream service failed; it is named.
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    /// A downstream service answered something the gateway cannot use.
    #[error("{0}")]
    Internal(String),
}

/// A tensor refused: a client's field is INVALID_ARGUMENT naming it; bytes
/// a service answered that make no tensor are the gateway's INTERNAL.
impl From<mlmesh_tensor::TensorError> for GatewayError {
    fn from(e: mlmesh_tensor::TensorError) -> Self {
        match e {
            mlmesh_tensor::TensorError::Invalid { field, reason } => {
                Self::Invalid { field, reason }
            }
            malformed @ mlmesh_tensor::TensorError::Malformed { .. } => {
                Self::Internal(malformed.to_string())
            }
        }
    }
}

impl GatewayError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The gRPC code this error is answered with.
    pub fn code(&self) -> Code {
        match self {
            GatewayError::Invalid { .. } => Code::InvalidArgument,
            GatewayError::ModelNotFound { .. } => Code::NotFound,
            GatewayError::NotAGatewayCollection { .. } => Code::FailedPrecondition,
            GatewayError::Overloaded { .. } => Code::ResourceExhausted,
            GatewayError::NotConfigured { .. } => Code::Unimplemented,
            GatewayError::PipelineNotFound { .. } => Code::NotFound,
            GatewayError::StepTimeout { .. } => Code::DeadlineExceeded,
            GatewayError::Auth(a) => match a {
                crate::auth::AuthError::Unauthenticated(_) => Code::Unauthenticated,
                crate::auth::AuthError::PermissionDenied { .. } => Code::PermissionDenied,
                crate::auth::AuthError::RateLimited { .. } => Code::ResourceExhausted,
            },
            GatewayError::Step { source, .. } => source.code(),
            GatewayError::Downstream(d) => d.code(),
            GatewayError::Internal(_) => Code::Internal,
        }
    }

    /// The request field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            GatewayError::Invalid { field, .. } => Some(field),
            GatewayError::Step { source, .. } => source.field(),
            _ if self.is_model_not_found() => Some("model"),
            _ => None,
        }
    }

    /// An unknown model, whether the gateway or the embedding service found
    /// out (OpenAI clients look for `model_not_found`).
    pub fn is_model_not_found(&self) -> bool {
        match self {
            GatewayError::ModelNotFound { .. } => true,
            GatewayError::Downstream(DownstreamError::Status { service, status }) => {
                *service == "embedding" && status.code() == Code::NotFound
            }
            _ => false,
        }
    }
}

impl From<GatewayError> for Status {
    fn from(e: GatewayError) -> Self {
        match e {
            GatewayError::Auth(a) => crate::auth::layer::grpc_status(&a),
            GatewayError::Step { source, .. } if matches!(*source, GatewayError::Auth(_)) => {
                Status::from(*source)
            }
            e => Status::new(e.code(), e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_failures_keep_their_code_and_name_the_service() {
        let s = Status::from(GatewayError::from(DownstreamError::Unavailable {
            service: "embedding",
            tried: "127.0.0.1:1".into(),
            message: "tcp connect error".into(),
        }));
        assert_eq!(s.code(), Code::Unavailable);
        assert!(
            s.message().contains("embedding service is unavailable"),
            "{s:?}"
        );
        let s = Status::from(GatewayError::from(DownstreamError::Status {
            service: "vector-search",
            status: Status::not_found("collection \"x\" does not exist"),
        }));
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().starts_with("vector-search: "), "{s:?}");
        let s = Status::from(GatewayError::invalid("query", "must not be empty"));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("`query`"));
    }
}
