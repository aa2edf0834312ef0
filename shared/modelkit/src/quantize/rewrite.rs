//! The int8 rewrite of an fp32 ONNX graph: each chosen `MatMul` whose
//! right-hand side is a 2-D float initializer `W [K, N]` becomes ONNX
//! Runtime's `com.microsoft.DynamicQuantizeMatMul`: the activations are
//! quantized to uint8 per call (range measured on the call's own tensor),
//! the weights once, here, to int8 per output channel (symmetric: scale
//! `max|W[:, n]| / 127`, zero point 0), and the product accumulated in
//! int32 by ONNX Runtime's integer kernels (VNNI where the CPU has it). An
//! `Add` of a 1-D bias right after is folded into the node.
//!
//! Which nodes to quantize is the closed loop's choice ([`super`]); this
//! file only knows how.

use std::collections::{HashMap, HashSet};

use crate::onnx::{
    ModelProto, NodeProto, OperatorSetIdProto, TensorProto, dtype, floats_of, tensor_8bit,
    tensor_f32,
};

/// The domain and version of ONNX Runtime's contrib operators.
const MS_DOMAIN: &str = "com.microsoft";

/// How activations are quantized.
#[derive(Clone, Debug)]
pub enum Activations<'a> {
    /// Per call, from the call's own tensor (`DynamicQuantizeMatMul`): the
    /// result of one input depends on what it is batched with.
    Dynamic,
    /// With a fixed range per tensor, measured on calibration data
    /// (`QuantizeLinear` + `MatMulIntegerToFloat`): the same input gives
    /// the same output whatever its batch.
    Static(&'a HashMap<String, (f32, f32)>),
}

/// Asymmetric uint8 parameters of the range `[lo, hi]` (widened to hold
/// 0): `(scale, zero_point)`.
pub fn activation_params(lo: f32, hi: f32) -> (f32, u8) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
    let zp = (-lo / scale).round().clamp(0.0, 255.0) as u8;
    (scale, zp)
}

/// A node the rewrite can quantize.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Eligible {
    /// The node's name (unique: unnamed nodes are named first).
    pub node: String,
    pub weight: String,
    pub k: usize,
    pub n: usize,
}

/// Why a rewrite failed.
#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("node {0} is not an eligible MatMul")]
    NotEligible(String),
    #[error("no calibrated range for tensor {0}")]
    NoRange(String),
}

/// Gives every unnamed node a unique name (`node_<index>`), so nodes can be
/// chosen by name; a named node keeps its name.
pub fn name_nodes(model: &mut ModelProto) {
    let Some(g) = model.graph.as_mut() else {
        return;
    };
    let mut seen: HashSet<String> = HashSet::new();
    for (i, n) in g.node.iter_mut().enumerate() {
        if n.name.is_empty() || !seen.insert(n.name.clone()) {
            n.name = format!("{}#{i}", if n.name.is_empty() { "node" } else { &n.name });
            seen.insert(n.name.clone());
        }
    }
}

/// Every `MatMul` whose second input is a 2-D float initializer.
pub fn eligible(model: &ModelProto) -> Vec<Eligible> {
    let Some(g) = model.graph.as_ref() else {
        return Vec::new();
    };
    let inits: HashMap<&str, &TensorProto> =
        g.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
    g.node
        .iter()
        .filter(|n| n.op_type == "MatMul" && n.domain.is_empty() && n.input.len() == 2)
        .filter_map(|n| {
            let w = inits.get(n.input[1].as_str())?;
            if w.data_type != dtype::FLOAT || w.dims.len() != 2 {
                return None;
            }
            let (k, nn) = (
                usize::try_from(w.dims[0]).ok()?,
                usize::try_from(w.dims[1]).ok()?,
            );
            (k > 0 && nn > 0).then(|| Eligible {
                node: n.name.clone(),
                weight: w.name.clone(),
                k,
                n: nn,
            })
        })
        .collect()
}

/// Per-output-channel symmetric int8: `(q [K·N] row-major, scale [N])`.
pub fn quantize_weight(w: &[f32], k: usize, n: usize) -> (Vec<u8>, Vec<f32>) {
    let mut scale = vec![0f32; n];
    for row in w.chunks_exact(n).take(k) {
        for (s, v) in scale.iter_mut().zip(row) {
            *s = s.max(v.abs());
        }
    }
    for s in &mut scale {
        *s = if *s > 0.0 { *s / 127.0 } else { 1.0 };
    }
    let q = w
        .chunks_exact(n)
        .take(k)
        .flat_map(|row| {
            row.iter()
                .zip(&scale)
                .map(|(v, s)| ((v / s).round().clamp(-127.0, 127.0) as i8) as u8)
        })
        .collect();
    (q, scale)
}

