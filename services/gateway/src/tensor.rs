//! Tensors between JSON values and the Open Inference Protocol's raw
//! little-endian bytes, for the faces and steps that speak JSON (the OIP
//! REST API, pipelines, MCP tools).
//!
//! Every datatype of the protocol: BOOL, INT8…INT64, UINT8…UINT64, FP16,
//! BF16, FP32, FP64 (numbers) and BYTES (strings; raw form: each element a
//! 4-byte little-endian length, then its bytes). A value that does not fit
//! its datatype is an error naming the element (`inputs[0].data[7]`).

use bytes::Bytes;
use half::{bf16, f16};
use serde_json::{Value as Json, json};

use crate::error::GatewayError;

/// One tensor: datatype, shape and raw little-endian row-major elements.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub datatype: String,
    pub shape: Vec<i64>,
    pub raw: Bytes,
}

impl Tensor {
    /// Texts as a BYTES tensor of shape `[n]`.
    pub fn texts<S: AsRef<str>>(texts: &[S]) -> Self {
        let leaves: Vec<Json> = texts.iter().map(|t| json!(t.as_ref())).collect();
        let refs: Vec<&Json> = leaves.iter().collect();
        Self {
            datatype: "BYTES".into(),
            shape: vec![texts.len() as i64],
            raw: to_raw("BYTES", &refs, "texts").unwrap_or_default().into(),
        }
    }

    /// FP32 values of shape `shape`.
    pub fn f32(shape: Vec<i64>, values: impl IntoIterator<Item = f32>) -> Self {
        let raw: Vec<u8> = values.into_iter().flat_map(f32::to_le_bytes).collect();
        Self {
            datatype: "FP32".into(),
            shape,
            raw: raw.into(),
        }
    }

    /// A tensor from JSON, named `field` in errors: a string or a list of
    /// strings (BYTES `[n]`), or `{"datatype", "shape", "data"}`.
    pub fn from_json(field: &str, v: &Json, limits: &ShapeLimits) -> Result<Self, GatewayError> {
        match v {
            Json::String(s) => Ok(Self::texts(&[s])),
            Json::Array(items) if items.iter().all(Json::is_string) => {
                let texts: Vec<&str> = items.iter().filter_map(Json::as_str).collect();
                Ok(Self::texts(&texts))
            }
            Json::Object(o) => {
                let datatype = o.get("datatype").and_then(Json::as_str).ok_or_else(|| {
                    GatewayError::invalid(format!("{field}.datatype"), "a datatype is required")
                })?;
                let shape: Vec<i64> = o
                    .get("shape")
                    .and_then(Json::as_array)
                    .and_then(|a| a.iter().map(Json::as_i64).collect())
                    .ok_or_else(|| {
                        GatewayError::invalid(
                            format!("{field}.shape"),
                            "a list of integers is required",
                        )
                    })?;
                let count = limits.count(&shape, &format!("{field}.shape"))?;
                let leaves = flatten(o.get("data").unwrap_or(&Json::Null));
                if leaves.len() != count {
                    return Err(GatewayError::invalid(
                        format!("{field}.data"),
                        format!(
                            "{} elements where shape {shape:?} holds {count}",
                            leaves.len()
                        ),
                    ));
                }
                Ok(Self {
                    raw: to_raw(datatype, &leaves, &format!("{field}.data"))?.into(),
                    datatype: datatype.to_owned(),
                    shape,
                })
            }
            _ => Err(GatewayError::invalid(
                field,
                "a text, a list of texts, or {\"datatype\", \"shape\", \"data\"}",
            )),
        }
    }

    /// The elements as JSON values.
    pub fn values(&self, what: &str) -> Result<Vec<Json>, GatewayError> {
        from_raw(&self.datatype, &self.raw, what)
    }

    /// `{"datatype", "shape", "data"}` with the elements flat.
    pub fn to_json(&self, what: &str) -> Result<Json, GatewayError> {
        Ok(json!({
            "datatype": self.datatype,
            "shape": self.shape,
            "data": self.values(what)?,
        }))
    }

