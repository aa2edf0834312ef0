//! Tensors as the Open Inference Protocol carries them: a datatype name
//! (`FP32`, `BYTES`, …), a shape, and flattened row-major elements, read
//! from `raw_input_contents` (little-endian; BYTES elements each prefixed by
//! a 4-byte little-endian length) or from the typed `contents` fields, and
//! always written raw. Also the batch-axis concatenation and split the
//! dynamic batcher uses. Datatypes and the BYTES framing are
//! `mlmesh_tensor`'s, shared with the gateway.

use mlmesh_proto::inference as pb;
pub use mlmesh_tensor::{DataType, element_count};

use crate::error::InferError;

/// Triton's config enum (`TYPE_FP32`) of a datatype.
pub fn to_config(d: DataType) -> pb::DataType {
    match d {
        DataType::Bool => pb::DataType::TypeBool,
        DataType::U8 => pb::DataType::TypeUint8,
        DataType::U16 => pb::DataType::TypeUint16,
        DataType::U32 => pb::DataType::TypeUint32,
        DataType::U64 => pb::DataType::TypeUint64,
        DataType::I8 => pb::DataType::TypeInt8,
        DataType::I16 => pb::DataType::TypeInt16,
        DataType::I32 => pb::DataType::TypeInt32,
        DataType::I64 => pb::DataType::TypeInt64,
        DataType::F16 => pb::DataType::TypeFp16,
        DataType::Bf16 => pb::DataType::TypeBf16,
        DataType::F32 => pb::DataType::TypeFp32,
        DataType::F64 => pb::DataType::TypeFp64,
        DataType::Bytes => pb::DataType::TypeString,
    }
}

/// The datatype of Triton's config enum; `None` for `TYPE_INVALID`.
pub fn from_config(t: pb::DataType) -> Option<DataType> {
    DataType::ALL.into_iter().find(|d| to_config(*d) == t)
}

/// Flattened, row-major elements of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    /// IEEE half floats, as their bits.
    F16(Vec<u16>),
    /// bfloat16, as its bits.
    Bf16(Vec<u16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any variant, binding it as `$v`.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::Bool($v) => $body,
            Data::U8($v) => $body,
            Data::U16($v) => $body,
            Data::U32($v) => $body,
            Data::U64($v) => $body,
            Data::I8($v) => $body,
            Data::I16($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::F16($v) => $body,
            Data::Bf16($v) => $body,
            Data::F32($v) => $body,
            Data::F64($v) => $body,
            Data::Bytes($v) => $body,
        }
    };
}

/// Like [`each!`] but rebuilds the same variant from `$body`'s vector.
macro_rules! map_same {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            Data::Bool($v) => Data::Bool($body),
            Data::U8($v) => Data::U8($body),
            Data::U16($v) => Data::U16($body),
            Data::U32($v) => Data::U32($body),
            Data::U64($v) => Data::U64($body),
            Data::I8($v) => Data::I8($body),
            Data::I16($v) => Data::I16($body),
            Data::I32($v) => Data::I32($body),
            Data::I64($v) => Data::I64($body),
            Data::F16($v) => Data::F16($body),
            Data::Bf16($v) => Data::Bf16($body),
            Data::F32($v) => Data::F32($body),
            Data::F64($v) => Data::F64($body),
            Data::Bytes($v) => Data::Bytes($body),
        }
    };
}

