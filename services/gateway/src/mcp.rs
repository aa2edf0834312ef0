//! The Model Context Protocol face: `POST /mcp` on the gateway's HTTP port
//! (Streamable HTTP, the official Rust SDK `rmcp`), so LLM agents call the
//! mesh as tools. The SDK speaks the current protocol revision (stateless)
//! and the older `initialize` handshake (sessions, kept per replica).
//!
//! Tools, each with input and output JSON schemas and structured results:
//! embed, search, rag_context, predict, run_pipeline, list_models,
//! list_collections. They are thin translations onto [`Core`], like the
//! other faces. A failure is a tool error (`isError: true` with the
//! message), never a transport error. The auth layer in front of the HTTP
//! router authenticates the caller; each tool checks its own scope.

use std::{sync::Arc, time::Instant};

use mlmesh_proto::{
    embedding::v1 as emb, gateway::v1 as gw, inference as pb,
    inference::model_infer_request::InferInputTensor,
};
use rmcp::{
    ErrorData, RoleServer, ServerHandler,
    model::{
        CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
        JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig,
        Tool,
    },
    service::RequestContext,
    transport::streamable_http_server::{
        StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
    },
};
use serde_json::{Map, Value as Json, json};
use tokio_util::sync::CancellationToken;

use crate::{
    auth::{self, Caller, Scope},
    core::{Core, ModelKind, found_by_json, search_mode},
    error::GatewayError,
    json::{inputs_from_json, run_json},
    settings::McpSettings,
    tensor::{self, Tensor},
};

/// The tower service mounted at `/mcp`.
pub type McpService = StreamableHttpService<Tools, LocalSessionManager>;

/// Builds the `/mcp` service; `stop` ends its sessions on shutdown.
pub fn service(core: Arc<Core>, settings: &McpSettings, stop: CancellationToken) -> McpService {
    let mut config =
        StreamableHttpServerConfig::default().with_allowed_hosts(settings.allowed_hosts.clone());
    config.allowed_origins = settings.allowed_origins.clone();
    config.cancellation_token = stop;
    config.max_request_body_bytes = core.settings().http.max_body_bytes;
    StreamableHttpService::new(
        move || {
            Ok(Tools {
                core: Arc::clone(&core),
            })
        },
        Arc::new(LocalSessionManager::default()),
        config,
    )
}

/// The gateway's tools.
#[derive(Clone)]
pub struct Tools {
    core: Arc<Core>,
}

fn schema(v: Json) -> Arc<JsonObject> {
    match v {
        Json::Object(o) => Arc::new(o),
        _ => Arc::new(Map::new()),
    }
}

fn object(properties: Json, required: &[&str]) -> Json {
    json!({"type": "object", "properties": properties, "required": required})
}

fn tensor_schema() -> Json {
    json!({"type": "object", "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "description": "FP32, INT64, BYTES, … (Open Inference Protocol)"},
        "shape": {"type": "array", "items": {"type": "integer"}},
        "data": {"type": "array", "description": "elements, row-major (flat or nested)"}
    }, "required": ["datatype", "shape", "data"]})
}

/// Every tool with its scope, built once.
fn catalog() -> &'static [(Tool, Scope)] {
    static CATALOG: std::sync::LazyLock<Vec<(Tool, Scope)>> =
        std::sync::LazyLock::new(build_catalog);
    &CATALOG
}

