//! `mlmesh model quantize`: fp32 ONNX → int8 in a closed loop.
//!
//! 1. Quantize every eligible node ([`rewrite`]) and measure quality
//!    against the fp32 model on the calibration set ([`Quality`]: cosine
//!    for vectors, agreement of the arg-max for classifiers).
//! 2. If the gate fails, measure each node's error alone — the model with
//!    only that node quantized, its output's signal-to-quantization-noise
//!    ratio in dB over the calibration set — and exclude the worst nodes,
//!    the smallest number found by bisection that makes the gate hold.
//! 3. Measure the speed-up on this CPU: the fp32 and the chosen int8 model
//!    loaded side by side, timed in alternating rounds of batches; the
//!    verdict is the median of the per-round ratios. A model that is not
//!    faster by `min_speedup` is reported as such and not recommended.
//!
//! What runs the models is a [`Backend`] (the embedding engine's runner for
//! sentence encoders, see [`embedding`]; an ONNX Runtime session on a
//! validation suite's tensors for other models, see [`tensor`]). Memory: the fp32 model's outputs
//! for the calibration set (at most [`MAX_CALIBRATION`] examples) and, per
//! evaluation, running sums — never the activations.

pub mod embedding;
pub mod rewrite;
pub mod tensor;

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::Instant,
};

use prost::Message as _;

use self::rewrite::Eligible;
use crate::{files, onnx::ModelProto};

/// The most calibration examples used (the rest of a larger file is
/// ignored, and the report says how many were used).
pub const MAX_CALIBRATION: usize = 4096;

/// Why quantization failed.
#[derive(Debug, thiserror::Error)]
pub enum QuantizeError {
    #[error(transparent)]
    Format(#[from] crate::onnx::FormatError),
    #[error(transparent)]
    Rewrite(#[from] rewrite::RewriteError),
    #[error("calibration: {0}")]
    Calibration(String),
    #[error("running the model: {0}")]
    Run(String),
    #[error("the model has no MatMul with a constant 2-D float weight: nothing to quantize")]
    NothingEligible,
    #[error("{0}")]
    Io(String),
}

/// What decides that an int8 model is good enough.
#[derive(Clone, Copy, Debug, serde::Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// Every calibration example's output at cosine ≥ `min` to fp32's.
    Cosine { min: f64 },
    /// At least `min` of the examples keep fp32's arg-max.
    Agreement { min: f64 },
}

impl Gate {
    pub fn passes(&self, q: &Quality) -> bool {
        match *self {
            Gate::Cosine { min } => q.min_cosine >= min,
            Gate::Agreement { min } => q.agreement >= min,
        }
    }
}

/// An int8 candidate's outputs against fp32's.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Quality {
    pub min_cosine: f64,
    pub mean_cosine: f64,
    /// The example with the lowest cosine.
    pub worst_example: usize,
    /// Signal-to-quantization-noise ratio of the outputs, dB.
    pub sqnr_db: f64,
    /// Fraction of examples whose arg-max output is fp32's.
    pub agreement: f64,
}

impl Quality {
    /// Compares outputs example by example (running sums only).
    pub fn measure(reference: &[Vec<f32>], got: &[Vec<f32>]) -> Self {
        let (mut min, mut sum, mut worst) = (f64::INFINITY, 0.0, 0);
        let (mut signal, mut noise, mut agree) = (0.0f64, 0.0f64, 0usize);
        for (i, (r, g)) in reference.iter().zip(got).enumerate() {
            let (mut dot, mut rr, mut gg) = (0.0f64, 0.0f64, 0.0f64);
            for (a, b) in r.iter().zip(g) {
                let (a, b) = (f64::from(*a), f64::from(*b));
                dot += a * b;
                rr += a * a;
                gg += b * b;
                noise += (a - b) * (a - b);
            }
            signal += rr;
            let c = if rr > 0.0 && gg > 0.0 {
                dot / (rr.sqrt() * gg.sqrt())
            } else if rr == gg {
                1.0
            } else {
                0.0
            };
            sum += c;
            if c < min {
                (min, worst) = (c, i);
            }
            agree += usize::from(argmax(r) == argmax(g));
        }
        let n = reference.len().min(got.len()).max(1) as f64;
        Self {
            min_cosine: if min.is_finite() { min } else { 1.0 },
            mean_cosine: sum / n,
            worst_example: worst,
            sqnr_db: if noise > 0.0 {
                10.0 * (signal / noise).log10()
            } else {
                f64::INFINITY
            },
            agreement: agree as f64 / n,
        }
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
            if x > best.1 { (i, x) } else { best }
        })
        .0
}

