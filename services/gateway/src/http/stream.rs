//! Server-sent events for long calls (`"stream": true`): ingest reports
//! each document as its chunks are embedded and stored; a pipeline over a
//! list of inputs answers each input as it completes. Each ends with a
//! `done` event carrying the usage; a failure after the first byte is an
//! `error` event; idle streams carry keep-alive comments.
//!
//! The work runs inside the response body: when the client disconnects the
//! body is dropped, and with it every downstream call in flight (their
//! HTTP/2 streams are reset, so the services stop too). The call keeps its
//! admission slot and its caller (for limits and sticky splits) until then.

use std::{collections::HashMap, convert::Infallible, sync::Arc, time::Duration};

use axum::response::{
    IntoResponse as _, Response,
    sse::{Event, KeepAlive, Sse},
};
use futures::{Stream, StreamExt as _};
use mlmesh_proto::gateway::v1 as gw;
use serde_json::{Value as Json, json};

use crate::json::run_json;
use crate::{auth, core::Core, error::GatewayError, tensor::Tensor};

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(10);

fn error_data(index: Option<usize>, e: &GatewayError) -> Json {
    json!({"index": index, "error": {
        "message": e.to_string(),
        "code": mlmesh_runtime::code_name(e.code()),
        "param": e.field(),
    }})
}

fn sse(stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static) -> Response {
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
        .into_response()
}

/// Runs `f` as the current caller's work (limits, sticky arms), if any.
async fn as_caller<F: Future>(caller: Option<Arc<auth::Caller>>, f: F) -> F::Output {
    match caller {
        Some(c) => auth::scoped(c, f).await,
        None => f.await,
    }
}

