//! One ONNX Runtime session of an embedding model: token ids in batches to
//! pooled (not yet normalised) vectors, and the arena's memory kept or
//! given back.

use std::path::Path;

use ndarray::Axis;
use ort::{
    session::{Session, builder::GraphOptimizationLevel},
    value::TensorRef,
};

use super::model::{ModelFolder, Pooling};
use crate::error::{EmbedError, LoadError};

/// Loads ONNX Runtime once per process (see `mlmesh_onnx`).
pub fn init_runtime(dylib: &Path) -> Result<ort::environment::Environment, LoadError> {
    Ok(mlmesh_onnx::init_runtime(dylib)?)
}

/// One ONNX Runtime session; runs batches of token ids to pooled vectors.
/// How a [`Runner`]'s ONNX Runtime session is set up.
#[derive(Clone, Copy, Debug)]
pub struct RunnerOptions {
    pub intra_op_threads: usize,
    pub allow_spinning: bool,
    /// Give the CPU arena's unused memory back after a run (every run
    /// through [`Runner::run`]; the batcher asks only when its queue is
    /// empty), so a large batch does not keep its buffers for the life of
    /// the process.
    pub shrink_arena: bool,
    /// Use ONNX Runtime's CPU memory arena at all (false: plain allocations
    /// per run).
    pub cpu_arena: bool,
}

pub struct Runner {
    session: Session,
    /// Per-run options that give the arena's unused memory back, when
    /// configured.
    shrink_options: Option<ort::session::RunOptions>,
    takes_token_type_ids: bool,
    /// Index of the output holding token vectors (or pooled vectors).
    output: usize,
    pooling: Pooling,
    model: String,
}

impl Runner {
    pub fn new(
        env: &ort::environment::Environment,
        folder: &ModelFolder,
        options: &RunnerOptions,
    ) -> Result<Self, LoadError> {
        Self::build(env, folder, Some(options), true)
    }

    /// A session with ONNX Runtime's default options (thread count,
    /// spinning) on the unmodified model file: what a user calling ONNX
    /// Runtime directly would run. The benchmark's floor.
    pub fn ort_defaults(
        env: &ort::environment::Environment,
        folder: &ModelFolder,
    ) -> Result<Self, LoadError> {
        Self::build(env, folder, None, false)
    }