/// What runs a model over the calibration set.
pub trait Backend {
    /// Loads an encoded model.
    fn load(&self, model: &[u8]) -> Result<Box<dyn Loaded>, QuantizeError>;
    /// The range `(min, max)` of each of `tensors` (intermediate tensors
    /// of `model`) over the whole calibration set, kept as running
    /// minima and maxima batch by batch.
    fn ranges(
        &self,
        model: &ModelProto,
        tensors: &[String],
    ) -> Result<HashMap<String, (f32, f32)>, QuantizeError>;
    /// How many calibration examples there are.
    fn examples(&self) -> usize;
}

/// A loaded model.
pub trait Loaded {
    /// One output vector per calibration example, in order, for the first
    /// `limit` examples.
    fn outputs(&mut self, limit: usize) -> Result<Vec<Vec<f32>>, QuantizeError>;
    /// Runs one batch of the speed workload; how many items it held.
    fn run_batch(&mut self) -> Result<usize, QuantizeError>;
}

/// How activations are quantized (see [`rewrite::Activations`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Static,
    Dynamic,
}

/// How the loop runs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Options {
    pub gate: Gate,
    pub activations: Mode,
    /// The int8 model is recommended only at least this much faster.
    pub min_speedup: f64,
    /// Alternating timed rounds (each model this many times).
    pub speed_rounds: usize,
    /// Batches per timed round.
    pub batches_per_round: usize,
    /// Calibration examples used to rank the nodes (the gate is always
    /// judged on all of them): the ranking needs less data than the
    /// verdict, and it costs one pass per node.
    pub scan_examples: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            gate: Gate::Cosine { min: 0.99 },
            activations: Mode::Static,
            min_speedup: 1.05,
            speed_rounds: 7,
            batches_per_round: 4,
            scan_examples: 64,
        }
    }
}

/// One node's error when it alone is quantized.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeError {
    pub node: String,
    pub sqnr_db: f64,
    pub min_cosine: f64,
}

/// One candidate the loop measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Step {
    pub excluded: usize,
    pub quality: Quality,
    pub passes: bool,
}

/// The speed of fp32 and int8 measured side by side.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Speed {
    pub fp32_items_per_s: f64,
    pub int8_items_per_s: f64,
    /// Median of the per-round ratios int8 / fp32.
    pub speedup: f64,
    pub ratios: Vec<f64>,
}

/// The loop's outcome and its evidence.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Outcome {
    pub options: Options,
    pub calibration_examples: usize,
    pub eligible: Vec<Eligible>,
    pub quality_all: Quality,
    /// Worst first; empty when quantizing everything passed.
    pub node_errors: Vec<NodeError>,
    pub steps: Vec<Step>,
    pub excluded: Vec<String>,
    pub quantized: usize,
    pub quality: Quality,
    pub passes: bool,
    pub speed: Speed,
    pub recommended: bool,
    /// Why not, when not.
    pub verdict: String,
    #[serde(skip)]
    pub model: Vec<u8>,
}

