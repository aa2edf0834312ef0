//! The Open Inference Protocol's REST face (KServe v2 / Triton HTTP):
//! health, server and model metadata, readiness, and inference with JSON
//! tensors, translated to the inference service's gRPC calls.
//!
//! Tensors travel to the service as raw little-endian bytes
//! ([`crate::tensor`]); answers come back as flat row-major `data` lists
//! with their `shape`. Errors are `{"error": "<message>"}` as the protocol
//! says, with the HTTP status of the gRPC code.

#![allow(clippy::result_large_err)]

use axum::{
    Router,
    extract::{Path, Request, State},
    http::{HeaderMap, StatusCode},
    response::Response,
    routing::{get, post},
};
use mlmesh_proto::inference::{self as pb, infer_parameter::ParameterChoice};
use serde::Deserialize;
use serde_json::{Map, Value as Json, json};

use super::{App, handle_with, json_response, read_json, status_of};
use crate::{core::Core, downstream::Deadline, error::GatewayError, tensor};

fn oip_error(e: &GatewayError) -> Response {
    json_response(status_of(e.code()), &json!({"error": e.to_string()}))
}

fn fail(e: GatewayError) -> Response {
    oip_error(&e)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InputJson {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
    data: Json,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutputJson {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InferJson {
    #[serde(default)]
    id: String,
    #[serde(default)]
    parameters: Option<Map<String, Json>>,
    inputs: Vec<InputJson>,
    #[serde(default)]
    outputs: Vec<OutputJson>,
}

fn parameters_pb(
    field: &str,
    p: Option<Map<String, Json>>,
) -> Result<std::collections::HashMap<String, pb::InferParameter>, GatewayError> {
    p.unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            let choice = match &v {
                Json::Bool(b) => ParameterChoice::BoolParam(*b),
                Json::String(s) => ParameterChoice::StringParam(s.clone()),
                Json::Number(n) => {
                    if let Some(i) = n.as_i64() {
                        ParameterChoice::Int64Param(i)
                    } else if let Some(u) = n.as_u64() {
                        ParameterChoice::Uint64Param(u)
                    } else {
                        ParameterChoice::DoubleParam(n.as_f64().unwrap_or_default())
                    }
                }
                _ => {
                    return Err(GatewayError::invalid(
                        format!("{field}.{k}"),
                        "a parameter is a boolean, a number or a string",
                    ));
                }
            };
            Ok((
                k,
                pb::InferParameter {
                    parameter_choice: Some(choice),
                },
            ))
        })
        .collect()
}

fn parameters_json(p: std::collections::HashMap<String, pb::InferParameter>) -> Json {
    let mut out = Map::new();
    for (k, v) in p {
        let v = match v.parameter_choice {
            Some(ParameterChoice::BoolParam(b)) => json!(b),
            Some(ParameterChoice::Int64Param(i)) => json!(i),
            Some(ParameterChoice::Uint64Param(u)) => json!(u),
            Some(ParameterChoice::DoubleParam(d)) => json!(d),
            Some(ParameterChoice::StringParam(s)) => json!(s),
            None => Json::Null,
        };
        out.insert(k, v);
    }
    Json::Object(out)
}

/// A JSON inference request as the gRPC message (every input raw).
fn infer_request(
    model: String,
    version: String,
    r: InferJson,
    limits: &tensor::ShapeLimits,
) -> Result<pb::ModelInferRequest, GatewayError> {
    if r.inputs.is_empty() {
        return Err(GatewayError::invalid(
            "inputs",
            "at least one input is required",
        ));
    }
    let mut inputs = Vec::with_capacity(r.inputs.len());
    let mut raw = Vec::with_capacity(r.inputs.len());
    for (i, input) in r.inputs.into_iter().enumerate() {
        let field = format!("inputs[{i}]");
        let datatype = tensor::datatype(&input.datatype, &format!("{field}.datatype"))?;
        let count = limits.count(&input.shape, &format!("{field}.shape"))?;
        let leaves = tensor::flatten(&input.data);
        if leaves.len() != count {
            return Err(GatewayError::invalid(
                format!("{field}.data"),
                format!(
                    "{} elements where shape {:?} holds {count}",
                    leaves.len(),
                    input.shape
                ),
            ));
        }
        raw.push(tensor::to_raw(datatype, &leaves, &format!("{field}.data"))?);
        inputs.push(pb::model_infer_request::InferInputTensor {
            name: input.name,
            datatype: input.datatype,
            shape: input.shape,
            parameters: parameters_pb(&format!("{field}.parameters"), input.parameters)?,
            contents: None,
        });
    }
    let outputs = r
        .outputs
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            Ok(pb::model_infer_request::InferRequestedOutputTensor {
                name: o.name,
                parameters: parameters_pb(&format!("outputs[{i}].parameters"), o.parameters)?,
            })
        })
        .collect::<Result<_, GatewayError>>()?;
    Ok(pb::ModelInferRequest {
        model_name: model,
        model_version: version,
        id: r.id,
        parameters: parameters_pb("parameters", r.parameters)?,
        inputs,
        outputs,
        raw_input_contents: raw.into_iter().map(bytes::Bytes::from).collect(),
    })
}

