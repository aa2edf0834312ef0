//! Section `[console]`: the web console at `/ui` and the read APIs it
//! uses (`/v1/mesh`, `/v1/mesh/events`, `/v1/mesh/history`).

use mlmesh_runtime::SettingsError;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest path prefix accepted (bytes).
const MAX_PREFIX: usize = 128;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ConsoleSettings {
    /// Serve the console at `/ui` and sample the mesh for it. Off: `/ui`
    /// and `/v1/mesh…` answer 404 and no replica is polled.
    pub enabled: bool,
    /// The path prefix an ingress puts before the gateway's routes
    /// (`/mlmesh` for `https://host/mlmesh/ui`), without a trailing
    /// slash; requests that arrive with it are served as if without it, so
    /// the ingress may strip it or not. Empty: none.
    pub path_prefix: String,
    /// How often every replica is asked for its status, in milliseconds.
    pub sample_interval_ms: u64,
    /// Samples kept per replica for the metrics history (at the default
    /// interval, 300 are ten minutes).
    pub history_samples: usize,
}

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            path_prefix: String::new(),
            sample_interval_ms: 2_000,
            history_samples: 300,
        }
    }
}

impl ConsoleSettings {
    pub fn validate(&self) -> Result<(), SettingsError> {
        let invalid = |key: &str, reason: String| SettingsError::Value {
            key: key.to_owned(),
            reason,
        };
        let p = &self.path_prefix;
        if !p.is_empty() {
            let ok_chars = p
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
            if !p.starts_with('/') || p.ends_with('/') || p.contains("//") || !ok_chars {
                return Err(invalid(
                    "console.path_prefix",
                    format!(
                        "{p:?}: a path like /mlmesh — starts with /, no trailing /, letters, digits and -._~ only"
                    ),
                ));
            }
            if p.len() > MAX_PREFIX {
                return Err(invalid(
                    "console.path_prefix",
                    format!("{} bytes; at most {MAX_PREFIX}", p.len()),
                ));
            }
        }
        if !(250..=60_000).contains(&self.sample_interval_ms) {
            return Err(invalid(
                "console.sample_interval_ms",
                format!("{}: between 250 and 60000", self.sample_interval_ms),
            ));
        }
        if !(2..=10_000).contains(&self.history_samples) {
            return Err(invalid(
                "console.history_samples",
                format!("{}: between 2 and 10000", self.history_samples),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_and_bounds_are_checked_naming_the_key() {
        assert!(ConsoleSettings::default().validate().is_ok());
        for bad in ["mlmesh", "/mlmesh/", "/a//b", "/a b", "/<x>"] {
            let s = ConsoleSettings {
                path_prefix: bad.into(),
                ..Default::default()
            };
            let e = s.validate().expect_err(bad).to_string();
            assert!(e.contains("console.path_prefix"), "{e}");
        }
        let ok = ConsoleSettings {
            path_prefix: "/team-a/mlmesh".into(),
            ..Default::default()
        };
        assert!(ok.validate().is_ok());
        let fast = ConsoleSettings {
            sample_interval_ms: 10,
            ..Default::default()
        };
        assert!(
            fast.validate()
                .expect_err("too fast")
                .to_string()
                .contains("console.sample_interval_ms")
        );
    }
}