    /// The tensor cut along its first dimension: one tensor per row, each
    /// of shape `[1, rest…]`. `what` names it in errors.
    pub fn rows(&self, what: &str, limits: &ShapeLimits) -> Result<Vec<Tensor>, GatewayError> {
        let Some((&n, rest)) = self.shape.split_first() else {
            return Err(GatewayError::invalid(
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
            return Err(GatewayError::invalid(
                what,
                "the data does not match the shape",
            ));
        }
        (0..usize::try_from(n).unwrap_or(0))
            .map(|r| {
                let leaves: Vec<&Json> = values[r * per_row..(r + 1) * per_row].iter().collect();
                Ok(Tensor {
                    datatype: self.datatype.clone(),
                    shape: shape.clone(),
                    raw: to_raw(&self.datatype, &leaves, what)?.into(),
                })
            })
            .collect()
    }

    /// The texts of a BYTES tensor; an error naming `what` otherwise.
    pub fn strings(&self, what: &str) -> Result<Vec<String>, GatewayError> {
        if self.datatype != "BYTES" {
            return Err(GatewayError::invalid(
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

/// Bytes per element of a fixed-size datatype; `None` for BYTES and
/// unknown names.
pub fn element_size(datatype: &str) -> Option<usize> {
    Some(match datatype {
        "BOOL" | "INT8" | "UINT8" => 1,
        "INT16" | "UINT16" | "FP16" | "BF16" => 2,
        "INT32" | "UINT32" | "FP32" => 4,
        "INT64" | "UINT64" | "FP64" => 8,
        _ => return None,
    })
}

fn known(datatype: &str) -> bool {
    datatype == "BYTES" || element_size(datatype).is_some()
}

/// What one tensor a client sends may declare (settings
/// `limits.max_tensor_rows`, `limits.max_tensor_elements`). Every shape
/// from a client passes [`ShapeLimits::count`] before anything is allocated
/// or looped over for it.
#[derive(Clone, Copy, Debug)]
pub struct ShapeLimits {
    /// Largest first (row) dimension.
    pub max_rows: usize,
    /// Largest product of the dimensions, zeros counted as ones: a zero
    /// dimension makes the tensor empty, but must not let another dimension
    /// declare a trillion rows that a per-row step would then walk.
    pub max_elements: usize,
}

impl ShapeLimits {
    /// Elements `shape` holds, after checking it: no negative dimension,
    /// rows ≤ `max_rows`, the product of the dimensions (zeros as ones)
    /// ≤ `max_elements`. The error names `field` and the setting.
    pub fn count(&self, shape: &[i64], field: &str) -> Result<usize, GatewayError> {
        if shape.len() > MAX_RANK {
            return Err(GatewayError::invalid(
                field,
                format!("{} dimensions; at most {MAX_RANK}", shape.len()),
            ));
        }
        let mut declared = 1usize;
        let mut count = 1usize;
        for (i, &d) in shape.iter().enumerate() {
            let d = usize::try_from(d)
                .map_err(|_| GatewayError::invalid(field, format!("dimension {d} is negative")))?;
            if i == 0 && d > self.max_rows {
                return Err(GatewayError::invalid(
                    field,
                    format!(
                        "{d} rows; at most {} (limits.max_tensor_rows)",
                        self.max_rows
                    ),
                ));
            }
            declared = declared
                .checked_mul(d.max(1))
                .filter(|&n| n <= self.max_elements)
                .ok_or_else(|| {
                    GatewayError::invalid(
                        field,
                        format!(
                            "shape {shape:?} declares more than {} elements (limits.max_tensor_elements)",
                            self.max_elements
                        ),
                    )
                })?;
            count *= d;
        }
        Ok(count)
    }
}

/// Most dimensions of a tensor (ONNX Runtime's own limit is far above any
/// real model's; this bounds the work of checking a shape).
pub const MAX_RANK: usize = 16;

/// The leaves of `data` in row-major order (nested arrays are flattened;
/// a bare scalar is one element).
pub fn flatten(data: &Json) -> Vec<&Json> {
    fn walk<'a>(v: &'a Json, out: &mut Vec<&'a Json>) {
        match v {
            Json::Array(items) => items.iter().for_each(|i| walk(i, out)),
            other => out.push(other),
        }
    }
    let mut out = Vec::new();
    walk(data, &mut out);
    out
}

/// `values` (JSON leaves) as the raw bytes of a `datatype` tensor.
pub fn to_raw(datatype: &str, values: &[&Json], field: &str) -> Result<Vec<u8>, GatewayError> {
    if !known(datatype) {
        return Err(GatewayError::invalid(
            field.rsplit_once('.').map_or(field, |(f, _)| f).to_owned() + ".datatype",
            format!("{datatype:?} is not a datatype of the protocol"),
        ));
    }
    let size = element_size(datatype).unwrap_or(0);
    let mut out = Vec::with_capacity(values.len() * size.max(4));
    for (i, v) in values.iter().enumerate() {
        let bad = |what: &str| {
            GatewayError::invalid(format!("{field}[{i}]"), format!("{v} is not {what}"))
        };
        macro_rules! int {
            ($t:ty, $get:ident) => {{
                let n = v
                    .$get()
                    .ok_or_else(|| bad(concat!("an integer for ", stringify!($t))))?;
                let n = <$t>::try_from(n)
                    .map_err(|_| bad(concat!("within the range of ", stringify!($t))))?;
                out.extend_from_slice(&n.to_le_bytes());
            }};
        }
        match datatype {
            "BOOL" => out.push(u8::from(v.as_bool().ok_or_else(|| bad("a boolean"))?)),
            "INT8" => int!(i8, as_i64),
            "INT16" => int!(i16, as_i64),
            "INT32" => int!(i32, as_i64),
            "INT64" => int!(i64, as_i64),
            "UINT8" => int!(u8, as_u64),
            "UINT16" => int!(u16, as_u64),
            "UINT32" => int!(u32, as_u64),
            "UINT64" => int!(u64, as_u64),
            "FP16" | "BF16" | "FP32" | "FP64" => {
                let x = v.as_f64().ok_or_else(|| bad("a number"))?;
                match datatype {
                    "FP16" => out.extend_from_slice(&f16::from_f64(x).to_le_bytes()),
                    "BF16" => out.extend_from_slice(&bf16::from_f64(x).to_le_bytes()),
                    "FP32" => out.extend_from_slice(&(x as f32).to_le_bytes()),
                    _ => out.extend_from_slice(&x.to_le_bytes()),
                }
            }
            _ => {
                let s = v.as_str().ok_or_else(|| bad("a string"))?;
                let len = u32::try_from(s.len()).map_err(|_| bad("shorter than 4 GiB"))?;
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    Ok(out)
}

/// The elements of a raw `datatype` tensor as JSON values (numbers,
/// booleans, or strings for BYTES, non-UTF-8 bytes replaced). `what`
/// names the tensor in errors.
pub fn from_raw(datatype: &str, raw: &[u8], what: &str) -> Result<Vec<Json>, GatewayError> {
    let malformed = |why: String| GatewayError::Internal(format!("{what}: {why}"));
    if datatype == "BYTES" {
        let mut out = Vec::new();
        let mut rest = raw;
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<4>()
                .ok_or_else(|| malformed("a BYTES element is cut short".into()))?;
            let len = u32::from_le_bytes(*len) as usize;
            if tail.len() < len {
                return Err(malformed("a BYTES element is cut short".into()));
            }
            out.push(Json::String(
                String::from_utf8_lossy(&tail[..len]).into_owned(),
            ));
            rest = &tail[len..];
        }
        return Ok(out);
    }
    let size = element_size(datatype)
        .ok_or_else(|| malformed(format!("unknown datatype {datatype:?}")))?;
    if !raw.len().is_multiple_of(size) {
        return Err(malformed(format!(
            "{} bytes is not a whole number of {datatype} elements",
            raw.len()
        )));
    }
    Ok(raw
        .chunks_exact(size)
        .map(|c| {
            let a = |n: usize| -> [u8; 8] {
                let mut b = [0u8; 8];
                b[..n].copy_from_slice(&c[..n]);
                b
            };
            match datatype {
                "BOOL" => Json::Bool(c[0] != 0),
                "INT8" => Json::from(c[0] as i8),
                "UINT8" => Json::from(c[0]),
                "INT16" => Json::from(i16::from_le_bytes([c[0], c[1]])),
                "UINT16" => Json::from(u16::from_le_bytes([c[0], c[1]])),
                "INT32" => Json::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                "UINT32" => Json::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                "INT64" => Json::from(i64::from_le_bytes(a(8))),
                "UINT64" => Json::from(u64::from_le_bytes(a(8))),
                "FP16" => number(f16::from_le_bytes([c[0], c[1]]).to_f64()),
                "BF16" => number(bf16::from_le_bytes([c[0], c[1]]).to_f64()),
                "FP32" => number(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
                _ => number(f64::from_le_bytes(a(8))),
            }
        })
        .collect())
}

/// A float as JSON; NaN and infinities (which JSON cannot carry) as null.
fn number(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn every_datatype_round_trips_through_raw_bytes() {
        for (dt, data) in [
            ("BOOL", json!([true, false])),
            ("INT8", json!([-128, 127])),
            ("INT16", json!([-300, 300])),
            ("INT32", json!([-70000, 70000])),
            ("INT64", json!([-5_000_000_000i64, 1])),
            ("UINT8", json!([0, 255])),
            ("UINT16", json!([65535, 1])),
            ("UINT32", json!([4_000_000_000u32, 0])),
            ("UINT64", json!([18_446_744_073_709_551_615u64, 2])),
            ("FP16", json!([0.5, -2.0])),
            ("BF16", json!([1.0, -4.0])),
            ("FP32", json!([0.25, 1.5])),
            ("FP64", json!([0.1, -1e300])),
            ("BYTES", json!(["héllo", ""])),
        ] {
            let leaves = flatten(&data);
            let raw = to_raw(dt, &leaves, "inputs[0].data").expect(dt);
            let back = from_raw(dt, &raw, "x").expect(dt);
            assert_eq!(Json::Array(back), data, "{dt}");
        }
    }

    #[test]
    fn out_of_range_values_name_the_element() {
        let data = json!([[1, 2], [3, 300]]);
        let e = to_raw("INT8", &flatten(&data), "inputs[1].data").expect_err("300 > i8");
        assert!(e.to_string().contains("inputs[1].data[3]"), "{e}");
        let e = to_raw("FP32", &flatten(&json!(["x"])), "inputs[0].data").expect_err("string");
        assert!(e.to_string().contains("inputs[0].data[0]"), "{e}");
        let e = to_raw("FP8", &[], "inputs[2].data").expect_err("no such type");
        assert!(e.to_string().contains("inputs[2].datatype"), "{e}");
        let limits = ShapeLimits {
            max_rows: 8,
            max_elements: 100,
        };
        assert!(limits.count(&[2, -1], "inputs[0].shape").is_err());
        assert_eq!(limits.count(&[2, 3], "s").expect("6"), 6);
        assert_eq!(limits.count(&[0, 3], "s").expect("empty"), 0);
        // Empty, but declaring rows or elements beyond the limits.
        let e = limits.count(&[9, 0], "s").expect_err("rows");
        assert!(e.to_string().contains("limits.max_tensor_rows"), "{e}");
        let e = limits.count(&[1, 0, 101], "s").expect_err("elements");
        assert!(e.to_string().contains("limits.max_tensor_elements"), "{e}");
        let e = limits.count(&[i64::MAX, 0], "s").expect_err("rows");
        assert!(e.to_string().contains('s'), "{e}");
        let e = limits.count(&[1; 17], "s").expect_err("rank");
        assert!(e.to_string().contains("16"), "{e}");
        assert!(from_raw("BYTES", &[9, 0, 0, 0, b'a'], "out").is_err());
    }
}
