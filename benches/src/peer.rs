//! Peers the benchmarks compare with (nginx, HAProxy, a Qdrant server),
//! run as child processes: each in a process group of its own, on a free
//! loopback port, its output kept in a log file for errors.

use std::{
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use mlmesh_tests::repo_root;

use crate::cpu_secs;

/// A peer started in a process group of its own, so that stopping it
/// stops its workers too.
pub struct Peer {
    pub child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Peer {
    /// Spawns `cmd` (output to `log`) and waits until `addr` accepts.
    pub fn start(cmd: Command, addr: SocketAddr, log: PathBuf) -> anyhow::Result<Self> {
        Self::start_within(cmd, addr, log, Duration::from_secs(10))
    }

    /// As [`start`](Self::start), waiting up to `limit` (a peer that loads
    /// a model before listening).
    pub fn start_within(
        mut cmd: Command,
        addr: SocketAddr,
        log: PathBuf,
        limit: Duration,
    ) -> anyhow::Result<Self> {
        use std::os::unix::process::CommandExt as _;
        let err = std::fs::File::create(&log)?;
        let child = cmd
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(err.try_clone()?)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        let mut peer = Self { child, addr, log };
        let deadline = Instant::now() + limit;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = peer.child.try_wait()? {
                bail!("{cmd:?} exited ({status}): {}", peer.printed());
            }
            ensure!(
                Instant::now() < deadline,
                "{cmd:?} did not listen on {addr} within {limit:?}: {}",
                peer.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(peer)
    }

    pub fn printed(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// CPU seconds of every process in the peer's group (nginx's master and
    /// workers; HAProxy's one process).
    pub fn cpu(&self) -> f64 {
        let pgid = self.child.id();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return 0.0;
        };
        dir.filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|s| {
                        let rest = s.rsplit_once(')')?.1.to_owned();
                        rest.split_whitespace().nth(2)?.parse::<u32>().ok()
                    })
                    == Some(pgid)
            })
            .map(cpu_secs)
            .sum()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let pgid = self.child.id();
        mlmesh_tests::signal_group(pgid, "TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        mlmesh_tests::signal_group(pgid, "KILL");
        let _ = self.child.wait();
    }
}

/// A loopback port free at the moment of asking (the peers cannot be told
/// to bind port 0 and report it).
pub fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub fn peers_dir() -> PathBuf {
    repo_root().join("benches/peers")
}
