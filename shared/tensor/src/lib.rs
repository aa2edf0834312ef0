//! Tensors of the Open Inference Protocol (Triton / KServe v2), written
//! once for every service that touches them (the inference service runs
//! them, the gateway converts them for its JSON faces):
//!
//! - [`DataType`]: every datatype of the protocol by its wire name
//!   (`BOOL`, `INT8`…`UINT64`, `FP16`, `BF16`, `FP32`, `FP64`, `BYTES`);
//! - [`ShapeLimits`]: every shape a client sends is checked against
//!   explicit limits before anything is allocated or looped over for it;
//! - [`raw`]: the raw form (little-endian, row-major; a BYTES element is
//!   a 4-byte little-endian length, then its bytes);
//! - [`json`]: raw ↔ JSON values, an error naming the element that does
//!   not fit its datatype (`inputs[0].data[7]`).
//!
//! Errors are [`TensorError`]: what a client sent wrong (naming the field
//! and the limit), or bytes that do not make a tensor.

mod datatype;
pub mod json;
mod limits;
pub mod raw;

pub use crate::{
    datatype::DataType,
    limits::{MAX_RANK, ShapeLimits, element_count},
};

/// Why a tensor is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    /// A client's field is wrong or out of its limit; names both.
    #[error("`{field}`: {reason}")]
    Invalid { field: String, reason: String },
    /// Bytes that are no tensor of their datatype (a peer's answer, not a
    /// client's request field).
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
}

impl TensorError {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub fn malformed(what: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Malformed {
            what: what.into(),
            reason: reason.into(),
        }
    }
}