/// Runs the closed loop on `model`.
pub fn quantize(
    mut model: ModelProto,
    backend: &dyn Backend,
    options: &Options,
    mut progress: impl FnMut(&str),
) -> Result<Outcome, QuantizeError> {
    rewrite::name_nodes(&mut model);
    let eligible = rewrite::eligible(&model);
    if eligible.is_empty() {
        return Err(QuantizeError::NothingEligible);
    }
    let base = model.encode_to_vec();
    let ranges = match options.activations {
        Mode::Static => {
            progress("calibrating activation ranges");
            let inputs: Vec<String> = {
                let g = model.graph.as_ref().ok_or(rewrite::RewriteError::NoGraph)?;
                let wanted: HashSet<&str> = eligible.iter().map(|e| e.node.as_str()).collect();
                let mut v: Vec<String> = g
                    .node
                    .iter()
                    .filter(|n| wanted.contains(n.name.as_str()))
                    .map(|n| n.input[0].clone())
                    .collect();
                v.sort();
                v.dedup();
                v
            };
            backend.ranges(&model, &inputs)?
        }
        Mode::Dynamic => HashMap::new(),
    };
    let activations = match options.activations {
        Mode::Static => rewrite::Activations::Static(&ranges),
        Mode::Dynamic => rewrite::Activations::Dynamic,
    };
    let reference = backend.load(&base)?.outputs(usize::MAX)?;
    let names: Vec<String> = eligible.iter().map(|e| e.node.clone()).collect();
    let eval_on =
        |chosen: &HashSet<String>, limit: usize| -> Result<(Vec<u8>, Quality), QuantizeError> {
            let bytes = rewrite::rewrite(&model, chosen, &activations)?.encode_to_vec();
            let got = backend.load(&bytes)?.outputs(limit)?;
            Ok((bytes, Quality::measure(&reference, &got)))
        };
    let eval = |chosen: &HashSet<String>| eval_on(chosen, usize::MAX);
    let all: HashSet<String> = names.iter().cloned().collect();
    let (mut bytes, quality_all) = eval(&all)?;
    progress(&format!(
        "all {} nodes int8: min cosine {:.6}, agreement {:.4}, SQNR {:.1} dB",
        names.len(),
        quality_all.min_cosine,
        quality_all.agreement,
        quality_all.sqnr_db
    ));
    let mut steps = vec![Step {
        excluded: 0,
        quality: quality_all.clone(),
        passes: options.gate.passes(&quality_all),
    }];
    let mut node_errors = Vec::new();
    let mut excluded: Vec<String> = Vec::new();
    let mut quality = quality_all.clone();
    if !steps[0].passes {
        for (i, n) in names.iter().enumerate() {
            let (_, q) = eval_on(&HashSet::from([n.clone()]), options.scan_examples.max(1))?;
            progress(&format!(
                "node {}/{} {n}: SQNR {:.1} dB",
                i + 1,
                names.len(),
                q.sqnr_db
            ));
            node_errors.push(NodeError {
                node: n.clone(),
                sqnr_db: q.sqnr_db,
                min_cosine: q.min_cosine,
            });
        }
        node_errors.sort_by(|a, b| a.sqnr_db.total_cmp(&b.sqnr_db));
        // The smallest k (worst k excluded) that passes: k = 0 failed, and
        // k = all is the fp32 model, which passes by definition.
        let keep = |k: usize| -> HashSet<String> {
            node_errors[k..].iter().map(|e| e.node.clone()).collect()
        };
        let (mut lo, mut hi) = (0usize, node_errors.len());
        let mut best: Option<(usize, Vec<u8>, Quality)> = None;
        while hi - lo > 1 {
            let mid = (lo + hi) / 2;
            let (b, q) = eval(&keep(mid))?;
            let passes = options.gate.passes(&q);
            progress(&format!(
                "worst {mid} excluded: min cosine {:.6}, agreement {:.4} — {}",
                q.min_cosine,
                q.agreement,
                if passes { "passes" } else { "fails" }
            ));
            steps.push(Step {
                excluded: mid,
                quality: q.clone(),
                passes,
            });
            if passes {
                hi = mid;
                best = Some((mid, b, q));
            } else {
                lo = mid;
            }
        }
        let (k, b, q) = match best {
            Some(found) if found.0 == hi => found,
            _ => {
                let (b, q) = eval(&keep(hi))?;
                (hi, b, q)
            }
        };
        excluded = node_errors[..k].iter().map(|e| e.node.clone()).collect();
        bytes = b;
        quality = q;
    }
    let passes = options.gate.passes(&quality);
    let quantized = names.len() - excluded.len();
    let speed = if quantized > 0 {
        progress("timing fp32 and int8 in alternating rounds");
        measure_speed(backend, &base, &bytes, options)?
    } else {
        Speed {
            fp32_items_per_s: 0.0,
            int8_items_per_s: 0.0,
            speedup: 1.0,
            ratios: Vec::new(),
        }
    };
    let (recommended, verdict) = if !passes {
        (false, "the quality gate does not hold".to_owned())
    } else if quantized == 0 {
        (
            false,
            "every node had to stay fp32 to hold the gate: nothing quantized".to_owned(),
        )
    } else if speed.speedup < options.min_speedup {
        (
            false,
            format!(
                "not faster: int8 runs at {:.2}× fp32's throughput on this CPU (at least {:.2}× required)",
                speed.speedup, options.min_speedup
            ),
        )
    } else {
        (
            true,
            format!(
                "{quantized} of {} nodes int8, {:.2}× fp32's throughput, min cosine {:.6}",
                names.len(),
                speed.speedup,
                quality.min_cosine
            ),
        )
    };
    Ok(Outcome {
        options: options.clone(),
        calibration_examples: backend.examples(),
        eligible,
        quality_all,
        node_errors,
        steps,
        excluded,
        quantized,
        quality,
        passes,
        speed,
        recommended,
        verdict,
        model: bytes,
    })
}

