//! Running a declared pipeline: steps in order, each with its own timeout
//! inside the caller's deadline; parallel branches at once; a switch's
//! first matching case; a split's arm chosen by weight and kept per caller;
//! a fallback model after UNAVAILABLE or a step timeout. A failed step
//! fails the run with a status naming it; the answer says which model
//! version answered each step. [`choose`] holds what a run decides from
//! values (references, conditions, arms); [`leaf`] the call each leaf step
//! makes to its service.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use tonic::Code;

mod choose;
mod leaf;

use self::choose::{fnv1a, holds, lookup};
use super::{Core, Result, aggregate};
use crate::{
    downstream::Deadline,
    error::GatewayError,
    pipeline::{PipelineSpec, spec::StepSpec},
    tensor::Tensor,
};

/// What one call of a run did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The step (`classify`), with the branch (`vote[1]`) or arm
    /// (`ab/v2`) inside a combining step.
    pub step: String,
    pub service: &'static str,
    pub model: String,
    /// The version that answered (empty for embeddings and search).
    pub version: String,
    /// A fallback model answered, after the step's own failed.
    pub fallback: bool,
    /// The split arm taken, if any.
    pub arm: String,
    /// When the call started, from the start of the run.
    pub started: Duration,
    pub duration: Duration,
}

/// A finished run.
#[derive(Debug)]
pub struct PipelineRun {
    pub outputs: BTreeMap<String, Tensor>,
    pub steps: Vec<StepReport>,
}

/// Values by reference (`request.text`, `embed.embedding`).
pub(super) type Values = HashMap<String, Tensor>;

struct Leaf {
    outputs: BTreeMap<String, Tensor>,
    report: StepReport,
}

fn timeout_of(step: &StepSpec) -> Option<u64> {
    match step {
        StepSpec::Embed { timeout_ms, .. }
        | StepSpec::Infer { timeout_ms, .. }
        | StepSpec::Search { timeout_ms, .. } => *timeout_ms,
        _ => None,
    }
}

impl Core {
    /// The declared pipelines.
    pub fn pipelines(&self) -> &BTreeMap<String, PipelineSpec> {
        &self.settings.pipelines
    }

