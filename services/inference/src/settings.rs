//! Typed settings of the inference service (sections `[server]`,
//! `[telemetry]`, `[inference]`), loaded by `mlmesh_runtime::settings::load`.

use std::path::PathBuf;

use mlmesh_runtime::{ServerSettings, SettingsError, TelemetrySettings, service::ServiceSettings};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default gRPC port (beside embedding 50051, vector-search 50052, gateway
/// 50050) and Prometheus port.
pub const DEFAULT_GRPC_PORT: u16 = 50053;
pub const DEFAULT_METRICS_PORT: u16 = 9053;
/// The bundled demo models, relative to the repository root.
pub const DEFAULT_MODEL_REPOSITORY: &str = "services/inference/models";
pub use mlmesh_onnx::DEFAULT_ORT_DYLIB;

/// Everything the inference service can be told.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub inference: InferenceSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            // Tensors are large: 64 MiB requests by default (tonic's own
            // default is 4 MiB).
            server: ServerSettings {
                max_request_bytes: 64 * 1024 * 1024,
                ..ServerSettings::on_ports(DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT)
            },
            telemetry: TelemetrySettings::default(),
            inference: InferenceSettings::default(),
        }
    }
}

/// Section `[inference]`: the model repository, lifecycle and limits.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceSettings {
    /// A Triton-layout model repository: `<dir>/<model>/[config.pbtxt]`
    /// and numeric version folders. Default: the bundled demo models.
    pub model_repository: PathBuf,
    /// Models loaded at start; empty: every model in the repository.
    pub load_models: Vec<String>,
    /// Load a model that is not loaded when a request names it.
    pub load_on_demand: bool,
    /// Most memory (MB) loaded models may take together, measured at load;
    /// 0: no budget. Over it, the least recently used models that have no
    /// calls in flight and are not pinned are unloaded.
    pub memory_budget_mb: u64,
    /// Models never evicted by the memory budget.
    pub pinned_models: Vec<String>,
    /// Seconds between scans of the repository for new or changed versions
    /// (reloaded without downtime); 0: no polling.
    pub poll_interval_secs: u64,
    /// Path of `libonnxruntime.so`. Unset: `ORT_DYLIB_PATH`, else the cache.
    pub ort_dylib_path: Option<PathBuf>,
    /// ONNX Runtime threads inside one model run.
    pub intra_op_threads: usize,
    /// Let ONNX Runtime's idle intra-op threads spin waiting for work
    /// (lower latency, CPU burnt while idle).
    pub allow_spinning: bool,
    /// Requests waiting per model version when the model's config sets no
    /// `max_queue_size`; more → RESOURCE_EXHAUSTED at once.
    pub max_queue_size: usize,
    /// Requests of one ModelStreamInfer processed at once.
    pub stream_concurrency: usize,
    /// Models served from the model registry, each
    /// `registry://<model>@<alias>` (follows the alias) or
    /// `registry://<model>@<version>` (a fixed version), optionally
    /// `… as <name>` to serve it under another name (a `candidate` beside
    /// `production`).
    pub registry_models: Vec<mlmesh_registry_client::Source>,
    /// The registry's gRPC address (`host:port`), needed by
    /// `registry_models`.
    pub registry_addr: String,
    /// TLS to the registry (`[inference.registry_tls]`): with `ca_file`
    /// set the follower dials `https://`, checks the registry's
    /// certificate for the host of `registry_addr`, and presents
    /// `cert_file` when the registry asks (mutual TLS).
    pub registry_tls: mlmesh_runtime::tls::ClientTlsSettings,
    /// A file holding a registry token (its `server.writer_token_file`),
    /// sent when the Validator service records evidence; empty: none (a
    /// registry with credentials then refuses the record, or admits this
    /// service's certificate by `server.tls.writer_identities`).
    pub registry_token_file: String,
    /// Validations (`mlmesh.validation.v1.Validator`) run at once; each
    /// starts an inference process per version it validates. 0: the
    /// Validator service is off.
    pub max_validations: usize,
    /// Where versions pulled from the registry are kept
    /// (`<dir>/models/<model>/<version>/`), verified by digest.
    pub registry_cache_dir: PathBuf,
    /// `max_batch_size` of a model without config.pbtxt whose inputs and
    /// outputs all have a variable first axis (Triton's autocomplete does
    /// the same); such models also get dynamic batching.
    pub default_max_batch_size: usize,
}

impl Default for InferenceSettings {
    fn default() -> Self {
        Self {
            model_repository: DEFAULT_MODEL_REPOSITORY.into(),
            load_models: Vec::new(),
            load_on_demand: true,
            memory_budget_mb: 0,
            pinned_models: Vec::new(),
            poll_interval_secs: 0,
            ort_dylib_path: None,
            intra_op_threads: 1,
            allow_spinning: false,
            max_queue_size: 1024,
            stream_concurrency: 16,
            default_max_batch_size: 64,
            registry_models: Vec::new(),
            registry_addr: String::new(),
            registry_tls: mlmesh_runtime::tls::ClientTlsSettings::default(),
            registry_token_file: String::new(),
            max_validations: 1,
            registry_cache_dir: PathBuf::from(".cache/mlmesh/inference-registry"),
        }
    }
}

