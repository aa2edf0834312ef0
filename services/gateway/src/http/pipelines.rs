//! Pipelines over HTTP/JSON: `GET /v1/pipelines` and
//! `POST /v1/pipelines/{name}` with inputs as texts or
//! `{"datatype", "shape", "data"}` tensors.

#![allow(clippy::result_large_err)]

use axum::{
    extract::{Path, Request, State},
    http::HeaderMap,
    response::Response,
};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{App, err, handle, handle_json, ok};
use crate::json::{inputs_from_json, run_json};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RunJson {
    inputs: Map<String, Json>,
    #[serde(default)]
    sticky_key: String,
    /// Answer as server-sent events, one per row of `stream_over`.
    #[serde(default)]
    stream: bool,
    /// The input whose rows are run one by one (default: the first).
    #[serde(default)]
    stream_over: Option<String>,
}

pub(super) async fn list(State(app): State<App>, headers: HeaderMap) -> Response {
    handle(&app, "/v1/pipelines", &headers, |core, _| async move {
        let items: Vec<Json> = core
            .pipelines()
            .iter()
            .map(|(name, p)| {
                json!({
                    "name": name,
                    "description": p.description,
                    "inputs": p.inputs,
                    "outputs": p.outputs.keys().collect::<Vec<_>>(),
                    "steps": p.steps.iter().map(|s| s.name()).collect::<Vec<_>>(),
                })
            })
            .collect();
        ok(&json!({ "pipelines": items }))
    })
    .await
}

pub(super) async fn run(
    State(app): State<App>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    handle_json(
        &app,
        "/v1/pipelines/{name}",
        req,
        |core, deadline, r: RunJson| async move {
            let inputs =
                inputs_from_json(&r.inputs, &core.settings().limits.shapes()).map_err(err)?;
            if r.stream {
                return super::stream::pipeline(
                    core,
                    name,
                    inputs,
                    r.stream_over,
                    r.sticky_key,
                    None,
                )
                .map_err(err);
            }
            let run = core
                .run_pipeline(&name, inputs, &r.sticky_key, deadline)
                .await
                .map_err(err)?;
            ok(&run_json(&name, &run).map_err(err)?)
        },
    )
    .await
}
