//! The gateway's inference faces over HTTP, against real processes
//! (inference, embedding, vector-search, gateway): the Open Inference
//! Protocol's REST API (`/v2/...`) with JSON tensors, compared with the
//! outputs onnxruntime computed for the same inputs
//! (`services/inference/tests/data/references.json`), its errors, and
//! `GET /v1/models` listing the models of both services.

use mlmesh_tests::{HttpClient, MeshProcesses, Service, repo_root};
use serde_json::{Value, json};

fn references() -> Value {
    let p = repo_root().join("services/inference/tests/data/references.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("references.json")).expect("json")
}

fn get(c: &mut HttpClient, path: &str) -> (u16, Value) {
    let (status, body) = c.request("GET", path, &[], &[]).expect("GET");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[test]
fn the_inference_protocol_over_http_and_every_model_listed() {
    let _serial = mlmesh_tests::serial();
    let inference = Service::start("mlmesh-inference", &[]);
    let mesh = MeshProcesses::start_with(
        &[],
        &[("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string())],
    );
    let mut c = HttpClient::new(mesh.gateway.http_addr.expect("http"));

    // Health and metadata.
    assert_eq!(get(&mut c, "/v2/health/live").0, 200);
    assert_eq!(get(&mut c, "/v2/health/ready").0, 200);
    let (s, server) = get(&mut c, "/v2");
    assert_eq!(s, 200, "{server}");
    assert!(server["extensions"].is_array(), "{server}");
    let (s, meta) = get(&mut c, "/v2/models/iris-logreg");
    assert_eq!(s, 200, "{meta}");
    assert_eq!(meta["inputs"][0]["name"], "input", "{meta}");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32", "{meta}");
    assert_eq!(get(&mut c, "/v2/models/iris-logreg/ready").0, 200);
    assert_eq!(
        get(&mut c, "/v2/models/iris-logreg/versions/1/ready").0,
        200
    );
    // The protocol's "false": a 4xx status.
    assert_eq!(get(&mut c, "/v2/models/no-such-model/ready").0, 400);

    // Inference with nested JSON data, against onnxruntime's outputs.
    let refs = references();
    let r = &refs["models"]["iris-logreg"];
    let x = &r["input"]["data"];
    let rows = x.as_array().expect("rows").len();
    let (s, out) = c.post_json(
        "/v2/models/iris-logreg/versions/1/infer",
        &json!({
            "id": "req-1",
            "inputs": [{"name": "input", "shape": [rows, 4], "datatype": "FP32", "data": x}],
            "outputs": [{"name": "label"}, {"name": "probabilities"}]
        }),
    );
    assert_eq!(s, 200, "{out}");
    assert_eq!(out["model_name"], "iris-logreg");
    assert_eq!(out["model_version"], "1");
    assert_eq!(out["id"], "req-1");
    let output = |name: &str| {
        out["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == name)
            .unwrap_or_else(|| panic!("output {name} in {out}"))
            .clone()
    };
    let label = output("label");
    assert_eq!(label["datatype"], "INT64");
    // The model's own shape ([rows, 1] for this export); the values flat.
    assert_eq!(label["shape"][0], json!(rows));
    assert_eq!(label["data"], r["onnxruntime"]["label"]);
    let probs = output("probabilities");
    assert_eq!(probs["shape"], json!([rows, 3]));
    let want: Vec<f64> = r["onnxruntime"]["probabilities"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| {
            row.as_array()
                .expect("row")
                .iter()
                .filter_map(Value::as_f64)
        })
        .collect();
    let got: Vec<f64> = probs["data"]
        .as_array()
        .expect("flat data")
        .iter()
        .filter_map(Value::as_f64)
        .collect();
    assert_eq!(got.len(), want.len());
    let tol = refs["tolerance"]["fp32_abs"].as_f64().expect("tolerance");
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= tol, "{g} vs onnxruntime {w}");
    }

    // Errors: the protocol's shape, the field named, the right status.
    let (s, e) = c.post_json(
        "/v2/models/iris-logreg/infer",
        &json!({"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": [1, 2, 3]}]}),
    );
    assert_eq!(s, 400, "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("inputs[0].data")),
        "{e}"
    );
    let (s, e) = c.post_json(
        "/v2/models/iris-logreg/infer",
        &json!({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP64", "data": [1, 2, 3, 4]}]}),
    );
    assert_eq!(s, 400, "the service refuses the datatype: {e}");
    assert!(
        e["error"].as_str().is_some_and(|m| m.contains("FP64")),
        "{e}"
    );
    let (s, e) = c.post_json(
        "/v2/models/no-such-model/infer",
        &json!({"inputs": [{"name": "input", "shape": [1], "datatype": "FP32", "data": [1]}]}),
    );
    assert_eq!(s, 404, "{e}");
    assert!(e["error"].is_string(), "{e}");

    // Every model of the mesh, in OpenAI's list shape.
    let (s, list) = get(&mut c, "/v1/models");
    assert_eq!(s, 200, "{list}");
    let ids: Vec<&str> = list["data"]
        .as_array()
        .expect("data")
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(ids.contains(&"all-MiniLM-L6-v2"), "{ids:?}");
    assert!(ids.contains(&"iris-logreg"), "{ids:?}");
    let (s, m) = get(&mut c, "/v1/models/iris-logreg");
    assert_eq!(s, 200, "{m}");
    assert_eq!(m["owned_by"], "mlmesh-inference");
    assert_eq!(m["mlmesh"]["versions"], json!(["1"]));
    assert_eq!(get(&mut c, "/v1/models/no-such-model").0, 404);

    mesh.stop();
}
