//! One load of a model: every version its policy serves, each with its
//! signature as clients see it, its scheduler and statistics; and the
//! served `ModelConfig` (config.pbtxt completed from the model file).

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mlmesh_proto::inference as pb;

use crate::{
    backend::{self, OrtOptions, Signature, TensorSpec},
    error::LoadError,
    metrics::Metrics,
    repository::ModelSource,
    scheduler::{Policy, Scheduler, Stats},
    settings::InferenceSettings,
    tensor::{Data, DataType, Tensor, element_count},
};

/// An input or output as clients see it, and the shape the model wants when
/// the config reshapes it.
#[derive(Clone, Debug)]
pub struct Io {
    pub name: String,
    pub dtype: DataType,
    /// Full client-visible shape, batch axis (-1) first when batched.
    pub shape: Vec<i64>,
    /// The model's own shape without the batch axis, when the config
    /// reshapes (`reshape { shape: […] }`).
    pub reshape: Option<Vec<i64>>,
    pub optional: bool,
}

/// One version, loaded and serving.
pub struct Version {
    pub model: String,
    pub version: i64,
    pub inputs: Vec<Io>,
    pub outputs: Vec<Io>,
    pub max_batch_size: usize,
    pub scheduler: Scheduler,
    pub stats: Arc<Stats>,
}

/// One load of a model (all its served versions).
pub struct Served {
    pub name: String,
    pub config: pb::ModelConfig,
    pub versions: BTreeMap<i64, Arc<Version>>,
    /// Memory measured at load, bytes.
    pub memory_bytes: u64,
    pub load_time: Duration,
    /// Calls holding a lease on this load.
    pub in_flight: AtomicUsize,
}