impl Data {
    pub fn dtype(&self) -> DataType {
        match self {
            Data::Bool(_) => DataType::Bool,
            Data::U8(_) => DataType::U8,
            Data::U16(_) => DataType::U16,
            Data::U32(_) => DataType::U32,
            Data::U64(_) => DataType::U64,
            Data::I8(_) => DataType::I8,
            Data::I16(_) => DataType::I16,
            Data::I32(_) => DataType::I32,
            Data::I64(_) => DataType::I64,
            Data::F16(_) => DataType::F16,
            Data::Bf16(_) => DataType::Bf16,
            Data::F32(_) => DataType::F32,
            Data::F64(_) => DataType::F64,
            Data::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of `dtype`.
    pub fn empty(dtype: DataType, capacity: usize) -> Data {
        match dtype {
            DataType::Bool => Data::Bool(Vec::with_capacity(capacity)),
            DataType::U8 => Data::U8(Vec::with_capacity(capacity)),
            DataType::U16 => Data::U16(Vec::with_capacity(capacity)),
            DataType::U32 => Data::U32(Vec::with_capacity(capacity)),
            DataType::U64 => Data::U64(Vec::with_capacity(capacity)),
            DataType::I8 => Data::I8(Vec::with_capacity(capacity)),
            DataType::I16 => Data::I16(Vec::with_capacity(capacity)),
            DataType::I32 => Data::I32(Vec::with_capacity(capacity)),
            DataType::I64 => Data::I64(Vec::with_capacity(capacity)),
            DataType::F16 => Data::F16(Vec::with_capacity(capacity)),
            DataType::Bf16 => Data::Bf16(Vec::with_capacity(capacity)),
            DataType::F32 => Data::F32(Vec::with_capacity(capacity)),
            DataType::F64 => Data::F64(Vec::with_capacity(capacity)),
            DataType::Bytes => Data::Bytes(Vec::with_capacity(capacity)),
        }
    }

    /// `n` zero (or empty) elements of `dtype`, for warm-up runs.
    pub fn zeros(dtype: DataType, n: usize) -> Data {
        match dtype {
            DataType::Bool => Data::Bool(vec![false; n]),
            DataType::U8 => Data::U8(vec![0; n]),
            DataType::U16 => Data::U16(vec![0; n]),
            DataType::U32 => Data::U32(vec![0; n]),
            DataType::U64 => Data::U64(vec![0; n]),
            DataType::I8 => Data::I8(vec![0; n]),
            DataType::I16 => Data::I16(vec![0; n]),
            DataType::I32 => Data::I32(vec![0; n]),
            DataType::I64 => Data::I64(vec![0; n]),
            DataType::F16 => Data::F16(vec![0; n]),
            DataType::Bf16 => Data::Bf16(vec![0; n]),
            DataType::F32 => Data::F32(vec![0.0; n]),
            DataType::F64 => Data::F64(vec![0.0; n]),
            DataType::Bytes => Data::Bytes(vec![Vec::new(); n]),
        }
    }

    /// Appends `other` (same type) to `self`.
    fn extend(&mut self, other: &Data) -> Result<(), InferError> {
        macro_rules! ext {
            ($($var:ident),*) => {
                match (self, other) {
                    $((Data::$var(a), Data::$var(b)) => { a.extend_from_slice(b); Ok(()) })*
                    (a, b) => Err(InferError::invalid(format!(
                        "cannot batch {} with {}", a.dtype().name(), b.dtype().name()
                    ))),
                }
            };
        }
        ext!(
            Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, Bf16, F32, F64, Bytes
        )
    }

    /// Elements `[start, end)`.
    fn slice(&self, start: usize, end: usize) -> Data {
        map_same!(self, v => v[start..end].to_vec())
    }

    /// Little-endian bytes (BYTES: 4-byte length prefix per element).
    pub fn to_raw(&self) -> Vec<u8> {
        macro_rules! le {
            ($v:expr) => {{
                let mut out = Vec::with_capacity($v.len() * std::mem::size_of_val(&$v[0]));
                for x in $v {
                    out.extend_from_slice(&x.to_le_bytes());
                }
                out
            }};
        }
        if self.is_empty() {
            return Vec::new();
        }
        match self {
            Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Data::U8(v) => v.clone(),
            Data::U16(v) | Data::F16(v) | Data::Bf16(v) => le!(v),
            Data::U32(v) => le!(v),
            Data::U64(v) => le!(v),
            Data::I8(v) => v.iter().map(|&x| x.to_le_bytes()[0]).collect(),
            Data::I16(v) => le!(v),
            Data::I32(v) => le!(v),
            Data::I64(v) => le!(v),
            Data::F32(v) => le!(v),
            Data::F64(v) => le!(v),
            Data::Bytes(v) => {
                let mut out = Vec::with_capacity(v.iter().map(|e| e.len() + 4).sum());
                for e in v {
                    out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                    out.extend_from_slice(e);
                }
                out
            }
        }
    }

    /// Reads `count` elements of `dtype` from raw little-endian bytes.
    /// `what` names the tensor in errors.
    pub fn from_raw(
        dtype: DataType,
        count: usize,
        raw: &[u8],
        what: &str,
    ) -> Result<Data, InferError> {
        if let Some(size) = dtype.size() {
            let want = count.checked_mul(size).ok_or_else(|| {
                InferError::invalid(format!("{what}: shape has too many elements"))
            })?;
            if raw.len() != want {
                return Err(InferError::invalid(format!(
                    "{what}: raw contents are {} bytes; shape and datatype {} need {count} × {size} = {want} bytes",
                    raw.len(),
                    dtype.name()
                )));
            }
        }
        macro_rules! le {
            ($t:ty, $n:expr) => {
                raw.chunks_exact($n)
                    .map(|c| {
                        let mut b = [0u8; $n];
                        b.copy_from_slice(c);
                        <$t>::from_le_bytes(b)
                    })
                    .collect()
            };
        }
        Ok(match dtype {
            DataType::Bool => Data::Bool(raw.iter().map(|&b| b != 0).collect()),
            DataType::U8 => Data::U8(raw.to_vec()),
            DataType::U16 => Data::U16(le!(u16, 2)),
            DataType::U32 => Data::U32(le!(u32, 4)),
            DataType::U64 => Data::U64(le!(u64, 8)),
            DataType::I8 => Data::I8(raw.iter().map(|&b| i8::from_le_bytes([b])).collect()),
            DataType::I16 => Data::I16(le!(i16, 2)),
            DataType::I32 => Data::I32(le!(i32, 4)),
            DataType::I64 => Data::I64(le!(i64, 8)),
            DataType::F16 => Data::F16(le!(u16, 2)),
            DataType::Bf16 => Data::Bf16(le!(u16, 2)),
            DataType::F32 => Data::F32(le!(f32, 4)),
            DataType::F64 => Data::F64(le!(f64, 8)),
            DataType::Bytes => Data::Bytes(
                mlmesh_tensor::raw::split_bytes(count, raw, what)
                    .map_err(|e| InferError::invalid(e.to_string()))?,
            ),
        })
    }

    /// Reads the typed `contents` field that matches `dtype`.
    pub fn from_contents(
        dtype: DataType,
        count: usize,
        c: &pb::InferTensorContents,
        what: &str,
    ) -> Result<Data, InferError> {
        let narrow = |field: &str, bits: u32| {
            InferError::invalid(format!(
                "{what}: a value in `contents.{field}` does not fit in {} ({bits} bits)",
                dtype.name()
            ))
        };
        let data = match dtype {
            DataType::Bool => Data::Bool(c.bool_contents.clone()),
            DataType::U8 => Data::U8(
                c.uint_contents
                    .iter()
                    .map(|&x| u8::try_from(x).map_err(|_| narrow("uint_contents", 8)))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::U16 => Data::U16(
                c.uint_contents
                    .iter()
                    .map(|&x| u16::try_from(x).map_err(|_| narrow("uint_contents", 16)))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::U32 => Data::U32(c.uint_contents.clone()),
            DataType::U64 => Data::U64(c.uint64_contents.clone()),
            DataType::I8 => Data::I8(
                c.int_contents
                    .iter()
                    .map(|&x| i8::try_from(x).map_err(|_| narrow("int_contents", 8)))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::I16 => Data::I16(
                c.int_contents
                    .iter()
                    .map(|&x| i16::try_from(x).map_err(|_| narrow("int_contents", 16)))
                    .collect::<Result<_, _>>()?,
            ),
            DataType::I32 => Data::I32(c.int_contents.clone()),
            DataType::I64 => Data::I64(c.int64_contents.clone()),
            DataType::F16 | DataType::Bf16 => {
                return Err(InferError::invalid(format!(
                    "{what}: {dtype} has no typed contents field; send it in raw_input_contents"
                )));
            }
            DataType::F32 => Data::F32(c.fp32_contents.clone()),
            DataType::F64 => Data::F64(c.fp64_contents.clone()),
            DataType::Bytes => Data::Bytes(c.bytes_contents.iter().map(|b| b.to_vec()).collect()),
        };
        if data.len() != count {
            return Err(InferError::invalid(format!(
                "{what}: contents hold {} {} elements; the shape needs {count}",
                data.len(),
                dtype.name()
            )));
        }
        Ok(data)
    }
}

/// A named tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Data,
}

impl Tensor {
    /// Rows along the batch axis (the first).
    pub fn rows(&self) -> usize {
        self.shape.first().map_or(1, |&d| d.max(0) as usize)
    }

    /// Concatenates tensors of the same name, type and trailing shape along
    /// the batch axis.
    pub fn concat(parts: &[&Tensor]) -> Result<Tensor, InferError> {
        let first = parts
            .first()
            .ok_or_else(|| InferError::invalid("nothing to batch"))?;
        if parts.len() == 1 {
            return Ok((*first).clone());
        }
        let total: usize = parts.iter().map(|t| t.data.len()).sum();
        let mut data = Data::empty(first.data.dtype(), total);
        let mut rows = 0i64;
        for p in parts {
            data.extend(&p.data)?;
            rows += p.shape.first().copied().unwrap_or(1);
        }
        let mut shape = first.shape.clone();
        if let Some(d) = shape.first_mut() {
            *d = rows;
        }
        Ok(Tensor {
            name: first.name.clone(),
            shape,
            data,
        })
    }

    /// Splits along the batch axis into pieces of `rows[i]` rows each.
    pub fn split(&self, rows: &[usize]) -> Result<Vec<Tensor>, InferError> {
        if rows.len() == 1 {
            return Ok(vec![self.clone()]);
        }
        let total: usize = rows.iter().sum();
        let have = self.rows();
        if self.shape.is_empty() || have != total {
            return Err(InferError::Run {
                model: String::new(),
                reason: format!(
                    "output {:?} has {have} rows for a batch of {total}: the model does not keep its batch axis first",
                    self.name
                ),
            });
        }
        let per_row = self.data.len().checked_div(total).unwrap_or(0);
        let mut out = Vec::with_capacity(rows.len());
        let mut at = 0;
        for &r in rows {
            let mut shape = self.shape.clone();
            shape[0] = r as i64;
            out.push(Tensor {
                name: self.name.clone(),
                shape,
                data: self.data.slice(at * per_row, (at + r) * per_row),
            });
            at += r;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_round_trip_for_every_type() {
        let samples = vec![
            Data::Bool(vec![true, false]),
            Data::U8(vec![0, 255]),
            Data::U16(vec![1, u16::MAX]),
            Data::U32(vec![7, u32::MAX]),
            Data::U64(vec![9, u64::MAX]),
            Data::I8(vec![i8::MIN, 5]),
            Data::I16(vec![i16::MIN, 5]),
            Data::I32(vec![i32::MIN, 5]),
            Data::I64(vec![i64::MIN, 5]),
            Data::F16(vec![0x3c00, 0xc000]),
            Data::Bf16(vec![0x3f80, 0xc080]),
            Data::F32(vec![1.5, -0.0]),
            Data::F64(vec![f64::MAX, 2.25]),
            Data::Bytes(vec![b"ab".to_vec(), Vec::new()]),
        ];
        for d in samples {
            let raw = d.to_raw();
            let back = Data::from_raw(d.dtype(), 2, &raw, "t").expect("decodes");
            assert_eq!(back, d, "{}", d.dtype().name());
        }
    }

    #[test]
    fn byte_length_mismatch_names_the_sizes() {
        let e = Data::from_raw(DataType::F32, 3, &[0u8; 8], "input `x`").expect_err("short");
        let m = e.to_string();
        assert!(
            m.contains("input `x`") && m.contains("8 bytes") && m.contains("12"),
            "{m}"
        );
        let e = Data::from_raw(DataType::Bytes, 2, &[1, 0, 0, 0, b'a'], "b").expect_err("short");
        assert!(e.to_string().contains("element 1"), "{e}");
        let e = Data::from_raw(DataType::Bytes, 1, &[9, 0, 0, 0, b'a'], "b").expect_err("over");
        assert!(e.to_string().contains("claims 9 bytes"), "{e}");
    }

    #[test]
    fn concat_then_split_is_identity() {
        let a = Tensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: Data::F32(vec![1.0, 2.0]),
        };
        let b = Tensor {
            name: "x".into(),
            shape: vec![2, 2],
            data: Data::F32(vec![3.0, 4.0, 5.0, 6.0]),
        };
        let all = Tensor::concat(&[&a, &b]).expect("concat");
        assert_eq!(all.shape, vec![3, 2]);
        let parts = all.split(&[1, 2]).expect("split");
        assert_eq!(parts, vec![a, b]);
    }

    #[test]
    fn typed_contents_are_range_checked() {
        let c = pb::InferTensorContents {
            int_contents: vec![1, 300],
            ..Default::default()
        };
        let e = Data::from_contents(DataType::I8, 2, &c, "in").expect_err("300 is no i8");
        assert!(e.to_string().contains("INT8"), "{e}");
        let ok = Data::from_contents(DataType::I16, 2, &c, "in").expect("fits");
        assert_eq!(ok, Data::I16(vec![1, 300]));
    }
}
