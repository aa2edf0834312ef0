//! Pipelines as declared in the gateway's settings (`[pipelines.<name>]`),
//! and the checks that run when the settings load: every reference names a
//! request input or an output of an earlier step, every branch of a
//! parallel, switch or split step produces the same outputs, every number
//! is in range. A pipeline that fails a check stops the gateway at start
//! with the key named (`pipelines.sentiment.steps[1].inputs.input`).
//!
//! ```toml
//! [pipelines.sentiment]
//! inputs = ["text"]
//! outputs = { label = "classify.label" }
//!
//! [[pipelines.sentiment.steps]]
//! kind = "embed"
//! name = "embed"
//! input = "request.text"
//!
//! [[pipelines.sentiment.steps]]
//! kind = "infer"
//! name = "classify"
//! model = "sentiment"
//! inputs = { input = "embed.embedding" }
//! outputs = ["label", "probabilities"]
//! timeout_ms = 200
//! fallback = { model = "sentiment", version = "1" }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One pipeline: named inputs, steps run in order, named outputs.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// What it is for, shown by ListPipelines and the MCP tool.
    #[serde(default)]
    pub description: String,
    /// The inputs a request must carry (`request.<name>` in references).
    pub inputs: Vec<String>,
    /// Run one after another; a step sees the outputs of those before it.
    pub steps: Vec<StepSpec>,
    /// The answer: output name → reference (`classify.label`).
    pub outputs: BTreeMap<String, String>,
}

/// A call the pipeline makes, or a way of combining such calls.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepSpec {
    /// Texts (a BYTES tensor) → their vectors: output `embedding`, FP32
    /// `[n, dimension]`.
    Embed {
        #[serde(default)]
        name: String,
        /// Embedding model; empty for the service's default.
        #[serde(default)]
        model: String,
        input: String,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// One inference: the model's inputs from references, the declared
    /// outputs requested and kept.
    Infer {
        #[serde(default)]
        name: String,
        model: String,
        /// Empty: the version the inference service picks.
        #[serde(default)]
        version: String,
        /// Model input name → reference.
        inputs: BTreeMap<String, String>,
        outputs: Vec<String>,
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Tried when this model answers UNAVAILABLE or its timeout passes.
        #[serde(default)]
        fallback: Option<ModelRef>,
    },
    /// A semantic search of a gateway collection with one query text:
    /// outputs `text`, `document_id` (BYTES `[k]`) and `score` (FP32 `[k]`).
    Search {
        #[serde(default)]
        name: String,
        collection: String,
        query: String,
        #[serde(default = "default_limit")]
        limit: u32,
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Branches run at once; each output combined across them by its
    /// aggregation (an ensemble).
    Parallel {
        name: String,
        branches: Vec<StepSpec>,
        /// Output name → `mean` (element-wise, floats), `majority`
        /// (element-wise vote; a tie goes to the earliest branch) or `first`.
        aggregate: BTreeMap<String, Aggregation>,
    },
    /// The first case whose condition holds runs; else `default`.
    Switch {
        name: String,
        cases: Vec<Case>,
        #[serde(default)]
        default: Option<Box<StepSpec>>,
    },
    /// One arm by weight (an A/B split), the same arm for the same caller.
    Split { name: String, arms: Vec<Arm> },
}

fn default_limit() -> u32 {
    5
}

/// A model (version) to call instead.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRef {
    pub model: String,
    #[serde(default)]
    pub version: String,
}

/// How a parallel step combines one output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Aggregation {
    Mean,
    Majority,
    First,
}

/// One case of a switch.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub when: Condition,
    pub step: StepSpec,
}

/// A test of a one-element value: a request input or an earlier output.
/// Exactly one comparison is set.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The reference tested (`request.lang`, `classify.label`).
    pub value: String,
    #[serde(default)]
    pub equals: Option<toml_like::Scalar>,
    #[serde(default)]
    pub not_equals: Option<toml_like::Scalar>,
    #[serde(default, rename = "in")]
    pub one_of: Option<Vec<toml_like::Scalar>>,
    #[serde(default)]
    pub gt: Option<f64>,
    #[serde(default)]
    pub gte: Option<f64>,
    #[serde(default)]
    pub lt: Option<f64>,
    #[serde(default)]
    pub lte: Option<f64>,
}