/// Every tool: name, scope, description, input and output schemas.
fn build_catalog() -> Vec<(Tool, Scope)> {
    let tool = |name: &'static str, desc: &'static str, input: Json, output: Json| {
        Tool::new(name, desc, schema(input)).with_raw_output_schema(schema(output))
    };
    let hit = json!({"type": "object", "properties": {
        "document_id": {"type": "string"}, "chunk_index": {"type": "integer"},
        "score": {"type": "number"}, "text": {"type": "string"},
        "found_by": {"type": "array", "items": {"type": "object", "properties": {
            "retriever": {"type": "string", "enum": ["dense", "sparse"]},
            "rank": {"type": "integer"}, "score": {"type": "number"}}}}}});
    let mode = json!({"type": "string", "enum": ["dense", "sparse", "hybrid"],
        "description": "retrievers: meaning (dense), words (sparse, BM25) or both fused (hybrid, the default where the collection has a text index)"});
    vec![
        (
            tool(
                "embed",
                "Embed texts into vectors with a sentence-embedding model of the mesh.",
                object(
                    json!({
                        "texts": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                        "model": {"type": "string", "description": "embedding model; omitted: the default"}
                    }),
                    &["texts"],
                ),
                object(
                    json!({
                        "model": {"type": "string"}, "dimension": {"type": "integer"},
                        "embeddings": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}
                    }),
                    &["model", "dimension", "embeddings"],
                ),
            ),
            Scope::Embed,
        ),
        (
            tool(
                "search",
                "Search a collection of documents: the chunks that best match the query by meaning and by its words (hybrid), each saying which retriever found it at what rank.",
                object(
                    json!({
                        "collection": {"type": "string"}, "query": {"type": "string"},
                        "limit": {"type": "integer", "minimum": 1},
                        "mode": mode
                    }),
                    &["collection", "query"],
                ),
                object(json!({"hits": {"type": "array", "items": hit}}), &["hits"]),
            ),
            Scope::Search,
        ),
        (
            tool(
                "rag_context",
                "Retrieval for answering a question: the best chunks of a collection assembled into a numbered, size-bounded context, with the documents it came from.",
                object(
                    json!({
                        "collection": {"type": "string"}, "query": {"type": "string"},
                        "top_k": {"type": "integer", "minimum": 1},
                        "max_context_chars": {"type": "integer", "minimum": 1},
                        "mode": mode
                    }),
                    &["collection", "query"],
                ),
                object(
                    json!({
                        "context": {"type": "string"}, "truncated": {"type": "boolean"},
                        "sources": {"type": "array", "items": {"type": "object", "properties": {
                            "document_id": {"type": "string"}, "score": {"type": "number"}}}}
                    }),
                    &["context", "sources", "truncated"],
                ),
            ),
            Scope::Search,
        ),
        (
            tool(
                "predict",
                "Run a model of the inference service on tensors (Open Inference Protocol).",
                object(
                    json!({
                        "model": {"type": "string"}, "version": {"type": "string"},
                        "inputs": {"type": "array", "items": tensor_schema(), "minItems": 1}
                    }),
                    &["model", "inputs"],
                ),
                object(
                    json!({
                        "model_name": {"type": "string"}, "model_version": {"type": "string"},
                        "outputs": {"type": "array", "items": tensor_schema()}
                    }),
                    &["model_name", "model_version", "outputs"],
                ),
            ),
            Scope::Predict,
        ),
        (
            tool(
                "run_pipeline",
                "Run a pipeline declared in the gateway (see list_models for models; pipelines are listed in this tool's errors when the name is wrong). Inputs by name: a text, a list of texts, or a tensor.",
                object(
                    json!({
                        "pipeline": {"type": "string"},
                        "inputs": {"type": "object", "additionalProperties": true},
                        "sticky_key": {"type": "string"}
                    }),
                    &["pipeline", "inputs"],
                ),
                object(
                    json!({
                        "pipeline": {"type": "string"},
                        "outputs": {"type": "object", "additionalProperties": tensor_schema()},
                        "steps": {"type": "array", "items": {"type": "object"}}
                    }),
                    &["pipeline", "outputs", "steps"],
                ),
            ),
            Scope::Predict,
        ),
        (
            tool(
                "list_models",
                "Every model the mesh serves: embedding models and inference models with their ready versions.",
                object(json!({}), &[]),
                object(
                    json!({"models": {"type": "array", "items": {"type": "object", "properties": {
                    "id": {"type": "string"}, "service": {"type": "string"},
                    "versions": {"type": "array", "items": {"type": "string"}},
                    "dimension": {"type": "integer"}}}}}),
                    &["models"],
                ),
            ),
            Scope::Predict,
        ),
        (
            tool(
                "list_collections",
                "The document collections available to search, with their embedding model and size.",
                object(json!({}), &[]),
                object(
                    json!({"collections": {"type": "array", "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "model": {"type": "string"},
                    "dimension": {"type": "integer"}, "chunks": {"type": "integer"}}}}}),
                    &["collections"],
                ),
            ),
            Scope::Search,
        ),
    ]
}

fn arg<'a>(args: &'a JsonObject, key: &str) -> Result<&'a Json, GatewayError> {
    args.get(key)
        .ok_or_else(|| GatewayError::invalid(key, "is required"))
}

