//! A validation suite: the signature a model must have, examples (inputs
//! with expected outputs and/or labels), and the checks with their
//! tolerances. Written as JSON; parsed with every size bounded before
//! anything is kept, so a suite from the registry is input like any other.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Most examples in a suite.
pub const MAX_EXAMPLES: usize = 100_000;
/// Most checks in a suite.
pub const MAX_CHECKS: usize = 64;
/// Largest suite document, in bytes.
pub const MAX_SUITE_BYTES: usize = 256 << 20;

/// Why a suite is refused; names the field.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("suite: `{field}`: {reason}")]
    Invalid { field: String, reason: String },
    #[error("suite: not a suite document: {0}")]
    Json(#[from] serde_json::Error),
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> SuiteError {
    SuiteError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// One tensor of a signature: name, datatype (wire name) and shape, `-1`
/// for a variable dimension.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// A model's inputs and outputs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

/// One example: input tensors as the protocol's JSON
/// (`{"datatype", "shape", "data"}`), expected outputs (flat values) and,
/// for a classifier, the true label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    pub inputs: BTreeMap<String, serde_json::Value>,
    #[serde(default)]
    pub expected: BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    pub label: Option<i64>,
    /// A retrieval example (a query): the ids of the corpus documents it
    /// should find.
    #[serde(default)]
    pub relevant: Vec<String>,
}

/// A document of a retrieval suite's corpus.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub id: String,
    pub text: String,
}

/// Most documents in a corpus.
pub const MAX_CORPUS: usize = 100_000;

/// What is checked, with its tolerance.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// Every element of `output` within `atol + rtol·|expected|` of the
    /// example's expected values.
    Tensor {
        output: String,
        atol: f64,
        rtol: f64,
    },
    /// Cosine similarity of `output` to the expected vector at least `min`
    /// on every example (embeddings).
    Cosine { output: String, min: f64 },
    /// The predicted class (`argmax` of `output`, or its single value) is
    /// the label: accuracy at least `min`, and, against a champion, not
    /// worse by more than `margin` (paired bootstrap interval of the
    /// per-example difference, McNemar's test beside it).
    Accuracy {
        output: String,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        margin: Option<f64>,
        /// Top-k accuracy: right when the label is among the `top_k`
        /// largest values of `output` (default 1: the argmax).
        #[serde(default = "one")]
        top_k: usize,
    },
    /// Retrieval (embedding suites with a corpus): each example's text is
    /// a query; the `k` corpus documents nearest to it (cosine of the
    /// version's own vectors, exact search) should hold its `relevant`
    /// ids. Mean recall at least `min`, and, against a champion, not
    /// worse by more than `margin` (paired bootstrap interval of the
    /// per-query difference).
    Recall {
        k: usize,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        margin: Option<f64>,
    },
}

impl Check {
    /// The output the check reads.
    pub fn output(&self) -> &str {
        match self {
            Check::Tensor { output, .. }
            | Check::Cosine { output, .. }
            | Check::Accuracy { output, .. } => output,
            Check::Recall { .. } => "embedding",
        }
    }
}

fn one() -> usize {
    1
}

/// How intervals are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bootstrap {
    pub resamples: usize,
    pub confidence: f64,
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            resamples: 2000,
            confidence: 0.95,
            seed: 0,
        }
    }
}

/// A validation suite.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    pub name: String,
    #[serde(default)]
    pub signature: Option<Signature>,
    pub examples: Vec<Example>,
    pub checks: Vec<Check>,
    #[serde(default)]
    pub bootstrap: Bootstrap,
    /// What running the version may cost; none: nothing is measured.
    #[serde(default)]
    pub budgets: Option<Budgets>,
    /// A retrieval suite's documents (embedding suites; recall checks).
    #[serde(default)]
    pub corpus: Vec<Document>,
    /// What serves the version: the inference service (tensors in,
    /// tensors out) or the embedding service (a text in, its vector out as
    /// the output `embedding`).
    #[serde(default)]
    pub task: Task,
}

/// What kind of version a suite validates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// A model of the inference service: each example's `inputs` are
    /// tensors (`{"datatype", "shape", "data"}`) by input name.
    #[default]
    Inference,
    /// A model of the embedding service: each example's `inputs` is
    /// `{"text": "…"}`; its answer is the output `embedding`.
    Embedding,
}