impl Served {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

fn dims_of(spec: &TensorSpec, batched: bool) -> Vec<i64> {
    if batched {
        spec.shape.get(1..).unwrap_or_default().to_vec()
    } else {
        spec.shape.clone()
    }
}

/// An input or output as config.pbtxt lists it: name, data type, dims,
/// reshape, optional.
type Listed = (String, i32, Vec<i64>, Option<Vec<i64>>, bool);

/// Fills what config.pbtxt left out from the model's own signature, and
/// checks what it states against the model.
fn complete(
    source: &ModelSource,
    sig: &Signature,
    settings: &InferenceSettings,
) -> Result<(pb::ModelConfig, Vec<Io>, Vec<Io>), LoadError> {
    let mut cfg = source.config.clone();
    let path = source.dir.join("config.pbtxt").display().to_string();
    let bad = |reason: String| LoadError::Config {
        path: path.clone(),
        reason,
    };
    cfg.name = source.name.clone();
    cfg.platform = source.backend.platform().to_owned();
    cfg.backend = source.backend.backend().to_owned();
    let has_config = source.dir.join("config.pbtxt").is_file();
    let batch_axis = |s: &TensorSpec| s.shape.first() == Some(&-1);
    if !has_config {
        let all_batched = sig.inputs.iter().chain(&sig.outputs).all(batch_axis);
        if all_batched {
            cfg.max_batch_size = settings.default_max_batch_size as i32;
            cfg.dynamic_batching = Some(pb::ModelDynamicBatching::default());
        }
    }
    if cfg.max_batch_size < 0 {
        return Err(bad(format!(
            "max_batch_size is {}; must be 0 or more",
            cfg.max_batch_size
        )));
    }
    let batched = cfg.max_batch_size > 0;
    if batched {
        for s in sig.inputs.iter().chain(&sig.outputs) {
            if !batch_axis(s) && !s.shape.is_empty() {
                return Err(bad(format!(
                    "max_batch_size is {} but the model's tensor {:?} has shape {:?} without a variable first (batch) axis; set max_batch_size: 0",
                    cfg.max_batch_size, s.name, s.shape
                )));
            }
        }
    }
    let resolve = |listed: &mut Vec<Listed>,
                   model: &[TensorSpec],
                   overridable: &[TensorSpec],
                   what: &str|
     -> Result<Vec<Io>, LoadError> {
        if listed.is_empty() {
            return Ok(model
                .iter()
                .map(|s| Io {
                    name: s.name.clone(),
                    dtype: s.dtype,
                    shape: s.shape.clone(),
                    reshape: None,
                    optional: false,
                })
                .collect());
        }
        let mut out = Vec::new();
        for (name, dt, dims, reshape, optional) in listed.iter() {
            // An initializer the caller may override is an input that has
            // a default: listed in the config, it is served as optional.
            let (spec, defaulted) = match model.iter().find(|s| &s.name == name) {
                Some(s) => (s, false),
                None => (
                    overridable
                        .iter()
                        .find(|s| &s.name == name)
                        .ok_or_else(|| {
                            bad(format!(
                                "{what} {name:?} is not in the model; the model's {what}s are {:?}",
                                model.iter().map(|s| &s.name).collect::<Vec<_>>()
                            ))
                        })?,
                    true,
                ),
            };
            let dtype = pb::DataType::try_from(*dt)
                .ok()
                .and_then(crate::tensor::from_config)
                .ok_or_else(|| {
                    bad(format!(
                        "{what} {name:?}: data_type is missing or not served"
                    ))
                })?;
            if dtype != spec.dtype {
                return Err(bad(format!(
                    "{what} {name:?} is {} in the config but {} in the model",
                    dtype.name(),
                    spec.dtype.name()
                )));
            }
            let model_dims = dims_of(spec, batched);
            let target = reshape.clone().unwrap_or_else(|| dims.clone());
            let fits = target.len() == model_dims.len()
                && target
                    .iter()
                    .zip(&model_dims)
                    .all(|(a, b)| *a == *b || *a == -1 || *b == -1);
            if !fits {
                return Err(bad(format!(
                    "{what} {name:?}: the config says dims {target:?} (batch axis excluded: {batched}) but the model has {model_dims:?}"
                )));
            }
            let mut shape = if batched { vec![-1] } else { Vec::new() };
            shape.extend(dims);
            out.push(Io {
                name: name.clone(),
                dtype,
                shape,
                reshape: reshape.clone(),
                optional: *optional || defaulted,
            });
        }
        // Inputs the config leaves out are still required by the model.
        if what == "input" {
            for s in model {
                if !out.iter().any(|io| io.name == s.name) {
                    return Err(bad(format!(
                        "the model's input {:?} is missing from the config",
                        s.name
                    )));
                }
            }
        }
        Ok(out)
    };
    let mut ins: Vec<_> = cfg
        .input
        .iter()
        .map(|i| {
            (
                i.name.clone(),
                i.data_type,
                i.dims.clone(),
                i.reshape.as_ref().map(|r| r.shape.clone()),
                i.optional,
            )
        })
        .collect();
    let mut outs: Vec<_> = cfg
        .output
        .iter()
        .map(|o| {
            (
                o.name.clone(),
                o.data_type,
                o.dims.clone(),
                o.reshape.as_ref().map(|r| r.shape.clone()),
                false,
            )
        })
        .collect();
    let inputs = resolve(&mut ins, &sig.inputs, &sig.overridable, "input")?;
    let outputs = resolve(&mut outs, &sig.outputs, &[], "output")?;
    if cfg.input.is_empty() {
        cfg.input = inputs
            .iter()
            .map(|io| pb::ModelInput {
                name: io.name.clone(),
                data_type: crate::tensor::to_config(io.dtype) as i32,
                dims: strip(&io.shape, batched),
                ..Default::default()
            })
            .collect();
    }
    if cfg.output.is_empty() {
        cfg.output = outputs
            .iter()
            .map(|io| pb::ModelOutput {
                name: io.name.clone(),
                data_type: crate::tensor::to_config(io.dtype) as i32,
                dims: strip(&io.shape, batched),
                ..Default::default()
            })
            .collect();
    }
    if cfg.instance_group.is_empty() {
        cfg.instance_group.push(pb::ModelInstanceGroup {
            name: format!("{}_0", cfg.name),
            count: 1,
            kind: pb::model_instance_group::Kind::Cpu as i32,
        });
    }
    Ok((cfg, inputs, outputs))
}

fn strip(shape: &[i64], batched: bool) -> Vec<i64> {
    if batched {
        shape.get(1..).unwrap_or_default().to_vec()
    } else {
        shape.to_vec()
    }
}

/// The scheduling policy a config asks for.
fn policy(cfg: &pb::ModelConfig, settings: &InferenceSettings) -> Policy {
    let db = cfg.dynamic_batching.as_ref();
    let q = db.and_then(|d| d.default_queue_policy.as_ref());
    let (max_queue_size, queue_setting) = match q.map(|q| q.max_queue_size) {
        Some(n) if n > 0 => (
            n as usize,
            "dynamic_batching.default_queue_policy.max_queue_size",
        ),
        _ => (settings.max_queue_size, "inference.max_queue_size"),
    };
    Policy {
        max_batch_size: cfg.max_batch_size.max(0) as usize,
        dynamic: db.is_some() && cfg.max_batch_size > 0,
        max_queue_delay: Duration::from_micros(db.map_or(0, |d| d.max_queue_delay_microseconds)),
        preferred: db
            .map(|d| {
                d.preferred_batch_size
                    .iter()
                    .map(|&p| p.max(0) as usize)
                    .collect()
            })
            .unwrap_or_default(),
        max_queue_size,
        queue_setting,
        default_timeout: q
            .map(|q| q.default_timeout_microseconds)
            .filter(|&t| t > 0)
            .map(Duration::from_micros),
        allow_timeout_override: q.is_none_or(|q| q.allow_timeout_override),
        priority_levels: db.map_or(0, |d| d.priority_levels),
        default_priority: db.map_or(0, |d| {
            if d.default_priority_level == 0 {
                d.priority_levels.div_ceil(2).max(1)
            } else {
                d.default_priority_level
            }
        }),
    }
}

/// A batch of one row of zeros (empty strings for BYTES) per input, for
/// the warm-up run.
fn warmup_inputs(inputs: &[Io]) -> Vec<Tensor> {
    inputs
        .iter()
        .map(|io| {
            let model_shape: Vec<i64> = match &io.reshape {
                Some(r) if io.shape.first() == Some(&-1) => {
                    std::iter::once(1).chain(r.iter().copied()).collect()
                }
                Some(r) => r.clone(),
                None => io.shape.clone(),
            };
            let shape: Vec<i64> = model_shape
                .iter()
                .map(|&d| if d < 0 { 1 } else { d })
                .collect();
            let n = element_count(&shape).unwrap_or(0);
            Tensor {
                name: io.name.clone(),
                shape,
                data: Data::zeros(io.dtype, n),
            }
        })
        .collect()
}

/// Resident memory of this process, bytes (Linux); 0 elsewhere.
pub fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Loads every served version of `source`, warms each instance up with one
/// run, and starts the schedulers. Blocking: call on a blocking thread.
pub fn build(
    source: &ModelSource,
    settings: &InferenceSettings,
    ort: &OrtOptions,
    metrics: &Metrics,
) -> Result<Served, LoadError> {
    let start = Instant::now();
    let before = rss_bytes();
    let mut file_bytes = 0u64;
    let mut versions = BTreeMap::new();
    let mut served_config = None;
    let mut exact: Option<u64> = Some(0);
    for (&v, file) in &source.versions {
        file_bytes += std::fs::metadata(file).map_or(0, |m| m.len());
        let instances: usize = source
            .config
            .instance_group
            .iter()
            .map(|g| g.count.max(1) as usize)
            .sum::<usize>()
            .max(1);
        let mut loaded = backend::load(source.backend, file, instances, ort)?;
        exact = exact.zip(loaded.memory_bytes).map(|(a, b)| a + b);
        let (cfg, inputs, outputs) = complete(source, &loaded.signature, settings)?;
        let warm = warmup_inputs(&inputs);
        for r in &mut loaded.runners {
            r.run(warm.clone()).map_err(|e| {
                LoadError::file(
                    file,
                    format!("the warm-up run (one row of zeros) failed: {e}"),
                )
            })?;
        }
        let stats = Arc::new(Stats::default());
        let scheduler = Scheduler::start(
            &source.name,
            v,
            policy(&cfg, settings),
            loaded.runners,
            metrics.clone(),
            Arc::clone(&stats),
        )
        .map_err(|e| LoadError::Invalid(format!("cannot start worker threads: {e}")))?;
        versions.insert(
            v,
            Arc::new(Version {
                model: source.name.clone(),
                version: v,
                inputs,
                outputs,
                max_batch_size: cfg.max_batch_size.max(0) as usize,
                scheduler,
                stats,
            }),
        );
        served_config = Some(cfg);
    }
    let config = served_config.ok_or_else(|| LoadError::Invalid("no version to load".into()))?;
    let memory_bytes = match exact {
        Some(bytes) => bytes,
        None => rss_bytes().saturating_sub(before).max(file_bytes),
    };
    Ok(Served {
        name: source.name.clone(),
        config,
        versions,
        memory_bytes,
        load_time: start.elapsed(),
        in_flight: AtomicUsize::new(0),
    })
}