/// Events from `items` (each turned into an event by `each`, which may
/// update `state`), then one made by `last` from the final `state`. Holds
/// `held` (the admission slot) until the stream ends or is dropped.
fn with_final<I, T, H>(
    items: I,
    state: T,
    held: H,
    each: impl FnMut(&mut T, I::Item) -> Event + Send + 'static,
    last: impl FnOnce(&T) -> Event + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static
where
    I: Stream + Send + Unpin + 'static,
    T: Send + 'static,
    H: Send + 'static,
{
    let start = (Some(items), state, Some(last), held, each);
    futures::stream::unfold(
        start,
        |(items, mut state, last, held, mut each)| async move {
            let mut items = items?;
            match items.next().await {
                Some(item) => {
                    let e = each(&mut state, item);
                    Some((Ok(e), (Some(items), state, last, held, each)))
                }
                None => {
                    let e = (last?)(&state);
                    Some((Ok(e), (None, state, None, held, each)))
                }
            }
        },
    )
}

fn named(name: &str, data: &Json) -> Event {
    Event::default().event(name).data(data.to_string())
}

#[derive(Default)]
struct Tally {
    done: usize,
    failed: usize,
    chunks: u64,
    tokens: u64,
}

/// `POST /v1/collections/{name}/documents` with `"stream": true`: one
/// `progress` event per document once its chunks are embedded and stored
/// (documents run `limits.ingest_concurrency` at a time), then `done`.
pub fn ingest(
    core: Arc<Core>,
    collection: String,
    documents: Vec<gw::Document>,
    chunking: Option<gw::Chunking>,
    caller_timeout: Option<Duration>,
) -> Result<Response, GatewayError> {
    // The whole request against the limits (count, sizes, duplicate ids)
    // before any document is stored; the chunk limit is shared by all of
    // them below.
    core.check_documents(&documents)?;
    let admitted = core.admit()?;
    let caller = auth::current_caller();
    let total = documents.len();
    let concurrency = core.settings().limits.ingest_concurrency;
    let budget = Arc::new(std::sync::atomic::AtomicUsize::new(
        core.settings().limits.max_chunks,
    ));
    let runs = futures::stream::iter(documents.into_iter().enumerate())
        .map(move |(i, d)| {
            let core = Arc::clone(&core);
            let budget = Arc::clone(&budget);
            let (collection, chunking, caller) = (collection.clone(), chunking, caller.clone());
            async move {
                let r = gw::IngestRequest {
                    collection,
                    documents: vec![d],
                    chunking,
                };
                let deadline = core.deadline(caller_timeout);
                let run = core.ingest_within(r, deadline, Some(&budget));
                (i, as_caller(caller, run).await)
            }
        })
        .buffer_unordered(concurrency)
        .boxed();
    let events = with_final(
        runs,
        Tally::default(),
        admitted,
        move |t, (i, r)| {
            t.done += 1;
            match r {
                Ok(resp) => {
                    t.chunks += resp.chunks;
                    t.tokens += resp.prompt_tokens;
                    let d = resp.documents.into_iter().next();
                    named(
                        "progress",
                        &json!({
                            "index": i,
                            "id": d.as_ref().map(|d| d.id.clone()),
                            "chunks": d.map_or(0, |d| d.chunk_ids.len()),
                            "done": t.done,
                            "total": total,
                        }),
                    )
                }
                Err(e) => {
                    t.failed += 1;
                    named("error", &error_data(Some(i), &e))
                }
            }
        },
        move |t| {
            named(
                "done",
                &json!({
                    "documents": t.done - t.failed,
                    "failed": t.failed,
                    "chunks": t.chunks,
                    "usage": {"prompt_tokens": t.tokens, "total_tokens": t.tokens},
                }),
            )
        },
    );
    Ok(sse(events))
}

/// A pipeline over a list: `over` (a request input) is cut along its first
/// dimension and the pipeline runs once per row, a few at a time; one
/// `result` event per row as it completes (with its `index`), then `done`.
pub fn pipeline(
    core: Arc<Core>,
    name: String,
    inputs: HashMap<String, Tensor>,
    over: Option<String>,
    sticky: String,
    caller_timeout: Option<Duration>,
) -> Result<Response, GatewayError> {
    let spec = core
        .pipelines()
        .get(&name)
        .ok_or_else(|| GatewayError::PipelineNotFound {
            name: name.clone(),
            declared: core
                .pipelines()
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    let over = over.unwrap_or_else(|| spec.inputs[0].clone());
    let list = inputs.get(&over).ok_or_else(|| {
        GatewayError::invalid(
            format!("inputs.{over}"),
            "the input to stream over is missing",
        )
    })?;
    let rows = list.rows(&format!("inputs.{over}"), &core.settings().limits.shapes())?;
    let admitted = core.admit()?;
    let caller = auth::current_caller();
    let total = rows.len();
    let concurrency = core.settings().limits.ingest_concurrency;
    let runs = futures::stream::iter(rows.into_iter().enumerate())
        .map(move |(i, row)| {
            let core = Arc::clone(&core);
            let mut inputs = inputs.clone();
            inputs.insert(over.clone(), row);
            let (name, sticky, caller) = (name.clone(), sticky.clone(), caller.clone());
            async move {
                let deadline = core.deadline(caller_timeout);
                let r =
                    as_caller(caller, core.run_pipeline(&name, inputs, &sticky, deadline)).await;
                (i, r.and_then(|run| run_json(&name, &run)))
            }
        })
        .buffer_unordered(concurrency)
        .boxed();
    let events = with_final(
        runs,
        Tally::default(),
        admitted,
        move |t, (i, r)| {
            t.done += 1;
            match r {
                Ok(mut v) => {
                    v["index"] = json!(i);
                    named("result", &v)
                }
                Err(e) => {
                    t.failed += 1;
                    named("error", &error_data(Some(i), &e))
                }
            }
        },
        move |t| {
            named(
                "done",
                &json!({"usage": {"inputs": total, "succeeded": t.done - t.failed, "failed": t.failed}}),
            )
        },
    );
    Ok(sse(events))
}