/// Limits on what serving a version costs, measured by the validator on
/// the machine it runs on (with a champion, interleaved with it so drift
/// hits both).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Budgets {
    /// Most milliseconds from starting the serving process to ready.
    pub load_ms: Option<f64>,
    /// Most resident megabytes of the serving process once loaded.
    pub rss_mb: Option<f64>,
    /// Most p99 latency, in milliseconds, at `concurrency`.
    pub p99_ms: Option<f64>,
    /// Most candidate p99 as a multiple of the champion's.
    pub p99_ratio: Option<f64>,
    /// Calls in flight while latency is measured.
    pub concurrency: usize,
    /// Calls per version (in rounds alternating with the champion).
    pub requests: usize,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            load_ms: None,
            rss_mb: None,
            p99_ms: None,
            p99_ratio: None,
            concurrency: 4,
            requests: 200,
        }
    }
}

/// Most calls a latency budget makes per version, and most in flight.
pub const MAX_BUDGET_REQUESTS: usize = 20_000;
pub const MAX_BUDGET_CONCURRENCY: usize = 64;

impl Suite {
    /// Parses and checks a suite document.
    pub fn parse(bytes: &[u8]) -> Result<Self, SuiteError> {
        if bytes.len() > MAX_SUITE_BYTES {
            return Err(invalid(
                "(document)",
                format!("{} bytes; at most {MAX_SUITE_BYTES}", bytes.len()),
            ));
        }
        let suite: Suite = serde_json::from_slice(bytes)?;
        suite.check()?;
        Ok(suite)
    }

