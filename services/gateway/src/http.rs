//! The HTTP/JSON face of the gateway (axum), for people and tools that do
//! not speak gRPC. `POST /v1/embeddings` follows OpenAI's embeddings API so
//! its client libraries work unchanged; errors are
//! `{"error": {"message", "type", "code", "param"}}` with the HTTP status
//! matching the gRPC status the same failure gets over gRPC. A caller's
//! deadline comes in a `grpc-timeout` header, as grpc-gateway reads it.

// Handlers short-circuit with a finished error `Response` (`?`); boxing it
// would only add an allocation on the error path.
#![allow(clippy::result_large_err)]

use std::{future::Future, sync::Arc, time::Instant};

use axum::{
    Router,
    body::{Body, to_bytes},
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use base64::Engine as _;
use mlmesh_proto::{embedding::v1 as emb, gateway::v1 as gw, json, vector::v1 as vec};
use serde::{Deserialize, de::DeserializeOwned};
use serde_json::{Value as Json, json};
use tonic::Code;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{core::Core, error::GatewayError};

/// The HTTP status a gRPC code maps to (as grpc-gateway maps them).
pub fn status_of(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// OpenAI's error `type` for an HTTP status.
fn error_type(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 | 409 | 413 | 415 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable_error",
        504 => "timeout_error",
        _ => "server_error",
    }
}

fn json_response(status: StatusCode, body: &Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// An error answer in OpenAI's shape.
fn error_response(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Response {
    json_response(
        status,
        &json!({"error": {
            "message": message,
            "type": error_type(status),
            "code": code,
            "param": param,
        }}),
    )
}

fn gateway_error(e: &GatewayError) -> Response {
    let code = e.code();
    let name = if e.is_model_not_found() {
        "model_not_found".to_owned()
    } else {
        mlmesh_runtime::code_name(code).to_ascii_lowercase()
    };
    error_response(status_of(code), &name, &e.to_string(), e.field())
}

/// Reads a JSON body of at most `limit` bytes into `T`.
async fn read_json<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, Response> {
    let body = to_bytes(req.into_body(), limit).await.map_err(|_| {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request_too_large",
            &format!(
                "request body is larger than the limit of {limit} bytes (http.max_body_bytes)"
            ),
            None,
        )
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        error_response(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            &format!("invalid JSON body: {e}"),
            None,
        )
    })
}

#[derive(Clone)]
struct App {
    core: Arc<Core>,
}

/// Runs one API call: trace span (parented on the caller's `traceparent`),
/// admission, deadline, metrics, error mapping.
async fn handle<F, Fut>(app: &App, route: &'static str, headers: &HeaderMap, f: F) -> Response
where
    F: FnOnce(Arc<Core>, crate::downstream::Deadline) -> Fut,
    Fut: Future<Output = Result<Response, Response>>,
{
    let started = Instant::now();
    let span = tracing::info_span!(
        "http.server",
        otel.name = route,
        otel.kind = "server",
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(mlmesh_runtime::propagation::extract(headers));
    // HTTP callers may send a deadline as grpc-gateway reads it: a
    // `grpc-timeout` header (`500m`, `2S`).
    let caller = headers
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::grpc::parse_timeout);
    let core = Arc::clone(&app.core);
    let resp = async move {
        match core.admit() {
            Ok(_admitted) => {
                let deadline = core.deadline(caller);
                f(Arc::clone(&core), deadline).await.unwrap_or_else(|e| e)
            }
            Err(e) => gateway_error(&e),
        }
    }
    .instrument(span.clone())
    .await;
    span.record("http.response.status_code", resp.status().as_u16());
    let m = &app.core.metrics;
    m.requests
        .with_label_values(&["http", route, resp.status().as_str()])
        .inc();
    m.request_seconds
        .with_label_values(&["http", route])
        .observe(started.elapsed().as_secs_f64());
    resp
}

/// [`handle`] for a call with a JSON body of type `T`.
async fn handle_json<T, F, Fut>(app: &App, route: &'static str, req: Request, f: F) -> Response
where
    T: DeserializeOwned,
    F: FnOnce(Arc<Core>, crate::downstream::Deadline, T) -> Fut,
    Fut: Future<Output = Result<Response, Response>>,
{
    let headers = req.headers().clone();
    let limit = app.core.settings().http.max_body_bytes;
    handle(app, route, &headers, |core, deadline| async move {
        let body: T = read_json(req, limit).await?;
        f(core, deadline, body).await
    })
    .await
}

/// OpenAI's `usage` object (embeddings have no completion tokens).
fn usage(prompt_tokens: u64) -> Json {
    json!({"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens})
}

fn ok(v: &Json) -> Result<Response, Response> {
    Ok(json_response(StatusCode::OK, v))
}

fn err(e: GatewayError) -> Response {
    gateway_error(&e)
}

fn invalid(field: &str, reason: impl Into<String>) -> Response {
    err(GatewayError::invalid(field, reason))
}

// ---- JSON shapes ---------------------------------------------------------

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    // Token-id arrays (OpenAI accepts them); refused with a clear message.
    #[allow(dead_code)]
    Tokens(Vec<Json>),
}

/// OpenAI's embeddings request (unknown fields such as `user` are ignored,
/// as OpenAI clients send them).
#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: EmbeddingInput,
    #[serde(default)]
    model: String,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SimilarityRequest {
    source: String,
    texts: Vec<String>,
    #[serde(default)]
    model: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChunkingJson {
    #[serde(default)]
    unit: Option<String>,
    #[serde(default)]
    size: u32,
    #[serde(default)]
    overlap: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateCollectionJson {
    name: String,
    #[serde(default)]
    model: String,
    #[serde(default)]
    distance: Option<String>,
    #[serde(default)]
    chunking: Option<ChunkingJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentJson {
    #[serde(default)]
    id: String,
    text: String,
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Json>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DocumentsJson {
    documents: Vec<DocumentJson>,
    #[serde(default)]
    chunking: Option<ChunkingJson>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchJson {
    query: String,
    #[serde(default)]
    limit: u32,
    #[serde(default)]
    filter: Option<Json>,
    #[serde(default)]
    score_threshold: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RagJson {
    collection: String,
    query: String,
    #[serde(default)]
    top_k: u32,
    #[serde(default)]
    filter: Option<Json>,
    #[serde(default)]
    score_threshold: Option<f32>,
    #[serde(default)]
    max_context_chars: u32,
}

fn chunking_pb(c: Option<ChunkingJson>) -> Result<Option<gw::Chunking>, Response> {
    let Some(c) = c else { return Ok(None) };
    let unit = match c.unit.as_deref() {
        None | Some("") => gw::ChunkUnit::Unspecified,
        Some("tokens") => gw::ChunkUnit::Tokens,
        Some("characters") => gw::ChunkUnit::Characters,
        Some(other) => {
            return Err(invalid(
                "chunking.unit",
                format!("{other:?} is not \"tokens\" or \"characters\""),
            ));
        }
    };
    Ok(Some(gw::Chunking {
        unit: unit.into(),
        size: c.size,
        overlap: c.overlap,
    }))
}

/// A filter in JSON:
/// `{"must": [cond…], "should": [cond…], "must_not": [cond…]}` where a
/// condition is `{"key": k, "match": "text" | 12 | true}`,
/// `{"key": k, "range": {"gte": 1, "lt": 5}}`, `{"has_id": [chunk ids]}` or
/// a nested filter.
fn filter_from_json(field: &str, v: &Json) -> Result<vec::Filter, Response> {
    let Some(o) = v.as_object() else {
        return Err(invalid(
            field,
            "must be an object with must / should / must_not",
        ));
    };
    let mut f = vec::Filter::default();
    for (k, list) in o {
        let target = match k.as_str() {
            "must" => &mut f.must,
            "should" => &mut f.should,
            "must_not" => &mut f.must_not,
            other => {
                return Err(invalid(
                    &format!("{field}.{other}"),
                    "unknown clause; use must, should or must_not",
                ));
            }
        };
        let Some(items) = list.as_array() else {
            return Err(invalid(
                &format!("{field}.{k}"),
                "must be a list of conditions",
            ));
        };
        for (i, c) in items.iter().enumerate() {
            target.push(condition_from_json(&format!("{field}.{k}[{i}]"), c)?);
        }
    }
    Ok(f)
}

fn condition_from_json(field: &str, c: &Json) -> Result<vec::Condition, Response> {
    use vec::{condition::Condition as C, field_condition::Test};
    let Some(o) = c.as_object() else {
        return Err(invalid(field, "a condition must be an object"));
    };
    if ["must", "should", "must_not"]
        .iter()
        .any(|k| o.contains_key(*k))
    {
        return Ok(vec::Condition {
            condition: Some(C::Filter(filter_from_json(field, c)?)),
        });
    }
    if let Some(ids) = o.get("has_id") {
        let ids = ids
            .as_array()
            .ok_or_else(|| invalid(&format!("{field}.has_id"), "must be a list of chunk ids"))?
            .iter()
            .map(|id| match id {
                Json::String(s) => Ok(vec::PointId {
                    kind: Some(vec::point_id::Kind::Uuid(s.clone())),
                }),
                Json::Number(n) if n.as_u64().is_some() => Ok(vec::PointId {
                    kind: n.as_u64().map(vec::point_id::Kind::Num),
                }),
                _ => Err(invalid(
                    &format!("{field}.has_id"),
                    "ids are strings or unsigned integers",
                )),
            })
            .collect::<Result<_, _>>()?;
        return Ok(vec::Condition {
            condition: Some(C::HasId(vec::HasIdCondition { ids })),
        });
    }
    let key = o
        .get("key")
        .and_then(Json::as_str)
        .ok_or_else(|| {
            invalid(
                &format!("{field}.key"),
                "a metadata key (string) is required",
            )
        })?
        .to_owned();
    let test = if let Some(m) = o.get("match") {
        match m {
            Json::String(s) => Test::Keyword(s.clone()),
            Json::Bool(b) => Test::Boolean(*b),
            Json::Number(n) if n.as_i64().is_some() => {
                Test::Integer(n.as_i64().unwrap_or_default())
            }
            _ => {
                return Err(invalid(
                    &format!("{field}.match"),
                    "must be a string, an integer or a boolean",
                ));
            }
        }
    } else if let Some(r) = o.get("range") {
        let bound = |k: &str| -> Result<Option<f64>, Response> {
            match r.get(k) {
                None | Some(Json::Null) => Ok(None),
                Some(Json::Number(n)) => Ok(n.as_f64()),
                Some(_) => Err(invalid(&format!("{field}.range.{k}"), "must be a number")),
            }
        };
        Test::Range(vec::Range {
            gt: bound("gt")?,
            gte: bound("gte")?,
            lt: bound("lt")?,
            lte: bound("lte")?,
        })
    } else {
        return Err(invalid(
            field,
            "a condition needs `match` or `range` (or `has_id`, or nested clauses)",
        ));
    };
    Ok(vec::Condition {
        condition: Some(C::Field(vec::FieldCondition {
            key,
            test: Some(test),
        })),
    })
}

fn struct_json(s: Option<prost_types::Struct>) -> Json {
    s.and_then(|s| json::struct_to_json("metadata", s).ok())
        .map_or(Json::Null, Json::Object)
}

fn hit_json(h: gw::Hit) -> Json {
    json!({
        "chunk_id": h.chunk_id,
        "score": h.score,
        "document_id": h.document_id,
        "chunk_index": h.chunk_index,
        "text": h.text,
        "metadata": struct_json(h.metadata),
    })
}

fn collection_json(c: gw::Collection) -> Json {
    let chunking = c.chunking.unwrap_or_default();
    json!({
        "name": c.name,
        "model": c.model,
        "dimension": c.dimension,
        "distance": c.distance().as_str_name().to_ascii_lowercase(),
        "chunking": {
            "unit": match chunking.unit() {
                gw::ChunkUnit::Characters => "characters",
                _ => "tokens",
            },
            "size": chunking.size,
            "overlap": chunking.overlap,
        },
        "chunks_count": c.chunks_count,
        "status": c.status().as_str_name().trim_start_matches("INDEX_STATUS_").to_ascii_lowercase(),
    })
}

// ---- handlers ------------------------------------------------------------

async fn embeddings(State(app): State<App>, req: Request) -> Response {
    handle_json(
        &app,
        "/v1/embeddings",
        req,
        |core, deadline, r: EmbeddingsRequest| async move {
            let inputs = match r.input {
                EmbeddingInput::One(s) => vec![s],
                EmbeddingInput::Many(v) => v,
                EmbeddingInput::Tokens(_) => {
                    return Err(invalid(
                        "input",
                        "token arrays are not supported; send text",
                    ));
                }
            };
            let base64 = match r.encoding_format.as_deref() {
                None | Some("float") => false,
                Some("base64") => true,
                Some(other) => {
                    return Err(invalid(
                        "encoding_format",
                        format!("{other:?} is not \"float\" or \"base64\""),
                    ));
                }
            };
            let resp = core
                .embed(
                    emb::EmbedRequest {
                        inputs,
                        model: r.model,
                        dimensions: r.dimensions,
                        ..Default::default()
                    },
                    deadline,
                )
                .await
                .map_err(err)?;
            let data: Vec<Json> = resp
                .embeddings
                .into_iter()
                .enumerate()
                .map(|(i, e)| {
                    let embedding = if base64 {
                        let bytes: Vec<u8> =
                            e.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                        Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                    } else {
                        json!(e.values)
                    };
                    json!({"object": "embedding", "index": i, "embedding": embedding})
                })
                .collect();
            let tokens = resp.usage.map_or(0, |u| u.prompt_tokens);
            ok(&json!({
                "object": "list",
                "data": data,
                "model": resp.model,
                "usage": usage(tokens),
            }))
        },
    )
    .await
}

async fn similarity(State(app): State<App>, req: Request) -> Response {
    handle_json(
        &app,
        "/v1/similarity",
        req,
        |core, deadline, r: SimilarityRequest| async move {
            let resp = core
                .similarity(
                    emb::SimilarityRequest {
                        source: r.source,
                        texts: r.texts,
                        model: r.model,
                        ..Default::default()
                    },
                    deadline,
                )
                .await
                .map_err(err)?;
            let tokens = resp.usage.map_or(0, |u| u.prompt_tokens);
            ok(&json!({
                "scores": resp.scores,
                "model": resp.model,
                "usage": usage(tokens),
            }))
        },
    )
    .await
}

async fn create_collection(State(app): State<App>, req: Request) -> Response {
    handle_json(
        &app,
        "/v1/collections",
        req,
        |core, deadline, r: CreateCollectionJson| async move {
            let distance = match r.distance.as_deref() {
                None | Some("") => vec::Distance::Unspecified,
                Some(d) => {
                    vec::Distance::from_str_name(&d.to_ascii_uppercase()).ok_or_else(|| {
                        invalid("distance", format!("{d:?} is not cosine, dot or euclid"))
                    })?
                }
            };
            let c = core
                .create_collection(
                    gw::CreateCollectionRequest {
                        name: r.name,
                        model: r.model,
                        distance: distance.into(),
                        chunking: chunking_pb(r.chunking)?,
                    },
                    deadline,
                )
                .await
                .map_err(err)?;
            Ok(json_response(StatusCode::CREATED, &collection_json(c)))
        },
    )
    .await
}

async fn list_collections(State(app): State<App>, headers: HeaderMap) -> Response {
    handle(
        &app,
        "/v1/collections",
        &headers,
        |core, deadline| async move {
            let list = core.list_collections(deadline).await.map_err(err)?;
            let items: Vec<Json> = list.into_iter().map(collection_json).collect();
            ok(&json!({"collections": items}))
        },
    )
    .await
}

async fn get_collection(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    handle(
        &app,
        "/v1/collections/{name}",
        &headers,
        |core, deadline| async move {
            let c = core.get_collection(&name, deadline).await.map_err(err)?;
            ok(&collection_json(c))
        },
    )
    .await
}

async fn delete_collection(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    handle(
        &app,
        "/v1/collections/{name}",
        &headers,
        |core, deadline| async move {
            core.delete_collection(&name, deadline).await.map_err(err)?;
            ok(&json!({"deleted": name}))
        },
    )
    .await
}

async fn ingest(State(app): State<App>, Path(name): Path<String>, req: Request) -> Response {
    handle_json(
        &app,
        "/v1/collections/{name}/documents",
        req,
        |core, deadline, r: DocumentsJson| async move {
            let documents = r
                .documents
                .into_iter()
                .map(|d| gw::Document {
                    id: d.id,
                    text: d.text,
                    metadata: d.metadata.map(json::json_to_struct),
                })
                .collect();
            let resp = core
                .ingest(
                    gw::IngestRequest {
                        collection: name,
                        documents,
                        chunking: chunking_pb(r.chunking)?,
                    },
                    deadline,
                )
                .await
                .map_err(err)?;
            let docs: Vec<Json> = resp
                .documents
                .into_iter()
                .map(|d| json!({"id": d.id, "chunk_ids": d.chunk_ids}))
                .collect();
            ok(&json!({
                "documents": docs,
                "chunks": resp.chunks,
                "usage": usage(resp.prompt_tokens),
            }))
        },
    )
    .await
}

async fn search(State(app): State<App>, Path(name): Path<String>, req: Request) -> Response {
    handle_json(
        &app,
        "/v1/collections/{name}/search",
        req,
        |core, deadline, r: SearchJson| async move {
            let filter = r
                .filter
                .as_ref()
                .map(|f| filter_from_json("filter", f))
                .transpose()?;
            let resp = core
                .search(
                    gw::SearchRequest {
                        collection: name,
                        query: r.query,
                        limit: r.limit,
                        filter,
                        score_threshold: r.score_threshold,
                    },
                    deadline,
                )
                .await
                .map_err(err)?;
            let hits: Vec<Json> = resp.hits.into_iter().map(hit_json).collect();
            ok(&json!({
                "hits": hits,
                "timings": {"embed_us": resp.embed_us, "search_us": resp.search_us},
            }))
        },
    )
    .await
}

async fn rag_query(State(app): State<App>, req: Request) -> Response {
    handle_json(
        &app,
        "/v1/rag/query",
        req,
        |core, deadline, r: RagJson| async move {
            let filter = r
                .filter
                .as_ref()
                .map(|f| filter_from_json("filter", f))
                .transpose()?;
            let resp = core
                .rag_query(
                    gw::RagQueryRequest {
                        collection: r.collection,
                        query: r.query,
                        top_k: r.top_k,
                        filter,
                        score_threshold: r.score_threshold,
                        max_context_chars: r.max_context_chars,
                    },
                    deadline,
                )
                .await
                .map_err(err)?;
            let sources: Vec<Json> = resp
                .sources
                .into_iter()
                .map(|s| {
                    json!({
                        "document_id": s.document_id,
                        "score": s.score,
                        "metadata": struct_json(s.metadata),
                        "chunk_indexes": s.chunk_indexes,
                    })
                })
                .collect();
            let chunks: Vec<Json> = resp.chunks.into_iter().map(hit_json).collect();
            ok(&json!({
                "context": resp.context,
                "chunks": chunks,
                "used_chunks": resp.used_chunks,
                "sources": sources,
                "truncated": resp.truncated,
            }))
        },
    )
    .await
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn readyz(State(app): State<App>) -> Response {
    let checks = app.core.readiness().await;
    let mut services = serde_json::Map::new();
    let mut ready = true;
    for pool in app.core.pools() {
        let mine: Vec<_> = checks.iter().filter(|c| c.0 == pool.service()).collect();
        let any = mine.iter().any(|c| c.2 == "SERVING");
        ready &= any;
        services.insert(
            pool.service().to_owned(),
            json!({
                "ready": any,
                "replicas": mine.iter().map(|c| (c.1.clone(), Json::String(c.2.clone()))).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({"status": if ready { "ready" } else { "unavailable" }, "services": services}),
    )
}

async fn not_found(req: Request<Body>) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no route for {} {}", req.method(), req.uri().path()),
        None,
    )
}

/// The HTTP API's routes.
pub fn router(core: Arc<Core>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/similarity", post(similarity))
        .route(
            "/v1/collections",
            post(create_collection).get(list_collections),
        )
        .route(
            "/v1/collections/{name}",
            get(get_collection).delete(delete_collection),
        )
        .route("/v1/collections/{name}/documents", post(ingest))
        .route("/v1/collections/{name}/search", post(search))
        .route("/v1/rag/query", post(rag_query))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(App { core })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_filters_become_vector_filters_and_errors_name_the_field() {
        let f = json!({"must": [
            {"key": "lang", "match": "en"},
            {"key": "year", "range": {"gte": 2020}},
            {"should": [{"key": "draft", "match": false}]}
        ]});
        let pb = filter_from_json("filter", &f)
            .map_err(|_| "invalid")
            .expect("valid");
        assert_eq!(pb.must.len(), 3);
        let bad = json!({"must": [{"key": "lang"}]});
        let r = filter_from_json("filter", &bad).expect_err("no test");
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn codes_map_to_http_statuses() {
        assert_eq!(status_of(Code::InvalidArgument), StatusCode::BAD_REQUEST);
        assert_eq!(status_of(Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(Code::ResourceExhausted),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            status_of(Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status_of(Code::DeadlineExceeded),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
