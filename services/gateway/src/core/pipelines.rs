//! Running a declared pipeline: steps in order, each with its own timeout
//! inside the caller's deadline; parallel branches at once; a switch's
//! first matching case; a split's arm chosen by weight and kept per caller;
//! a fallback model after UNAVAILABLE or a step timeout. A failed step
//! fails the run with a status naming it; the answer says which model
//! version answered each step.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use mlmesh_proto::{embedding::v1 as emb, gateway::v1 as gw, inference as pb};
use serde_json::Value as Json;
use tonic::Code;

use super::{Core, Result, aggregate};
use crate::{
    downstream::Deadline,
    error::GatewayError,
    pipeline::{
        PipelineSpec,
        spec::{Condition, StepSpec, toml_like::Scalar},
    },
    tensor::{DataType, Tensor},
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
type Values = HashMap<String, Tensor>;

struct Leaf {
    outputs: BTreeMap<String, Tensor>,
    report: StepReport,
}

/// FNV-1a: the same arm for the same key on every replica and release.
fn fnv1a(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

fn lookup<'v>(values: &'v Values, reference: &str) -> Result<&'v Tensor> {
    values.get(reference).ok_or_else(|| {
        GatewayError::Internal(format!(
            "{reference} has no value (checked at start; a bug)"
        ))
    })
}

/// The one element a condition tests.
fn scalar(values: &Values, reference: &str) -> Result<Json> {
    let t = lookup(values, reference)?;
    let mut v = t.values(reference)?;
    if v.len() != 1 {
        return Err(GatewayError::invalid(
            reference,
            format!(
                "a condition tests one value; this has {} (shape {:?})",
                v.len(),
                t.shape
            ),
        ));
    }
    Ok(v.remove(0))
}

fn same(v: &Json, s: &Scalar) -> bool {
    match s {
        Scalar::Bool(b) => v.as_bool() == Some(*b),
        Scalar::Int(i) => v.as_f64() == Some(*i as f64),
        Scalar::Float(f) => v.as_f64() == Some(*f),
        Scalar::Text(t) => v.as_str() == Some(t.as_str()),
    }
}

