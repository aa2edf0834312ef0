//! The ONNX model format as protobuf messages: the part of `onnx.proto`
//! (field numbers and types exactly as ONNX defines them) that the converter
//! writes and the quantizer reads and rewrites, and a small graph builder.
//!
//! Decoding keeps only the fields declared here, so [`decode`] refuses a
//! model that uses what we would silently drop (external data, sparse
//! initializers, functions, training info) instead of writing back a
//! different model.

use prost::Message;

/// `TensorProto.DataType` values used here.
pub mod dtype {
    pub const FLOAT: i32 = 1;
    pub const UINT8: i32 = 2;
    pub const INT8: i32 = 3;
    pub const INT32: i32 = 6;
    pub const INT64: i32 = 7;
}

/// `AttributeProto.AttributeType` values used here.
pub mod attr_type {
    pub const FLOAT: i32 = 1;
    pub const INT: i32 = 2;
    pub const STRING: i32 = 3;
    pub const TENSOR: i32 = 4;
    pub const FLOATS: i32 = 6;
    pub const INTS: i32 = 7;
}

/// The IR version written (ONNX 1.14+, read by ONNX Runtime 1.15+).
pub const IR_VERSION: i64 = 9;

#[derive(Clone, PartialEq, Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(string, tag = "2")]
    pub producer_name: String,
    #[prost(string, tag = "3")]
    pub producer_version: String,
    #[prost(string, tag = "4")]
    pub domain: String,
    #[prost(int64, tag = "5")]
    pub model_version: i64,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    pub opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    pub metadata_props: Vec<StringStringEntryProto>,
    /// Declared only to refuse models that have them.
    #[prost(bytes = "vec", repeated, tag = "20")]
    pub training_info: Vec<Vec<u8>>,
    /// Declared only to refuse models that have them.
    #[prost(bytes = "vec", repeated, tag = "25")]
    pub functions: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(int64, tag = "2")]
    pub version: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(string, tag = "10")]
    pub doc_string: String,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "13")]
    pub value_info: Vec<ValueInfoProto>,
    /// Declared only to refuse models that have them.
    #[prost(bytes = "vec", repeated, tag = "14")]
    pub quantization_annotation: Vec<Vec<u8>>,
    /// Declared only to refuse models that have them.
    #[prost(bytes = "vec", repeated, tag = "15")]
    pub sparse_initializer: Vec<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
    #[prost(string, tag = "6")]
    pub doc_string: String,
    #[prost(string, tag = "7")]
    pub domain: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(bytes = "vec", tag = "4")]
    pub s: Vec<u8>,
    #[prost(message, optional, tag = "5")]
    pub t: Option<TensorProto>,
    #[prost(message, optional, tag = "6")]
    pub g: Option<GraphProto>,
    #[prost(float, repeated, tag = "7")]
    pub floats: Vec<f32>,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
    #[prost(bytes = "vec", repeated, tag = "9")]
    pub strings: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "10")]
    pub tensors: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub graphs: Vec<GraphProto>,
    #[prost(string, tag = "13")]
    pub doc_string: String,
    #[prost(int32, tag = "20")]
    pub r#type: i32,
    #[prost(string, tag = "21")]
    pub ref_attr_name: String,
    /// Declared only to refuse models that have them.
    #[prost(bytes = "vec", optional, tag = "22")]
    pub sparse_tensor: Option<Vec<u8>>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(int32, repeated, tag = "5")]
    pub int32_data: Vec<i32>,
    #[prost(bytes = "vec", repeated, tag = "6")]
    pub string_data: Vec<Vec<u8>>,
    #[prost(int64, repeated, tag = "7")]
    pub int64_data: Vec<i64>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(double, repeated, tag = "10")]
    pub double_data: Vec<f64>,
    #[prost(uint64, repeated, tag = "11")]
    pub uint64_data: Vec<u64>,
    #[prost(string, tag = "12")]
    pub doc_string: String,
    /// Declared only to refuse models that have them.
    #[prost(bytes = "vec", repeated, tag = "13")]
    pub external_data: Vec<Vec<u8>>,
    /// 1 = EXTERNAL.
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(message, optional, tag = "2")]
    pub r#type: Option<TypeProto>,
    #[prost(string, tag = "3")]
    pub doc_string: String,
}

