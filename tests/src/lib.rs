//! Process harness for cross-service tests and the load generator: start
//! real mlmesh binaries as child processes on ephemeral ports and find out
//! where they listen.
#![forbid(unsafe_code)]

pub mod fake_kube;
pub mod mlserver;
pub mod otlp;
pub mod postgres;
pub mod s3;

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

/// The repository root (for model assets).
pub fn repo_root() -> PathBuf {
    // Cargo sets CARGO_MANIFEST_DIR when it runs a test, bench or binary;
    // prefer it to the value compiled in, which is stale when one
    // CARGO_TARGET_DIR serves several checkouts (cargo reuses an artifact
    // built from another clone's path). The workspace root is the nearest
    // ancestor holding Cargo.lock.
    let compiled = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or(compiled);
    start
        .ancestors()
        .find(|d| d.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| start.join(".."))
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
/// (`name` or `name{labels}`); 0 when there are none (the kit's own).
pub use mlmesh_runtime::testing::metric_sum;

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

/// Copies the folder `from` into `to`, recursively (test fixtures).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.path().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
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
    /// The gateway's HTTP/JSON address, when it logged one.
    pub http_addr: Option<SocketAddr>,
    /// Every log line, as JSON, collected in the background.
    pub logs: mpsc::Receiver<String>,
    pub started_in: Duration,
}

/// How long a command a test runs (a CLI, a client from another
/// ecosystem) may take before the test fails instead of hanging the run.
pub const CHILD_LIMIT: Duration = Duration::from_secs(600);

/// `Command::output`, bounded: a child still running at the limit is
/// killed and reported as an error (with what it printed so far), so one
/// stuck peer cannot stall `make test`.
pub trait OutputWithin {
    fn output_within(&mut self, limit: Duration) -> std::io::Result<std::process::Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: Duration) -> std::io::Result<std::process::Output> {
        use std::io::Read as _;
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let drain = |r: Option<Box<dyn std::io::Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out = drain(child.stdout.take().map(|o| Box::new(o) as _));
        let err = drain(child.stderr.take().map(|e| Box::new(e) as _));
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let (stdout, stderr) = (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        );
        match status {
            Some(status) => Ok(std::process::Output {
                status,
                stdout,
                stderr,
            }),
            None => Err(std::io::Error::other(format!(
                "{self:?} did not finish within {} s; it printed:\n{}{}",
                limit.as_secs(),
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            ))),
        }
    }
}

/// The lines `out` prints, read on a thread of their own so a caller can
/// wait for one with a timeout.
pub fn lines(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
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
        let rx = lines(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut http_addr = None;
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
            if v["message"] == "HTTP API listening" {
                http_addr = v["http"].as_str().and_then(|a| a.parse().ok());
            }
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
                    http_addr,
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

/// A minimal blocking HTTP/1.1 client with keep-alive, for the gateway's
/// JSON API in tests and the load generator (no HTTP client crate needed).
#[derive(Debug)]
pub struct HttpClient {
    addr: SocketAddr,
    conn: Option<BufReader<std::net::TcpStream>>,
}

impl HttpClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, conn: None }
    }

    /// Sends one request; returns the status and the body. Reconnects once
    /// if the kept-alive connection was closed.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        match self.try_request(method, path, headers, body) {
            Ok(r) => Ok(r),
            Err(_) => {
                self.conn = None;
                self.try_request(method, path, headers, body)
            }
        }
    }

    fn try_request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> std::io::Result<(u16, Vec<u8>)> {
        use std::io::{Read as _, Write as _};
        if self.conn.is_none() {
            let s = std::net::TcpStream::connect(self.addr)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(Duration::from_secs(120)))?;
            self.conn = Some(BufReader::new(s));
        }
        let conn = self.conn.as_mut().ok_or(std::io::ErrorKind::NotConnected)?;
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(body);
        conn.get_mut().write_all(&out)?;
        let mut status_line = String::new();
        if conn.read_line(&mut status_line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or(std::io::ErrorKind::InvalidData)?;
        let mut len = 0usize;
        let mut chunked = false;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line)?;
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    len = v
                        .trim()
                        .parse()
                        .map_err(|_| std::io::ErrorKind::InvalidData)?;
                } else if k == "transfer-encoding" && v.trim().eq_ignore_ascii_case("chunked") {
                    chunked = true;
                }
            }
        }
        let mut data = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                conn.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16)
                    .map_err(|_| std::io::ErrorKind::InvalidData)?;
                let mut part = vec![0; n + 2];
                conn.read_exact(&mut part)?;
                if n == 0 {
                    break;
                }
                data.extend_from_slice(&part[..n]);
            }
        } else {
            data.resize(len, 0);
            conn.read_exact(&mut data)?;
        }
        Ok((status, data))
    }

    /// `POST path` with a JSON body; the status and the parsed JSON answer.
    pub fn post_json(&mut self, path: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
        self.json("POST", path, Some(body))
    }

    /// Any method, optional JSON body; panics on transport errors (tests).
    pub fn json(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let (status, data) = self
            .request(method, path, &[], &bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let v = serde_json::from_slice(&data).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&data).into_owned())
        });
        (status, v)
    }
}

