//! The quantizer's [`Backend`] for sentence encoders: each candidate runs
//! through the embedding service's own engine (its tokenizer, ONNX Runtime
//! session options and pooling), so quality and speed are measured on what
//! the service will serve. Outputs are the unit-length sentence vectors.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use mlmesh_embedding::engine::{
    model::{ModelFolder, finish},
    runner::{Runner, RunnerOptions},
};
use serde_json::Value;
use tokenizers::TruncationDirection;

use prost::Message as _;

use super::{Backend, Loaded, MAX_CALIBRATION, QuantizeError};
use crate::onnx::ModelProto;

/// Texts per batch, for both the calibration passes and the speed
/// workload (the embedding service's batch-32 throughput is the target).
pub const BATCH: usize = 32;

/// Calibration texts from a file: a JSON list of strings, or a validation
/// suite (its examples' `text` inputs, then its corpus' texts). At most
/// [`MAX_CALIBRATION`] are kept.
pub fn calibration_texts(bytes: &[u8]) -> Result<Vec<String>, QuantizeError> {
    let bad = |why: &str| QuantizeError::Calibration(why.to_owned());
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(&e.to_string()))?;
    let mut texts: Vec<String> = Vec::new();
    let mut take = |t: &Value| {
        if let Some(s) = t.as_str() {
            texts.push(s.to_owned());
        }
    };
    match &v {
        Value::Array(items) => items.iter().for_each(&mut take),
        Value::Object(o) => {
            for e in o
                .get("examples")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                match e.pointer("/inputs/text") {
                    Some(Value::Array(many)) => many.iter().for_each(&mut take),
                    Some(one) => take(one),
                    None => {}
                }
            }
            for d in o
                .get("corpus")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                take(d.get("text").unwrap_or(&Value::Null));
            }
        }
        _ => return Err(bad("expected a list of texts or a validation suite")),
    }
    texts.truncate(MAX_CALIBRATION);
    if texts.is_empty() {
        return Err(bad(
            "no texts (a JSON list of strings, or a suite whose examples have a `text` input)",
        ));
    }
    Ok(texts)
}

/// A sentence-encoder folder and its calibration texts, tokenized once.
pub struct EmbeddingBackend {
    env: mlmesh_onnx::Environment,
    folder: Mutex<ModelFolder>,
    options: RunnerOptions,
    calibration: Arc<Vec<Vec<i64>>>,
    workload: Arc<Vec<Vec<i64>>>,
    scratch: PathBuf,
    next: AtomicUsize,
}

