//! A real PostgreSQL server for tests, from Debian's `postgresql` package
//! (`.ci/run` installs it): `initdb` into a temp folder as the `postgres`
//! user (it refuses root), the server listening on a Unix socket in that
//! folder only (no TCP port), one database per caller.
//!
//! The server is started once per test process and stopped when the
//! process ends: a shell holds it and kills it when our end of its stdin
//! closes, which happens on any exit, even a panic or SIGKILL.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

/// The running server.
pub struct Postgres {
    dir: PathBuf,
    port: u16,
    _holder: Mutex<Child>,
}

/// Where Debian puts the server binaries (`initdb`, `postgres` are not on
/// PATH there).
fn bin_dir() -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").is_file() && p.join("postgres").is_file())
        .collect();
    dirs.sort();
    dirs.pop()
}

fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("runuser");
    c.args(["-u", "postgres", "--"]).arg(bin).args(args);
    c
}

impl Postgres {
    /// The shared server, started on first use; None (with the reason
    /// printed) when PostgreSQL is not installed or cannot start.
    pub fn shared() -> Option<&'static Postgres> {
        static PG: OnceLock<Result<Postgres, String>> = OnceLock::new();
        match PG.get_or_init(Postgres::start) {
            Ok(pg) => Some(pg),
            Err(why) => {
                eprintln!("SKIPPED (PostgreSQL): {why}");
                None
            }
        }
    }

    fn start() -> Result<Postgres, String> {
        let bin = bin_dir().ok_or(
            "no PostgreSQL server binaries under /usr/lib/postgresql (apt-get install postgresql; .ci/run does)",
        )?;
        let dir = std::env::temp_dir().join(format!("mlmesh-pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !chown.success() {
            return Err("cannot give the temp folder to the postgres user".into());
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().into_owned();
        let out = as_postgres(
            &bin.join("initdb"),
            &["-D", &data_s, "-A", "trust", "-U", "postgres", "--no-sync"],
        )
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // A port number only names the socket file; nothing listens on TCP.
        let port = 20_000 + (std::process::id() % 20_000) as u16;
        let dir_s = dir.to_string_lossy().into_owned();
        let script = format!(
            "runuser -u postgres -- {} -D {data_s} -k {dir_s} -p {port} -c listen_addresses='' -c fsync=off >{dir_s}/log 2>&1 & pid=$!; read _; kill $pid; wait $pid; rm -rf {dir_s}",
            bin.join("postgres").display()
        );
        let holder = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting postgres: {e}"))?;
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !socket.exists() {
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                return Err(format!("postgres did not start within 30 s: {log}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Postgres {
            dir,
            port,
            _holder: Mutex::new(holder),
        })
    }

    /// A new, empty database; its connection string.
    pub fn database(&self, label: &str) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "{}_{}",
            label.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let out = Command::new("psql")
            .args([
                "-h",
                &self.dir.to_string_lossy(),
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!("CREATE DATABASE \"{name}\""))
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "create database: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!(
            "host={} port={} user=postgres dbname={name}",
            self.dir.display(),
            self.port
        )
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Ok(mut h) = self._holder.lock() {
            if let Some(stdin) = h.stdin.as_mut() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = h.wait();
        }
    }
}