/// `model` with the nodes named in `chosen` quantized (see the module
/// header); float weights no longer used are dropped.
pub fn rewrite(
    model: &ModelProto,
    chosen: &HashSet<String>,
    activations: &Activations<'_>,
) -> Result<ModelProto, RewriteError> {
    let mut m = model.clone();
    let eligible: HashMap<String, Eligible> = eligible(model)
        .into_iter()
        .map(|e| (e.node.clone(), e))
        .collect();
    if let Some(bad) = chosen.iter().find(|c| !eligible.contains_key(*c)) {
        return Err(RewriteError::NotEligible(bad.clone()));
    }
    let g = m.graph.as_mut().ok_or(RewriteError::NoGraph)?;
    let graph_outputs: HashSet<String> = g.output.iter().map(|o| o.name.clone()).collect();
    let mut consumers: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, n) in g.node.iter().enumerate() {
        for input in &n.input {
            consumers.entry(input.clone()).or_default().push(i);
        }
    }
    let one_d_floats: HashMap<String, usize> = g
        .initializer
        .iter()
        .filter(|t| t.data_type == dtype::FLOAT && t.dims.len() == 1)
        .filter_map(|t| Some((t.name.clone(), usize::try_from(t.dims[0]).ok()?)))
        .collect();
    let weights: HashMap<String, Vec<f32>> = g
        .initializer
        .iter()
        .filter(|t| chosen.iter().any(|c| eligible[c].weight == t.name))
        .filter_map(|t| Some((t.name.clone(), floats_of(t)?)))
        .collect();

    let mut new_inits: Vec<TensorProto> = Vec::new();
    let mut quantized_weights: HashMap<String, (String, String)> = HashMap::new();
    let mut drop_nodes: HashSet<usize> = HashSet::new();
    let mut replace: HashMap<usize, Vec<NodeProto>> = HashMap::new();
    // Static: one QuantizeLinear per activation tensor, before its first
    // quantized consumer.
    let mut quantized_inputs: HashMap<String, (String, String, String)> = HashMap::new();
    for (i, node) in g.node.iter().enumerate() {
        let Some(e) = chosen.contains(&node.name).then(|| &eligible[&node.name]) else {
            continue;
        };
        let (wq, ws) = match quantized_weights.get(&e.weight) {
            Some(names) => names.clone(),
            None => {
                let w = weights
                    .get(&e.weight)
                    .ok_or_else(|| RewriteError::NotEligible(node.name.clone()))?;
                let (q, scale) = quantize_weight(w, e.k, e.n);
                let (qn, sn) = (format!("{}_int8", e.weight), format!("{}_scale", e.weight));
                new_inits.push(tensor_8bit(&qn, &[e.k as i64, e.n as i64], dtype::INT8, q));
                new_inits.push(tensor_f32(&sn, &[e.n as i64], &scale));
                quantized_weights.insert(e.weight.clone(), (qn.clone(), sn.clone()));
                (qn, sn)
            }
        };
        let out = &node.output[0];
        // Fold `Add(out, bias)` (either order) when it is the only consumer.
        let bias_add = match consumers.get(out).map(Vec::as_slice) {
            Some([j]) if !graph_outputs.contains(out) => {
                let add = &g.node[*j];
                let other = add.input.iter().find(|x| *x != out);
                (add.op_type == "Add" && add.domain.is_empty() && add.input.len() == 2)
                    .then_some(())
                    .and(other)
                    .filter(|b| one_d_floats.get(*b) == Some(&e.n))
                    .map(|b| (*j, b.clone(), add.output[0].clone()))
            }
            _ => None,
        };
        let x = &node.input[0];
        let mut emitted = Vec::new();
        let mut q = match activations {
            Activations::Dynamic => NodeProto {
                name: format!("{}/int8", node.name),
                op_type: "DynamicQuantizeMatMul".into(),
                domain: MS_DOMAIN.into(),
                // A, B, b_scale, b_zero_point (none: symmetric)
                input: vec![x.clone(), wq, ws, String::new()],
                output: vec![out.clone()],
                ..Default::default()
            },
            Activations::Static(ranges) => {
                let (xq, xs, xz) = match quantized_inputs.get(x) {
                    Some(names) => names.clone(),
                    None => {
                        let &(lo, hi) = ranges
                            .get(x)
                            .ok_or_else(|| RewriteError::NoRange(x.clone()))?;
                        let (scale, zp) = activation_params(lo, hi);
                        let names = (
                            format!("{x}/uint8"),
                            format!("{x}/scale"),
                            format!("{x}/zero_point"),
                        );
                        new_inits.push(tensor_f32(&names.1, &[], &[scale]));
                        new_inits.push(tensor_8bit(&names.2, &[], dtype::UINT8, vec![zp]));
                        emitted.push(NodeProto {
                            name: format!("{x}/QuantizeLinear"),
                            op_type: "QuantizeLinear".into(),
                            input: vec![x.clone(), names.1.clone(), names.2.clone()],
                            output: vec![names.0.clone()],
                            ..Default::default()
                        });
                        quantized_inputs.insert(x.clone(), names.clone());
                        names
                    }
                };
                NodeProto {
                    name: format!("{}/int8", node.name),
                    op_type: "MatMulIntegerToFloat".into(),
                    domain: MS_DOMAIN.into(),
                    // A, B, a_scale, b_scale, a_zero_point, b_zero_point
                    input: vec![xq, wq, xs, ws, xz, String::new()],
                    output: vec![out.clone()],
                    ..Default::default()
                }
            }
        };
        if let Some((j, bias, add_out)) = bias_add {
            q.input.push(bias);
            q.output = vec![add_out];
            drop_nodes.insert(j);
        } else {
            // Optional inputs left empty at the end are dropped.
            while q.input.last().is_some_and(String::is_empty) {
                q.input.pop();
            }
        }
        emitted.push(q);
        replace.insert(i, emitted);
    }
    let old = std::mem::take(&mut g.node);
    g.node = old
        .into_iter()
        .enumerate()
        .filter(|(i, _)| !drop_nodes.contains(i))
        .flat_map(|(i, n)| replace.remove(&i).unwrap_or_else(|| vec![n]))
        .collect();
    g.initializer.extend(new_inits);
    let used: HashSet<&str> = g
        .node
        .iter()
        .flat_map(|n| n.input.iter().map(String::as_str))
        .chain(g.output.iter().map(|o| o.name.as_str()))
        .collect();
    let used: HashSet<String> = used.into_iter().map(str::to_owned).collect();
    // Only the replaced weights may go: other initializers may be read by
    // subgraphs, which this does not look into.
    g.initializer
        .retain(|t| used.contains(&t.name) || !quantized_weights.contains_key(&t.name));
    if !chosen.is_empty() && !m.opset_import.iter().any(|o| o.domain == MS_DOMAIN) {
        m.opset_import.push(OperatorSetIdProto {
            domain: MS_DOMAIN.into(),
            version: 1,
        });
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::{GraphBuilder, GraphProto, tensor_type, value_info};

    fn model() -> ModelProto {
        let mut b = GraphBuilder::default();
        let w = b.init(tensor_f32("w", &[2, 3], &[1.0, -2.0, 0.0, 0.5, 4.0, 0.0]));
        let bias = b.init(tensor_f32("b", &[3], &[0.1, 0.2, 0.3]));
        let y = b.op("MatMul", &["x", &w], "dense");
        let z = b.op("Add", &[&bias, &y], "dense");
        let u = b.op("MatMul", &[&z, "x2"], "free");
        ModelProto {
            graph: Some(GraphProto {
                node: b.nodes,
                initializer: b.initializers,
                input: vec![value_info("x", tensor_type(dtype::FLOAT, &[Ok(1), Ok(2)]))],
                output: vec![value_info(&u, tensor_type(dtype::FLOAT, &[Ok(1), Ok(3)]))],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn weights_are_symmetric_per_channel() {
        let (q, s) = quantize_weight(&[1.0, -2.0, 0.0, 0.5, 4.0, 0.0], 2, 3);
        assert_eq!(s, vec![1.0 / 127.0, 4.0 / 127.0, 1.0]);
        let q: Vec<i8> = q.into_iter().map(|b| b as i8).collect();
        assert_eq!(q, vec![127, -64, 0, 64, 127, 0]);
    }

    #[test]
    fn a_matmul_and_its_bias_become_one_integer_node() {
        let m = model();
        let e = eligible(&m);
        assert_eq!(e.len(), 1, "a MatMul of two activations is not eligible");
        let chosen: HashSet<String> = [e[0].node.clone()].into();
        let q = rewrite(&m, &chosen, &Activations::Dynamic).expect("rewrite");
        let g = q.graph.as_ref().expect("graph");
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["DynamicQuantizeMatMul", "MatMul"]);
        assert_eq!(g.node[0].input, ["x", "w_int8", "w_scale", "", "b"]);
        assert_eq!(g.node[1].input[0], g.node[0].output[0]);
        assert!(
            g.initializer.iter().all(|t| t.name != "w"),
            "fp32 weight dropped"
        );
        assert!(q.opset_import.iter().any(|o| o.domain == MS_DOMAIN));
        let none = rewrite(&m, &HashSet::new(), &Activations::Dynamic).expect("rewrite");
        assert_eq!(none, m);
        assert!(rewrite(&m, &["nope".to_owned()].into(), &Activations::Dynamic).is_err());

        let ranges = HashMap::from([("x".to_owned(), (-1.0f32, 3.0f32))]);
        let q = rewrite(&m, &chosen, &Activations::Static(&ranges)).expect("static");
        let g = q.graph.as_ref().expect("graph");
        let ops: Vec<&str> = g.node.iter().map(|n| n.op_type.as_str()).collect();
        assert_eq!(ops, ["QuantizeLinear", "MatMulIntegerToFloat", "MatMul"]);
        assert_eq!(
            g.node[1].input,
            [
                "x/uint8",
                "w_int8",
                "x/scale",
                "w_scale",
                "x/zero_point",
                "",
                "b"
            ]
        );
        let empty = HashMap::new();
        assert!(rewrite(&m, &chosen, &Activations::Static(&empty)).is_err());
    }

    #[test]
    fn activation_ranges_hold_zero() {
        assert_eq!(activation_params(-1.0, 3.0), (4.0 / 255.0, 64));
        assert_eq!(activation_params(2.0, 4.0).1, 0);
        assert_eq!(activation_params(0.0, 0.0), (1.0, 0));
    }
}
