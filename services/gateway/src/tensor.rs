//! The gateway's tensor: an Open Inference Protocol tensor as the gateway
//! forwards it (datatype, shape, raw bytes it does not decode), and its
//! JSON form for the faces and steps that speak JSON (the OIP REST API,
//! pipelines, MCP tools). Datatypes, shape limits and the raw ↔ JSON
//! conversions are `mlmesh_tensor`'s, shared with the inference service.

use bytes::Bytes;
pub use mlmesh_tensor::json::{flatten, from_raw, to_raw};
pub use mlmesh_tensor::{DataType, ShapeLimits, TensorError};
use serde_json::{Value as Json, json};

/// One tensor: datatype, shape and raw little-endian row-major elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub raw: Bytes,
}

impl Tensor {
    /// Texts as a BYTES tensor of shape `[n]`.
    pub fn texts<S: AsRef<str>>(texts: &[S]) -> Self {
        let leaves: Vec<Json> = texts.iter().map(|t| json!(t.as_ref())).collect();
        let refs: Vec<&Json> = leaves.iter().collect();
        Self {
            datatype: DataType::Bytes,
            shape: vec![texts.len() as i64],
            raw: to_raw(DataType::Bytes, &refs, "texts")
                .unwrap_or_default()
                .into(),
        }
    }

    /// FP32 values of shape `shape`.
    pub fn f32(shape: Vec<i64>, values: impl IntoIterator<Item = f32>) -> Self {
        let raw: Vec<u8> = values.into_iter().flat_map(f32::to_le_bytes).collect();
        Self {
            datatype: DataType::F32,
            shape,
            raw: raw.into(),
        }
    }

    /// A tensor from JSON, named `field` in errors: a string or a list of
    /// strings (BYTES `[n]`), or `{"datatype", "shape", "data"}`.
    pub fn from_json(field: &str, v: &Json, limits: &ShapeLimits) -> Result<Self, TensorError> {
        match v {
            Json::String(s) => Ok(Self::texts(&[s])),
            Json::Array(items) if items.iter().all(Json::is_string) => {
                let texts: Vec<&str> = items.iter().filter_map(Json::as_str).collect();
                Ok(Self::texts(&texts))
            }
            Json::Object(o) => {
                let name = o.get("datatype").and_then(Json::as_str).ok_or_else(|| {
                    TensorError::invalid(format!("{field}.datatype"), "a datatype is required")
                })?;
                let datatype = datatype(name, &format!("{field}.datatype"))?;
                let shape: Vec<i64> = o
                    .get("shape")
                    .and_then(Json::as_array)
                    .and_then(|a| a.iter().map(Json::as_i64).collect())
                    .ok_or_else(|| {
                        TensorError::invalid(
                            format!("{field}.shape"),
                            "a list of integers is required",
                        )
                    })?;
                let count = limits.count(&shape, &format!("{field}.shape"))?;
                let leaves = flatten(o.get("data").unwrap_or(&Json::Null));
                if leaves.len() != count {
                    return Err(TensorError::invalid(
                        format!("{field}.data"),
                        format!(
                            "{} elements where shape {shape:?} holds {count}",
                            leaves.len()
                        ),
                    ));
                }
                Ok(Self {
                    raw: to_raw(datatype, &leaves, &format!("{field}.data"))?.into(),
                    datatype,
                    shape,
                })
            }
            _ => Err(TensorError::invalid(
                field,
                "a text, a list of texts, or {\"datatype\", \"shape\", \"data\"}",
            )),
        }
    }

    /// The elements as JSON values.
    pub fn values(&self, what: &str) -> Result<Vec<Json>, TensorError> {
        from_raw(self.datatype, &self.raw, what)
    }

    /// `{"datatype", "shape", "data"}` with the elements flat.
    pub fn to_json(&self, what: &str) -> Result<Json, TensorError> {
        Ok(json!({
            "datatype": self.datatype.name(),
            "shape": self.shape,
            "data": self.values(what)?,
        }))
    }

    /// The tensor cut along its first dimension: one tensor per row, each
    /// of shape `[1, rest…]`. `what` names it in errors.
    pub fn rows(&self, what: &str, limits: &ShapeLimits) -> Result<Vec<Tensor>, TensorError> {
        let Some((&n, rest)) = self.shape.split_first() else {
            return Err(TensorError::invalid(
                what,
                "a scalar has no rows to stream over",
            ));
        };
        // Checked first: `n` rows are walked below whatever the data holds.
        let count = limits.count(&self.shape, what)?;
        let shape: Vec<i64> = std::iter::once(1).chain(rest.iter().copied()).collect();
        let per_row = limits.count(rest, what)?;
        let values = self.values(what)?;
        if values.len() != count {
            return Err(TensorError::invalid(
                what,
                "the data does not match the shape",
            ));
        }
        (0..usize::try_from(n).unwrap_or(0))
            .map(|r| {
                let leaves: Vec<&Json> = values[r * per_row..(r + 1) * per_row].iter().collect();
                Ok(Tensor {
                    datatype: self.datatype,
                    shape: shape.clone(),
                    raw: to_raw(self.datatype, &leaves, what)?.into(),
                })
            })
            .collect()
    }

    /// The texts of a BYTES tensor; an error naming `what` otherwise.
    pub fn strings(&self, what: &str) -> Result<Vec<String>, TensorError> {
        if self.datatype != DataType::Bytes {
            return Err(TensorError::invalid(
                what,
                format!("texts are a BYTES tensor, not {}", self.datatype),
            ));
        }
        Ok(self
            .values(what)?
            .into_iter()
            .map(|v| match v {
                Json::String(s) => s,
                other => other.to_string(),
            })
            .collect())
    }
}

/// The datatype a client named in `field` (`inputs[0].datatype`).
pub fn datatype(name: &str, field: &str) -> Result<DataType, TensorError> {
    DataType::parse(name).ok_or_else(|| {
        TensorError::invalid(field, format!("{name:?} is not a datatype of the protocol"))
    })
}

/// The elements of a raw tensor a service answered with, as JSON; a
/// datatype the protocol lacks makes the answer malformed.
pub fn answer_values(datatype: &str, raw: &[u8], what: &str) -> Result<Vec<Json>, TensorError> {
    let dt = DataType::parse(datatype)
        .ok_or_else(|| TensorError::malformed(what, format!("unknown datatype {datatype:?}")))?;
    from_raw(dt, raw, what)
}
