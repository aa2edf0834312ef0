//! Typed settings of the gateway (sections `[server]`, `[telemetry]`,
//! `[http]`, `[downstream]`, `[chunking]`, `[limits]`, `[rag]`, `[mcp]`,
//! `[pipelines.<name>]`; `[auth]` in `settings/auth.rs`, `[console]` in
//! `settings/console.rs`), loaded by
//! `mlmesh_runtime::settings::load`.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use mlmesh_runtime::{
    ServerSettings, SettingsError, TelemetrySettings, service::ServiceSettings, settings,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod auth;
pub mod console;
pub mod endpoint;
pub mod shadow;

pub use endpoint::Endpoint;

pub use auth::{ApiKey, AuthMode, AuthSettings, JwtSettings, Tier};

/// Default gRPC, `/metrics` and HTTP ports of the gateway.
pub const DEFAULT_GRPC_PORT: u16 = 50050;
pub const DEFAULT_METRICS_PORT: u16 = 9050;
pub const DEFAULT_HTTP_PORT: u16 = 8080;

/// Everything the gateway can be told.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Settings {
    pub server: ServerSettings,
    pub telemetry: TelemetrySettings,
    pub http: HttpSettings,
    pub downstream: DownstreamSettings,
    pub chunking: ChunkingSettings,
    pub limits: LimitSettings,
    pub rag: RagSettings,
    /// Pipelines by name, `[pipelines.<name>]` tables in the file (steps,
    /// branches, aggregation: docs/front-door.md).
    #[schemars(with = "BTreeMap<String, serde_json::Value>")]
    pub pipelines: BTreeMap<String, crate::pipeline::PipelineSpec>,
    pub auth: AuthSettings,
    pub mcp: McpSettings,
    /// Live calls mirrored to shadow models and compared
    /// (`[[shadow.rules]]` tables: docs/validation.md).
    pub shadow: shadow::ShadowSettings,
    /// The web console (`/ui`) and the mesh read APIs behind it.
    pub console: console::ConsoleSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            server: ServerSettings::on_ports(DEFAULT_GRPC_PORT, DEFAULT_METRICS_PORT),
            telemetry: TelemetrySettings::default(),
            http: HttpSettings::default(),
            downstream: DownstreamSettings::default(),
            chunking: ChunkingSettings::default(),
            limits: LimitSettings::default(),
            rag: RagSettings::default(),
            pipelines: BTreeMap::new(),
            auth: AuthSettings::default(),
            mcp: McpSettings::default(),
            shadow: shadow::ShadowSettings::default(),
            console: console::ConsoleSettings::default(),
        }
    }
}

/// Section `[http]`: the HTTP/JSON API.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSettings {
    /// Address of the HTTP/JSON API; `""` or `off` disables it.
    #[serde(deserialize_with = "settings::optional_addr")]
    pub listen: Option<SocketAddr>,
    /// Largest request body, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT))),
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}

/// How the gateway finds the replicas of the services it calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Discovery {
    /// Fixed addresses.
    #[default]
    Static,
    /// A Service's ready endpoints, from its EndpointSlices.
    Kubernetes,
}

