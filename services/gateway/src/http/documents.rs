//! Documents, search and RAG retrieval over HTTP/JSON:
//! `/v1/collections/{name}/documents|search|browse` and `/v1/rag/query`,
//! including the JSON form of search filters. Collections themselves:
//! `super::collections`.

#![allow(clippy::result_large_err)]

use axum::{
    extract::{Path, Request, State},
    response::Response,
};
use mlmesh_proto::{gateway::v1 as gw, json, vector::v1 as vec};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::{
    App,
    collections::{ChunkingJson, chunking_pb},
    err, handle_json, invalid, ok, usage,
};
use crate::core::{found_by_json, search_mode};

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
    /// Answer as server-sent events, one per stored document.
    #[serde(default)]
    stream: bool,
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
    /// `dense`, `sparse` or `hybrid`.
    #[serde(default)]
    mode: Option<String>,
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
    #[serde(default)]
    mode: Option<String>,
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
        "found_by": found_by_json(&h.found_by),
    })
}

pub(super) async fn ingest(
    State(app): State<App>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
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
            if r.stream {
                return super::stream::ingest(
                    core,
                    name,
                    documents,
                    chunking_pb(r.chunking)?,
                    None,
                )
                .map_err(err);
            }
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

pub(super) async fn search(
    State(app): State<App>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
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
                        mode: search_mode("mode", r.mode.as_deref()).map_err(err)?,
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BrowseJson {
    #[serde(default)]
    filter: Option<Json>,
    #[serde(default = "default_browse")]
    limit: u32,
    /// The previous page's `next`.
    #[serde(default)]
    offset: Option<String>,
}

fn default_browse() -> u32 {
    20
}

/// `POST /v1/collections/{name}/browse`: a page of chunks in id order.
pub(super) async fn browse(
    State(app): State<App>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle_json(
        &app,
        "/v1/collections/{name}/browse",
        req,
        |core, deadline, r: BrowseJson| async move {
            let filter = r
                .filter
                .as_ref()
                .map(|f| filter_from_json("filter", f))
                .transpose()?;
            let (hits, next) = core
                .browse(&name, filter, r.limit, r.offset, deadline)
                .await
                .map_err(err)?;
            let chunks: Vec<Json> = hits.into_iter().map(hit_json).collect();
            ok(&json!({ "chunks": chunks, "next": next }))
        },
    )
    .await
}

pub(super) async fn rag_query(State(app): State<App>, req: Request) -> Response {
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
                        mode: search_mode("mode", r.mode.as_deref()).map_err(err)?,
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

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;

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
}