/// Scalars a condition compares with.
pub mod toml_like {
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    pub enum Scalar {
        Bool(bool),
        Int(i64),
        Float(f64),
        Text(String),
    }
}

/// One arm of a split.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    /// Reported in each answer and in metrics; default `arm<i>`.
    #[serde(default)]
    pub name: String,
    pub weight: u32,
    pub step: StepSpec,
}

impl StepSpec {
    pub fn name(&self) -> &str {
        match self {
            StepSpec::Embed { name, .. }
            | StepSpec::Infer { name, .. }
            | StepSpec::Search { name, .. }
            | StepSpec::Parallel { name, .. }
            | StepSpec::Switch { name, .. }
            | StepSpec::Split { name, .. } => name,
        }
    }

    /// The outputs this step makes, by name.
    pub fn outputs(&self) -> BTreeSet<String> {
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        match self {
            StepSpec::Embed { .. } => set(&["embedding"]),
            StepSpec::Infer { outputs, .. } => outputs.iter().cloned().collect(),
            StepSpec::Search { .. } => set(&["text", "document_id", "score"]),
            StepSpec::Parallel { aggregate, .. } => aggregate.keys().cloned().collect(),
            StepSpec::Switch { cases, default, .. } => cases
                .first()
                .map(|c| &c.step)
                .or(default.as_deref())
                .map(StepSpec::outputs)
                .unwrap_or_default(),
            StepSpec::Split { arms, .. } => {
                arms.first().map(|a| a.step.outputs()).unwrap_or_default()
            }
        }
    }

    fn is_leaf(&self) -> bool {
        matches!(
            self,
            StepSpec::Embed { .. } | StepSpec::Infer { .. } | StepSpec::Search { .. }
        )
    }
}

/// What references may name at one point of a pipeline.
struct Scope<'a> {
    inputs: &'a [String],
    /// Earlier steps and their outputs.
    steps: BTreeMap<&'a str, BTreeSet<String>>,
}

