//! The container image, built and run on this machine: the registry's
//! image from `deploy/docker/Dockerfile` (the binary `make test` built,
//! staged as `make images` stages it) on a runtime base assembled locally
//! (`deploy/docker/make-runtime-base.sh`: no registry can be pulled from
//! here), run by podman with the restrictions the Helm chart sets (read-only
//! root, every capability dropped, a non-root user, a tmpfs for /data). The
//! service starts, answers grpc.health.v1 SERVING, and on SIGTERM drains
//! and exits 0.
//!
//! Skipped with a printed reason when buildah or podman is absent
//! (`scripts/install-container-tools.sh`, run by `make test`, installs them).

use std::{
    process::{Command, Output},
    time::{Duration, Instant},
};

use mlmesh_tests::{TempDir, binary, repo_root};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn found(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// podman with runc (the default crun is not installed here).
fn podman() -> Command {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc"]);
    c
}

/// Removes the container, then the images newest first, however the test
/// ends.
#[derive(Default)]
struct Cleanup {
    container: Option<String>,
    images: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &self.container {
            let _ = podman().args(["rm", "-f", c]).output();
        }
        for image in self.images.iter().rev() {
            let _ = Command::new("buildah").args(["rmi", "-f", image]).output();
        }
    }
}

/// Ids of the untagged images in local storage.
fn dangling() -> Vec<String> {
    Command::new("buildah")
        .args(["images", "-q", "--filter", "dangling=true"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn listening_addr(logs: &str) -> Option<String> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "gRPC server listening")
        .and_then(|v| v["addr"].as_str().map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_image_runs_read_only_answers_health_and_stops_on_sigterm() {
    let _serial = mlmesh_tests::serial_async().await;
    for tool in ["buildah", "podman", "runc"] {
        if !found(tool) {
            eprintln!(
                "SKIPPED (image): {tool} is not installed (scripts/install-container-tools.sh; make test runs it)"
            );
            return;
        }
    }
    let root = repo_root();
    let tag = std::process::id();
    let base = format!("localhost/mlmesh-runtime-base:test-{tag}");
    let image = format!("localhost/mlmesh-registry:test-{tag}");
    let mut cleanup = Cleanup::default();
    cleanup.images.push(base.clone());
    run(Command::new(root.join("deploy/docker/make-runtime-base.sh")).arg(&base));
    // A build context holding only the staged files, as `make images` makes.
    let ctx = TempDir::new("image-context");
    let stage = ctx.path().join("deploy/docker/stage");
    run(Command::new(root.join("deploy/docker/stage.sh"))
        .args(["registry", &stage.to_string_lossy(), "prebuilt"])
        .env("MLMESH_STAGE_BINARY", binary("mlmesh-registry")));
    let dangling_before = dangling();
    run(Command::new("buildah").args([
        "bud",
        "--quiet",
        // No intermediate containers left behind.
        "--layers",
        "--force-rm",
        "-f",
        &root.join("deploy/docker/Dockerfile").to_string_lossy(),
        "--build-arg",
        "SERVICE=registry",
        "--build-arg",
        "BINARIES=prebuilt",
        "--build-arg",
        &format!("RUNTIME_BASE={base}"),
        "-t",
        &image,
        &ctx.path().to_string_lossy(),
    ]));

    // Ours, and the stage images the build made (untagged; ours only).
    cleanup.images.push(image.clone());
    cleanup.images.extend(
        dangling()
            .into_iter()
            .filter(|i| !dangling_before.contains(i)),
    );

    let (nofile, nproc) = (host_limit("-Hn"), host_limit("-Hu").min(32_768));
    let out = run(podman().args([
        "run",
        "-d",
        // Podman's defaults raise rlimits past what this sandbox allows.
        "--ulimit",
        &format!("nofile={nofile}:{nofile}"),
        "--ulimit",
        &format!("nproc={nproc}:{nproc}"),
        "--network",
        "host",
        "--read-only",
        "--tmpfs",
        "/data:rw,mode=1777",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        "-e",
        "MLMESH_SERVER__LISTEN=127.0.0.1:0",
        "-e",
        "MLMESH_SERVER__METRICS_LISTEN=off",
        &image,
    ]));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    cleanup.container = Some(id.clone());

    let deadline = Instant::now() + Duration::from_secs(30);
    let addr = loop {
        let logs = container_logs(&id);
        if let Some(a) = listening_addr(&logs) {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the container did not start within 30 s: {logs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let user = run(podman().args(["inspect", &id, "--format", "{{.Config.User}}"]));
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect to the container");
    let mut health = HealthClient::new(channel);
    let status = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("grpc.health.v1 Check")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);

    // `podman stop` sends SIGTERM (the image's STOPSIGNAL), then SIGKILL
    // after 20 s: the service must exit on its own, with status 0 — with
    // this client still connected (the runtime has a second thread, so the
    // client answers the server's GOAWAY while `podman stop` blocks).
    let started = Instant::now();
    run(podman().args(["stop", "-t", "20", &id]));
    assert!(started.elapsed() < Duration::from_secs(15), "slow stop");
    drop(health);
    let state = run(podman().args(["inspect", &id, "--format", "{{.State.ExitCode}}"]));
    assert_eq!(String::from_utf8_lossy(&state.stdout).trim(), "0");
    let logs = container_logs(&id);
    assert!(logs.contains("server stopped"), "{logs}");
}

fn container_logs(id: &str) -> String {
    let out = podman().args(["logs", id]).output().expect("podman logs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A hard limit of this process (`ulimit -Hn` / `-Hu`).
fn host_limit(flag: &str) -> u64 {
    Command::new("sh")
        .args(["-c", &format!("ulimit {flag}")])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(4096)
}