    /// Runs pipeline `name` on `inputs`. `sticky` keeps a caller on one
    /// arm of every split (empty: an arm by weight, per call).
    pub async fn run_pipeline(
        &self,
        name: &str,
        inputs: HashMap<String, Tensor>,
        sticky: &str,
        deadline: Deadline,
    ) -> Result<PipelineRun> {
        let started = Instant::now();
        let result = match self.check_inputs(&inputs) {
            Ok(()) => {
                self.run_inner(name, inputs, sticky, deadline, started)
                    .await
            }
            Err(e) => Err(e),
        };
        if self.settings.pipelines.contains_key(name) {
            let p = name;
            let code = result
                .as_ref()
                .map_or_else(GatewayError::code, |_| Code::Ok);
            self.metrics
                .pipeline_runs
                .with_label_values(&[p, mlmesh_runtime::code_name(code)])
                .inc();
            self.metrics
                .pipeline_seconds
                .with_label_values(&[p])
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// Every input's shape within the limits, whichever face built it.
    fn check_inputs(&self, inputs: &HashMap<String, Tensor>) -> Result<()> {
        let limits = self.settings.limits.shapes();
        for (k, t) in inputs {
            limits.count(&t.shape, &format!("inputs.{k}.shape"))?;
        }
        Ok(())
    }

    async fn run_inner(
        &self,
        name: &str,
        inputs: HashMap<String, Tensor>,
        sticky: &str,
        deadline: Deadline,
        started: Instant,
    ) -> Result<PipelineRun> {
        let spec =
            self.settings
                .pipelines
                .get(name)
                .ok_or_else(|| GatewayError::PipelineNotFound {
                    name: name.to_owned(),
                    declared: self
                        .settings
                        .pipelines
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
        let mut values = Values::new();
        for i in &spec.inputs {
            let t = inputs.get(i).ok_or_else(|| {
                GatewayError::invalid(
                    format!("inputs.{i}"),
                    format!("pipeline {name:?} needs input {i:?}"),
                )
            })?;
            values.insert(format!("request.{i}"), t.clone());
        }
        if let Some(extra) = inputs.keys().find(|k| !spec.inputs.contains(k)) {
            return Err(GatewayError::invalid(
                format!("inputs.{extra}"),
                format!("pipeline {name:?} takes inputs {}", spec.inputs.join(", ")),
            ));
        }
        let mut steps = Vec::new();
        for step in &spec.steps {
            let sname = step.name();
            let made = self
                .run_step(name, step, &values, sticky, deadline, started, &mut steps)
                .await
                .map_err(|e| match e {
                    // Already names the branch, case or arm.
                    named @ GatewayError::Step { .. } => named,
                    e => GatewayError::Step {
                        pipeline: name.to_owned(),
                        step: sname.to_owned(),
                        source: Box::new(e),
                    },
                })?;
            for (o, t) in made {
                values.insert(format!("{sname}.{o}"), t);
            }
        }
        let outputs = spec
            .outputs
            .iter()
            .map(|(o, r)| Ok((o.clone(), lookup(&values, r)?.clone())))
            .collect::<Result<_>>()?;
        Ok(PipelineRun { outputs, steps })
    }

    /// One top-level step; its calls are appended to `reports`.
    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        pipeline: &str,
        step: &StepSpec,
        values: &Values,
        sticky: &str,
        deadline: Deadline,
        started: Instant,
        reports: &mut Vec<StepReport>,
    ) -> Result<BTreeMap<String, Tensor>> {
        let name = step.name();
        match step {
            StepSpec::Parallel {
                branches,
                aggregate: how,
                ..
            } => {
                let runs = branches.iter().enumerate().map(|(i, b)| {
                    let label = format!("{name}[{i}]");
                    async move {
                        self.run_leaf(pipeline, &label, b, values, deadline, started)
                            .await
                            .map_err(|e| (label, e))
                    }
                });
                let mut leaves = Vec::with_capacity(branches.len());
                for r in futures::future::join_all(runs).await {
                    match r {
                        Ok(l) => leaves.push(l),
                        Err((label, e)) => return Err(named(pipeline, &label, e)),
                    }
                }
                let mut out = BTreeMap::new();
                for (o, h) in how {
                    let parts: Vec<Tensor> = leaves
                        .iter()
                        .filter_map(|l| l.outputs.get(o).cloned())
                        .collect();
                    out.insert(
                        o.clone(),
                        aggregate::combine(*h, &format!("{name}.{o}"), &parts)?,
                    );
                }
                reports.extend(leaves.into_iter().map(|l| l.report));
                Ok(out)
            }
            StepSpec::Switch { cases, default, .. } => {
                let mut chosen = None;
                for (i, c) in cases.iter().enumerate() {
                    if holds(&c.when, values)? {
                        chosen = Some((format!("{name}/case{i}"), &c.step));
                        break;
                    }
                }
                let (label, s) = match (chosen, default) {
                    (Some(c), _) => c,
                    (None, Some(d)) => (format!("{name}/default"), &**d),
                    (None, None) => {
                        return Err(GatewayError::invalid(
                            name,
                            "no case matched and the switch has no default",
                        ));
                    }
                };
                let leaf = self
                    .run_leaf(pipeline, &label, s, values, deadline, started)
                    .await
                    .map_err(|e| named(pipeline, &label, e))?;
                reports.push(leaf.report);
                Ok(leaf.outputs)
            }
            StepSpec::Split { arms, .. } => {
                let total: u64 = arms.iter().map(|a| u64::from(a.weight)).sum();
                let point = if sticky.is_empty() {
                    fnv1a(&[&format!("{:?}", Instant::now())]) % total.max(1)
                } else {
                    fnv1a(&[pipeline, name, sticky]) % total.max(1)
                };
                let mut acc = 0u64;
                let (i, arm) = arms
                    .iter()
                    .enumerate()
                    .find(|(_, a)| {
                        acc += u64::from(a.weight);
                        point < acc
                    })
                    .unwrap_or((0, &arms[0]));
                let arm_name = if arm.name.is_empty() {
                    format!("arm{i}")
                } else {
                    arm.name.clone()
                };
                let label = format!("{name}/{arm_name}");
                let mut leaf = self
                    .run_leaf(pipeline, &label, &arm.step, values, deadline, started)
                    .await
                    .map_err(|e| named(pipeline, &label, e))?;
                leaf.report.arm = arm_name;
                reports.push(leaf.report);
                Ok(leaf.outputs)
            }
            leaf => {
                let l = self
                    .run_leaf(pipeline, name, leaf, values, deadline, started)
                    .await?;
                reports.push(l.report);
                Ok(l.outputs)
            }
        }
    }

    /// One call (with its fallback), counted in the step metrics.
    async fn run_leaf(
        &self,
        pipeline: &str,
        label: &str,
        step: &StepSpec,
        values: &Values,
        deadline: Deadline,
        started: Instant,
    ) -> Result<Leaf> {
        let step_deadline = |t: Option<u64>| match t {
            Some(ms) => Deadline(deadline.0.min(Instant::now() + Duration::from_millis(ms))),
            None => deadline,
        };
        let t0 = Instant::now();
        let first = self
            .call_leaf(step, None, values, step_deadline(timeout_of(step)))
            .await;
        let (result, fallback) = match (first, step) {
            (
                Err(e),
                StepSpec::Infer {
                    fallback: Some(f), ..
                },
            ) if matches!(e.code(), Code::Unavailable | Code::DeadlineExceeded)
                && !deadline.remaining().is_zero() =>
            {
                tracing::warn!(pipeline, step = label, error = %e, fallback = %f.model, "step failed; calling its fallback");
                self.count_step(pipeline, label, step_model(step), "", &e.code());
                (
                    self.call_leaf(step, Some(f), values, step_deadline(timeout_of(step)))
                        .await,
                    true,
                )
            }
            (r, _) => (r, false),
        };
        match result {
            Ok((outputs, model, version, service)) => {
                let outcome = if fallback { "fallback" } else { "ok" };
                self.metrics
                    .pipeline_steps
                    .with_label_values(&[pipeline, label, &model, &version, outcome])
                    .inc();
                Ok(Leaf {
                    outputs,
                    report: StepReport {
                        step: label.to_owned(),
                        service,
                        model,
                        version,
                        fallback,
                        arm: String::new(),
                        started: t0.duration_since(started),
                        duration: t0.elapsed(),
                    },
                })
            }
            Err(e) => {
                self.count_step(pipeline, label, step_model(step), "", &e.code());
                // A step's own timeout, not the caller's deadline: say so.
                if e.code() == Code::DeadlineExceeded
                    && !deadline.remaining().is_zero()
                    && let Some(ms) = timeout_of(step)
                {
                    return Err(GatewayError::StepTimeout { timeout_ms: ms });
                }
                Err(e)
            }
        }
    }

    fn count_step(&self, pipeline: &str, step: &str, model: &str, version: &str, code: &Code) {
        self.metrics
            .pipeline_steps
            .with_label_values(&[
                pipeline,
                step,
                model,
                version,
                mlmesh_runtime::code_name(*code),
            ])
            .inc();
    }
}

/// `e` as the failure of step `label` (a branch, case or arm).
fn named(pipeline: &str, label: &str, e: GatewayError) -> GatewayError {
    GatewayError::Step {
        pipeline: pipeline.to_owned(),
        step: label.to_owned(),
        source: Box::new(e),
    }
}

fn step_model(step: &StepSpec) -> &str {
    match step {
        StepSpec::Embed { model, .. } | StepSpec::Infer { model, .. } => model,
        StepSpec::Search { collection, .. } => collection,
        _ => "",
    }
}
