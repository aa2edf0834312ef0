//! Raw tensors ↔ JSON values, for the faces that speak JSON (the Open
//! Inference Protocol's REST API, pipelines, MCP tools). A value that does
//! not fit its datatype is an error naming the element
//! (`inputs[0].data[7]`); NaN and infinities, which JSON cannot carry,
//! come out as `null`.

use half::{bf16, f16};
use serde_json::Value as Json;

use crate::{DataType, TensorError, raw};

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

/// `values` (JSON leaves) as the raw bytes of a `datatype` tensor; `field`
/// (`inputs[0].data`) names the elements in errors.
pub fn to_raw(datatype: DataType, values: &[&Json], field: &str) -> Result<Vec<u8>, TensorError> {
    let size = datatype.size().unwrap_or(0);
    let mut out = Vec::with_capacity(values.len() * size.max(4));
    for (i, v) in values.iter().enumerate() {
        let bad = |what: &str| {
            TensorError::invalid(format!("{field}[{i}]"), format!("{v} is not {what}"))
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
        let float = || v.as_f64().ok_or_else(|| bad("a number"));
        match datatype {
            DataType::Bool => out.push(u8::from(v.as_bool().ok_or_else(|| bad("a boolean"))?)),
            DataType::I8 => int!(i8, as_i64),
            DataType::I16 => int!(i16, as_i64),
            DataType::I32 => int!(i32, as_i64),
            DataType::I64 => int!(i64, as_i64),
            DataType::U8 => int!(u8, as_u64),
            DataType::U16 => int!(u16, as_u64),
            DataType::U32 => int!(u32, as_u64),
            DataType::U64 => int!(u64, as_u64),
            DataType::F16 => out.extend_from_slice(&f16::from_f64(float()?).to_le_bytes()),
            DataType::Bf16 => out.extend_from_slice(&bf16::from_f64(float()?).to_le_bytes()),
            DataType::F32 => out.extend_from_slice(&(float()? as f32).to_le_bytes()),
            DataType::F64 => out.extend_from_slice(&float()?.to_le_bytes()),
            DataType::Bytes => {
                let s = v.as_str().ok_or_else(|| bad("a string"))?;
                raw::push_bytes(&mut out, s.as_bytes()).ok_or_else(|| bad("shorter than 4 GiB"))?;
            }
        }
    }
    Ok(out)
}

/// The elements of a raw `datatype` tensor as JSON values (numbers,
/// booleans, or strings for BYTES, non-UTF-8 bytes replaced). `what`
/// names the tensor in errors.
pub fn from_raw(datatype: DataType, raw: &[u8], what: &str) -> Result<Vec<Json>, TensorError> {
    let Some(size) = datatype.size() else {
        return Ok(raw::split_all_bytes(raw, what)?
            .into_iter()
            .map(|b| Json::String(String::from_utf8_lossy(b).into_owned()))
            .collect());
    };
    if !raw.len().is_multiple_of(size) {
        return Err(TensorError::malformed(
            what,
            format!(
                "{} bytes is not a whole number of {datatype} elements",
                raw.len()
            ),
        ));
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
                DataType::Bool => Json::Bool(c[0] != 0),
                DataType::I8 => Json::from(c[0] as i8),
                DataType::U8 => Json::from(c[0]),
                DataType::I16 => Json::from(i16::from_le_bytes([c[0], c[1]])),
                DataType::U16 => Json::from(u16::from_le_bytes([c[0], c[1]])),
                DataType::I32 => Json::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                DataType::U32 => Json::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                DataType::I64 => Json::from(i64::from_le_bytes(a(8))),
                DataType::U64 => Json::from(u64::from_le_bytes(a(8))),
                DataType::F16 => number(f16::from_le_bytes([c[0], c[1]]).to_f64()),
                DataType::Bf16 => number(bf16::from_le_bytes([c[0], c[1]]).to_f64()),
                DataType::F32 => number(f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]]))),
                DataType::F64 | DataType::Bytes => number(f64::from_le_bytes(a(8))),
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
            let dt = DataType::parse(dt).expect("a datatype");
            let leaves = flatten(&data);
            let raw = to_raw(dt, &leaves, "inputs[0].data").expect("encodes");
            let back = from_raw(dt, &raw, "x").expect("decodes");
            assert_eq!(Json::Array(back), data, "{dt}");
        }
        assert_eq!(
            from_raw(DataType::F32, &f32::NAN.to_le_bytes(), "x").expect("nan"),
            vec![Json::Null]
        );
    }

    #[test]
    fn out_of_range_values_name_the_element() {
        let data = json!([[1, 2], [3, 300]]);
        let e = to_raw(DataType::I8, &flatten(&data), "inputs[1].data").expect_err("300 > i8");
        assert!(e.to_string().contains("inputs[1].data[3]"), "{e}");
        let e =
            to_raw(DataType::F32, &flatten(&json!(["x"])), "inputs[0].data").expect_err("string");
        assert!(e.to_string().contains("inputs[0].data[0]"), "{e}");
        assert!(from_raw(DataType::Bytes, &[9, 0, 0, 0, b'a'], "out").is_err());
        assert!(from_raw(DataType::F32, &[0, 0, 0], "out").is_err());
    }
}