/// The values of output `i`, from its raw bytes or its typed contents.
fn output_values(
    o: &pb::model_infer_response::InferOutputTensor,
    raw: Option<&bytes::Bytes>,
) -> Result<Vec<Json>, GatewayError> {
    if let Some(raw) = raw {
        return Ok(tensor::answer_values(
            &o.datatype,
            raw,
            &format!("output {:?}", o.name),
        )?);
    }
    let Some(c) = &o.contents else {
        return Ok(Vec::new());
    };
    let nums = |v: Vec<Json>| Ok(v);
    match o.datatype.as_str() {
        "BOOL" => nums(c.bool_contents.iter().map(|&b| json!(b)).collect()),
        "INT8" | "INT16" | "INT32" => nums(c.int_contents.iter().map(|&x| json!(x)).collect()),
        "INT64" => nums(c.int64_contents.iter().map(|&x| json!(x)).collect()),
        "UINT8" | "UINT16" | "UINT32" => nums(c.uint_contents.iter().map(|&x| json!(x)).collect()),
        "UINT64" => nums(c.uint64_contents.iter().map(|&x| json!(x)).collect()),
        "FP32" => nums(c.fp32_contents.iter().map(|&x| json!(x)).collect()),
        "FP64" => nums(c.fp64_contents.iter().map(|&x| json!(x)).collect()),
        _ => nums(
            c.bytes_contents
                .iter()
                .map(|b| json!(String::from_utf8_lossy(b)))
                .collect(),
        ),
    }
}

/// The gRPC answer as the protocol's JSON response.
fn infer_response(r: pb::ModelInferResponse) -> Result<Json, GatewayError> {
    let outputs = r
        .outputs
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let data = output_values(o, r.raw_output_contents.get(i))?;
            let mut v = json!({
                "name": o.name,
                "datatype": o.datatype,
                "shape": o.shape,
                "data": data,
            });
            if !o.parameters.is_empty() {
                v["parameters"] = parameters_json(o.parameters.clone());
            }
            Ok(v)
        })
        .collect::<Result<Vec<Json>, GatewayError>>()?;
    let mut v = json!({
        "model_name": r.model_name,
        "model_version": r.model_version,
        "id": r.id,
        "outputs": outputs,
    });
    if !r.parameters.is_empty() {
        v["parameters"] = parameters_json(r.parameters);
    }
    Ok(v)
}

fn tensor_metadata(t: &pb::model_metadata_response::TensorMetadata) -> Json {
    json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})
}

/// A boolean health answer: 200 when true, 400 when false (as the
/// protocol says: a 4xx status means false).
fn boolean(ok: bool) -> Response {
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    json_response(status, &json!({ "ready": ok }))
}

