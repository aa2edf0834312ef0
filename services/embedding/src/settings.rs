//! Typed settings of the embedding service (sections `[server]`,
//! `[telemetry]`, `[embedding]`), loaded by `mlmesh_runtime::settings::load`.

use std::path::PathBuf;

use mlmesh_runtime::{ServerSettings, SettingsError, TelemetrySettings, service::ServiceSettings};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Everything the embedding service can be told.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub embedding: EmbeddingSettings,
}

/// A model to serve: a name clients use and a folder in the
/// sentence-transformers layout (`model.onnx` or `onnx/model.onnx`,
/// `tokenizer.json`, `1_Pooling/config.json`, `sentence_bert_config.json`).
/// Written `name=path` in the environment, or a `{ name, path }` table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ModelSpecRepr", into = "ModelSpecRepr")]
pub struct ModelSpec {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
enum ModelSpecRepr {
    Short(String),
    Table { name: String, path: PathBuf },
}

impl TryFrom<ModelSpecRepr> for ModelSpec {
    type Error = String;
    fn try_from(r: ModelSpecRepr) -> Result<Self, String> {
        let (name, path) = match r {
            ModelSpecRepr::Table { name, path } => (name, path),
            ModelSpecRepr::Short(s) => {
                let (name, path) = s
                    .split_once('=')
                    .ok_or_else(|| format!("model {s:?} is not of the form name=path"))?;
                (name.trim().to_owned(), PathBuf::from(path.trim()))
            }
        };
        if name.is_empty() {
            return Err("a model's name is empty".into());
        }
        Ok(Self { name, path })
    }
}

impl From<ModelSpec> for ModelSpecRepr {
    fn from(m: ModelSpec) -> Self {
        ModelSpecRepr::Table {
            name: m.name,
            path: m.path,
        }
    }
}

/// Section `[embedding]`: models, batching and limits.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EmbeddingSettings {
    /// Models served by this process. Default: all-MiniLM-L6-v2 (int8) from
    /// the cache `make models` fills.
    pub models: Vec<ModelSpec>,
    /// Name of the model used when a request names none. Default: the first.
    pub default_model: Option<String>,
    /// Path of `libonnxruntime.so`. Unset: `ORT_DYLIB_PATH`, else the cache.
    pub ort_dylib_path: Option<PathBuf>,
    /// ONNX Runtime threads inside one model run.
    pub intra_op_threads: usize,
    /// Let ONNX Runtime's idle intra-op threads spin waiting for work:
    /// lower latency per run, CPU burnt while idle (docs/benchmarks.md, "Tuning").
    pub allow_spinning: bool,
    /// Return ONNX Runtime's unused arena memory once a model's worker has
    /// been idle for 250 ms after a large run (estimated over 32 MiB):
    /// bounds the resident set once a burst of large batches is over,
    /// without remapping it between runs under load or after every short
    /// text (docs/benchmarks.md, "Embeddings vs text-embeddings-inference").
    pub shrink_arena: bool,
    /// Use ONNX Runtime's CPU memory arena (false: allocate per run).
    pub cpu_arena: bool,
    /// Model runs in parallel per model (each its own session and thread).
    pub sessions_per_model: usize,
    /// Most inputs in one model run.
    pub max_batch_size: usize,
    /// Most tokens (inputs × longest input, padding included) in one run.
    pub max_batch_tokens: usize,
    /// Most memory one model run's activations may take, in MiB, estimated
    /// from the model's shape (attention grows with inputs × length²): the
    /// batcher runs fewer long inputs at a time to stay under it. Peak
    /// resident memory ≈ the idle process + sessions_per_model × this
    /// (docs/services.md, "Sizing a pod"). 0: no bound but max_batch_tokens.
    pub max_run_memory_mb: u64,
    /// Most inputs waiting or running per model; more → RESOURCE_EXHAUSTED.
    pub max_queued_inputs: usize,
    /// Most inputs in one client request.
    pub max_client_batch: usize,
    /// Most requests of one EmbedStream processed at once.
    pub stream_concurrency: usize,
}

/// Where `make models` puts things, relative to the repository root.
pub const DEFAULT_MODEL_DIR: &str = ".cache/mlmesh/models/all-MiniLM-L6-v2";
pub use mlmesh_onnx::DEFAULT_ORT_DYLIB;
pub const DEFAULT_MODEL_NAME: &str = "all-MiniLM-L6-v2";

