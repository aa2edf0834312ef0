//! Load-time graph rewrite: gather rows of an int8 embedding table before
//! dequantizing them, instead of dequantizing the whole table.
//!
//! Weight-only int8 exports (such as the default all-MiniLM-L6-v2 int8) store
//! each weight as `Mul(Cast(int8 W), scale)`. ONNX Runtime constant-folds that
//! into a float32 copy, which for the word-embedding table (30522 × 384) is
//! 47 MB per session, although a batch only ever reads the rows of its token
//! ids. This pass turns
//!
//! ```text
//! Gather(Mul(Cast(W_q), S), ids)            // S: [rows, 1] or a scalar
//! ```
//!
//! into the equal
//!
//! ```text
//! Mul(Cast(Gather(W_q, ids)), Gather(S, ids))
//! ```
//!
//! so only the gathered rows become float32. Measured on the default model:
//! idle RSS 193 MB → 158 MB, same run time (docs/benchmarks.md, "Memory").
//!
//! It works on the protobuf wire format: every field it does not rewrite is
//! copied byte for byte, so no ONNX schema is needed and nothing else in the
//! model can change. A model without the pattern is returned unchanged.

use std::{collections::HashMap, ops::Range};

use prost::Message;

/// ONNX `TensorProto.DataType` values we look at.
const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;

/// The parts of `NodeProto` we read and write (field numbers from onnx.proto).
#[derive(Clone, PartialEq, Message)]
struct Node {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<Attribute>,
    #[prost(string, tag = "7")]
    domain: String,
}

/// The parts of `AttributeProto` we need (an INT attribute).
#[derive(Clone, PartialEq, Message)]
struct Attribute {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    /// `AttributeType`: 2 = INT.
    #[prost(int32, tag = "20")]
    r#type: i32,
}

/// The parts of `TensorProto` we read (initializers' shape and type).
#[derive(Clone, PartialEq, Message)]
struct Tensor {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
}

/// Why a model's bytes could not be read as protobuf.
#[derive(Debug, thiserror::Error)]
#[error("not a valid ONNX model: {0}")]
pub struct RewriteError(String);

/// One top-level field of a message: its number and byte ranges.
struct Field {
    number: u32,
    /// The whole record (tag + payload), for verbatim copies.
    record: Range<usize>,
    /// The payload of a length-delimited field.
    payload: Range<usize>,
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, RewriteError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| RewriteError("truncated varint".into()))?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(RewriteError("varint too long".into()))
}

fn fields(buf: &[u8]) -> Result<Vec<Field>, RewriteError> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let start = pos;
        let tag = varint(buf, &mut pos)?;
        let number = u32::try_from(tag >> 3).map_err(|_| RewriteError("field number".into()))?;
        let payload = match tag & 7 {
            0 => {
                varint(buf, &mut pos)?;
                pos..pos
            }
            1 => {
                pos += 8;
                pos..pos
            }
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?)
                    .map_err(|_| RewriteError("length".into()))?;
                let r = pos..pos
                    .checked_add(len)
                    .ok_or_else(|| RewriteError("length".into()))?;
                pos = r.end;
                r
            }
            5 => {
                pos += 4;
                pos..pos
            }
            w => return Err(RewriteError(format!("unsupported wire type {w}"))),
        };
        if pos > buf.len() {
            return Err(RewriteError("truncated field".into()));
        }
        out.push(Field {
            number,
            record: start..pos,
            payload,
        });
    }
    Ok(out)
}

fn put_len_delimited(out: &mut Vec<u8>, number: u32, payload: &[u8]) {
    prost::encoding::encode_key(number, prost::encoding::WireType::LengthDelimited, out);
    prost::encoding::encode_varint(payload.len() as u64, out);
    out.extend_from_slice(payload);
}

fn int_attr(name: &str, i: i64) -> Attribute {
    Attribute {
        name: name.into(),
        i,
        r#type: 2,
    }
}