/// `TypeProto` with its `tensor_type` case; other cases (sequences, maps,
/// as scikit-learn's classifiers output) kept as their bytes.
#[derive(Clone, PartialEq, Message)]
pub struct TypeProto {
    #[prost(message, optional, tag = "1")]
    pub tensor_type: Option<TypeTensor>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub sequence_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "5")]
    pub map_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "9")]
    pub optional_type: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "8")]
    pub sparse_tensor_type: Option<Vec<u8>>,
    #[prost(string, tag = "6")]
    pub denotation: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct TypeTensor {
    #[prost(int32, tag = "1")]
    pub elem_type: i32,
    #[prost(message, optional, tag = "2")]
    pub shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    pub dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Dimension {
    #[prost(int64, optional, tag = "1")]
    pub dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    pub dim_param: Option<String>,
    #[prost(string, tag = "3")]
    pub denotation: String,
}

/// Why a model's bytes were refused.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not an ONNX model: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("the model has no graph")]
    NoGraph,
    #[error("{0} is not supported (the model would be written back without it)")]
    Unsupported(&'static str),
}

/// Decodes a model, refusing what [`ModelProto`] does not carry.
pub fn decode(bytes: &[u8]) -> Result<ModelProto, FormatError> {
    let m = ModelProto::decode(bytes)?;
    let g = m.graph.as_ref().ok_or(FormatError::NoGraph)?;
    if !m.functions.is_empty() {
        return Err(FormatError::Unsupported("a model with local functions"));
    }
    if !m.training_info.is_empty() {
        return Err(FormatError::Unsupported("a model with training info"));
    }
    if !g.sparse_initializer.is_empty() {
        return Err(FormatError::Unsupported("a sparse initializer"));
    }
    if !g.quantization_annotation.is_empty() {
        return Err(FormatError::Unsupported("a quantization annotation"));
    }
    if g.initializer
        .iter()
        .any(|t| t.data_location == 1 || !t.external_data.is_empty())
    {
        return Err(FormatError::Unsupported(
            "an initializer stored as external data",
        ));
    }
    Ok(m)
}

/// A tensor type with a shape of named (`Some("batch")`) or fixed dims.
pub fn tensor_type(elem_type: i32, dims: &[Result<i64, &str>]) -> TypeProto {
    TypeProto {
        tensor_type: Some(TypeTensor {
            elem_type,
            shape: Some(TensorShapeProto {
                dim: dims
                    .iter()
                    .map(|d| match d {
                        Ok(v) => Dimension {
                            dim_value: Some(*v),
                            ..Default::default()
                        },
                        Err(p) => Dimension {
                            dim_param: Some((*p).to_owned()),
                            ..Default::default()
                        },
                    })
                    .collect(),
            }),
        }),
        ..Default::default()
    }
}

/// A value of a graph's inputs or outputs.
pub fn value_info(name: &str, ty: TypeProto) -> ValueInfoProto {
    ValueInfoProto {
        name: name.to_owned(),
        r#type: Some(ty),
        doc_string: String::new(),
    }
}

/// An INT attribute.
pub fn attr_int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        i,
        r#type: attr_type::INT,
        ..Default::default()
    }
}

/// A FLOAT attribute.
pub fn attr_float(name: &str, f: f32) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        f,
        r#type: attr_type::FLOAT,
        ..Default::default()
    }
}

/// An INTS attribute.
pub fn attr_ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.to_owned(),
        ints: ints.to_vec(),
        r#type: attr_type::INTS,
        ..Default::default()
    }
}

/// A float32 initializer, little-endian raw data.
pub fn tensor_f32(name: &str, dims: &[i64], data: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: dtype::FLOAT,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int64 initializer.
pub fn tensor_i64(name: &str, dims: &[i64], data: &[i64]) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type: dtype::INT64,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// An int8 or uint8 initializer.
pub fn tensor_8bit(name: &str, dims: &[i64], data_type: i32, data: Vec<u8>) -> TensorProto {
    TensorProto {
        name: name.to_owned(),
        dims: dims.to_vec(),
        data_type,
        raw_data: data,
        ..Default::default()
    }
}

/// A float32 initializer's values, whichever field holds them; `None` for
/// another type or a size that does not match its dims.
pub fn floats_of(t: &TensorProto) -> Option<Vec<f32>> {
    if t.data_type != dtype::FLOAT {
        return None;
    }
    let n = element_count(&t.dims)?;
    let v: Vec<f32> = if t.raw_data.is_empty() {
        t.float_data.clone()
    } else {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    (v.len() == n && (t.raw_data.is_empty() || t.raw_data.len() == 4 * n)).then_some(v)
}

/// The number of elements of `dims`, `None` for a negative or overflowing one.
pub fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| {
        usize::try_from(d).ok().and_then(|d| acc.checked_mul(d))
    })
}

/// Nodes and initializers added in order, with fresh names.
#[derive(Default)]
pub struct GraphBuilder {
    pub nodes: Vec<NodeProto>,
    pub initializers: Vec<TensorProto>,
    next: usize,
}

impl GraphBuilder {
    /// Adds `op_type(inputs)` named after `hint`; its single output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], hint: &str) -> String {
        self.op_with(op_type, inputs, hint, Vec::new())
    }

    /// As [`Self::op`], with attributes.
    pub fn op_with(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        hint: &str,
        attribute: Vec<AttributeProto>,
    ) -> String {
        self.next += 1;
        let name = format!("{hint}/{op_type}_{}", self.next);
        let output = format!("{name}:0");
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: vec![output.clone()],
            name,
            op_type: op_type.to_owned(),
            attribute,
            ..Default::default()
        });
        output
    }

    /// Adds an initializer; its name.
    pub fn init(&mut self, t: TensorProto) -> String {
        let name = t.name.clone();
        self.initializers.push(t);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_round_trips_and_external_data_is_refused() {
        let mut b = GraphBuilder::default();
        let w = b.init(tensor_f32("w", &[2], &[1.0, 2.0]));
        let y = b.op("Add", &["x", &w], "add");
        let mut m = ModelProto {
            ir_version: IR_VERSION,
            graph: Some(GraphProto {
                node: b.nodes,
                initializer: b.initializers,
                input: vec![value_info("x", tensor_type(dtype::FLOAT, &[Ok(2)]))],
                output: vec![value_info(&y, tensor_type(dtype::FLOAT, &[Ok(2)]))],
                ..Default::default()
            }),
            ..Default::default()
        };
        let back = decode(&m.encode_to_vec()).expect("decodes");
        assert_eq!(back, m);
        let g = back.graph.as_ref().expect("graph");
        assert_eq!(floats_of(&g.initializer[0]), Some(vec![1.0, 2.0]));
        if let Some(g) = m.graph.as_mut() {
            g.initializer[0].data_location = 1;
        }
        let err = decode(&m.encode_to_vec()).expect_err("external data");
        assert!(err.to_string().contains("external data"), "{err}");
        assert!(decode(b"\xff\xff\xff").is_err());
    }
}
