//! `mlmesh up` (what `make run` calls): it starts the three services, loads
//! the demo corpus, answers a search over it, and stops everything with
//! exit 0 on SIGTERM.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use mlmesh_tests::{HttpClient, TempDir, binary, lines, repo_root};
use serde_json::json;

fn free_port() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

#[test]
fn mlmesh_up_serves_the_demo_corpus_and_stops_cleanly() {
    let data = TempDir::new("launcher");
    let [gateway, http, embedding, vector, gm, em, vm] = [(); 7].map(|()| free_port());
    let mut child = Command::new(binary("mlmesh"))
        .current_dir(repo_root())
        .args([
            "up",
            "--gateway",
            &gateway,
            "--http",
            &http,
            "--embedding",
            &embedding,
        ])
        .args(["--vector-search", &vector, "--gateway-metrics", &gm])
        .args(["--embedding-metrics", &em, "--vector-search-metrics", &vm])
        .arg("--data-dir")
        .arg(data.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mlmesh up");
    let rx = lines(child.stdout.take().expect("stdout"));
    let mut printed = String::new();
    while !printed.contains("mlmesh is up") {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => printed.push_str(&(line + "\n")),
            Err(_) => {
                let _ = child.kill();
                panic!("mlmesh up did not come up; printed: {printed}");
            }
        }
    }
    // The rest of the examples.
    while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
        printed.push_str(&(line + "\n"));
    }
    assert!(
        printed.contains(&format!("http://{http}/v1/embeddings")),
        "{printed}"
    );

    let mut h = HttpClient::new(http.parse().expect("addr"));
    let (status, body) = h.post_json(
        "/v1/collections/mlmesh-docs/search",
        &json!({"query": "What happens on SIGTERM?", "limit": 3}),
    );
    assert_eq!(status, 200, "{body}");
    let hits = body["hits"].as_array().expect("hits");
    assert_eq!(hits.len(), 3);
    assert!(
        hits.iter()
            .all(|h| ["README.md", "ARCHITECTURE.md"]
                .contains(&h["document_id"].as_str().unwrap_or(""))),
        "{body}"
    );

    let ok = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill")
        .success();
    assert!(ok);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mlmesh up did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    // Every service is gone: their ports are free again.
    for addr in [&gateway, &embedding, &vector] {
        assert!(
            std::net::TcpStream::connect(addr.as_str()).is_err(),
            "{addr} still answers"
        );
    }
}