impl Scope<'_> {
    fn check(&self, key: &str, reference: &str) -> Result<(), (String, String)> {
        let err = |why: String| Err((key.to_owned(), why));
        let Some((head, output)) = reference.split_once('.') else {
            return err(format!(
                "{reference:?} is not a reference like request.<input> or <step>.<output>"
            ));
        };
        if head == "request" {
            if self.inputs.iter().any(|i| i == output) {
                return Ok(());
            }
            return err(format!(
                "refers to request input {output:?}, which is not among the pipeline's inputs ({})",
                self.inputs.join(", ")
            ));
        }
        match self.steps.get(head) {
            None => err(format!(
                "refers to step {head:?}, which is not an earlier step of this pipeline"
            )),
            Some(outs) if !outs.contains(output) => err(format!(
                "refers to output {output:?} of step {head:?}, which makes only {}",
                outs.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(_) => Ok(()),
        }
    }
}

type Invalid = (String, String);

fn positive_timeout(key: &str, t: Option<u64>) -> Result<(), Invalid> {
    match t {
        Some(0) => Err((format!("{key}.timeout_ms"), "must be positive".into())),
        _ => Ok(()),
    }
}

fn nonempty(key: &str, v: &str, what: &str) -> Result<(), Invalid> {
    if v.trim().is_empty() {
        return Err((key.to_owned(), format!("{what} is required")));
    }
    Ok(())
}

/// Checks a leaf step (embed, infer, search) at `key`.
fn check_leaf(key: &str, step: &StepSpec, scope: &Scope<'_>) -> Result<(), Invalid> {
    match step {
        StepSpec::Embed {
            input, timeout_ms, ..
        } => {
            scope.check(&format!("{key}.input"), input)?;
            positive_timeout(key, *timeout_ms)
        }
        StepSpec::Infer {
            model,
            inputs,
            outputs,
            timeout_ms,
            fallback,
            ..
        } => {
            nonempty(&format!("{key}.model"), model, "a model name")?;
            if inputs.is_empty() {
                return Err((format!("{key}.inputs"), "at least one model input".into()));
            }
            for (name, r) in inputs {
                scope.check(&format!("{key}.inputs.{name}"), r)?;
            }
            if outputs.is_empty() {
                return Err((format!("{key}.outputs"), "at least one model output".into()));
            }
            if let Some(f) = fallback {
                nonempty(&format!("{key}.fallback.model"), &f.model, "a model name")?;
            }
            positive_timeout(key, *timeout_ms)
        }
        StepSpec::Search {
            collection,
            query,
            limit,
            timeout_ms,
            ..
        } => {
            nonempty(&format!("{key}.collection"), collection, "a collection")?;
            scope.check(&format!("{key}.query"), query)?;
            if *limit == 0 {
                return Err((format!("{key}.limit"), "must be at least 1".into()));
            }
            positive_timeout(key, *timeout_ms)
        }
        _ => Err((
            format!("{key}.kind"),
            "a branch, case or arm is an embed, infer or search step".into(),
        )),
    }
}

/// Checks branches that stand for one step: leaves with equal outputs.
fn check_alike<'s>(
    key: &str,
    steps: impl Iterator<Item = (String, &'s StepSpec)>,
    scope: &Scope<'_>,
) -> Result<(), Invalid> {
    let mut first: Option<(String, BTreeSet<String>)> = None;
    for (k, s) in steps {
        if !s.is_leaf() {
            return Err((
                format!("{k}.kind"),
                "a branch, case or arm is an embed, infer or search step".into(),
            ));
        }
        check_leaf(&k, s, scope)?;
        let outs = s.outputs();
        match &first {
            None => first = Some((k, outs)),
            Some((k0, o0)) if *o0 != outs => {
                return Err((
                    k,
                    format!(
                        "makes outputs {:?} where {k0} makes {:?}; every branch of {key} must make the same",
                        outs, o0
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    if first.is_none() {
        return Err((key.to_owned(), "needs at least one branch".into()));
    }
    Ok(())
}

fn check_condition(key: &str, c: &Condition, scope: &Scope<'_>) -> Result<(), Invalid> {
    scope.check(&format!("{key}.value"), &c.value)?;
    let set = [
        c.equals.is_some(),
        c.not_equals.is_some(),
        c.one_of.is_some(),
        c.gt.is_some(),
        c.gte.is_some(),
        c.lt.is_some(),
        c.lte.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if set != 1 {
        return Err((
            key.to_owned(),
            "exactly one of equals, not_equals, in, gt, gte, lt, lte".into(),
        ));
    }
    Ok(())
}

impl PipelineSpec {
    /// Every check; the error names the key (below `pipelines.<name>`).
    pub fn validate(&self, name: &str) -> Result<(), (String, String)> {
        let base = format!("pipelines.{name}");
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err((base, "a pipeline name is letters, digits, - and _".into()));
        }
        if self.inputs.is_empty() {
            return Err((format!("{base}.inputs"), "at least one input".into()));
        }
        if self.steps.is_empty() {
            return Err((format!("{base}.steps"), "at least one step".into()));
        }
        let mut scope = Scope {
            inputs: &self.inputs,
            steps: BTreeMap::new(),
        };
        for (i, step) in self.steps.iter().enumerate() {
            let key = format!("{base}.steps[{i}]");
            let sname = step.name();
            if sname.is_empty() || sname == "request" || sname.contains('.') {
                return Err((
                    format!("{key}.name"),
                    "a step needs a name other than \"request\", without dots".into(),
                ));
            }
            if scope.steps.contains_key(sname) {
                return Err((format!("{key}.name"), format!("{sname:?} is used twice")));
            }
            match step {
                StepSpec::Parallel {
                    branches,
                    aggregate,
                    ..
                } => {
                    check_alike(
                        &key,
                        branches
                            .iter()
                            .enumerate()
                            .map(|(j, b)| (format!("{key}.branches[{j}]"), b)),
                        &scope,
                    )?;
                    let made = branches[0].outputs();
                    let aggregated: BTreeSet<String> = aggregate.keys().cloned().collect();
                    if made != aggregated {
                        return Err((
                            format!("{key}.aggregate"),
                            format!("must name each output of the branches once ({:?})", made),
                        ));
                    }
                }
                StepSpec::Switch { cases, default, .. } => {
                    for (j, c) in cases.iter().enumerate() {
                        check_condition(&format!("{key}.cases[{j}].when"), &c.when, &scope)?;
                    }
                    check_alike(
                        &key,
                        cases
                            .iter()
                            .enumerate()
                            .map(|(j, c)| (format!("{key}.cases[{j}].step"), &c.step))
                            .chain(default.iter().map(|d| (format!("{key}.default"), &**d))),
                        &scope,
                    )?;
                }
                StepSpec::Split { arms, .. } => {
                    check_alike(
                        &key,
                        arms.iter()
                            .enumerate()
                            .map(|(j, a)| (format!("{key}.arms[{j}].step"), &a.step)),
                        &scope,
                    )?;
                    for (j, a) in arms.iter().enumerate() {
                        if a.weight == 0 {
                            return Err((
                                format!("{key}.arms[{j}].weight"),
                                "must be at least 1".into(),
                            ));
                        }
                    }
                }
                leaf => check_leaf(&key, leaf, &scope)?,
            }
            scope.steps.insert(sname, step.outputs());
        }
        if self.outputs.is_empty() {
            return Err((format!("{base}.outputs"), "at least one output".into()));
        }
        for (o, r) in &self.outputs {
            scope.check(&format!("{base}.outputs.{o}"), r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> BTreeMap<String, PipelineSpec> {
        #[derive(Deserialize)]
        struct Doc {
            pipelines: BTreeMap<String, PipelineSpec>,
        }
        let c = config::Config::builder()
            .add_source(config::File::from_str(toml_text, config::FileFormat::Toml))
            .build()
            .expect("toml");
        c.try_deserialize::<Doc>().expect("shape").pipelines
    }

    const GOOD: &str = r#"
        [pipelines.sentiment]
        inputs = ["text"]
        outputs = { label = "ab.label", ensemble = "vote.label" }

        [[pipelines.sentiment.steps]]
        kind = "embed"
        name = "embed"
        input = "request.text"

        [[pipelines.sentiment.steps]]
        kind = "split"
        name = "ab"
        arms = [
          { weight = 90, step = { kind = "infer", model = "clf", version = "1", inputs = { input = "embed.embedding" }, outputs = ["label"] } },
          { weight = 10, name = "v2", step = { kind = "infer", model = "clf", version = "2", inputs = { input = "embed.embedding" }, outputs = ["label"], fallback = { model = "clf", version = "1" } } },
        ]

        [[pipelines.sentiment.steps]]
        kind = "parallel"
        name = "vote"
        aggregate = { label = "majority" }
        branches = [
          { kind = "infer", model = "a", inputs = { input = "embed.embedding" }, outputs = ["label"] },
          { kind = "infer", model = "b", inputs = { input = "embed.embedding" }, outputs = ["label"], timeout_ms = 50 },
        ]
    "#;

    #[test]
    fn a_full_pipeline_loads_and_validates() {
        let p = parse(GOOD);
        p["sentiment"].validate("sentiment").expect("valid");
        assert_eq!(p["sentiment"].steps.len(), 3);
    }

    #[test]
    fn bad_references_and_shapes_name_their_key() {
        for (from, to, key) in [
            (
                "input = \"request.text\"",
                "input = \"request.txt\"",
                "pipelines.sentiment.steps[0].input",
            ),
            (
                "outputs = { label = \"ab.label\"",
                "outputs = { label = \"ab.labels\"",
                "pipelines.sentiment.outputs.label",
            ),
            (
                "aggregate = { label = \"majority\" }",
                "aggregate = { probs = \"mean\" }",
                "pipelines.sentiment.steps[2].aggregate",
            ),
            (
                "{ weight = 10, name = \"v2\"",
                "{ weight = 0, name = \"v2\"",
                "pipelines.sentiment.steps[1].arms[1].weight",
            ),
            (
                "outputs = [\"label\"], timeout_ms = 50",
                "outputs = [\"label\", \"p\"], timeout_ms = 50",
                "pipelines.sentiment.steps[2].branches[1]",
            ),
            (
                "inputs = { input = \"embed.embedding\" }, outputs = [\"label\"] },\n          { kind = \"infer\", model = \"b\"",
                "inputs = { input = \"vote.label\" }, outputs = [\"label\"] },\n          { kind = \"infer\", model = \"b\"",
                "pipelines.sentiment.steps[2].branches[0].inputs.input",
            ),
        ] {
            let text = GOOD.replace(from, to);
            assert_ne!(text, GOOD, "{from}");
            let p = parse(&text);
            let (k, why) = p["sentiment"].validate("sentiment").expect_err(key);
            assert_eq!(k, key, "{why}");
        }
    }
}