async fn run<F, Fut>(app: &App, route: &'static str, headers: &HeaderMap, f: F) -> Response
where
    F: FnOnce(std::sync::Arc<Core>, Deadline) -> Fut,
    Fut: Future<Output = Result<Response, GatewayError>>,
{
    handle_with(
        app,
        route,
        headers,
        oip_error,
        |core, deadline| async move { f(core, deadline).await.map_err(fail) },
    )
    .await
}

async fn server_metadata(State(app): State<App>, headers: HeaderMap) -> Response {
    run(&app, "/v2", &headers, |core, d| async move {
        let m = core.inference_server_metadata(d).await?;
        Ok(json_response(
            StatusCode::OK,
            &json!({"name": m.name, "version": m.version, "extensions": m.extensions}),
        ))
    })
    .await
}

async fn live(State(app): State<App>, headers: HeaderMap) -> Response {
    run(&app, "/v2/health/live", &headers, |core, d| async move {
        Ok(boolean(core.inference_server_ok(false, d).await?))
    })
    .await
}

async fn ready(State(app): State<App>, headers: HeaderMap) -> Response {
    run(&app, "/v2/health/ready", &headers, |core, d| async move {
        Ok(boolean(core.inference_server_ok(true, d).await?))
    })
    .await
}

async fn metadata(
    core: &Core,
    name: &str,
    version: &str,
    d: Deadline,
) -> Result<Response, GatewayError> {
    let m = core.model_metadata(name, version, d).await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "name": m.name,
            "versions": m.versions,
            "platform": m.platform,
            "inputs": m.inputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
            "outputs": m.outputs.iter().map(tensor_metadata).collect::<Vec<_>>(),
        }),
    ))
}

async fn model_metadata(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    run(&app, "/v2/models/{name}", &headers, |core, d| async move {
        metadata(&core, &name, "", d).await
    })
    .await
}

async fn version_metadata(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    run(
        &app,
        "/v2/models/{name}/versions/{version}",
        &headers,
        |core, d| async move { metadata(&core, &name, &version, d).await },
    )
    .await
}

async fn model_ready(
    State(app): State<App>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    run(
        &app,
        "/v2/models/{name}/ready",
        &headers,
        |core, d| async move { Ok(boolean(core.model_ready(&name, "", d).await?)) },
    )
    .await
}

async fn version_ready(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    run(
        &app,
        "/v2/models/{name}/versions/{version}/ready",
        &headers,
        |core, d| async move { Ok(boolean(core.model_ready(&name, &version, d).await?)) },
    )
    .await
}

async fn infer_route(
    app: App,
    route: &'static str,
    name: String,
    version: String,
    req: Request,
) -> Response {
    let headers = req.headers().clone();
    let limit = app.core.settings().http.max_body_bytes;
    handle_with(&app, route, &headers, oip_error, |core, d| async move {
        let body: InferJson = read_json(req, limit).await.map_err(|r| {
            // read_json answers in the OpenAI shape; keep its status, say
            // it the protocol's way.
            let status = r.status();
            json_response(
                status,
                &json!({"error": format!("invalid request body ({status})")}),
            )
        })?;
        let rq =
            infer_request(name, version, body, &core.settings().limits.shapes()).map_err(fail)?;
        let resp = core.model_infer(rq, d).await.map_err(fail)?;
        Ok(json_response(
            StatusCode::OK,
            &infer_response(resp).map_err(fail)?,
        ))
    })
    .await
}

async fn infer(State(app): State<App>, Path(name): Path<String>, req: Request) -> Response {
    infer_route(app, "/v2/models/{name}/infer", name, String::new(), req).await
}

async fn version_infer(
    State(app): State<App>,
    Path((name, version)): Path<(String, String)>,
    req: Request,
) -> Response {
    infer_route(
        app,
        "/v2/models/{name}/versions/{version}/infer",
        name,
        version,
        req,
    )
    .await
}

