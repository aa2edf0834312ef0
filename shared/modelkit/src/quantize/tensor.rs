//! The quantizer's [`Backend`] for tensor models (scikit-learn through
//! ONNX, anything the inference service serves): the calibration examples
//! are a validation suite's (FP32 or INT64 inputs), each run alone through
//! an ONNX Runtime session with the inference service's defaults; the
//! output compared is one float tensor (a classifier's probabilities, so
//! the gate can be agreement of the arg-max). The speed workload stacks up
//! to [`BATCH`] examples into one call when their first axis is 1.

use std::collections::HashMap;

use ort::{
    session::{Session, builder::GraphOptimizationLevel},
    value::{DynValue, Tensor},
};
use prost::Message as _;
use serde_json::Value;

use super::{Backend, Loaded, MAX_CALIBRATION, QuantizeError};
use crate::onnx::ModelProto;

/// Examples per timed call.
pub const BATCH: usize = 32;

#[derive(Clone, Debug)]
enum Data {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

#[derive(Clone, Debug)]
struct Input {
    name: String,
    shape: Vec<i64>,
    data: Data,
}

/// A suite's examples as tensors, and the output to compare.
pub struct TensorBackend {
    env: mlmesh_onnx::Environment,
    examples: Vec<Vec<Input>>,
    output: String,
    threads: usize,
}

fn bad(why: String) -> QuantizeError {
    QuantizeError::Calibration(why)
}

impl TensorBackend {
    /// Examples from a validation suite's JSON (at most
    /// [`MAX_CALIBRATION`]); `output` names the float output compared.
    pub fn new(suite: &[u8], output: &str, threads: usize) -> Result<Self, QuantizeError> {
        let env = mlmesh_onnx::init_runtime(&mlmesh_onnx::resolve_dylib(None))
            .map_err(|e| QuantizeError::Run(e.to_string()))?;
        let v: Value = serde_json::from_slice(suite).map_err(|e| bad(e.to_string()))?;
        let examples = v
            .get("examples")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("a validation suite with `examples` expected".into()))?;
        let mut out = Vec::new();
        for (i, e) in examples.iter().take(MAX_CALIBRATION).enumerate() {
            let inputs = e
                .get("inputs")
                .and_then(Value::as_object)
                .ok_or_else(|| bad(format!("examples[{i}].inputs")))?;
            let mut tensors = Vec::new();
            for (name, t) in inputs {
                let at = format!("examples[{i}].inputs.{name}");
                let shape: Vec<i64> = t
                    .get("shape")
                    .and_then(Value::as_array)
                    .and_then(|a| a.iter().map(Value::as_i64).collect())
                    .ok_or_else(|| bad(format!("{at}.shape")))?;
                let n = crate::onnx::element_count(&shape)
                    .filter(|&n| n <= 1 << 24)
                    .ok_or_else(|| bad(format!("{at}.shape: {shape:?} is not a bounded shape")))?;
                let flat = mlmesh_flatten(t.get("data").unwrap_or(&Value::Null));
                if flat.len() != n {
                    return Err(bad(format!(
                        "{at}.data: {} values for shape {shape:?}",
                        flat.len()
                    )));
                }
                let data = match t.get("datatype").and_then(Value::as_str) {
                    Some("FP32") => Data::F32(
                        flat.iter()
                            .map(|x| x.as_f64().map(|f| f as f32))
                            .collect::<Option<_>>()
                            .ok_or_else(|| bad(format!("{at}.data: numbers expected")))?,
                    ),
                    Some("INT64") => Data::I64(
                        flat.iter()
                            .map(Value::as_i64)
                            .collect::<Option<_>>()
                            .ok_or_else(|| bad(format!("{at}.data: integers expected")))?,
                    ),
                    other => {
                        return Err(bad(format!(
                            "{at}.datatype: {other:?} (FP32 or INT64 supported)"
                        )));
                    }
                };
                tensors.push(Input {
                    name: name.clone(),
                    shape,
                    data,
                });
            }
            out.push(tensors);
        }
        if out.is_empty() {
            return Err(bad("the suite has no examples".into()));
        }
        Ok(Self {
            env,
            examples: out,
            output: output.to_owned(),
            threads,
        })
    }

