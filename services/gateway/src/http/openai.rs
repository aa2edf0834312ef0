//! OpenAI-compatible routes: `POST /v1/embeddings` (OpenAI's embeddings
//! API, so its client libraries work unchanged), `GET /v1/models[/{id}]`
//! (every model of the mesh) and `POST /v1/similarity`.

#![allow(clippy::result_large_err)]

use axum::{
    extract::{Path, Request, State},
    http::HeaderMap,
    response::Response,
};
use base64::Engine as _;
use mlmesh_proto::embedding::v1 as emb;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{App, err, handle, handle_json, invalid, ok, usage};
use crate::{
    core::{ModelKind, ServedModel},
    error::GatewayError,
};

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

pub(super) async fn embeddings(State(app): State<App>, req: Request) -> Response {
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

pub(super) async fn similarity(State(app): State<App>, req: Request) -> Response {
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

fn model_json(m: ServedModel) -> Json {
    let detail = match m.kind {
        ModelKind::Embedding => json!({
            "service": m.kind.service(),
            "dimension": m.dimension,
            "default": m.is_default,
        }),
        ModelKind::Inference => json!({"service": m.kind.service(), "versions": m.versions}),
    };
    // `created` is not known to the services; 0 keeps OpenAI clients'
    // required integer.
    json!({
        "id": m.name,
        "object": "model",
        "created": 0,
        "owned_by": format!("mlmesh-{}", m.kind.service()),
        "mlmesh": detail,
    })
}

/// `GET /v1/models`: every model the mesh serves (OpenAI's list shape).
pub(super) async fn list_models(State(app): State<App>, headers: HeaderMap) -> Response {
    handle(&app, "/v1/models", &headers, |core, deadline| async move {
        let models = core.list_models(deadline).await.map_err(err)?;
        let data: Vec<Json> = models.into_iter().map(model_json).collect();
        ok(&json!({"object": "list", "data": data}))
    })
    .await
}

/// `GET /v1/models/{id}`: one model, or 404 `model_not_found`.
pub(super) async fn get_model(
    State(app): State<App>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    handle(
        &app,
        "/v1/models/{id}",
        &headers,
        |core, deadline| async move {
            let models = core.list_models(deadline).await.map_err(err)?;
            let served = models
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            match models.into_iter().find(|m| m.name == id) {
                Some(m) => ok(&model_json(m)),
                None => Err(err(GatewayError::ModelNotFound { model: id, served })),
            }
        },
    )
    .await
}