fn string(args: &JsonObject, key: &str) -> Result<String, GatewayError> {
    arg(args, key)?
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| GatewayError::invalid(key, "must be a string"))
}

fn opt_string(args: &JsonObject, key: &str) -> Result<Option<String>, GatewayError> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(GatewayError::invalid(key, "must be a string")),
    }
}

fn uint(args: &JsonObject, key: &str) -> Result<u32, GatewayError> {
    match args.get(key) {
        None | Some(Json::Null) => Ok(0),
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| GatewayError::invalid(key, "must be a non-negative integer")),
    }
}

impl Tools {
    async fn run(&self, name: &str, args: JsonObject) -> Result<Json, GatewayError> {
        let core = &self.core;
        let _admitted = core.admit()?;
        let d = core.deadline(None);
        match name {
            "embed" => {
                let texts: Vec<String> = arg(&args, "texts")?
                    .as_array()
                    .and_then(|a| a.iter().map(|t| t.as_str().map(str::to_owned)).collect())
                    .ok_or_else(|| GatewayError::invalid("texts", "must be a list of strings"))?;
                let model = args.get("model").and_then(Json::as_str).unwrap_or_default();
                let r = core
                    .embed(
                        emb::EmbedRequest {
                            inputs: texts,
                            model: model.into(),
                            ..Default::default()
                        },
                        d,
                    )
                    .await?;
                let dim = r.embeddings.first().map_or(0, |e| e.values.len());
                Ok(json!({
                    "model": r.model, "dimension": dim,
                    "embeddings": r.embeddings.into_iter().map(|e| e.values).collect::<Vec<_>>(),
                }))
            }
            "search" => {
                let r = core
                    .search(
                        gw::SearchRequest {
                            collection: string(&args, "collection")?,
                            query: string(&args, "query")?,
                            limit: uint(&args, "limit")?,
                            mode: search_mode("mode", opt_string(&args, "mode")?.as_deref())?,
                            ..Default::default()
                        },
                        d,
                    )
                    .await?;
                Ok(json!({"hits": r.hits.into_iter().map(|h| json!({
                    "document_id": h.document_id, "chunk_index": h.chunk_index,
                    "score": h.score, "text": h.text,
                    "found_by": found_by_json(&h.found_by)})).collect::<Vec<_>>()}))
            }
            "rag_context" => {
                let r = core
                    .rag_query(
                        gw::RagQueryRequest {
                            collection: string(&args, "collection")?,
                            query: string(&args, "query")?,
                            top_k: uint(&args, "top_k")?,
                            max_context_chars: uint(&args, "max_context_chars")?,
                            mode: search_mode("mode", opt_string(&args, "mode")?.as_deref())?,
                            ..Default::default()
                        },
                        d,
                    )
                    .await?;
                Ok(json!({
                    "context": r.context, "truncated": r.truncated,
                    "sources": r.sources.into_iter().map(|s| json!({
                        "document_id": s.document_id, "score": s.score})).collect::<Vec<_>>(),
                }))
            }
            "predict" => {
                let inputs = arg(&args, "inputs")?
                    .as_array()
                    .ok_or_else(|| GatewayError::invalid("inputs", "must be a list of tensors"))?;
                let mut rq = pb::ModelInferRequest {
                    model_name: string(&args, "model")?,
                    model_version: args
                        .get("version")
                        .and_then(Json::as_str)
                        .unwrap_or_default()
                        .into(),
                    ..Default::default()
                };
                for (i, v) in inputs.iter().enumerate() {
                    let t = Tensor::from_json(
                        &format!("inputs[{i}]"),
                        v,
                        &core.settings().limits.shapes(),
                    )?;
                    let name = v.get("name").and_then(Json::as_str).ok_or_else(|| {
                        GatewayError::invalid(
                            format!("inputs[{i}].name"),
                            "a tensor name is required",
                        )
                    })?;
                    rq.inputs.push(InferInputTensor {
                        name: name.into(),
                        datatype: t.datatype.name().to_owned(),
                        shape: t.shape,
                        ..Default::default()
                    });
                    rq.raw_input_contents.push(t.raw);
                }
                let r = core.model_infer(rq, d).await?;
                let mut outputs = Vec::new();
                for (i, o) in r.outputs.iter().enumerate() {
                    let raw = r.raw_output_contents.get(i).cloned().unwrap_or_default();
                    let data = tensor::answer_values(&o.datatype, &raw, &o.name)?;
                    outputs.push(json!({"name": o.name, "datatype": o.datatype, "shape": o.shape, "data": data}));
                }
                Ok(
                    json!({"model_name": r.model_name, "model_version": r.model_version, "outputs": outputs}),
                )
            }
            "run_pipeline" => {
                let pipeline = string(&args, "pipeline")?;
                let inputs = arg(&args, "inputs")?.as_object().ok_or_else(|| {
                    GatewayError::invalid("inputs", "must be an object of named inputs")
                })?;
                let sticky = args
                    .get("sticky_key")
                    .and_then(Json::as_str)
                    .unwrap_or_default();
                let run = core
                    .run_pipeline(
                        &pipeline,
                        inputs_from_json(inputs, &core.settings().limits.shapes())?,
                        sticky,
                        d,
                    )
                    .await?;
                run_json(&pipeline, &run)
            }
            "list_models" => {
                let models = core.list_models(d).await?;
                Ok(json!({"models": models.into_iter().map(|m| match m.kind {
                    ModelKind::Embedding => json!({"id": m.name, "service": "embedding", "dimension": m.dimension}),
                    ModelKind::Inference => json!({"id": m.name, "service": "inference", "versions": m.versions}),
                }).collect::<Vec<_>>()}))
            }
            "list_collections" => {
                let list = core.list_collections(d).await?;
                Ok(json!({"collections": list.into_iter().map(|c| json!({
                    "name": c.name, "model": c.model, "dimension": c.dimension,
                    "chunks": c.chunks_count})).collect::<Vec<_>>()}))
            }
            other => Err(GatewayError::invalid("name", format!("no tool {other:?}"))),
        }
    }
}