fn attr(node: &Node, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

const MODEL_GRAPH: u32 = 7;
const GRAPH_NODE: u32 = 1;
const GRAPH_INITIALIZER: u32 = 5;
const GRAPH_OUTPUT: u32 = 12;
const VALUE_INFO_NAME: u32 = 1;

/// One match: the node indices to drop and the nodes replacing the Gather.
struct Match {
    cast: usize,
    mul: usize,
    gather: usize,
    replacement: Vec<Node>,
}

/// Rewrites `model` (an encoded `ModelProto`). Returns the new bytes and the
/// number of tables rewritten; 0 means `model` came back unchanged.
pub fn gather_before_dequantize(model: &[u8]) -> Result<(Vec<u8>, usize), RewriteError> {
    let top = fields(model)?;
    let Some(graph_field) = top.iter().find(|f| f.number == MODEL_GRAPH) else {
        return Ok((model.to_vec(), 0));
    };
    let graph = &model[graph_field.payload.clone()];
    let gfields = fields(graph)?;

    let decode_err = |e: prost::DecodeError| RewriteError(e.to_string());
    let mut nodes = Vec::new(); // (index into gfields, Node)
    let mut inits = HashMap::new();
    let mut graph_outputs = Vec::new();
    for (i, f) in gfields.iter().enumerate() {
        let payload = &graph[f.payload.clone()];
        match f.number {
            GRAPH_NODE => nodes.push((i, Node::decode(payload).map_err(decode_err)?)),
            GRAPH_INITIALIZER => {
                let t = Tensor::decode(payload).map_err(decode_err)?;
                inits.insert(t.name.clone(), t);
            }
            GRAPH_OUTPUT => {
                for vf in fields(payload)? {
                    if vf.number == VALUE_INFO_NAME {
                        graph_outputs
                            .push(String::from_utf8_lossy(&payload[vf.payload]).into_owned());
                    }
                }
            }
            _ => {}
        }
    }

    // Who reads each value (nodes, and the graph's outputs).
    let mut readers: HashMap<&str, usize> = HashMap::new();
    for (_, n) in &nodes {
        for i in &n.input {
            *readers.entry(i.as_str()).or_default() += 1;
        }
    }
    for o in &graph_outputs {
        *readers.entry(o.as_str()).or_default() += 1;
    }
    let producer: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .flat_map(|(k, (_, n))| n.output.iter().map(move |o| (o.as_str(), k)))
        .collect();
    let only_reader = |value: &str| readers.get(value).copied() == Some(1);

    let mut matches = Vec::new();
    for (g, (_, gather)) in nodes.iter().enumerate() {
        if gather.op_type != "Gather" || !gather.domain.is_empty() || gather.input.len() != 2 {
            continue;
        }
        if attr(gather, "axis").unwrap_or(0) != 0 {
            continue;
        }
        let Some(&m) = producer.get(gather.input[0].as_str()) else {
            continue;
        };
        let mul = &nodes[m].1;
        if mul.op_type != "Mul" || mul.input.len() != 2 || !only_reader(&gather.input[0]) {
            continue;
        }
        // Mul(Cast(W), S) in either order.
        let Some((c, scale)) = [(0, 1), (1, 0)].into_iter().find_map(|(a, b)| {
            let c = *producer.get(mul.input[a].as_str())?;
            (nodes[c].1.op_type == "Cast").then_some((c, mul.input[b].clone()))
        }) else {
            continue;
        };
        let cast = &nodes[c].1;
        if cast.input.len() != 1
            || attr(cast, "to") != Some(i64::from(FLOAT))
            || !only_reader(&cast.output[0])
        {
            continue;
        }
        let (Some(w), Some(s)) = (inits.get(&cast.input[0]), inits.get(&scale)) else {
            continue;
        };
        let rows = match w.dims.first() {
            Some(&r) if w.dims.len() == 2 => r,
            _ => continue,
        };
        if !matches!(w.data_type, INT8 | UINT8) || s.data_type != FLOAT {
            continue;
        }
        let per_row = s.dims == [rows, 1];
        let scalar = s.dims.iter().product::<i64>() == 1;
        if !per_row && !scalar {
            continue;
        }
        let ids = &gather.input[1];
        let base = format!("mlmesh/gather_int8/{}", gather.name);
        let q = format!("{base}/rows_q");
        let f = format!("{base}/rows_f");
        let mut replacement = vec![
            Node {
                input: vec![cast.input[0].clone(), ids.clone()],
                output: vec![q.clone()],
                name: format!("{base}/gather_q"),
                op_type: "Gather".into(),
                attribute: vec![int_attr("axis", 0)],
                domain: String::new(),
            },
            Node {
                input: vec![q],
                output: vec![f.clone()],
                name: format!("{base}/cast"),
                op_type: "Cast".into(),
                attribute: vec![int_attr("to", i64::from(FLOAT))],
                domain: String::new(),
            },
        ];
        let scale_rows = if per_row {
            let sr = format!("{base}/rows_scale");
            replacement.push(Node {
                input: vec![scale.clone(), ids.clone()],
                output: vec![sr.clone()],
                name: format!("{base}/gather_scale"),
                op_type: "Gather".into(),
                attribute: vec![int_attr("axis", 0)],
                domain: String::new(),
            });
            sr
        } else {
            scale.clone()
        };
        replacement.push(Node {
            input: vec![f, scale_rows],
            output: gather.output.clone(),
            name: format!("{base}/mul"),
            op_type: "Mul".into(),
            attribute: Vec::new(),
            domain: String::new(),
        });
        matches.push(Match {
            cast: nodes[c].0,
            mul: nodes[m].0,
            gather: nodes[g].0,
            replacement,
        });
    }
    if matches.is_empty() {
        return Ok((model.to_vec(), 0));
    }

    // New graph: every field verbatim, except the dropped Cast/Mul and each
    // Gather replaced in place (its inputs precede it, so order stays valid).
    let mut new_graph = Vec::with_capacity(graph.len());
    for (i, f) in gfields.iter().enumerate() {
        if matches.iter().any(|m| m.cast == i || m.mul == i) {
            continue;
        }
        if let Some(m) = matches.iter().find(|m| m.gather == i) {
            for n in &m.replacement {
                put_len_delimited(&mut new_graph, GRAPH_NODE, &n.encode_to_vec());
            }
            continue;
        }
        new_graph.extend_from_slice(&graph[f.record.clone()]);
    }
    let mut out = Vec::with_capacity(model.len());
    for f in &top {
        if f.number == MODEL_GRAPH {
            put_len_delimited(&mut out, MODEL_GRAPH, &new_graph);
        } else {
            out.extend_from_slice(&model[f.record.clone()]);
        }
    }
    Ok((out, matches.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<Attribute>) -> Node {
        Node {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: format!("{op}_{}", outputs[0]),
            op_type: op.into(),
            attribute: attrs,
            domain: String::new(),
        }
    }

    fn tensor(name: &str, dims: &[i64], data_type: i32) -> Vec<u8> {
        Tensor {
            dims: dims.to_vec(),
            data_type,
            name: name.into(),
        }
        .encode_to_vec()
    }

    /// A ModelProto with an ir_version (field 1), the graph, and a trailing
    /// opset field, so the test sees that other fields survive verbatim.
    fn model(nodes: &[Node], scale_dims: &[i64]) -> Vec<u8> {
        let mut g = Vec::new();
        for n in nodes {
            put_len_delimited(&mut g, GRAPH_NODE, &n.encode_to_vec());
        }
        put_len_delimited(&mut g, GRAPH_INITIALIZER, &tensor("w_q", &[10, 4], INT8));
        put_len_delimited(&mut g, GRAPH_INITIALIZER, &tensor("w_s", scale_dims, FLOAT));
        let mut m = vec![0x08, 0x0a]; // ir_version = 10
        put_len_delimited(&mut m, MODEL_GRAPH, &g);
        put_len_delimited(&mut m, 8, b"opset-bytes");
        m
    }

    fn graph_nodes(model: &[u8]) -> Vec<Node> {
        let top = fields(model).expect("model");
        let g = top.iter().find(|f| f.number == MODEL_GRAPH).expect("graph");
        let graph = &model[g.payload.clone()];
        fields(graph)
            .expect("graph fields")
            .into_iter()
            .filter(|f| f.number == GRAPH_NODE)
            .map(|f| Node::decode(&graph[f.payload]).expect("node"))
            .collect()
    }

    fn pattern() -> Vec<Node> {
        vec![
            node("Cast", &["w_q"], &["w_f"], vec![int_attr("to", 1)]),
            node("Mul", &["w_f", "w_s"], &["w"], vec![]),
            node("Gather", &["w", "ids"], &["emb"], vec![int_attr("axis", 0)]),
            node("Add", &["emb", "pos"], &["out"], vec![]),
        ]
    }

    #[test]
    fn rewrites_per_row_scaled_tables() {
        let (out, n) = gather_before_dequantize(&model(&pattern(), &[10, 1])).expect("rewrite");
        assert_eq!(n, 1);
        let ops: Vec<(String, Vec<String>, Vec<String>)> = graph_nodes(&out)
            .into_iter()
            .map(|n| (n.op_type, n.input, n.output))
            .collect();
        let p = "mlmesh/gather_int8/Gather_emb";
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            ops,
            vec![
                (
                    "Gather".into(),
                    s(&["w_q", "ids"]),
                    s(&[&format!("{p}/rows_q")])
                ),
                (
                    "Cast".into(),
                    s(&[&format!("{p}/rows_q")]),
                    s(&[&format!("{p}/rows_f")])
                ),
                (
                    "Gather".into(),
                    s(&["w_s", "ids"]),
                    s(&[&format!("{p}/rows_scale")])
                ),
                (
                    "Mul".into(),
                    s(&[&format!("{p}/rows_f"), &format!("{p}/rows_scale")]),
                    s(&["emb"])
                ),
                ("Add".into(), s(&["emb", "pos"]), s(&["out"])),
            ]
        );
        // Fields outside the graph are untouched.
        assert_eq!(&out[..2], &[0x08, 0x0a]);
        assert!(out.ends_with(b"opset-bytes"));
    }

    #[test]
    fn scalar_scale_needs_no_second_gather() {
        let (out, n) = gather_before_dequantize(&model(&pattern(), &[])).expect("rewrite");
        assert_eq!(n, 1);
        let ops: Vec<String> = graph_nodes(&out).into_iter().map(|n| n.op_type).collect();
        assert_eq!(ops, ["Gather", "Cast", "Mul", "Add"]);
    }

    #[test]
    fn leaves_other_graphs_alone() {
        // The dequantized table is also read elsewhere: folding it is needed anyway.
        let mut shared = pattern();
        shared.push(node("MatMul", &["x", "w"], &["y"], vec![]));
        let m = model(&shared, &[10, 1]);
        assert_eq!(gather_before_dequantize(&m).expect("ok"), (m.clone(), 0));
        // Column-wise scale: not a per-row table.
        let m = model(&pattern(), &[1, 4]);
        assert_eq!(gather_before_dequantize(&m).expect("ok").1, 0);
        // Garbage is an error, not a panic.
        assert!(gather_before_dequantize(&[0x0a, 0xff]).is_err());
    }
}
