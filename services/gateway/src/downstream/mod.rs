//! Calls to the services behind the gateway: one [`Pool`] per service, over
//! that service's replicas.
//!
//! Each replica has its own lazily-connected HTTP/2 channel
//! ([`H2Channel`]: one multiplexed connection, no buffer or dispatch tasks
//! between the call and the socket) wrapped in the client trace layer, so
//! every call carries the caller's trace. A call picks a replica by power of two choices on calls
//! in flight, skipping replicas recently seen UNAVAILABLE; an idempotent
//! call that gets UNAVAILABLE is retried on another replica while its
//! deadline allows.
//!
//! Why not tower's `p2c::Balance` over channels: a lazily-connected
//! channel never fails `poll_ready` (connection errors surface on the
//! call), so a dead replica stays "ready", attracts load because its calls
//! fail fast, and a retry cannot be steered away from the replica that just
//! failed. Choosing per call here keeps the same p2c policy with those two
//! properties, without a buffer task in front of every call.

pub mod rpc;

use std::{
    future::Future,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mlmesh_runtime::{
    client::{H2Channel, H2Settings},
    propagation::{ClientTrace, ClientTraceLayer},
    tls::ClientTls,
};
use tonic::{Code, Status};
use tower_layer::Layer as _;
use tracing::Instrument as _;

use crate::{
    metrics::Metrics,
    settings::{DownstreamSettings, endpoint::endpoint_uri},
};

/// The channel type every generated client is built on.
pub type TracedChannel = ClientTrace<H2Channel>;

/// When a call must be answered by; derived from the caller's deadline.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(pub Instant);

impl Deadline {
    pub fn after(d: Duration) -> Self {
        Self(Instant::now() + d)
    }
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// Why a downstream call failed, with the service named.
#[derive(Debug, thiserror::Error)]
pub enum DownstreamError {
    /// No replica could take the call.
    #[error("the {service} service is unavailable (tried {tried}): {message}")]
    Unavailable {
        service: &'static str,
        tried: String,
        message: String,
    },
    /// The deadline passed while waiting for the service.
    #[error("deadline exceeded waiting for the {service} service")]
    DeadlineExceeded { service: &'static str },
    /// The service answered with an error of its own.
    #[error("{service}: {}", status.message())]
    Status {
        service: &'static str,
        status: Status,
    },
}

impl DownstreamError {
    /// The code the service answered with, when it answered.
    pub fn code(&self) -> Code {
        match self {
            DownstreamError::Unavailable { .. } => Code::Unavailable,
            DownstreamError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
            DownstreamError::Status { status, .. } => status.code(),
        }
    }
}

struct Replica {
    addr: String,
    channel: TracedChannel,
    in_flight: AtomicUsize,
    /// Milliseconds since the pool's epoch until which this replica is
    /// skipped; 0 when healthy.
    ejected_until_ms: AtomicU64,
    failures: AtomicU32,
}

/// The replicas of a pool at one moment. A call works on one snapshot:
/// a replica removed meanwhile (its endpoint went away) finishes the calls
/// it has and gets no new ones; its connection closes with the last of them.
type Replicas = Arc<Vec<Arc<Replica>>>;

/// The replicas of one downstream service: a fixed list, or one kept up to
/// date by discovery ([`Pool::set_replicas`]).
pub struct Pool {
    service: &'static str,
    replicas: RwLock<Replicas>,
    h2: H2Settings,
    /// TLS of new channels (checked for the name set by discovery, else
    /// the host dialled).
    tls: RwLock<Option<ClientTls>>,
    epoch: Instant,
    max_attempts: u32,
    eject: Duration,
    rng: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("service", &self.service)
            .field("replicas", &self.addrs())
            .finish()
    }
}

impl Pool {
    /// Channels to `addrs` (validated by the settings; empty when discovery
    /// fills the pool); nothing connects until the first call.
    pub fn new(
        service: &'static str,
        addrs: &[String],
        settings: &DownstreamSettings,
        tls: Option<ClientTls>,
        metrics: Metrics,
    ) -> Result<Arc<Self>, String> {
        let pool = Arc::new(Self {
            service,
            replicas: RwLock::new(Arc::new(Vec::new())),
            tls: RwLock::new(tls),
            h2: H2Settings {
                connect_timeout: Duration::from_millis(settings.connect_timeout_ms),
                keep_alive: Duration::from_secs(30),
            },
            epoch: Instant::now(),
            max_attempts: settings.max_attempts,
            eject: Duration::from_millis(settings.eject_ms),
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            metrics,
        });
        pool.set_replicas(addrs)?;
        Ok(pool)
    }

    /// Makes `addrs` the replicas: those already present keep their
    /// connection and state, new ones get a lazily-connected channel, and
    /// those absent get no new calls (calls in flight on them finish).
    pub fn set_replicas(&self, addrs: &[String]) -> Result<(), String> {
        let old = self.snapshot();
        let mut next = Vec::with_capacity(addrs.len());
        for a in addrs {
            let addr = a.trim();
            if let Some(r) = old.iter().find(|r| r.addr == addr) {
                next.push(Arc::clone(r));
                continue;
            }
            let tls = self.tls.read().unwrap_or_else(|e| e.into_inner()).clone();
            let uri = endpoint_uri(addr, tls.is_some())?;
            let channel = H2Channel::lazy(uri, self.h2, tls)?;
            next.push(Arc::new(Replica {
                addr: addr.to_owned(),
                channel: ClientTraceLayer.layer(channel),
                in_flight: AtomicUsize::new(0),
                ejected_until_ms: AtomicU64::new(0),
                failures: AtomicU32::new(0),
            }));
        }
        self.metrics
            .replicas
            .with_label_values(&[self.service])
            .set(next.len() as i64);
        *self.replicas.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
        Ok(())
    }

    /// Replicas added from now on verify their certificate for `name`
    /// (discovery dials pod IPs; the certificate names the Service).
    pub fn verify_as(&self, name: &str) -> Result<(), String> {
        let mut tls = self.tls.write().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = tls.as_ref() {
            *tls = Some(t.for_name(name)?);
        }
        Ok(())
    }

    fn snapshot(&self) -> Replicas {
        Arc::clone(&self.replicas.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn service(&self) -> &'static str {
        self.service
    }

    pub fn addrs(&self) -> Vec<String> {
        self.snapshot().iter().map(|r| r.addr.clone()).collect()
    }

    /// Each replica's channel, for per-replica calls (readiness checks).
    pub fn channels(&self) -> Vec<(String, TracedChannel)> {
        self.snapshot()
            .iter()
            .map(|r| (r.addr.clone(), r.channel.clone()))
            .collect()
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn random(&self) -> u64 {
        // splitmix64 over a shared counter: cheap, lock-free, good enough to
        // spread choices.
        let mut z = self
            .rng
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Power of two choices among healthy replicas of `set` other than
    /// `avoid`; if none is healthy, the one whose ejection ends first (a dead
    /// service fails fast instead of waiting out its ejection). None when
    /// the set is empty.
    fn pick(&self, set: &[Arc<Replica>], avoid: Option<&str>) -> Option<usize> {
        let n = set.len();
        if n <= 1 {
            return (n == 1).then_some(0);
        }
        let now = self.now_ms();
        let others = || (0..n).filter(|&i| Some(set[i].addr.as_str()) != avoid);
        let healthy: Vec<usize> = others()
            .filter(|&i| set[i].ejected_until_ms.load(Ordering::Relaxed) <= now)
            .collect();
        Some(match healthy.len() {
            0 => others()
                .min_by_key(|&i| set[i].ejected_until_ms.load(Ordering::Relaxed))
                .unwrap_or(0),
            1 => healthy[0],
            h => {
                let r = self.random();
                let a = healthy[(r % h as u64) as usize];
                let mut b = healthy[((r >> 32) % (h as u64 - 1)) as usize];
                if b == a {
                    b = healthy[h - 1];
                }
                let load = |i: usize| set[i].in_flight.load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
        })
    }

    fn eject(&self, r: &Replica) {
        let f = r.failures.fetch_add(1, Ordering::Relaxed).min(4);
        let until = self.now_ms() + (self.eject.as_millis() as u64) * (1 << f);
        r.ejected_until_ms.store(until, Ordering::Relaxed);
        self.metrics
            .ejections
            .with_label_values(&[self.service, &r.addr])
            .inc();
    }

    fn healed(&self, r: &Replica) {
        if r.failures.load(Ordering::Relaxed) != 0 {
            r.failures.store(0, Ordering::Relaxed);
            r.ejected_until_ms.store(0, Ordering::Relaxed);
        }
    }

    /// Runs one call: `call(channel, remaining)` builds the request (with
    /// `remaining` as its gRPC timeout) and sends it. `method` is the full
    /// gRPC path (`mlmesh.embedding.v1.EmbeddingService/Embed`), used for
    /// the client span and metrics. Only `idempotent` calls are retried.
    pub async fn call<T, F, Fut>(
        &self,
        method: &'static str,
        deadline: Deadline,
        idempotent: bool,
        mut call: F,
    ) -> Result<T, DownstreamError>
    where
        F: FnMut(TracedChannel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let short = method.rsplit('/').next().unwrap_or(method);
        let max = if idempotent { self.max_attempts } else { 1 };
        let mut tried: Vec<String> = Vec::new();
        let mut last = String::new();
        for attempt in 1..=max {
            let remaining = deadline.remaining();
            if remaining.is_zero() {
                return Err(DownstreamError::DeadlineExceeded {
                    service: self.service,
                });
            }
            let set = self.snapshot();
            let Some(i) = self.pick(&set, tried.last().map(String::as_str)) else {
                last = "no ready replicas (none discovered yet, or all are terminating)".into();
                break;
            };
            let replica = Arc::clone(&set[i]);
            drop(set);
            tried.push(replica.addr.clone());
            let span = mlmesh_runtime::call_span!(
                "grpc.client",
                otel.name = method,
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.method = short,
                peer.service = self.service,
                server.address = %replica.addr,
                attempt,
            );
            replica.in_flight.fetch_add(1, Ordering::Relaxed);
            let started = Instant::now();
            let result = tokio::time::timeout(
                remaining,
                call(replica.channel.clone(), remaining).instrument(span),
            )
            .await;
            replica.in_flight.fetch_sub(1, Ordering::Relaxed);
            let code = match &result {
                Ok(Ok(_)) => Code::Ok,
                Ok(Err(s)) => s.code(),
                Err(_) => Code::DeadlineExceeded,
            };
            self.metrics
                .downstream_seconds
                .with_label_values(&[self.service, short])
                .observe(started.elapsed().as_secs_f64());
            self.metrics
                .downstream_calls
                .with_label_values(&[self.service, short, mlmesh_runtime::code_name(code)])
                .inc();
            match result {
                Ok(Ok(resp)) => {
                    self.healed(&replica);
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) if status.code() == Code::Unavailable => {
                    self.eject(&replica);
                    last = status.message().to_owned();
                    tracing::warn!(
                        service = self.service,
                        replica = %replica.addr,
                        attempt,
                        error = %last,
                        "downstream replica unavailable"
                    );
                    if attempt < max {
                        self.metrics
                            .retries
                            .with_label_values(&[self.service])
                            .inc();
                    }
                }
                // A service whose own timer (from our grpc-timeout) fired
                // first may answer CANCELLED: the deadline passed all the same.
                Ok(Err(status))
                    if status.code() == Code::DeadlineExceeded
                        || (status.code() == Code::Cancelled && deadline.remaining().is_zero()) =>
                {
                    return Err(DownstreamError::DeadlineExceeded {
                        service: self.service,
                    });
                }
                Ok(Err(status)) => {
                    return Err(DownstreamError::Status {
                        service: self.service,
                        status,
                    });
                }
                Err(_elapsed) => {
                    return Err(DownstreamError::DeadlineExceeded {
                        service: self.service,
                    });
                }
            }
        }
        tried.sort_unstable();
        tried.dedup();
        Err(DownstreamError::Unavailable {
            service: self.service,
            tried: tried.join(", "),
            message: last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize) -> Arc<Pool> {
        let addrs: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 1 + i)).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let _g = rt.enter();
        Pool::new(
            "test",
            &addrs,
            &DownstreamSettings::default(),
            None,
            Metrics::new().expect("metrics"),
        )
        .expect("pool")
    }

    #[test]
    fn p2c_prefers_the_less_loaded_and_skips_ejected_replicas() {
        let p = pool(3);
        let set = p.snapshot();
        let pick = |avoid: Option<&str>| p.pick(&set, avoid).expect("a replica");
        set[0].in_flight.store(100, Ordering::Relaxed);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[pick(None)] += 1;
        }
        // Replica 0 wins only when both choices are replica 0: never, as
        // the two choices are distinct.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 500 && counts[2] > 500, "{counts:?}");

        set[0].in_flight.store(0, Ordering::Relaxed);
        p.eject(&set[1]);
        for _ in 0..200 {
            assert_ne!(pick(None), 1);
        }
        // A retry avoids the replica that just failed.
        for _ in 0..200 {
            assert_eq!(pick(Some(set[0].addr.as_str())), 2);
        }
        // All ejected: the one whose ejection ends first.
        for (i, until) in [(0, 5_000), (1, 3_000), (2, 9_000)] {
            set[i].ejected_until_ms.store(until, Ordering::Relaxed);
        }
        assert_eq!(pick(None), 1);
    }

    #[test]
    fn replicas_change_without_losing_the_state_of_those_that_stay() {
        let p = pool(2);
        let before = p.snapshot();
        before[1].in_flight.store(7, Ordering::Relaxed);
        p.set_replicas(&["127.0.0.1:2".into(), "127.0.0.1:9".into()])
            .expect("set");
        let after = p.snapshot();
        assert_eq!(p.addrs(), ["127.0.0.1:2", "127.0.0.1:9"]);
        assert!(Arc::ptr_eq(&before[1], &after[0]), "kept, not rebuilt");
        assert_eq!(after[0].in_flight.load(Ordering::Relaxed), 7);
        // The removed replica is still whole for whoever holds it.
        assert_eq!(before[0].addr, "127.0.0.1:1");
        p.set_replicas(&[]).expect("empty");
        assert_eq!(p.pick(&p.snapshot(), None), None);
    }
}
