//! MLServer (Seldon's Open Inference Protocol server, `mlserver` +
//! `mlserver-sklearn` pinned in `scripts/mlserver.txt`) as a child process:
//! the peer the inference benchmark and the benchmarker's tests measure
//! against. `make mlserver` (and so `make test`) installs it into
//! `.cache/mlmesh/py/mlserver`;
//! it serves `benches/data/mlserver` (the digits MLP as a pickled
//! scikit-learn estimator, the same fitted model our ONNX copy came from).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use std::os::unix::process::CommandExt as _;

use crate::{HttpClient, repo_root};

/// A running MLServer; its whole process group is killed on drop.
pub struct MlServer {
    child: Child,
    /// Where its output goes (kept for a failing test to read).
    pub log: PathBuf,
    /// Its gRPC (Open Inference Protocol) address.
    pub grpc: SocketAddr,
    /// Its REST address.
    pub http: SocketAddr,
}

/// The pinned install, or `None` with the reason printed (a test then
/// passes without running; `make mlserver` installs it).
pub fn site() -> Option<PathBuf> {
    let site = repo_root().join(".cache/mlmesh/py/mlserver");
    if site.join(".mlmesh-stamp").is_file() && site.join("mlserver").is_dir() {
        Some(site)
    } else {
        eprintln!(
            "skipped: MLServer is not installed in {}; run `make mlserver` \
             (scripts/fetch-python-packages.sh mlserver scripts/mlserver.txt)",
            site.display()
        );
        None
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl MlServer {
    /// Starts MLServer from `site` on loopback ports and waits (up to two
    /// minutes) until `model` reports ready over REST.
    pub fn start(site: &Path, model: &str) -> std::io::Result<Self> {
        let (http, grpc, metrics) = (free_port()?, free_port()?, free_port()?);
        let models = repo_root().join("benches/data/mlserver");
        let log = std::env::temp_dir().join(format!("mlmesh-mlserver-{http}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .args([
                "-c",
                "import sys; from mlserver.cli.main import main; sys.argv[0] = 'mlserver'; main()",
                "start",
            ])
            .arg(&models)
            .env("PYTHONPATH", site)
            .env("MLSERVER_HTTP_PORT", http.to_string())
            .env("MLSERVER_GRPC_PORT", grpc.to_string())
            .env("MLSERVER_METRICS_PORT", metrics.to_string())
            .env("MLSERVER_HOST", "127.0.0.1")
            // Its multiprocess metrics files go beside its log, not into
            // the caller's working directory.
            .env(
                "MLSERVER_METRICS_DIR",
                std::env::temp_dir().join(format!("mlmesh-mlserver-{http}-metrics")),
            )
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            // Its own process group, so drop stops its workers too.
            .process_group(0)
            .spawn()?;
        let mut s = Self {
            child,
            log,
            grpc: SocketAddr::from(([127, 0, 0, 1], grpc)),
            http: SocketAddr::from(([127, 0, 0, 1], http)),
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        let path = format!("/v2/models/{model}/ready");
        loop {
            if let Some(status) = s.child.try_wait()? {
                return Err(std::io::Error::other(format!(
                    "MLServer exited during start-up ({status}); it printed:\n{}",
                    s.printed()
                )));
            }
            if let Ok((200, _)) = HttpClient::new(s.http).request("GET", &path, &[], &[]) {
                return Ok(s);
            }
            if Instant::now() > deadline {
                return Err(std::io::Error::other(format!(
                    "MLServer did not report {model} ready within 120 s; it printed:\n{}",
                    s.printed()
                )));
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl MlServer {
    /// The last 4 KiB of what it printed.
    pub fn printed(&self) -> String {
        let all = std::fs::read(&self.log).unwrap_or_default();
        String::from_utf8_lossy(&all[all.len().saturating_sub(4096)..]).into_owned()
    }
}

impl Drop for MlServer {
    fn drop(&mut self) {
        // MLServer's inference workers are child processes: stop the whole
        // process group, or they outlive the run (and skew the next).
        crate::signal_group(self.child.id(), "KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
        let _ = std::fs::remove_dir_all(
            std::env::temp_dir().join(format!("mlmesh-mlserver-{}-metrics", self.http.port())),
        );
    }
}