    fn check(&self) -> Result<(), SuiteError> {
        if self.examples.is_empty() || self.examples.len() > MAX_EXAMPLES {
            return Err(invalid(
                "examples",
                format!("{} examples; 1 to {MAX_EXAMPLES}", self.examples.len()),
            ));
        }
        if self.checks.is_empty() || self.checks.len() > MAX_CHECKS {
            return Err(invalid(
                "checks",
                format!("{} checks; 1 to {MAX_CHECKS}", self.checks.len()),
            ));
        }
        let b = &self.bootstrap;
        if !(b.confidence > 0.0 && b.confidence < 1.0) {
            return Err(invalid("bootstrap.confidence", "strictly between 0 and 1"));
        }
        if b.resamples == 0 || b.resamples > crate::MAX_RESAMPLES {
            return Err(invalid(
                "bootstrap.resamples",
                format!("1 to {}", crate::MAX_RESAMPLES),
            ));
        }
        if let Some(b) = &self.budgets {
            for (f, v) in [
                ("load_ms", b.load_ms),
                ("rss_mb", b.rss_mb),
                ("p99_ms", b.p99_ms),
                ("p99_ratio", b.p99_ratio),
            ] {
                if v.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(invalid(format!("budgets.{f}"), "a finite number above 0"));
                }
            }
            if !(1..=MAX_BUDGET_CONCURRENCY).contains(&b.concurrency) {
                return Err(invalid(
                    "budgets.concurrency",
                    format!("1 to {MAX_BUDGET_CONCURRENCY}"),
                ));
            }
            if !(1..=MAX_BUDGET_REQUESTS).contains(&b.requests) {
                return Err(invalid(
                    "budgets.requests",
                    format!("1 to {MAX_BUDGET_REQUESTS}"),
                ));
            }
        }
        if self.corpus.len() > MAX_CORPUS {
            return Err(invalid(
                "corpus",
                format!("{} documents; at most {MAX_CORPUS}", self.corpus.len()),
            ));
        }
        let ids: std::collections::HashSet<&str> =
            self.corpus.iter().map(|d| d.id.as_str()).collect();
        if ids.len() != self.corpus.len() {
            return Err(invalid("corpus", "document ids must be unique"));
        }
        if self.task == Task::Embedding {
            if let Some(j) = self
                .examples
                .iter()
                .position(|e| !e.inputs.get("text").is_some_and(|t| t.is_string()))
            {
                return Err(invalid(
                    format!("examples[{j}].inputs.text"),
                    "an embedding suite's example is a text",
                ));
            }
            if let Some(i) = self.checks.iter().position(|c| c.output() != "embedding") {
                return Err(invalid(
                    format!("checks[{i}].output"),
                    "an embedding suite checks the output \"embedding\"",
                ));
            }
        }
        for (i, c) in self.checks.iter().enumerate() {
            let field = |f: &str| format!("checks[{i}].{f}");
            let finite_non_negative = |v: f64| v.is_finite() && v >= 0.0;
            match c {
                Check::Tensor { atol, rtol, .. } => {
                    if !finite_non_negative(*atol) || !finite_non_negative(*rtol) {
                        return Err(invalid(field("atol"), "atol and rtol are finite and ≥ 0"));
                    }
                    self.need_expected(i, c.output())?;
                }
                Check::Cosine { min, .. } => {
                    if !(-1.0..=1.0).contains(min) {
                        return Err(invalid(field("min"), "a cosine between -1 and 1"));
                    }
                    self.need_expected(i, c.output())?;
                }
                Check::Recall { k, min, margin } => {
                    if self.task != Task::Embedding || self.corpus.is_empty() {
                        return Err(invalid(
                            field("kind"),
                            "recall needs an embedding suite with a corpus",
                        ));
                    }
                    if *k == 0 || *k > self.corpus.len() {
                        return Err(invalid(
                            field("k"),
                            format!("1 to the corpus size ({})", self.corpus.len()),
                        ));
                    }
                    if min.is_some_and(|m| !(0.0..=1.0).contains(&m))
                        || margin.is_some_and(|m| !(0.0..=1.0).contains(&m))
                    {
                        return Err(invalid(field("min"), "min and margin are between 0 and 1"));
                    }
                    for (j, e) in self.examples.iter().enumerate() {
                        if e.relevant.is_empty() {
                            return Err(invalid(
                                format!("examples[{j}].relevant"),
                                format!(
                                    "checks[{i}] (recall) needs the ids each query should find"
                                ),
                            ));
                        }
                        if let Some(id) = e.relevant.iter().find(|r| !ids.contains(r.as_str())) {
                            return Err(invalid(
                                format!("examples[{j}].relevant"),
                                format!("{id:?} is not a corpus document"),
                            ));
                        }
                    }
                }
                Check::Accuracy {
                    min, margin, top_k, ..
                } => {
                    if *top_k == 0 || *top_k > 1000 {
                        return Err(invalid(field("top_k"), "1 to 1000"));
                    }
                    if min.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                        return Err(invalid(field("min"), "an accuracy between 0 and 1"));
                    }
                    if margin.is_some_and(|m| !(0.0..=1.0).contains(&m)) {
                        return Err(invalid(field("margin"), "a margin between 0 and 1"));
                    }
                    if let Some(j) = self.examples.iter().position(|e| e.label.is_none()) {
                        return Err(invalid(
                            format!("examples[{j}].label"),
                            format!("checks[{i}] (accuracy) needs a label on every example"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    fn need_expected(&self, check: usize, output: &str) -> Result<(), SuiteError> {
        match self
            .examples
            .iter()
            .position(|e| !e.expected.contains_key(output))
        {
            Some(j) => Err(invalid(
                format!("examples[{j}].expected.{output}"),
                format!("checks[{check}] compares {output:?} with it"),
            )),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suites_are_checked_naming_the_field() {
        let ok =
            br#"{"name": "s", "examples": [{"inputs": {}, "expected": {"y": [1.0]}, "label": 1}],
            "checks": [{"kind": "tensor", "output": "y", "atol": 0.001, "rtol": 0.0},
                       {"kind": "accuracy", "output": "y", "min": 0.9, "margin": 0.01}]}"#;
        let s = Suite::parse(ok).expect("a suite");
        assert_eq!(s.bootstrap.resamples, 2000);
        assert_eq!(s.budgets, None);
        let with_budgets = br#"{"name": "s", "examples": [{"inputs": {}, "label": 0}],
            "checks": [{"kind": "accuracy", "output": "p"}], "budgets": {"p99_ms": 20}}"#;
        let b = Suite::parse(with_budgets)
            .expect("a suite")
            .budgets
            .expect("budgets");
        assert_eq!((b.p99_ms, b.concurrency, b.requests), (Some(20.0), 4, 200));
        for (doc, words) in [
            (r#"{"name": "s", "examples": [], "checks": []}"#, "examples"),
            (
                r#"{"name": "s", "examples": [{"inputs": {}}], "checks": [{"kind": "cosine", "output": "e", "min": 0.99}]}"#,
                "examples[0].expected.e",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}}], "checks": [{"kind": "accuracy", "output": "p"}]}"#,
                "examples[0].label",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}, "label": 0}], "checks": [{"kind": "accuracy", "output": "p", "margin": 2}]}"#,
                "checks[0].margin",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}}], "checks": [{"kind": "magic", "output": "p"}]}"#,
                "not a suite",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}, "label": 0}], "checks": [{"kind": "accuracy", "output": "p"}], "budgets": {"p99_ms": -1}}"#,
                "budgets.p99_ms",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}, "label": 0}], "checks": [{"kind": "accuracy", "output": "p"}], "budgets": {"concurrency": 1000}}"#,
                "budgets.concurrency",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}, "label": 0}], "checks": [{"kind": "accuracy", "output": "p"}], "budgets": {"requests": 0}}"#,
                "budgets.requests",
            ),
            (
                r#"{"name": "s", "examples": [{"inputs": {}, "label": 0}], "checks": [{"kind": "accuracy", "output": "p"}], "budgets": {"rss": 5}}"#,
                "rss",
            ),
        ] {
            let e = Suite::parse(doc.as_bytes()).expect_err(words);
            assert!(e.to_string().contains(words), "{e} lacks {words:?}");
        }
    }
}