impl EmbeddingBackend {
    /// `dir` is the fp32 model's folder; candidates are written into
    /// `scratch` while their session is built, then removed.
    pub fn new(
        dir: &Path,
        texts: &[String],
        intra_op_threads: usize,
        scratch: &Path,
    ) -> Result<Self, QuantizeError> {
        let run = |e: String| QuantizeError::Run(e);
        let env = mlmesh_onnx::init_runtime(&mlmesh_onnx::resolve_dylib(None))
            .map_err(|e| run(e.to_string()))?;
        let folder = ModelFolder::load("candidate", dir).map_err(|e| run(e.to_string()))?;
        let calibration = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                folder
                    .tokenize(t, i, Some(TruncationDirection::Right))
                    .map(|t| t.ids)
                    .map_err(|e| QuantizeError::Calibration(format!("text {i}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let workload = calibration.iter().cycle().take(BATCH).cloned().collect();
        std::fs::create_dir_all(scratch).map_err(|e| QuantizeError::Io(e.to_string()))?;
        Ok(Self {
            env,
            folder: Mutex::new(folder),
            options: RunnerOptions {
                intra_op_threads,
                allow_spinning: false,
                shrink_arena: false,
                cpu_arena: true,
            },
            calibration: Arc::new(calibration),
            workload: Arc::new(workload),
            scratch: scratch.to_path_buf(),
            next: AtomicUsize::new(0),
        })
    }
}

impl EmbeddingBackend {
    /// A session of the embedding engine on `model`'s bytes.
    fn runner(&self, model: &[u8]) -> Result<Runner, QuantizeError> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let path = self.scratch.join(format!("candidate-{n}.onnx"));
        std::fs::write(&path, model).map_err(|e| QuantizeError::Io(e.to_string()))?;
        let runner = {
            let mut folder = self
                .folder
                .lock()
                .map_err(|_| QuantizeError::Run("a candidate load panicked".into()))?;
            folder.onnx_path = path.clone();
            Runner::new(&self.env, &folder, &self.options)
        };
        let _ = std::fs::remove_file(&path);
        runner.map_err(|e| QuantizeError::Run(e.to_string()))
    }
}

impl Backend for EmbeddingBackend {
    fn load(&self, model: &[u8]) -> Result<Box<dyn Loaded>, QuantizeError> {
        Ok(Box::new(Encoder {
            runner: self.runner(model)?,
            calibration: Arc::clone(&self.calibration),
            workload: Arc::clone(&self.workload),
        }))
    }

    fn ranges(
        &self,
        model: &ModelProto,
        tensors: &[String],
    ) -> Result<HashMap<String, (f32, f32)>, QuantizeError> {
        let probe = super::with_outputs(model, tensors).encode_to_vec();
        let mut runner = self.runner(&probe)?;
        let mut ranges: HashMap<String, (f32, f32)> = HashMap::new();
        for chunk in self.calibration.chunks(BATCH) {
            let batch: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
            runner
                .run_with(&batch, |outputs| -> Result<(), QuantizeError> {
                    for t in tensors {
                        let v = outputs
                            .get(t.as_str())
                            .ok_or_else(|| QuantizeError::Run(format!("no output {t}")))?
                            .try_extract_array::<f32>()
                            .map_err(|e| QuantizeError::Run(format!("{t}: {e}")))?;
                        let r = ranges.entry(t.clone()).or_insert((f32::MAX, f32::MIN));
                        for &x in v.iter() {
                            if x.is_finite() {
                                r.0 = r.0.min(x);
                                r.1 = r.1.max(x);
                            }
                        }
                    }
                    Ok(())
                })
                .map_err(|e| QuantizeError::Run(e.to_string()))??;
        }
        Ok(ranges)
    }

    fn examples(&self) -> usize {
        self.calibration.len()
    }
}

struct Encoder {
    runner: Runner,
    calibration: Arc<Vec<Vec<i64>>>,
    workload: Arc<Vec<Vec<i64>>>,
}

impl Loaded for Encoder {
    fn outputs(&mut self, limit: usize) -> Result<Vec<Vec<f32>>, QuantizeError> {
        let texts = &self.calibration[..limit.min(self.calibration.len())];
        let mut out = Vec::with_capacity(texts.len());
        for chunk in texts.chunks(BATCH) {
            let batch: Vec<&[i64]> = chunk.iter().map(Vec::as_slice).collect();
            let vs = self
                .runner
                .run(&batch)
                .map_err(|e| QuantizeError::Run(e.to_string()))?;
            out.extend(vs.into_iter().map(|v| finish(v, None, true)));
        }
        Ok(out)
    }

    fn run_batch(&mut self) -> Result<usize, QuantizeError> {
        let batch: Vec<&[i64]> = self.workload.iter().map(Vec::as_slice).collect();
        self.runner
            .run(&batch)
            .map_err(|e| QuantizeError::Run(e.to_string()))?;
        Ok(batch.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_texts_come_from_a_list_or_a_suite() {
        assert_eq!(
            calibration_texts(br#"["a", "b"]"#).expect("list"),
            vec!["a", "b"]
        );
        let suite = br#"{"examples": [{"inputs": {"text": "q"}}, {"inputs": {"text": ["x", "y"]}}],
                         "corpus": [{"id": "1", "text": "doc"}]}"#;
        assert_eq!(
            calibration_texts(suite).expect("suite"),
            vec!["q", "x", "y", "doc"]
        );
        assert!(calibration_texts(b"[]").is_err());
        assert!(calibration_texts(b"3").is_err());
    }
}