/// `model` with `tensors` added to its outputs (float tensors of any
/// shape), for reading them during calibration.
pub fn with_outputs(model: &ModelProto, tensors: &[String]) -> ModelProto {
    let mut m = model.clone();
    if let Some(g) = m.graph.as_mut() {
        for t in tensors {
            if !g.output.iter().any(|o| &o.name == t) {
                g.output.push(crate::onnx::value_info(
                    t,
                    crate::onnx::TypeProto {
                        tensor_type: Some(crate::onnx::TypeTensor {
                            elem_type: crate::onnx::dtype::FLOAT,
                            shape: None,
                        }),
                        ..Default::default()
                    },
                ));
            }
        }
    }
    m
}

/// Writes the outcome's model as the folder `out`: the files of `src`
/// with `model_rel` replaced and, beside the model file (inside its version
/// folder in an inference repository, whose layout allows nothing else),
/// `mlmesh.json` — the source's note updated with `note`'s keys — and
/// `quantize.json`, the whole report.
pub fn save(
    src: &Path,
    model_rel: &Path,
    out: &Path,
    outcome: &Outcome,
    note: serde_json::Map<String, serde_json::Value>,
) -> Result<(), QuantizeError> {
    let beside = model_rel.parent().unwrap_or(Path::new(""));
    let note_rel = beside.join("mlmesh.json");
    let stage = files::staging(out).map_err(QuantizeError::Io)?;
    let done = (|| {
        files::copy_tree(src, &stage, &[model_rel, &note_rel])?;
        files::write(&stage.join(model_rel), &outcome.model)?;
        let mut merged = std::fs::read(src.join(&note_rel))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default();
        merged.extend(note);
        let merged = serde_json::Value::Object(merged).to_string();
        files::write(&stage.join(&note_rel), merged.as_bytes())?;
        let report = serde_json::to_vec_pretty(outcome).map_err(|e| e.to_string())?;
        files::write(&stage.join(beside).join("quantize.json"), &report)?;
        files::publish(&stage, out)
    })();
    if done.is_err() {
        let _ = std::fs::remove_dir_all(&stage);
    }
    done.map_err(QuantizeError::Io)
}

/// Both models loaded, timed in alternating rounds (fp32 first in odd
/// rounds, int8 first in even ones), after one warm-up batch each.
fn measure_speed(
    backend: &dyn Backend,
    fp32: &[u8],
    int8: &[u8],
    options: &Options,
) -> Result<Speed, QuantizeError> {
    let mut a = backend.load(fp32)?;
    let mut b = backend.load(int8)?;
    a.run_batch()?;
    b.run_batch()?;
    let time = |m: &mut Box<dyn Loaded>| -> Result<f64, QuantizeError> {
        let t = Instant::now();
        let mut items = 0;
        for _ in 0..options.batches_per_round.max(1) {
            items += m.run_batch()?;
        }
        Ok(items as f64 / t.elapsed().as_secs_f64().max(1e-9))
    };
    let (mut fa, mut fb, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..options.speed_rounds.max(1) {
        let (x, y) = if r % 2 == 0 {
            let x = time(&mut a)?;
            (x, time(&mut b)?)
        } else {
            let y = time(&mut b)?;
            (time(&mut a)?, y)
        };
        fa.push(x);
        fb.push(y);
        ratios.push(y / x);
    }
    Ok(Speed {
        fp32_items_per_s: median(&mut fa),
        int8_items_per_s: median(&mut fb),
        speedup: median(&mut ratios.clone()),
        ratios,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_compares_outputs() {
        let r = vec![vec![1.0, 0.0], vec![0.0, 2.0]];
        let same = Quality::measure(&r, &r);
        assert_eq!(same.min_cosine, 1.0);
        assert_eq!(same.agreement, 1.0);
        assert!(same.sqnr_db.is_infinite());
        let off = Quality::measure(&r, &[vec![1.0, 0.0], vec![2.0, 0.0]]);
        assert_eq!(off.worst_example, 1);
        assert!(off.min_cosine.abs() < 1e-12);
        assert_eq!(off.agreement, 0.5);
        assert!(off.sqnr_db < 0.0);
        assert!(Gate::Agreement { min: 0.5 }.passes(&off));
        assert!(!Gate::Cosine { min: 0.5 }.passes(&off));
    }
}