/// The protocol's routes.
/// `POST /v2/repository/models/{name}/load` and `…/unload` (Triton's
/// repository extension over HTTP): to every inference replica, with the
/// inference service's admin token; the caller needs `admin`. A body, if
/// any, is not read (no load parameters are supported over HTTP).
async fn repository(
    app: App,
    route: &'static str,
    name: String,
    load: bool,
    headers: HeaderMap,
) -> Response {
    handle_with(&app, route, &headers, oip_error, |core, d| async move {
        core.repository_action(&name, load, d).await.map_err(fail)?;
        Ok(json_response(StatusCode::OK, &json!({})))
    })
    .await
}

async fn load(State(app): State<App>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    repository(
        app,
        "/v2/repository/models/{name}/load",
        name,
        true,
        headers,
    )
    .await
}

async fn unload(State(app): State<App>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    repository(
        app,
        "/v2/repository/models/{name}/unload",
        name,
        false,
        headers,
    )
    .await
}

pub(super) fn routes() -> Router<App> {
    Router::new()
        .route("/v2/repository/models/{name}/load", post(load))
        .route("/v2/repository/models/{name}/unload", post(unload))
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .route("/v2/models/{name}", get(model_metadata))
        .route("/v2/models/{name}/ready", get(model_ready))
        .route("/v2/models/{name}/infer", post(infer))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(version_metadata),
        )
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(version_ready),
        )
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(version_infer),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: tensor::ShapeLimits = tensor::ShapeLimits::new(64, 1024);

    fn parse(v: Json) -> InferJson {
        serde_json::from_value(v).expect("shape")
    }

    #[test]
    fn json_requests_become_raw_tensors_and_errors_name_the_field() {
        let r = infer_request(
            "m".into(),
            "".into(),
            parse(json!({"inputs": [
                {"name": "x", "shape": [2, 2], "datatype": "FP32", "data": [[1, 2], [3, 4.5]]},
                {"name": "s", "shape": [1], "datatype": "BYTES", "data": ["hi"], "parameters": {"p": 3}}
            ]})),
            &LIMITS,
        )
        .expect("valid");
        assert_eq!(r.raw_input_contents[0].len(), 16);
        assert_eq!(
            r.raw_input_contents[1],
            [2u8, 0, 0, 0, b'h', b'i'].as_slice()
        );
        assert!(r.inputs[0].contents.is_none());
        let e = infer_request(
            "m".into(),
            "".into(),
            parse(json!({"inputs": [{"name": "x", "shape": [3], "datatype": "INT32", "data": [1, 2]}]})),
            &LIMITS,
        )
        .expect_err("count");
        assert!(e.to_string().contains("inputs[0].data"), "{e}");
        let e = infer_request("m".into(), "".into(), parse(json!({"inputs": []})), &LIMITS)
            .expect_err("none");
        assert!(e.to_string().contains("inputs"), "{e}");
        // An empty tensor may not declare a huge dimension.
        let e = infer_request(
            "m".into(),
            "".into(),
            parse(json!({"inputs": [{"name": "x", "shape": [1_000_000_000_000i64, 0], "datatype": "FP32", "data": []}]})),
            &LIMITS,
        )
        .expect_err("rows");
        assert!(
            e.to_string().contains("inputs[0].shape")
                && e.to_string().contains("limits.max_tensor_rows"),
            "{e}"
        );
    }

    #[test]
    fn raw_answers_become_json_tensors() {
        let resp = pb::ModelInferResponse {
            model_name: "m".into(),
            model_version: "2".into(),
            outputs: vec![pb::model_infer_response::InferOutputTensor {
                name: "y".into(),
                datatype: "INT64".into(),
                shape: vec![2],
                ..Default::default()
            }],
            raw_output_contents: vec![[7i64.to_le_bytes(), (-1i64).to_le_bytes()].concat().into()],
            ..Default::default()
        };
        let v = infer_response(resp).expect("decodes");
        assert_eq!(v["outputs"][0]["data"], json!([7, -1]));
        assert_eq!(v["model_version"], "2");
    }
}