fn holds(c: &Condition, values: &Values) -> Result<bool> {
    let v = scalar(values, &c.value)?;
    let num = || {
        v.as_f64().ok_or_else(|| {
            GatewayError::invalid(&c.value, format!("{v} is not a number to compare"))
        })
    };
    Ok(if let Some(s) = &c.equals {
        same(&v, s)
    } else if let Some(s) = &c.not_equals {
        !same(&v, s)
    } else if let Some(list) = &c.one_of {
        list.iter().any(|s| same(&v, s))
    } else if let Some(x) = c.gt {
        num()? > x
    } else if let Some(x) = c.gte {
        num()? >= x
    } else if let Some(x) = c.lt {
        num()? < x
    } else if let Some(x) = c.lte {
        num()? <= x
    } else {
        false
    })
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

    /// Calls the service of a leaf step (`instead`: a fallback model);
    /// returns its outputs, the model and version that answered, and the
    /// service.
    async fn call_leaf(
        &self,
        step: &StepSpec,
        instead: Option<&crate::pipeline::spec::ModelRef>,
        values: &Values,
        deadline: Deadline,
    ) -> Result<(BTreeMap<String, Tensor>, String, String, &'static str)> {
        match step {
            StepSpec::Embed { model, input, .. } => {
                let texts = lookup(values, input)?.strings(input)?;
                let n = texts.len() as i64;
                let resp = self
                    .embed(
                        emb::EmbedRequest {
                            inputs: texts,
                            model: model.clone(),
                            ..Default::default()
                        },
                        deadline,
                    )
                    .await?;
                let dim = resp.embeddings.first().map_or(0, |e| e.values.len()) as i64;
                let t = Tensor::f32(
                    vec![n, dim],
                    resp.embeddings.into_iter().flat_map(|e| e.values),
                );
                Ok((
                    BTreeMap::from([("embedding".to_owned(), t)]),
                    resp.model,
                    String::new(),
                    "embedding",
                ))
            }
            StepSpec::Infer {
                model,
                version,
                inputs,
                outputs,
                ..
            } => {
                let (model, version) = match instead {
                    Some(f) => (&f.model, &f.version),
                    None => (model, version),
                };
                let mut rq = pb::ModelInferRequest {
                    model_name: model.clone(),
                    model_version: version.clone(),
                    ..Default::default()
                };
                for (name, r) in inputs {
                    let t = lookup(values, r)?;
                    rq.inputs.push(pb::model_infer_request::InferInputTensor {
                        name: name.clone(),
                        datatype: t.datatype.name().to_owned(),
                        shape: t.shape.clone(),
                        ..Default::default()
                    });
                    rq.raw_input_contents.push(t.raw.clone());
                }
                rq.outputs = outputs
                    .iter()
                    .map(|o| pb::model_infer_request::InferRequestedOutputTensor {
                        name: o.clone(),
                        ..Default::default()
                    })
                    .collect();
                let resp = self.model_infer(rq, deadline).await?;
                let mut out = BTreeMap::new();
                for (i, o) in resp.outputs.iter().enumerate() {
                    let Some(raw) = resp.raw_output_contents.get(i) else {
                        return Err(GatewayError::Internal(format!(
                            "model {model:?} answered output {:?} without raw contents",
                            o.name
                        )));
                    };
                    let datatype = DataType::parse(&o.datatype).ok_or_else(|| {
                        GatewayError::Internal(format!(
                            "model {model:?} answered output {:?} of unknown datatype {:?}",
                            o.name, o.datatype
                        ))
                    })?;
                    out.insert(
                        o.name.clone(),
                        Tensor {
                            datatype,
                            shape: o.shape.clone(),
                            raw: raw.clone(),
                        },
                    );
                }
                if let Some(missing) = outputs.iter().find(|o| !out.contains_key(*o)) {
                    return Err(GatewayError::Internal(format!(
                        "model {model:?} did not answer output {missing:?}"
                    )));
                }
                Ok((out, resp.model_name, resp.model_version, "inference"))
            }
            StepSpec::Search {
                collection,
                query,
                limit,
                ..
            } => {
                let q = lookup(values, query)?.strings(query)?;
                let [q] = <[String; 1]>::try_from(q).map_err(|q| {
                    GatewayError::invalid(
                        query,
                        format!("a search takes one query, not {}", q.len()),
                    )
                })?;
                let resp = self
                    .search(
                        gw::SearchRequest {
                            collection: collection.clone(),
                            query: q,
                            limit: *limit,
                            ..Default::default()
                        },
                        deadline,
                    )
                    .await?;
                let k = resp.hits.len() as i64;
                let texts: Vec<&str> = resp.hits.iter().map(|h| h.text.as_str()).collect();
                let ids: Vec<&str> = resp.hits.iter().map(|h| h.document_id.as_str()).collect();
                let out = BTreeMap::from([
                    ("text".to_owned(), Tensor::texts(&texts)),
                    ("document_id".to_owned(), Tensor::texts(&ids)),
                    (
                        "score".to_owned(),
                        Tensor::f32(vec![k], resp.hits.iter().map(|h| h.score)),
                    ),
                ]);
                Ok((out, collection.clone(), String::new(), "vector-search"))
            }
            _ => Err(GatewayError::Internal(
                "a combining step inside a combining step (refused at start)".into(),
            )),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arms_are_sticky_per_key_and_differ_across_keys() {
        let a = fnv1a(&["p", "ab", "alice"]);
        assert_eq!(a, fnv1a(&["p", "ab", "alice"]));
        assert_ne!(a, fnv1a(&["p", "ab", "bob"]));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(fnv1a(&["ab", "c"]), fnv1a(&["a", "bc"]));
    }

    #[test]
    fn conditions_compare_one_value() {
        let mut values = Values::new();
        values.insert("request.lang".into(), Tensor::texts(&["en"]));
        values.insert("s.score".into(), Tensor::f32(vec![1], [0.7]));
        values.insert("s.many".into(), Tensor::f32(vec![2], [0.7, 0.1]));
        let c = |value: &str| Condition {
            value: value.into(),
            ..Default::default()
        };
        let eq = Condition {
            equals: Some(Scalar::Text("en".into())),
            ..c("request.lang")
        };
        assert!(holds(&eq, &values).expect("en"));
        let gt = Condition {
            gt: Some(0.5),
            ..c("s.score")
        };
        assert!(holds(&gt, &values).expect("0.7 > 0.5"));
        let many = Condition {
            gt: Some(0.5),
            ..c("s.many")
        };
        assert!(holds(&many, &values).is_err());
    }
}