    fn build(
        env: &ort::environment::Environment,
        folder: &ModelFolder,
        options: Option<&RunnerOptions>,
        rewrite: bool,
    ) -> Result<Self, LoadError> {
        let fail = |e: String| LoadError::Session {
            model: folder.name.clone(),
            reason: e,
        };
        // The file's bytes are dropped as soon as the rewritten copy exists.
        let (bytes, rewritten) = {
            let raw = std::fs::read(&folder.onnx_path).map_err(|e| LoadError::File {
                model: folder.name.clone(),
                path: folder.onnx_path.display().to_string(),
                reason: e.to_string(),
            })?;
            if rewrite {
                super::rewrite::gather_before_dequantize(&raw).map_err(|e| fail(e.to_string()))?
            } else {
                (raw, 0)
            }
        };
        if rewritten > 0 {
            tracing::info!(model = %folder.name, tables = rewritten, "int8 embedding tables kept int8 (gather before dequantize)");
        }
        let mut builder = Session::builder(env)
            .map_err(|e| fail(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|e| fail(e.to_string()))?;
        if let Some(o) = options {
            builder = builder
                .with_intra_threads(o.intra_op_threads)
                .map_err(|e| fail(e.to_string()))?
                .with_inter_threads(1)
                .map_err(|e| fail(e.to_string()))?
                // Spinning idle threads answer sooner but burn CPU the
                // tokenizer and gRPC share (embedding.allow_spinning).
                .with_intra_op_spinning(o.allow_spinning)
                .map_err(|e| fail(e.to_string()))?;
            if !o.cpu_arena {
                builder = builder
                    .with_execution_providers([ort::ep::CPU::default()
                        .with_arena_allocator(false)
                        .build()])
                    .map_err(|e| fail(e.to_string()))?;
            }
        }
        let session = builder
            .commit_from_memory(&bytes)
            .map_err(|e| fail(e.to_string()))?;
        drop(bytes);
        let inputs: Vec<&str> = session.inputs().iter().map(|i| i.name()).collect();
        for required in ["input_ids", "attention_mask"] {
            if !inputs.contains(&required) {
                return Err(fail(format!(
                    "model has no `{required}` input (inputs: {inputs:?})"
                )));
            }
        }
        let takes_token_type_ids = inputs.contains(&"token_type_ids");
        let output = session
            .outputs()
            .iter()
            .position(|o| o.name() == "last_hidden_state" || o.name() == "token_embeddings")
            .unwrap_or(0);
        let shrink_options = match options {
            Some(o) if o.shrink_arena && o.cpu_arena => {
                let mut r = ort::session::RunOptions::new().map_err(|e| fail(e.to_string()))?;
                r.set("memory.enable_memory_arena_shrinkage", "cpu:0")
                    .map_err(|e| fail(e.to_string()))?;
                Some(r)
            }
            _ => None,
        };
        Ok(Self {
            session,
            shrink_options,
            takes_token_type_ids,
            output,
            pooling: folder.pooling,
            model: folder.name.clone(),
        })
    }

    /// Runs one batch; returns one pooled, not yet normalized, vector per
    /// input. Inputs are right-padded to the longest. Gives the arena's
    /// unused memory back afterwards when `shrink_arena` is set.
    pub fn run(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run_pooled(batch, true)
    }

    /// [`Runner::run`], keeping the arena's memory for the next run: what a
    /// batch worker runs (it gives the memory back with
    /// [`Runner::give_back_arena`] once idle), since giving it back after
    /// every run only to map it again costs a long-input run about a
    /// quarter of its throughput (docs/benchmarks.md, "Embeddings vs
    /// text-embeddings-inference").
    pub fn run_keeping_arena(&mut self, batch: &[&[i64]]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.run_pooled(batch, false)
    }

    /// Gives the arena's unused memory back now (when `shrink_arena` is
    /// set): ONNX Runtime shrinks its arena only at the end of a run, so
    /// this runs one token.
    pub fn give_back_arena(&mut self) -> Result<(), EmbedError> {
        if self.shrink_options.is_none() {
            return Ok(());
        }
        self.run_inner(&[&[0]], true, |_| ())
    }

    fn run_pooled(&mut self, batch: &[&[i64]], release: bool) -> Result<Vec<Vec<f32>>, EmbedError> {
        let b = batch.len();
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        if b == 0 || len == 0 {
            return Ok(vec![Vec::new(); b]);
        }
        let (output, pooling) = (self.output, self.pooling);
        let model = self.model.clone();
        self.run_inner(batch, release, |outputs| {
            let err = |e: ort::Error| EmbedError::Inference(format!("model {model:?}: {e}"));
            let hidden = outputs[output].try_extract_array::<f32>().map_err(err)?;
            pool_batch(&hidden, batch, pooling, &model)
        })?
    }

    /// Runs one batch (right-padded to the longest input) and hands every
    /// output of the session to `read` (the quantizer reads intermediate
    /// tensors this way).
    pub fn run_with<R>(
        &mut self,
        batch: &[&[i64]],
        read: impl FnOnce(&ort::session::SessionOutputs<'_>) -> R,
    ) -> Result<R, EmbedError> {
        self.run_inner(batch, true, read)
    }

    fn run_inner<R>(
        &mut self,
        batch: &[&[i64]],
        release: bool,
        read: impl FnOnce(&ort::session::SessionOutputs<'_>) -> R,
    ) -> Result<R, EmbedError> {
        let b = batch.len();
        let len = batch.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut ids = vec![0i64; b * len];
        let mut mask = vec![0i64; b * len];
        for (row, seq) in batch.iter().enumerate() {
            ids[row * len..row * len + seq.len()].copy_from_slice(seq);
            mask[row * len..row * len + seq.len()].fill(1);
        }
        let types = vec![
            0i64;
            if self.takes_token_type_ids {
                b * len
            } else {
                0
            }
        ];
        let err = |e: ort::Error| EmbedError::Inference(format!("model {:?}: {e}", self.model));
        let shape = [b, len];
        let ids_t = TensorRef::from_array_view((shape, ids.as_slice())).map_err(err)?;
        let mask_t = TensorRef::from_array_view((shape, mask.as_slice())).map_err(err)?;
        let inputs = if self.takes_token_type_ids {
            let types_t = TensorRef::from_array_view((shape, types.as_slice())).map_err(err)?;
            ort::inputs![
                "input_ids" => ids_t,
                "attention_mask" => mask_t,
                "token_type_ids" => types_t,
            ]
        } else {
            ort::inputs![
                "input_ids" => ids_t,
                "attention_mask" => mask_t,
            ]
        };
        let outputs = match &self.shrink_options {
            Some(o) if release => self.session.run_with_options(inputs, o),
            _ => self.session.run(inputs),
        }
        .map_err(err)?;
        Ok(read(&outputs))
    }
}

/// One pooled vector per input of `batch` from the model's output: token
/// vectors `[batch, sequence, hidden]` pooled over each input's tokens, or
/// already pooled `[batch, hidden]`.
fn pool_batch(
    hidden: &ndarray::ArrayViewD<'_, f32>,
    batch: &[&[i64]],
    pooling: Pooling,
    model: &str,
) -> Result<Vec<Vec<f32>>, EmbedError> {
    match hidden.ndim() {
        // Already one vector per input (a pooled export).
        2 => Ok(hidden
            .outer_iter()
            .map(|r| r.iter().copied().collect())
            .collect()),
        3 => Ok(batch
            .iter()
            .enumerate()
            .map(|(row, seq)| {
                let tokens = hidden.index_axis(Axis(0), row);
                let n = seq.len();
                pool(pooling, tokens.outer_iter().take(n))
            })
            .collect()),
        d => Err(EmbedError::Inference(format!(
            "model {model:?}: output has {d} dimensions, expected 2 or 3"
        ))),
    }
}

fn pool<'a>(
    pooling: Pooling,
    mut tokens: impl Iterator<Item = ndarray::ArrayViewD<'a, f32>>,
) -> Vec<f32> {
    let Some(first) = tokens.next() else {
        return Vec::new();
    };
    let mut acc: Vec<f32> = first.iter().copied().collect();
    match pooling {
        Pooling::Cls => {}
        Pooling::Mean => {
            let mut n = 1.0f32;
            for t in tokens {
                for (a, v) in acc.iter_mut().zip(t.iter()) {
                    *a += v;
                }
                n += 1.0;
            }
            acc.iter_mut().for_each(|a| *a /= n);
        }
        Pooling::Max => {
            for t in tokens {
                for (a, v) in acc.iter_mut().zip(t.iter()) {
                    *a = a.max(*v);
                }
            }
        }
    }
    acc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_modes() {
        let a = ndarray::arr2(&[[1.0f32, 5.0], [3.0, 1.0]]).into_dyn();
        let rows = || a.outer_iter();
        assert_eq!(pool(Pooling::Mean, rows()), vec![2.0, 3.0]);
        assert_eq!(pool(Pooling::Cls, rows()), vec![1.0, 5.0]);
        assert_eq!(pool(Pooling::Max, rows()), vec![3.0, 5.0]);
    }
}