/// Section `[downstream]`: where the services the gateway calls are, and
/// how it calls them.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct DownstreamSettings {
    /// Where the replica lists come from: `static` (the addresses below)
    /// or `kubernetes` (each entry below names a Service and its port,
    /// `mlmesh-embedding:grpc`, and the replicas are its ready endpoints,
    /// watched through the EndpointSlices API).
    pub discovery: Discovery,
    /// Embedding service replicas (`host:port` or `http://host:port`);
    /// calls are balanced across them.
    pub embedding: Vec<Endpoint>,
    /// Vector-search service replicas.
    pub vector_search: Vec<Endpoint>,
    /// Inference service replicas; empty when the mesh has none (its calls
    /// then answer UNAVAILABLE naming this key).
    pub inference: Vec<Endpoint>,
    /// Registry service replicas; empty when the console and the model
    /// APIs (`/v1/registry/...`) are not wanted (they then answer 501
    /// naming this key).
    pub registry: Vec<Endpoint>,
    /// `kubernetes` discovery: the Services' namespace; empty for this
    /// pod's own (its service account's), else `default`.
    pub namespace: String,
    /// `kubernetes` discovery: the API server's URL; empty for the pod's
    /// in-cluster configuration (or `KUBECONFIG` outside a cluster).
    pub kubernetes_api: String,
    /// Deadline of a gateway call whose caller sent none, in milliseconds.
    /// A caller's shorter deadline wins; a longer one is cut to this.
    pub request_timeout_ms: u64,
    /// TCP connect timeout per attempt, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Attempts per idempotent downstream call (the first included); a
    /// retry goes to another replica when there is one. Only UNAVAILABLE is
    /// retried.
    pub max_attempts: u32,
    /// A replica that answered UNAVAILABLE is skipped for this long (doubled
    /// on each further failure, up to 16×) while others are healthy.
    pub eject_ms: u64,
    /// A forwarded stream (`ModelStreamInfer`) whose caller sets no
    /// deadline ends after this, in seconds.
    pub stream_timeout_secs: u64,
    /// A forwarded stream with no answer for this long is ended with
    /// DEADLINE_EXCEEDED, in seconds.
    pub stream_idle_timeout_secs: u64,
    /// The inference service's admin token (its `server.admin_token_file`),
    /// sent with the model loads and unloads this gateway forwards once the
    /// caller's own admin scope is checked; empty: sent without one.
    pub admin_token_file: String,
    /// The registry's writer token (its `server.writer_token_file`), sent
    /// with the alias moves this gateway forwards once the caller's own
    /// `promote` scope is checked; an override of a policy needs the
    /// registry's admin token here instead. Empty: sent without one.
    pub registry_token_file: String,
    /// TLS to the services (`[downstream.tls]`): with `ca_file` set every
    /// call is TLS (mutual with `cert_file`/`key_file`), each server's
    /// certificate checked for the host dialled, or, with `kubernetes`
    /// discovery, for `<service>.<namespace>.svc`.
    pub tls: mlmesh_runtime::tls::ClientTlsSettings,
}

impl Default for DownstreamSettings {
    fn default() -> Self {
        Self {
            discovery: Discovery::Static,
            embedding: endpoint::endpoints(&["127.0.0.1:50051"]),
            vector_search: endpoint::endpoints(&["127.0.0.1:50052"]),
            inference: Vec::new(),
            registry: Vec::new(),
            namespace: String::new(),
            kubernetes_api: String::new(),
            request_timeout_ms: 30_000,
            connect_timeout_ms: 1_000,
            max_attempts: 3,
            eject_ms: 1_000,
            stream_timeout_secs: 3600,
            stream_idle_timeout_secs: 300,
            admin_token_file: String::new(),
            registry_token_file: String::new(),
            tls: mlmesh_runtime::tls::ClientTlsSettings::default(),
        }
    }
}

impl DownstreamSettings {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// How documents are cut into chunks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChunkUnit {
    /// Tokens of the collection's embedding model.
    #[default]
    Tokens,
    /// Unicode characters.
    Characters,
}

impl ChunkUnit {
    pub fn as_str(self) -> &'static str {
        match self {
            ChunkUnit::Tokens => "tokens",
            ChunkUnit::Characters => "characters",
        }
    }
}

/// Section `[chunking]`: defaults for collections created without their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ChunkingSettings {
    pub unit: ChunkUnit,
    /// Chunk length in `unit`s.
    pub size: u32,
    /// Units shared by consecutive chunks; less than `size`.
    pub overlap: u32,
}

impl Default for ChunkingSettings {
    fn default() -> Self {
        Self {
            unit: ChunkUnit::Tokens,
            size: 128,
            overlap: 16,
        }
    }
}

/// Section `[limits]`: what one request may ask of the gateway.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LimitSettings {
    /// Most documents in one Ingest.
    pub max_documents: usize,
    /// Largest document text, in bytes.
    pub max_document_bytes: usize,
    /// Most chunks one Ingest may produce, over all its documents.
    pub max_chunks: usize,
    /// Largest query text, in bytes.
    pub max_query_bytes: usize,
    /// Most hits a Search or RagQuery may ask for.
    pub max_top_k: u32,
    /// Gateway calls (gRPC and HTTP) served at once; more get
    /// RESOURCE_EXHAUSTED / 429 at once instead of queueing.
    pub max_in_flight: usize,
    /// Embedding calls one Ingest keeps in flight.
    pub ingest_concurrency: usize,
    /// Largest first (row) dimension of a tensor a client sends (OIP REST,
    /// pipelines, MCP): rows a streamed pipeline walks one by one.
    pub max_tensor_rows: usize,
    /// Largest product of a client tensor's dimensions (zeros counted as
    /// ones, so an empty tensor cannot declare a huge dimension).
    pub max_tensor_elements: usize,
}

