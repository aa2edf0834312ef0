//! Collections over HTTP/JSON: `/v1/collections[/{name}[/text-index]]`
//! (create, list, get, delete, add a text index in place) and the JSON
//! form of chunking settings, which ingest takes too.

#![allow(clippy::result_large_err)]

use axum::{
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};
use mlmesh_proto::{gateway::v1 as gw, vector::v1 as vec};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{App, err, handle, handle_json, invalid, json_response, ok};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChunkingJson {
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
    /// `bm25` (default) or `none`.
    #[serde(default)]
    text_index: Option<String>,
}

pub(super) fn chunking_pb(c: Option<ChunkingJson>) -> Result<Option<gw::Chunking>, Response> {
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
        "text_index": c.text_index().as_str_name().trim_start_matches("TEXT_INDEX_").to_ascii_lowercase(),
    })
}

pub(super) async fn create_collection(State(app): State<App>, req: Request) -> Response {
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
                        text_index: match r.text_index.as_deref() {
                            None | Some("") => vec::TextIndex::Unspecified,
                            Some("bm25") => vec::TextIndex::Bm25,
                            Some("none") => vec::TextIndex::None,
                            Some(other) => {
                                return Err(invalid(
                                    "text_index",
                                    format!("{other:?} is not bm25 or none"),
                                ));
                            }
                        }
                        .into(),
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

pub(super) async fn list_collections(State(app): State<App>, headers: HeaderMap) -> Response {
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

pub(super) async fn get_collection(
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

pub(super) async fn delete_collection(
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

/// `POST /v1/collections/{name}/text-index`: see the gateway proto's
/// AddTextIndex.
pub(super) async fn add_text_index(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    handle(
        &app,
        "/v1/collections/{name}/text-index",
        &headers,
        |core, deadline| async move {
            let r = core.add_text_index(&name, deadline).await.map_err(err)?;
            ok(&json!({
                "collection": r.collection.map(collection_json),
                "chunks_indexed": r.chunks_indexed,
                "chunks_without_text": r.chunks_without_text,
            }))
        },
    )
    .await
}
