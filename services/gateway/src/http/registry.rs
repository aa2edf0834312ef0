//! The registry and the gateway's own records over HTTP/JSON — what the
//! console's Models and Access pages read, open to any client with the
//! scope:
//!
//! - `GET /v1/registry/models?prefix=&task=&tag=k=v&page_size=&page_token=`
//! - `GET /v1/registry/models/{model}?page_size=&page_token=` (the model,
//!   policies, a page of versions, recent alias moves, evidence)
//! - `GET /v1/registry/models/{model}/versions/{version}`
//! - `GET /v1/registry/models/{model}/aliases/{alias}/history`
//! - `POST /v1/registry/models/{model}/aliases/{alias}` —
//!   `{"version", "expected_version", "reason", "override"}`
//! - `POST /v1/registry/models/{model}/aliases/{alias}/rollback` —
//!   `{"expected_version", "reason", "override"}`
//! - `GET /v1/audit?before=&limit=`, `GET /v1/access` (admin)
//! - `GET /v1/serving`: every inference replica's models, memory, queues
//!   and batch sizes (`observe`)

#![allow(clippy::result_large_err)]

use axum::{
    Router,
    extract::{Path, Query, Request, State},
    http::HeaderMap,
    response::Response,
    routing::get,
};
use serde_json::json;

use super::{App, err, handle, handle_json, invalid, ok};
use crate::core::registry::{ModelQuery, MoveAlias, Page, Rollback};

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v1/registry/models", get(models))
        .route("/v1/registry/models/{model}", get(model))
        .route(
            "/v1/registry/models/{model}/versions/{version}",
            get(version),
        )
        .route(
            "/v1/registry/models/{model}/aliases/{alias}/history",
            get(history),
        )
        .route(
            "/v1/registry/models/{model}/aliases/{alias}",
            axum::routing::post(move_alias),
        )
        .route(
            "/v1/registry/models/{model}/aliases/{alias}/rollback",
            axum::routing::post(rollback),
        )
        .route("/v1/audit", get(audit))
        .route("/v1/access", get(access))
        .route("/v1/serving", get(serving))
}

/// A query string that does not parse is the caller's error, named.
fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, Response> {
    q.map(|Query(q)| q)
        .map_err(|e| invalid("query", e.body_text()))
}

async fn models(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<ModelQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    handle(
        &app,
        "/v1/registry/models",
        &headers,
        |core, d| async move {
            let q = query(q)?;
            ok(&core.registry_models(q, d).await.map_err(err)?)
        },
    )
    .await
}

async fn model(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    handle(
        &app,
        "/v1/registry/models/{model}",
        &headers,
        |core, d| async move {
            let q = query(q)?;
            ok(&core.registry_model(&name, q, d).await.map_err(err)?)
        },
    )
    .await
}

async fn version(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    handle(
        &app,
        "/v1/registry/models/{model}/versions/{version}",
        &headers,
        |core, d| async move {
            let v: i64 = version
                .parse()
                .map_err(|_| invalid("version", format!("{version:?} is not a number")))?;
            ok(&core.registry_version(&name, v, d).await.map_err(err)?)
        },
    )
    .await
}

async fn history(
    State(app): State<App>,
    Path((name, alias)): Path<(String, String)>,
    headers: HeaderMap,
    q: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
) -> Response {
    handle(
        &app,
        "/v1/registry/models/{model}/aliases/{alias}/history",
        &headers,
        |core, d| async move {
            let q = query(q)?;
            ok(&core
                .registry_alias_history(&name, &alias, q, d)
                .await
                .map_err(err)?)
        },
    )
    .await
}

async fn move_alias(
    State(app): State<App>,
    Path((name, alias)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle_json(
        &app,
        "/v1/registry/models/{model}/aliases/{alias}",
        req,
        |core, d, m: MoveAlias| async move {
            ok(&core.move_alias(&name, &alias, m, d).await.map_err(err)?)
        },
    )
    .await
}

async fn rollback(
    State(app): State<App>,
    Path((name, alias)): Path<(String, String)>,
    req: Request,
) -> Response {
    handle_json(
        &app,
        "/v1/registry/models/{model}/aliases/{alias}/rollback",
        req,
        |core, d, b: Rollback| async move {
            ok(&core
                .rollback_alias(&name, &alias, b, d)
                .await
                .map_err(err)?)
        },
    )
    .await
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    #[serde(default)]
    before: u64,
    #[serde(default)]
    limit: Option<usize>,
}

async fn audit(
    State(app): State<App>,
    headers: HeaderMap,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    handle(&app, "/v1/audit", &headers, |core, _| async move {
        let q = query(q)?;
        let limit = q.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(invalid(
                "limit",
                format!("{limit} is not between 1 and 1000"),
            ));
        }
        ok(&core.audit.page(q.before, limit))
    })
    .await
}

async fn access(State(app): State<App>, headers: HeaderMap) -> Response {
    handle(&app, "/v1/access", &headers, |core, _| async move {
        ok(&core.auth.as_ref().map_or_else(
            || json!({"authentication": false, "jwt": false, "callers": []}),
            |a| a.access(),
        ))
    })
    .await
}

async fn serving(State(app): State<App>, headers: HeaderMap) -> Response {
    handle(&app, "/v1/serving", &headers, |core, _| async move {
        ok(&core.serving().await.map_err(err)?)
    })
    .await
}