impl LimitSettings {
    /// The shape limits every client tensor is checked against.
    pub fn shapes(&self) -> mlmesh_tensor::ShapeLimits {
        mlmesh_tensor::ShapeLimits::new(self.max_tensor_rows, self.max_tensor_elements)
    }
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            max_documents: 256,
            max_document_bytes: 1024 * 1024,
            max_chunks: 8192,
            max_query_bytes: 16 * 1024,
            max_top_k: 100,
            max_in_flight: 256,
            ingest_concurrency: 4,
            max_tensor_rows: 4096,
            max_tensor_elements: 16 * 1024 * 1024,
        }
    }
}

/// Section `[rag]`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RagSettings {
    /// Longest context a RagQuery assembles when the request does not say,
    /// in characters.
    pub max_context_chars: u32,
    /// Chunks a RagQuery retrieves when the request does not say.
    pub default_top_k: u32,
}

impl Default for RagSettings {
    fn default() -> Self {
        Self {
            max_context_chars: 4000,
            default_top_k: 5,
        }
    }
}

/// Section `[mcp]`: the Model Context Protocol endpoint (`/mcp` on the
/// HTTP port).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct McpSettings {
    pub enabled: bool,
    /// `Host` values accepted (DNS-rebinding protection): host names or
    /// `host:port`. Add the names clients use beyond loopback.
    pub allowed_hosts: Vec<String>,
    /// Browser `Origin`s accepted (`https://app.example.com:443`); empty:
    /// requests without an Origin only are checked by Host.
    pub allowed_origins: Vec<String>,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            allowed_hosts: vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            allowed_origins: Vec::new(),
        }
    }
}

fn invalid(key: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Value {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Settings {
    /// Checks values no type can express.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.server.validate()?;
        self.shadow.validate()?;
        self.console.validate()?;
        if !self.shadow.rules.is_empty() && self.downstream.inference.is_empty() {
            return Err(invalid(
                "shadow.rules",
                "shadows are inference calls: set downstream.inference",
            ));
        }
        let d = &self.downstream;
        for (key, list) in [
            ("downstream.embedding", &d.embedding),
            ("downstream.vector_search", &d.vector_search),
            ("downstream.inference", &d.inference),
            ("downstream.registry", &d.registry),
        ] {
            if list.is_empty() && key != "downstream.inference" && key != "downstream.registry" {
                return Err(invalid(key, "at least one address is required"));
            }
            if d.discovery == Discovery::Kubernetes && list.len() > 1 {
                return Err(invalid(
                    key,
                    "with kubernetes discovery, one Service (<service>:<port>) whose endpoints are the replicas",
                ));
            }
            for a in list {
                match d.discovery {
                    Discovery::Static => a.uri(!d.tls.ca_file.is_empty()).map(|_| ()),
                    Discovery::Kubernetes => {
                        mlmesh_discovery::Target::parse(a.as_str()).map(|_| ())
                    }
                }
                .map_err(|reason| invalid(key, reason))?;
            }
        }
        if d.max_attempts == 0 {
            return Err(invalid("downstream.max_attempts", "must be at least 1"));
        }
        if d.stream_timeout_secs == 0 || d.stream_idle_timeout_secs == 0 {
            return Err(invalid(
                "downstream.stream_timeout_secs",
                "downstream.stream_timeout_secs and downstream.stream_idle_timeout_secs must be positive",
            ));
        }
        if d.request_timeout_ms == 0 {
            return Err(invalid("downstream.request_timeout_ms", "must be positive"));
        }
        let c = &self.chunking;
        if c.size == 0 {
            return Err(invalid("chunking.size", "must be at least 1"));
        }
        if c.overlap >= c.size {
            return Err(invalid(
                "chunking.overlap",
                format!("{} must be less than chunking.size ({})", c.overlap, c.size),
            ));
        }
        let l = &self.limits;
        for (key, v) in [
            ("limits.max_documents", l.max_documents),
            ("limits.max_document_bytes", l.max_document_bytes),
            ("limits.max_chunks", l.max_chunks),
            ("limits.max_query_bytes", l.max_query_bytes),
            ("limits.max_top_k", l.max_top_k as usize),
            ("limits.max_in_flight", l.max_in_flight),
            ("limits.ingest_concurrency", l.ingest_concurrency),
            ("limits.max_tensor_rows", l.max_tensor_rows),
            ("limits.max_tensor_elements", l.max_tensor_elements),
        ] {
            if v == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.rag.default_top_k == 0 || self.rag.default_top_k > l.max_top_k {
            return Err(invalid(
                "rag.default_top_k",
                format!("must be 1 to limits.max_top_k ({})", l.max_top_k),
            ));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "below the minimum of 1024"));
        }
        for (name, p) in &self.pipelines {
            p.validate(name)
                .map_err(|(key, reason)| invalid(&key, reason))?;
        }
        Ok(())
    }

    /// Settings for tests: every listener on `127.0.0.1:0`, downstream
    /// services at the given addresses.
    pub fn for_tests(embedding: Vec<String>, vector_search: Vec<String>) -> Self {
        Self {
            server: ServerSettings::ephemeral(),
            http: HttpSettings {
                listen: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
                ..HttpSettings::default()
            },
            downstream: DownstreamSettings {
                embedding: embedding.iter().map(|a| test_endpoint(a)).collect(),
                vector_search: vector_search.iter().map(|a| test_endpoint(a)).collect(),
                ..DownstreamSettings::default()
            },
            ..Self::default()
        }
    }
}