    fn session(&self, model: &[u8]) -> Result<Session, QuantizeError> {
        let run = |e: String| QuantizeError::Run(e);
        Session::builder(&self.env)
            .map_err(|e| run(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| run(e.to_string()))?
            .with_intra_threads(self.threads)
            .map_err(|e| run(e.to_string()))?
            .commit_from_memory(model)
            .map_err(|e| run(e.to_string()))
    }

    /// The speed workload: up to [`BATCH`] examples stacked on axis 0
    /// when every input's first axis is 1, else the first example.
    fn stacked(&self) -> Vec<Input> {
        let take: Vec<&Vec<Input>> = self.examples.iter().cycle().take(BATCH).collect();
        let stackable = take[0].iter().all(|i| i.shape.first() == Some(&1));
        if !stackable {
            return take[0].clone();
        }
        take[0]
            .iter()
            .enumerate()
            .map(|(k, first)| {
                let mut shape = first.shape.clone();
                shape[0] = take.len() as i64;
                let data = match &first.data {
                    Data::F32(_) => Data::F32(
                        take.iter()
                            .flat_map(|e| match &e[k].data {
                                Data::F32(v) => v.clone(),
                                Data::I64(_) => Vec::new(),
                            })
                            .collect(),
                    ),
                    Data::I64(_) => Data::I64(
                        take.iter()
                            .flat_map(|e| match &e[k].data {
                                Data::I64(v) => v.clone(),
                                Data::F32(_) => Vec::new(),
                            })
                            .collect(),
                    ),
                };
                Input {
                    name: first.name.clone(),
                    shape,
                    data,
                }
            })
            .collect()
    }
}

/// A suite's nested `data` as a flat list.
fn mlmesh_flatten(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a.iter().flat_map(mlmesh_flatten).collect(),
        other => vec![other.clone()],
    }
}

fn values(inputs: &[Input]) -> Result<Vec<(String, DynValue)>, QuantizeError> {
    inputs
        .iter()
        .map(|i| {
            let shape: Vec<usize> = i.shape.iter().map(|&d| d.max(0) as usize).collect();
            let v: DynValue = match &i.data {
                Data::F32(d) => Tensor::from_array((shape, d.clone()))
                    .map_err(|e| QuantizeError::Run(e.to_string()))?
                    .into_dyn(),
                Data::I64(d) => Tensor::from_array((shape, d.clone()))
                    .map_err(|e| QuantizeError::Run(e.to_string()))?
                    .into_dyn(),
            };
            Ok((i.name.clone(), v))
        })
        .collect()
}

/// Runs `inputs`, handing every output to `read`.
fn run_with<R>(
    s: &mut Session,
    inputs: &[Input],
    read: impl FnOnce(&ort::session::SessionOutputs<'_>) -> Result<R, QuantizeError>,
) -> Result<R, QuantizeError> {
    let outputs = s
        .run(values(inputs)?)
        .map_err(|e| QuantizeError::Run(e.to_string()))?;
    read(&outputs)
}

fn floats(
    outputs: &ort::session::SessionOutputs<'_>,
    name: &str,
) -> Result<Vec<f32>, QuantizeError> {
    let v = outputs
        .get(name)
        .ok_or_else(|| QuantizeError::Run(format!("the model has no output {name:?}")))?
        .try_extract_array::<f32>()
        .map_err(|e| QuantizeError::Run(format!("output {name:?}: {e}")))?;
    Ok(v.iter().copied().collect())
}

impl Backend for TensorBackend {
    fn load(&self, model: &[u8]) -> Result<Box<dyn Loaded>, QuantizeError> {
        Ok(Box::new(Runner {
            session: self.session(model)?,
            examples: self.examples.clone(),
            workload: self.stacked(),
            output: self.output.clone(),
        }))
    }

    fn ranges(
        &self,
        model: &ModelProto,
        tensors: &[String],
    ) -> Result<HashMap<String, (f32, f32)>, QuantizeError> {
        let mut s = self.session(&super::with_outputs(model, tensors).encode_to_vec())?;
        let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
        for e in &self.examples {
            run_with(&mut s, e, |outputs| {
                for t in tensors {
                    let r = ranges.entry(t.clone()).or_insert((f32::MAX, f32::MIN));
                    for x in floats(outputs, t)? {
                        if x.is_finite() {
                            r.0 = r.0.min(x);
                            r.1 = r.1.max(x);
                        }
                    }
                }
                Ok(())
            })?;
        }
        Ok(ranges)
    }

    fn examples(&self) -> usize {
        self.examples.len()
    }
}

struct Runner {
    session: Session,
    examples: Vec<Vec<Input>>,
    workload: Vec<Input>,
    output: String,
}

impl Loaded for Runner {
    fn outputs(&mut self, limit: usize) -> Result<Vec<Vec<f32>>, QuantizeError> {
        let n = limit.min(self.examples.len());
        let mut out = Vec::with_capacity(n);
        for e in &self.examples[..n] {
            let name = self.output.clone();
            out.push(run_with(&mut self.session, e, |o| floats(o, &name))?);
        }
        Ok(out)
    }

    fn run_batch(&mut self) -> Result<usize, QuantizeError> {
        let rows = self
            .workload
            .first()
            .and_then(|i| i.shape.first())
            .copied()
            .unwrap_or(1);
        run_with(&mut self.session, &self.workload, |_| Ok(()))?;
        Ok(rows.max(1) as usize)
    }
}
