//! Process harness for cross-service tests and the load generator: start
//! real mlmesh binaries as child processes on ephemeral ports and find out
//! where they listen.
#![forbid(unsafe_code)]

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The repository root (for model assets).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A workspace binary built beside the running executable: next to it
/// (another binary, e.g. the load generator) or one level up (a test in
/// `target/<profile>/deps/`).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|d| d.join(name))
        .collect();
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{name} is not built beside {}: run `cargo build --workspace --bins` (make test does)",
                exe.display()
            )
        })
}

/// Sum of the Prometheus samples in `text` whose line starts with `prefix`
/// (`name` or `name{labels}`); 0 when there are none.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /metrics` from `addr`, as text; empty when unreachable. Blocking:
/// call it from `spawn_blocking` in a test that serves on the same runtime.
pub fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else {
        return String::new();
    };
    let mut text = String::new();
    if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
        || s.read_to_string(&mut text).is_err()
    {
        return String::new();
    }
    text
}

/// A fresh, empty folder under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("mlmesh-{label}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("create temp dir");
        Self(path)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running service process. Killed on drop if still running.
pub struct Service {
    pub child: Child,
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    /// Every log line, as JSON, collected in the background.
    pub logs: mpsc::Receiver<String>,
    pub started_in: Duration,
}

impl Service {
    /// Starts `name` with `--listen 127.0.0.1:0`, JSON logs and `env`, and
    /// waits (up to 60 s) for its "gRPC server listening" line.
    pub fn start(name: &str, env: &[(&str, String)]) -> Self {
        let t0 = Instant::now();
        let mut cmd = Command::new(binary(name));
        cmd.current_dir(repo_root())
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .env("MLMESH_TELEMETRY__LOG_FORMAT", "json")
            .env_remove("RUST_LOG")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn service");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            else {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not report listening within 60 s");
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "gRPC server listening" {
                let addr = v["addr"]
                    .as_str()
                    .expect("addr field")
                    .parse()
                    .expect("addr");
                let metrics_addr = v["metrics"].as_str().and_then(|m| {
                    m.trim_start_matches("Some(")
                        .trim_end_matches(')')
                        .parse()
                        .ok()
                });
                return Self {
                    child,
                    addr,
                    metrics_addr,
                    logs: rx,
                    started_in: t0.elapsed(),
                };
            }
        }
    }

    /// Sum of the `/metrics` samples whose line starts with `prefix`.
    pub fn metric(&self, prefix: &str) -> f64 {
        self.metrics_addr
            .map_or(0.0, |addr| metric_sum(&scrape(addr), prefix))
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -TERM failed");
    }

    /// Waits for exit, up to `limit`; returns the exit code.
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "process did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
