//! A real S3-protocol server for tests: moto's (PyPI, pinned in
//! `scripts/moto.txt`, installed by `make test` into
//! `.cache/mlmesh/py/moto`), started by `tests/support/moto_s3.py` on
//! 127.0.0.1 with a port the kernel picks. One server and one bucket per
//! test process; each caller gets a key prefix of its own.
//!
//! The server reads its stdin until it closes and then stops, so it never
//! outlives the test process, even one killed with SIGKILL.

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use crate::repo_root;

/// The bucket every caller shares (prefixes keep them apart).
pub const BUCKET: &str = "mlmesh-test";
/// Credentials the server accepts (moto checks the signature's form, not
/// the key).
pub const ACCESS_KEY_ID: &str = "mlmesh-test";
pub const SECRET_ACCESS_KEY: &str = "mlmesh-test-secret";

/// The running server.
pub struct S3Server {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    _child: Mutex<Child>,
}

impl S3Server {
    /// The shared server, started on first use; None (with the reason
    /// printed) when moto is not installed (`make test` installs it).
    pub fn shared() -> Option<&'static S3Server> {
        static S3: OnceLock<Result<S3Server, String>> = OnceLock::new();
        match S3.get_or_init(S3Server::start) {
            Ok(s) => Some(s),
            Err(why) => {
                eprintln!("SKIPPED (S3): {why}");
                None
            }
        }
    }

    fn start() -> Result<S3Server, String> {
        let root = repo_root();
        let site = root.join(".cache/mlmesh/py/moto");
        if !site.join("moto").is_dir() {
            return Err(format!(
                "moto is not installed in {} (run: scripts/fetch-python-packages.sh moto scripts/moto.txt; make test does)",
                site.display()
            ));
        }
        let mut child = Command::new("python3")
            .arg(root.join("tests/support/moto_s3.py"))
            .arg(BUCKET)
            .env("PYTHONPATH", &site)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting moto: {e}"))?;
        let stdout = child.stdout.take().ok_or("moto: no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("moto: {e}"))?;
        let port: u16 = line
            .trim()
            .parse()
            .map_err(|_| format!("moto did not print its port (got {line:?})"))?;
        Ok(S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            _child: Mutex::new(child),
        })
    }

    /// A new, empty place for a caller: `s3://<bucket>/<label>-<n>`.
    pub fn prefix_url(&self, label: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let label: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!(
            "s3://{BUCKET}/{label}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        )
    }
}