/// A test's address, which must be one.
fn test_endpoint(a: &str) -> Endpoint {
    Endpoint::parse(a).unwrap_or_else(|e| panic!("a test's downstream address: {e}"))
}

impl ServiceSettings for Settings {
    const LIST_KEYS: &'static [&'static str] = &[
        "downstream.embedding",
        "downstream.vector_search",
        "downstream.inference",
        "downstream.registry",
        "mcp.allowed_hosts",
        "mcp.allowed_origins",
    ];

    mlmesh_runtime::common_sections!();

    fn validate(&self) -> Result<(), SettingsError> {
        Settings::validate(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use mlmesh_runtime::settings::env_of as env;

    #[test]
    fn endpoint_lists_come_from_the_environment() {
        let s = Settings::load(
            None,
            env(&[
                ("MLMESH_DOWNSTREAM__EMBEDDING", "10.0.0.1:1,http://e2:2"),
                ("MLMESH_CHUNKING__UNIT", "characters"),
            ]),
        )
        .expect("valid");
        assert_eq!(s.downstream.embedding, ["10.0.0.1:1", "http://e2:2"]);
        assert_eq!(s.downstream.vector_search, ["127.0.0.1:50052"]);
        assert_eq!(s.chunking.unit, ChunkUnit::Characters);
        assert_eq!(s.server.listen.port(), DEFAULT_GRPC_PORT);
    }

    #[test]
    fn bad_values_name_their_key() {
        for (k, v, key) in [
            ("MLMESH_CHUNKING__OVERLAP", "500", "chunking.overlap"),
            (
                "MLMESH_DOWNSTREAM__VECTOR_SEARCH",
                "not a uri",
                "downstream.vector_search",
            ),
            ("MLMESH_LIMITS__MAX_TOP_K", "0", "limits.max_top_k"),
            (
                "MLMESH_DOWNSTREAM__MAX_ATTEMPTS",
                "0",
                "downstream.max_attempts",
            ),
        ] {
            let e = Settings::load(None, env(&[(k, v)]))
                .expect_err(k)
                .to_string();
            assert!(e.contains(key), "{k}: {e}");
        }
    }

    #[test]
    fn kubernetes_discovery_takes_service_and_port_names() {
        let s = Settings::load(
            None,
            env(&[
                ("MLMESH_DOWNSTREAM__DISCOVERY", "kubernetes"),
                ("MLMESH_DOWNSTREAM__EMBEDDING", "mlmesh-embedding:grpc"),
                (
                    "MLMESH_DOWNSTREAM__VECTOR_SEARCH",
                    "mlmesh-vector-search:50052",
                ),
            ]),
        )
        .expect("valid");
        assert_eq!(s.downstream.discovery, Discovery::Kubernetes);
        let e = Settings::load(
            None,
            env(&[
                ("MLMESH_DOWNSTREAM__DISCOVERY", "kubernetes"),
                ("MLMESH_DOWNSTREAM__EMBEDDING", "http://10.0.0.1:50051"),
            ]),
        )
        .expect_err("an address is not a Service")
        .to_string();
        assert!(e.contains("downstream.embedding"), "{e}");
        let e = Settings::load(None, env(&[("MLMESH_DOWNSTREAM__DISCOVERY", "dns")]))
            .expect_err("unknown mode")
            .to_string();
        assert!(e.contains("discovery"), "{e}");
    }
}