/// The three services as separate processes: embedding, vector-search (on a
/// fresh data folder) and the gateway pointed at both, all on ephemeral
/// ports. `env` is given to each.
pub struct MeshProcesses {
    pub embedding: Service,
    pub vector: Service,
    pub gateway: Service,
    pub data: TempDir,
}

impl MeshProcesses {
    pub fn start(env: &[(&str, String)]) -> Self {
        Self::start_with(env, &[])
    }

    /// As [`start`](Self::start), with `gateway_env` given to the gateway only.
    pub fn start_with(env: &[(&str, String)], gateway_env: &[(&str, String)]) -> Self {
        let data = TempDir::new("mesh");
        let embedding = Service::start("mlmesh-embedding", env);
        let mut venv = env.to_vec();
        venv.push(("MLMESH_VECTOR__DATA_DIR", data.path().display().to_string()));
        let vector = Service::start("mlmesh-vector-search", &venv);
        let mut genv = env.to_vec();
        genv.push(("MLMESH_HTTP__LISTEN", "127.0.0.1:0".into()));
        genv.push(("MLMESH_DOWNSTREAM__EMBEDDING", embedding.addr.to_string()));
        genv.push(("MLMESH_DOWNSTREAM__VECTOR_SEARCH", vector.addr.to_string()));
        genv.extend_from_slice(gateway_env);
        let gateway = Service::start("mlmesh-gateway", &genv);
        assert!(
            gateway.http_addr.is_some(),
            "the gateway logged no HTTP address"
        );
        Self {
            embedding,
            vector,
            gateway,
            data,
        }
    }

    /// SIGTERM to all three, gateway first; each must exit 0 within 30 s.
    pub fn stop(mut self) {
        for s in [&mut self.gateway, &mut self.vector, &mut self.embedding] {
            s.terminate();
            assert_eq!(s.wait(Duration::from_secs(30)), Some(0), "clean exit");
        }
    }
}

/// Serializes the cross-process tests of one test binary: each starts
/// services that want the machine's cores to themselves. For `#[test]`
/// functions; async tests use [`serial_async`] (the same lock).
pub fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.blocking_lock()
}

/// [`serial`] for `#[tokio::test]` functions.
pub async fn serial_async() -> tokio::sync::MutexGuard<'static, ()> {
    SERIAL.lock().await
}

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One HTTP/1.1 request with exactly `headers` (besides host, length and
/// `connection: close`) on a fresh connection; the status line and headers
/// of the answer. For requests a well-behaved client would not send.
pub fn raw_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut head = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!(
        "content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    ));
    s.write_all(head.as_bytes()).expect("write");
    s.write_all(body).expect("body");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}

/// One iris flower as a `ModelInferRequest` for `model`: the input the
/// bundled iris classifiers take (`input`, FP32, shape [1, 4], raw bytes).
pub fn iris_request(model: &str, row: [f32; 4]) -> mlmesh_proto::inference::ModelInferRequest {
    use mlmesh_proto::inference::{ModelInferRequest, model_infer_request::InferInputTensor};
    ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![
            row.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// Sends `signal` (`TERM`, `KILL`) to every process of the group `pgid`
/// (a child started with `process_group(0)` leads its own). The `--`
/// matters: procps' `kill -KILL -1234` reads `-1234` as an option and
/// signals -1, every process there is (that is what ended an earlier CI
/// run); `kill -KILL -- -1234` is the group. A pgid of 0 or 1 is refused.
pub fn signal_group(pgid: u32, signal: &str) {
    if pgid > 1 {
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
    }
}