/// The caller the auth layer put on the HTTP request, if any.
fn caller_of(ctx: &RequestContext<RoleServer>) -> Option<Arc<Caller>> {
    ctx.extensions
        .get::<http::request::Parts>()
        .and_then(|p| p.extensions.get::<Arc<Caller>>())
        .cloned()
}

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(
                Implementation::new("mlmesh-gateway", env!("CARGO_PKG_VERSION"))
                    .with_title("mlmesh")
                    .with_description("Embeddings, semantic search, RAG retrieval, model inference and pipelines of an mlmesh deployment."),
            )
            .with_instructions(
                "Tools of an ML serving mesh. Use list_collections then search or rag_context to find documents; list_models then predict to run a model; run_pipeline for a declared pipeline.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            catalog().iter().map(|(t, _)| t.clone()).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        catalog()
            .iter()
            .find(|(t, _)| t.name == name)
            .map(|(t, _)| t.clone())
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let started = Instant::now();
        let name = request.name.to_string();
        let Some((tool, scope)) = catalog().iter().find(|(t, _)| t.name == name) else {
            return Err(ErrorData::invalid_params(format!("no tool {name:?}"), None));
        };
        let caller = caller_of(&context);
        let result = match (&self.core.auth, &caller) {
            (Some(_), Some(c)) if !c.scopes.contains(scope) => {
                Err(GatewayError::Auth(auth::AuthError::PermissionDenied {
                    caller: c.name.clone(),
                    label: c.label.clone(),
                    scope: scope.as_str(),
                    has: c
                        .scopes
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }))
            }
            (Some(_), None) => Err(GatewayError::Auth(auth::AuthError::Unauthenticated(
                "no caller".into(),
            ))),
            (_, Some(c)) => {
                let args = request.arguments.unwrap_or_default();
                auth::scoped(Arc::clone(c), self.run(&name, args)).await
            }
            (None, None) => self.run(&name, request.arguments.unwrap_or_default()).await,
        };
        let code = result
            .as_ref()
            .map_or_else(GatewayError::code, |_| tonic::Code::Ok);
        // Tool names are a fixed set: a bounded label.
        let method: &str = &tool.name;
        self.core
            .metrics
            .call("mcp", method, mlmesh_runtime::code_name(code), started);
        Ok(match result {
            Ok(v) => CallToolResult::structured(v),
            // The status name leads, so an agent can tell a bad argument
            // from an outage.
            Err(e) => CallToolResult::error(vec![ContentBlock::text(format!(
                "{}: {e}",
                mlmesh_runtime::code_name(code)
            ))]),
        }
        .into())
    }
}
