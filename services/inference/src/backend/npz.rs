//! NumPy `.npz` models: linear and logistic regression and multi-layer
//! perceptrons as weight and bias arrays, computed with ndarray.
//!
//! The format (also in docs/inference.md, "NumPy models"):
//!
//! - `W0, b0, W1, b1, …`: layer `i` computes `h · W_i + b_i`; `W_i` is
//!   `(inputs, outputs)` float32/64 (scikit-learn's `coefs_[i]`, or
//!   `coef_.T` for linear models), `b_i` is `(outputs,)`.
//! - `classes` (optional, int64): the class label of each output column.
//! - `meta`: a JSON string, e.g. `np.savez(path, meta=json.dumps({...}), …)`:
//!   - `format`: `"mlmesh-npz/1"`;
//!   - `input`: the input tensor's name (default `input`);
//!   - `activation`: between layers: `relu` (default), `tanh`,
//!     `logistic`, `identity`;
//!   - `output_transform`: after the last layer: `identity` (regression),
//!     `softmax` (classification; one column means binary logistic
//!     regression, answered as two probabilities), `sigmoid`;
//!   - `outputs`: names of the outputs served: `values` (the transformed
//!     last layer), `probabilities` (same, for classifiers), `label` (the
//!     class of the highest probability; needs `classes` or uses the
//!     column index).
//!
//! Inputs are FP32 `[-1, n_features]`; outputs FP32 `[-1, k]`, labels
//! INT64 `[-1]`.

use std::{collections::HashMap, path::Path};

use ndarray::{Array1, Array2, ArrayView2, Axis};
use serde::Deserialize;

