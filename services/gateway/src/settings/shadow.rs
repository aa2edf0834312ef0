//! Section `[shadow]`: live traffic mirrored to a model version that does
//! not answer it. A rule names the primary model, the shadow (another
//! model, or a version of the same one), the share of calls sampled and
//! how the two answers are compared; the gateway never returns the
//! shadow's answer and never lets it slow or fail the primary call
//! (`core::shadow`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use mlmesh_runtime::SettingsError;

/// Most rules, and the most shadow calls in flight one gateway allows.
pub const MAX_RULES: usize = 32;
pub const MAX_SHADOW_IN_FLIGHT: usize = 1024;

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShadowSettings {
    /// Shadow calls in flight at once over every rule; a sampled call that
    /// finds none free is skipped (counted as `skipped`), never queued.
    pub max_in_flight: usize,
    /// Most milliseconds a shadow call may take (then it counts as an
    /// error of the shadow).
    pub timeout_ms: u64,
    /// The rules, `[[shadow.rules]]` tables in the settings file.
    pub rules: Vec<ShadowRule>,
}

impl Default for ShadowSettings {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            timeout_ms: 5000,
            rules: Vec::new(),
        }
    }
}

/// How a shadow's answer is compared with the primary's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Compare {
    /// Every element of every output (or of `output`) within
    /// `atol + rtol·|primary|`.
    #[default]
    Tensor,
    /// The index of the largest element of each row of `output` (a
    /// classifier's predicted class) is the same.
    Argmax,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShadowRule {
    /// The model callers name (ModelInfer's `model_name`).
    pub model: String,
    /// The model the sampled calls are sent to as well.
    pub shadow_model: String,
    /// Its version (empty: the one the inference service serves by
    /// default).
    #[serde(default)]
    pub shadow_version: String,
    /// Share of the primary's calls sent to the shadow, in (0, 1].
    pub fraction: f64,
    #[serde(default)]
    pub compare: Compare,
    /// The output compared (argmax: required; tensor: empty compares
    /// every output).
    #[serde(default)]
    pub output: String,
    #[serde(default = "default_tolerance")]
    pub atol: f64,
    #[serde(default = "default_tolerance")]
    pub rtol: f64,
}

fn default_tolerance() -> f64 {
    1e-5
}

fn invalid(key: String, reason: impl Into<String>) -> SettingsError {
    SettingsError::Value {
        key,
        reason: reason.into(),
    }
}

impl ShadowSettings {
    /// Checks values no type can express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.max_in_flight == 0 || self.max_in_flight > MAX_SHADOW_IN_FLIGHT {
            return Err(invalid(
                "shadow.max_in_flight".into(),
                format!("1 to {MAX_SHADOW_IN_FLIGHT}"),
            ));
        }
        if self.timeout_ms == 0 {
            return Err(invalid("shadow.timeout_ms".into(), "must be positive"));
        }
        if self.rules.len() > MAX_RULES {
            return Err(invalid(
                "shadow.rules".into(),
                format!("{} rules; at most {MAX_RULES}", self.rules.len()),
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            let key = |f: &str| format!("shadow.rules[{i}].{f}");
            if r.model.is_empty() || r.shadow_model.is_empty() {
                return Err(invalid(key("model"), "model and shadow_model are required"));
            }
            if r.model == r.shadow_model && r.shadow_version.is_empty() {
                return Err(invalid(
                    key("shadow_model"),
                    "a model cannot shadow itself: name another model or a shadow_version",
                ));
            }
            if !(r.fraction > 0.0 && r.fraction <= 1.0) {
                return Err(invalid(key("fraction"), "a share in (0, 1]"));
            }
            if !(r.atol.is_finite() && r.atol >= 0.0 && r.rtol.is_finite() && r.rtol >= 0.0) {
                return Err(invalid(key("atol"), "atol and rtol are finite and ≥ 0"));
            }
            if r.compare == Compare::Argmax && r.output.is_empty() {
                return Err(invalid(
                    key("output"),
                    "argmax compares one output: name it",
                ));
            }
            if self.rules[..i].iter().any(|o| o.model == r.model) {
                return Err(invalid(
                    key("model"),
                    format!(
                        "model {:?} has a rule already (one shadow per model)",
                        r.model
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ShadowRule {
        ShadowRule {
            model: "m".into(),
            shadow_model: "s".into(),
            shadow_version: String::new(),
            fraction: 0.1,
            compare: Compare::Tensor,
            output: String::new(),
            atol: 1e-5,
            rtol: 1e-5,
        }
    }

    #[test]
    fn bad_rules_name_their_key() {
        let ok = ShadowSettings {
            rules: vec![rule()],
            ..Default::default()
        };
        ok.validate().expect("a valid rule");
        type Spoil = fn(&mut ShadowSettings);
        let cases: [(&str, Spoil); 7] = [
            ("shadow.rules[0].fraction", |s| s.rules[0].fraction = 0.0),
            ("shadow.rules[0].fraction", |s| s.rules[0].fraction = 1.5),
            ("shadow.rules[0].atol", |s| s.rules[0].atol = f64::NAN),
            ("shadow.rules[0].output", |s| {
                s.rules[0].compare = Compare::Argmax
            }),
            ("shadow.rules[0].shadow_model", |s| {
                s.rules[0].shadow_model = "m".into()
            }),
            ("shadow.rules[1].model", |s| s.rules.push(rule())),
            ("shadow.max_in_flight", |s| s.max_in_flight = 0),
        ];
        for (key, spoil) in cases {
            let mut s = ok.clone();
            spoil(&mut s);
            let e = s.validate().expect_err(key).to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