impl InferenceSettings {
    /// The ONNX Runtime library to load.
    pub fn ort_dylib(&self) -> PathBuf {
        mlmesh_onnx::resolve_dylib(self.ort_dylib_path.as_deref())
    }

    /// Checks what the types cannot; errors name the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, reason: String| {
            Err(SettingsError::Value {
                key: format!("inference.{key}"),
                reason,
            })
        };
        if !self.model_repository.is_dir() {
            return bad(
                "model_repository",
                format!("{} is not a folder", self.model_repository.display()),
            );
        }
        if !self.registry_models.is_empty() && self.registry_addr.is_empty() {
            return bad(
                "registry_addr",
                "required by inference.registry_models (the registry's host:port)".into(),
            );
        }
        let mut served = std::collections::HashSet::new();
        if let Some(dup) = self
            .registry_models
            .iter()
            .find(|s| !served.insert(s.served_name()))
        {
            return bad(
                "registry_models",
                format!(
                    "two entries serve {:?}: give one another name with ` as <name>`",
                    dup.served_name()
                ),
            );
        }
        for (key, v) in [
            ("intra_op_threads", self.intra_op_threads),
            ("max_queue_size", self.max_queue_size),
            ("stream_concurrency", self.stream_concurrency),
            ("default_max_batch_size", self.default_max_batch_size),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        Ok(())
    }
}

impl ServiceSettings for Settings {
    const LIST_KEYS: &'static [&'static str] = &[
        "inference.load_models",
        "inference.pinned_models",
        "inference.registry_models",
    ];

    mlmesh_runtime::common_sections!();

    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.inference.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mlmesh_runtime::settings::env_of as env;

    #[test]
    fn lists_and_limits_from_env() {
        let dir = std::env::temp_dir();
        let s = Settings::load(
            None,
            env(&[
                (
                    "MLMESH_INFERENCE__MODEL_REPOSITORY",
                    dir.to_str().expect("utf-8"),
                ),
                ("MLMESH_INFERENCE__LOAD_MODELS", "a,b"),
                ("MLMESH_INFERENCE__MEMORY_BUDGET_MB", "64"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.inference.load_models, vec!["a", "b"]);
        assert_eq!(s.inference.memory_budget_mb, 64);
        assert_eq!(s.server.listen.port(), DEFAULT_GRPC_PORT);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load(
            None,
            env(&[("MLMESH_INFERENCE__MODEL_REPOSITORY", "/no/such/dir")]),
        )
        .expect_err("missing folder");
        assert!(e.to_string().contains("inference.model_repository"), "{e}");
        let e = Settings::load(
            None,
            env(&[
                ("MLMESH_INFERENCE__MODEL_REPOSITORY", "/"),
                ("MLMESH_INFERENCE__MAX_QUEUE_SIZE", "0"),
            ]),
        )
        .expect_err("zero");
        assert!(e.to_string().contains("inference.max_queue_size"), "{e}");
        let e = Settings::load(
            None,
            env(&[
                ("MLMESH_INFERENCE__MODEL_REPOSITORY", "/"),
                ("MLMESH_INFERENCE__REGISTRY_ADDR", "127.0.0.1:1"),
                (
                    "MLMESH_INFERENCE__REGISTRY_MODELS",
                    "registry://iris@production,iris@production",
                ),
            ]),
        )
        .expect_err("not a registry source");
        let e = e.to_string();
        assert!(e.contains("inference.registry_models"), "{e}");
        assert!(e.contains("registry://"), "{e}");
        let e = Settings::load(
            None,
            env(&[
                ("MLMESH_INFERENCE__MODEL_REPOSITORY", "/"),
                ("MLMESH_INFERENCE__REGISTRY_ADDR", "127.0.0.1:1"),
                (
                    "MLMESH_INFERENCE__REGISTRY_MODELS",
                    "registry://iris@production,registry://iris@candidate",
                ),
            ]),
        )
        .expect_err("two serve iris");
        assert!(e.to_string().contains("as <name>"), "{e}");
        Settings::load(
            None,
            env(&[
                ("MLMESH_INFERENCE__MODEL_REPOSITORY", "/"),
                ("MLMESH_INFERENCE__REGISTRY_ADDR", "127.0.0.1:1"),
                (
                    "MLMESH_INFERENCE__REGISTRY_MODELS",
                    "registry://iris@production,registry://iris@candidate as iris-candidate",
                ),
            ]),
        )
        .expect("a candidate beside production");
        let s = Settings::load(
            None,
            env(&[
                ("MLMESH_INFERENCE__MODEL_REPOSITORY", "/"),
                ("MLMESH_INFERENCE__REGISTRY_ADDR", "127.0.0.1:1"),
                ("MLMESH_INFERENCE__REGISTRY_MODELS", "registry://iris@3"),
            ]),
        )
        .expect("a source");
        assert_eq!(
            s.inference.registry_models[0].selector,
            mlmesh_registry_client::Selector::Version(3)
        );
    }
}