impl Default for EmbeddingSettings {
    fn default() -> Self {
        Self {
            models: vec![ModelSpec {
                name: DEFAULT_MODEL_NAME.into(),
                path: DEFAULT_MODEL_DIR.into(),
            }],
            default_model: None,
            ort_dylib_path: None,
            // Measured on the 2-core CI machine: one session with two
            // intra-op threads beats two single-threaded sessions at
            // saturation and halves single-call latency (docs/benchmarks.md, "Tuning").
            intra_op_threads: 2,
            allow_spinning: false,
            shrink_arena: true,
            cpu_arena: true,
            sessions_per_model: 1,
            max_batch_size: 32,
            max_batch_tokens: 8192,
            max_run_memory_mb: 256,
            max_queued_inputs: 1024,
            max_client_batch: 64,
            stream_concurrency: 8,
        }
    }
}

impl EmbeddingSettings {
    /// The ONNX Runtime library to load.
    pub fn ort_dylib(&self) -> PathBuf {
        mlmesh_onnx::resolve_dylib(self.ort_dylib_path.as_deref())
    }

    /// Checks what the types cannot; errors name the key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        let bad = |key: &str, reason: String| {
            Err(SettingsError::Value {
                key: format!("embedding.{key}"),
                reason,
            })
        };
        if self.models.is_empty() {
            return bad("models", "at least one model is required".into());
        }
        let mut seen = std::collections::HashSet::new();
        for m in &self.models {
            if !seen.insert(&m.name) {
                return bad("models", format!("model name {:?} appears twice", m.name));
            }
        }
        if let Some(d) = &self.default_model
            && !self.models.iter().any(|m| &m.name == d)
        {
            return bad(
                "default_model",
                format!("{d:?} is not one of the configured models"),
            );
        }
        for (key, v) in [
            ("intra_op_threads", self.intra_op_threads),
            ("sessions_per_model", self.sessions_per_model),
            ("max_batch_size", self.max_batch_size),
            ("max_batch_tokens", self.max_batch_tokens),
            ("max_queued_inputs", self.max_queued_inputs),
            ("max_client_batch", self.max_client_batch),
            ("stream_concurrency", self.stream_concurrency),
        ] {
            if v == 0 {
                return bad(key, "must be at least 1".into());
            }
        }
        if self.max_client_batch > self.max_queued_inputs {
            return bad(
                "max_client_batch",
                format!(
                    "{} exceeds embedding.max_queued_inputs ({}): such a request could never be queued",
                    self.max_client_batch, self.max_queued_inputs
                ),
            );
        }
        Ok(())
    }
}

impl ServiceSettings for Settings {
    const LIST_KEYS: &'static [&'static str] = &["embedding.models"];

    mlmesh_runtime::common_sections!();

    fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.embedding.validate()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    use mlmesh_runtime::settings::env_of as env;

    #[test]
    fn models_from_env_as_name_equals_path() {
        let s = Settings::load(
            None,
            env(&[("MLMESH_EMBEDDING__MODELS", "a=/m/a,B-Model=/m/b")]),
        )
        .expect("valid");
        assert_eq!(s.embedding.models.len(), 2);
        assert_eq!(s.embedding.models[1].name, "B-Model");
        assert_eq!(s.embedding.models[1].path, PathBuf::from("/m/b"));
    }

    #[test]
    fn models_from_a_file_table() {
        let dir = std::env::temp_dir().join(format!("mlmesh-emb-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("e.toml");
        std::fs::write(
            &p,
            "[embedding]\nmax_batch_size = 8\n[[embedding.models]]\nname = \"x\"\npath = \"/x\"\n",
        )
        .expect("write");
        let s = Settings::load(Some(&p), HashMap::new()).expect("valid");
        assert_eq!(
            s.embedding.models,
            vec![ModelSpec {
                name: "x".into(),
                path: "/x".into()
            }]
        );
        assert_eq!(s.embedding.max_batch_size, 8);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn zero_and_inconsistent_limits_name_the_key() {
        let e = Settings::load(None, env(&[("MLMESH_EMBEDDING__MAX_BATCH_SIZE", "0")]))
            .expect_err("zero");
        assert!(e.to_string().contains("embedding.max_batch_size"), "{e}");
        let e = Settings::load(
            None,
            env(&[
                ("MLMESH_EMBEDDING__MAX_CLIENT_BATCH", "100"),
                ("MLMESH_EMBEDDING__MAX_QUEUED_INPUTS", "10"),
            ]),
        )
        .expect_err("inconsistent");
        assert!(e.to_string().contains("embedding.max_client_batch"), "{e}");
        let e = Settings::load(None, env(&[("MLMESH_EMBEDDING__DEFAULT_MODEL", "nope")]))
            .expect_err("unknown default");
        assert!(e.to_string().contains("embedding.default_model"), "{e}");
    }
}