use super::{
    Loaded, Runner, Signature, TensorSpec,
    npy::{Array, read_npz},
};
use crate::{
    error::LoadError,
    tensor::{Data, DataType, Tensor},
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Meta {
    format: String,
    #[serde(default = "default_input")]
    input: String,
    #[serde(default)]
    activation: Activation,
    #[serde(default)]
    output_transform: Transform,
    #[serde(default)]
    outputs: HashMap<String, String>,
}

fn default_input() -> String {
    "input".into()
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum Activation {
    #[default]
    Relu,
    Tanh,
    Logistic,
    Identity,
}

#[derive(Deserialize, Default, Clone, Copy, Debug)]
#[serde(rename_all = "lowercase")]
enum Transform {
    #[default]
    Identity,
    Softmax,
    Sigmoid,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum OutKind {
    Values,
    Label,
}

/// The computed model: layers and what to return.
#[derive(Clone)]
struct Mlp {
    layers: Vec<(Array2<f32>, Array1<f32>)>,
    activation: Activation,
    transform: Transform,
    classes: Vec<i64>,
    /// Served outputs, in order.
    outputs: Vec<(String, OutKind)>,
    n_in: usize,
}

pub fn load(file: &Path, instances: usize) -> Result<Loaded, LoadError> {
    let bad = |reason: String| LoadError::file(file, reason);
    let mut arrays = read_npz(file)?;
    let meta = match arrays.remove("meta") {
        Some(Array::Text(t)) => t,
        _ => {
            return Err(bad(
                "no `meta` JSON string member (see the .npz model format)".into(),
            ));
        }
    };
    let meta: Meta = serde_json::from_str(&meta).map_err(|e| bad(format!("meta: {e}")))?;
    if meta.format != "mlmesh-npz/1" {
        return Err(bad(format!(
            "meta.format is {:?}; this service reads \"mlmesh-npz/1\"",
            meta.format
        )));
    }
    let mut layers = Vec::new();
    for i in 0.. {
        let (Some(w), Some(b)) = (
            arrays.remove(&format!("W{i}")),
            arrays.remove(&format!("b{i}")),
        ) else {
            break;
        };
        let (
            Array::F32 {
                shape: ws,
                data: wd,
            },
            Array::F32 {
                shape: bs,
                data: bd,
            },
        ) = (w, b)
        else {
            return Err(bad(format!("W{i} and b{i} must be float arrays")));
        };
        if ws.len() != 2 || bs.len() != 1 || bs[0] != ws[1] {
            return Err(bad(format!(
                "layer {i}: W{i} is {ws:?} and b{i} is {bs:?}; need (inputs, outputs) and (outputs,)"
            )));
        }
        if let Some((prev, _)) = layers.last() {
            let prev: &Array2<f32> = prev;
            if prev.ncols() != ws[0] {
                return Err(bad(format!(
                    "layer {i} takes {} inputs but layer {} gives {}",
                    ws[0],
                    i - 1,
                    prev.ncols()
                )));
            }
        }
        let w = Array2::from_shape_vec((ws[0], ws[1]), wd).map_err(|e| bad(e.to_string()))?;
        layers.push((w, Array1::from_vec(bd)));
    }
    let Some((first, _)) = layers.first() else {
        return Err(bad("no layers: expected arrays W0 and b0".into()));
    };
    let n_in = first.nrows();
    let n_out = layers.last().map_or(0, |(w, _)| w.ncols());
    let classes = match arrays.remove("classes") {
        Some(Array::I64 { data, .. }) => data,
        Some(_) => return Err(bad("`classes` must be an integer array".into())),
        None => Vec::new(),
    };
    let width = if matches!(meta.output_transform, Transform::Softmax) && n_out == 1 {
        2
    } else {
        n_out
    };
    if !classes.is_empty() && classes.len() != width {
        return Err(bad(format!(
            "{} classes for {width} output columns",
            classes.len()
        )));
    }
    let mut outputs: Vec<(String, OutKind)> = Vec::new();
    let mut keys: Vec<_> = meta.outputs.iter().collect();
    keys.sort();
    for (kind, name) in keys {
        let k = match kind.as_str() {
            "values" | "probabilities" => OutKind::Values,
            "label" => OutKind::Label,
            other => {
                return Err(bad(format!(
                    "meta.outputs: unknown output kind {other:?} (values, probabilities, label)"
                )));
            }
        };
        outputs.push((name.clone(), k));
    }
    if outputs.is_empty() {
        outputs.push(("output".into(), OutKind::Values));
    }
    let mlp = Mlp {
        layers,
        activation: meta.activation,
        transform: meta.output_transform,
        classes,
        outputs,
        n_in,
    };
    let signature = Signature {
        inputs: vec![TensorSpec {
            name: meta.input,
            dtype: DataType::F32,
            shape: vec![-1, n_in as i64],
        }],
        outputs: mlp
            .outputs
            .iter()
            .map(|(name, k)| match k {
                OutKind::Values => TensorSpec {
                    name: name.clone(),
                    dtype: DataType::F32,
                    shape: vec![-1, width as i64],
                },
                OutKind::Label => TensorSpec {
                    name: name.clone(),
                    dtype: DataType::I64,
                    shape: vec![-1],
                },
            })
            .collect(),
        ..Signature::default()
    };
    let weights: usize = mlp
        .layers
        .iter()
        .map(|(w, b)| (w.len() + b.len()) * 4)
        .sum();
    let instances = instances.max(1);
    let runners = (0..instances)
        .map(|_| Box::new(mlp.clone()) as Box<dyn Runner>)
        .collect();
    Ok(Loaded {
        signature,
        runners,
        memory_bytes: Some((weights * instances) as u64),
    })
}

fn activate(a: &mut Array2<f32>, f: Activation) {
    match f {
        Activation::Relu => a.mapv_inplace(|x| x.max(0.0)),
        Activation::Tanh => a.mapv_inplace(f32::tanh),
        Activation::Logistic => a.mapv_inplace(|x| 1.0 / (1.0 + (-x).exp())),
        Activation::Identity => {}
    }
}

impl Mlp {
    fn forward(&self, x: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut h = x.to_owned();
        let last = self.layers.len() - 1;
        for (i, (w, b)) in self.layers.iter().enumerate() {
            h = h.dot(w) + b;
            if i < last {
                activate(&mut h, self.activation);
            }
        }
        match self.transform {
            Transform::Identity => h,
            Transform::Sigmoid => {
                activate(&mut h, Activation::Logistic);
                h
            }
            Transform::Softmax if h.ncols() == 1 => {
                // Binary logistic regression: [1 - p, p].
                let p = h.column(0).mapv(|z| 1.0 / (1.0 + (-z).exp()));
                let mut out = Array2::zeros((h.nrows(), 2));
                out.column_mut(0).assign(&p.mapv(|p| 1.0 - p));
                out.column_mut(1).assign(&p);
                out
            }
            Transform::Softmax => {
                for mut row in h.axis_iter_mut(Axis(0)) {
                    let max = row.fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                    row.mapv_inplace(|x| (x - max).exp());
                    let sum = row.sum();
                    row.mapv_inplace(|x| x / sum);
                }
                h
            }
        }
    }
}

impl Runner for Mlp {
    fn run(&mut self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let x = inputs.into_iter().next().ok_or("no input")?;
        let Data::F32(data) = x.data else {
            return Err(format!("input is {}, expected FP32", x.data.dtype().name()));
        };
        let rows = x.shape.first().copied().unwrap_or(0).max(0) as usize;
        let x = ArrayView2::from_shape((rows, self.n_in), &data).map_err(|e| e.to_string())?;
        let y = self.forward(x);
        let (n, k) = y.dim();
        let mut out = Vec::with_capacity(self.outputs.len());
        for (name, kind) in &self.outputs {
            out.push(match kind {
                OutKind::Values => Tensor {
                    name: name.clone(),
                    shape: vec![n as i64, k as i64],
                    data: Data::F32(y.iter().copied().collect()),
                },
                OutKind::Label => Tensor {
                    name: name.clone(),
                    shape: vec![n as i64],
                    data: Data::I64(
                        y.axis_iter(Axis(0))
                            .map(|row| {
                                // First maximum, as numpy's argmax.
                                let mut best = 0;
                                for (j, &v) in row.iter().enumerate() {
                                    if v > row[best] {
                                        best = j;
                                    }
                                }
                                self.classes.get(best).copied().unwrap_or(best as i64)
                            })
                            .collect(),
                    ),
                },
            });
        }
        Ok(out)
    }
}
