//! Validation evidence and alias policies as the store keeps them: an
//! evidence record is written once and never changed; a policy says what
//! evidence an alias demands before it moves (checked by the gate in the
//! same transaction as the move, [`super::queries`]).

use serde::{Deserialize, Serialize};

/// A paired comparison with the version an alias pointed at.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NonInferiority {
    pub metric: String,
    pub against_version: i64,
    pub difference: f64,
    pub lower: f64,
    pub upper: f64,
    pub confidence: f64,
    pub margin: f64,
    pub samples: u64,
    pub detectable: f64,
    pub mcnemar_p: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckRecord {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    pub figures: Vec<(String, f64)>,
    pub non_inferiority: Option<NonInferiority>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Runner {
    pub cpu: String,
    pub cores: u32,
    pub os: String,
    pub onnxruntime: String,
    pub mlmesh: String,
    pub host: String,
}

/// What a run found, beyond the columns the gate selects on (kept as one
/// JSON document).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvidenceBody {
    pub suite_source: String,
    pub against_manifest_digest: String,
    pub checks: Vec<CheckRecord>,
    pub runner: Runner,
    pub duration_ms: u64,
    pub kind: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct EvidenceRecord {
    /// Given by the store (0 before it is recorded).
    pub id: i64,
    pub model: String,
    pub version: i64,
    pub manifest_digest: String,
    pub suite_digest: String,
    pub passed: bool,
    pub against_version: i64,
    pub recorded_ms: i64,
    pub body: EvidenceBody,
}

impl EvidenceRecord {
    /// The first check that did not pass, in words (for a refusal).
    pub fn first_failure(&self) -> Option<String> {
        self.body.checks.iter().find(|c| !c.passed).map(|c| {
            let mut s = format!("check {:?} failed", c.name);
            if let Some(n) = &c.non_inferiority {
                s.push_str(&format!(
                    " ({} difference {:+.4}, {:.0}% interval [{:+.4}, {:+.4}] over {} examples, margin {})",
                    n.metric,
                    n.difference,
                    n.confidence * 100.0,
                    n.lower,
                    n.upper,
                    n.samples,
                    n.margin
                ));
            }
            if !c.detail.is_empty() {
                s.push_str(": ");
                s.push_str(&c.detail);
            }
            s
        })
    }
}

/// What an alias demands of the version it moves to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyRecord {
    #[serde(skip)]
    pub model: String,
    #[serde(skip)]
    pub alias: String,
    pub suite_digest: String,
    pub suite_source: String,
    pub margin: Option<f64>,
    pub max_age_secs: u64,
    #[serde(skip)]
    pub updated_ms: i64,
}

/// How a move treats the alias's policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Enforce,
    /// Passes over the policy (the admin scope; recorded in the history).
    Override,
}
