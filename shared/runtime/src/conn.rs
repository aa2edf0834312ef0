//! Accepted connections, the same way on every server of every service
//! (gRPC, the gateway's HTTP API, `/metrics`): nothing a peer does can hold
//! a connection, a slot or a buffer forever.
//!
//! - A cap on open connections (`server.max_connections`, lowered to what
//!   the process's open-file limit allows): one accepted beyond it is
//!   closed at once, so the client fails fast and retries elsewhere,
//!   instead of waiting in the kernel's backlog.
//! - TCP_NODELAY (small unary calls must not wait on Nagle's algorithm)
//!   and TCP keep-alive (`server.tcp_keepalive_secs`), which finds peers
//!   that vanished without a FIN.
//! - A write-stall timeout (`server.write_stall_timeout_secs`): a peer
//!   that stops reading (a server-sent-events client gone idle, a stream
//!   reader that never grants window) fills the socket's send buffer; once
//!   a write has waited that long, the connection fails, which ends every
//!   call on it and releases what they hold.
//! - TLS when the server has a certificate (see [`crate::tls`]): the
//!   handshake runs in a task of its own, bounded by
//!   `server.tls.handshake_timeout_secs`, never on the accept loop, so a
//!   client that connects and stays silent delays nobody else.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::Sleep,
};

use crate::{
    settings::ServerSettings,
    tls::{PeerCert, ServerTls},
};

/// Descriptors kept free for files, downstream connections and logs when
/// the connection cap is derived from the open-file limit.
const RESERVED_FDS: usize = 256;

/// How connections are bounded; built once per server from its settings.
#[derive(Clone, Debug)]
pub struct ConnPolicy {
    slots: Arc<Semaphore>,
    max: usize,
    keepalive: Option<Duration>,
    write_stall: Duration,
}

impl ConnPolicy {
    pub fn new(s: &ServerSettings) -> Self {
        let max = effective_cap(s.max_connections);
        Self {
            slots: Arc::new(Semaphore::new(max)),
            max,
            keepalive: (s.tcp_keepalive_secs > 0)
                .then(|| Duration::from_secs(s.tcp_keepalive_secs)),
            write_stall: Duration::from_secs(s.write_stall_timeout_secs),
        }
    }

    /// The cap in force (the setting, or less when the open-file limit is
    /// lower).
    pub fn max_connections(&self) -> usize {
        self.max
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    /// Wraps an accepted stream, or `None` (the stream is closed) when the
    /// cap is reached.
    pub fn admit(&self, tcp: TcpStream) -> Option<Conn> {
        let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() else {
            tracing::warn!(
                max = self.max,
                peer = ?tcp.peer_addr().ok(),
                "connection refused: server.max_connections reached"
            );
            return None;
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        if let Some(t) = self.keepalive {
            let ka = socket2::TcpKeepalive::new()
                .with_time(t)
                .with_interval(t.min(Duration::from_secs(10)).max(Duration::from_secs(1)));
            if let Err(e) = socket2::SockRef::from(&tcp).set_tcp_keepalive(&ka) {
                tracing::debug!(error = %e, "set_tcp_keepalive failed");
            }
        }
        Some(Conn {
            io: Io::Plain(tcp),
            peer_cert: None,
            _slot: permit,
            write_stall: self.write_stall,
            stalled: None,
        })
    }

    /// Accepts the next admitted connection (refused ones are closed and
    /// skipped; accept errors such as EMFILE are logged and retried after a
    /// short pause rather than ending the server).
    pub async fn accept(&self, listener: &TcpListener) -> (Conn, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok((tcp, addr)) => {
                    if let Some(c) = self.admit(tcp) {
                        return (c, addr);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// The open-file limit's room for connections, from `/proc/self/limits`
/// (no syscall wrapper needed); the setting when that cannot be read.
fn effective_cap(setting: usize) -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse::<usize>().ok())
        });
    match soft {
        Some(n) if n.saturating_sub(RESERVED_FDS) < setting => {
            let cap = n.saturating_sub(RESERVED_FDS).max(16);
            tracing::warn!(
                setting,
                open_file_limit = n,
                cap,
                "server.max_connections lowered to fit the open-file limit (raise `ulimit -n` to allow more)"
            );
            cap
        }
        _ => setting,
    }
}

/// The stream under a connection: TCP, or TLS over TCP.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

impl Io {
    fn tcp(&self) -> &TcpStream {
        match self {
            Io::Plain(t) => t,
            Io::Tls(t) => t.get_ref().0,
        }
    }
}

macro_rules! io_call {
    ($io:expr, $s:ident => $e:expr) => {
        match $io {
            Io::Plain($s) => $e,
            Io::Tls($s) => $e,
        }
    };
}

/// One admitted connection: the stream, its slot under the cap (freed on
/// drop), the write-stall clock, and the client's certificate when it
/// presented one.
pub struct Conn {
    io: Io,
    peer_cert: Option<PeerCert>,
    _slot: OwnedSemaphorePermit,
    write_stall: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("io", self.io.tcp())
            .field("tls", &matches!(self.io, Io::Tls(_)))
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// The server side of a TLS handshake on this connection (which keeps
    /// its slot throughout).
    pub async fn upgrade(self, tls: &ServerTls) -> io::Result<Self> {
        let Conn {
            io,
            _slot,
            write_stall,
            ..
        } = self;
        let Io::Plain(tcp) = io else {
            return Err(io::Error::other("TLS already established"));
        };
        let (stream, peer_cert) = tls.accept(tcp).await?;
        Ok(Conn {
            io: Io::Tls(Box::new(stream)),
            peer_cert,
            _slot,
            write_stall,
            stalled: None,
        })
    }

    /// The client's certificate, on a mutual-TLS connection.
    pub fn peer_cert(&self) -> Option<&PeerCert> {
        self.peer_cert.as_ref()
    }

    /// Pending writes keep the stall clock running; a write that makes
    /// progress stops it.
    fn stall_check(&mut self, cx: &mut Context<'_>, pending: bool) -> Poll<io::Result<()>> {
        if !pending {
            self.stalled = None;
            return Poll::Ready(Ok(()));
        }
        let limit = self.write_stall;
        let sleep = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer read nothing for {} s (server.write_stall_timeout_secs)",
                    limit.as_secs()
                ),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        io_call!(&mut self.io, s => Pin::new(s).poll_read(cx, buf))
    }
}

use std::future::Future as _;

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = io_call!(&mut self.io, s => Pin::new(s).poll_write(cx, buf));
        match self.stall_check(cx, r.is_pending()) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => r,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = io_call!(&mut self.io, s => Pin::new(s).poll_write_vectored(cx, bufs));
        match self.stall_check(cx, r.is_pending()) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => r,
        }
    }

    fn is_write_vectored(&self) -> bool {
        io_call!(&self.io, s => s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = io_call!(&mut self.io, s => Pin::new(s).poll_flush(cx));
        match self.stall_check(cx, r.is_pending()) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => r,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io_call!(&mut self.io, s => Pin::new(s).poll_shutdown(cx))
    }
}

/// What a gRPC handler can learn of its connection (tonic puts it in
/// each request's extensions): the peer's address and, on mutual TLS, its
/// certificate.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote_addr: Option<SocketAddr>,
    pub peer_cert: Option<PeerCert>,
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        ConnInfo {
            remote_addr: self.io.tcp().peer_addr().ok(),
            peer_cert: self.peer_cert.clone(),
        }
    }
}

/// Connections whose TLS handshake may be under way at once, beyond those
/// the cap already bounds: the queue between handshakes and the server.
const READY_QUEUE: usize = 64;

/// The admitted connections of `listener` (TLS-established when `tls` is
/// given), as a stream for tonic's `serve_with_incoming`. Accepting runs
/// in a task of its own and each handshake in another; the task ends when
/// the stream is dropped (the server stopped), closing the listener.
pub fn incoming(
    listener: TcpListener,
    policy: ConnPolicy,
    tls: Option<ServerTls>,
) -> impl futures::Stream<Item = io::Result<Conn>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Conn>(READY_QUEUE);
    let acceptor = tokio::spawn(async move {
        loop {
            let (c, addr) = policy.accept(&listener).await;
            let Some(tls) = &tls else {
                if tx.send(c).await.is_err() {
                    return;
                }
                continue;
            };
            let (tls, tx) = (tls.clone(), tx.clone());
            tokio::spawn(async move {
                match c.upgrade(&tls).await {
                    Ok(c) => {
                        let _ = tx.send(c).await;
                    }
                    // Scanners, plaintext clients, unknown CAs: the
                    // client learns from the alert; here it is noise.
                    Err(e) => tracing::debug!(peer = %addr, error = %e, "TLS handshake failed"),
                }
            });
        }
    });
    Incoming { rx, acceptor }
}

struct Incoming {
    rx: tokio::sync::mpsc::Receiver<Conn>,
    acceptor: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl futures::Stream for Incoming {
    type Item = io::Result<Conn>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn policy(max: usize, stall: u64) -> ConnPolicy {
        ConnPolicy::new(&ServerSettings {
            max_connections: max,
            write_stall_timeout_secs: stall,
            ..ServerSettings::ephemeral()
        })
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_are_closed_and_slots_come_back()
    -> Result<(), Box<dyn std::error::Error>> {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let addr = l.local_addr()?;
        let p = policy(2, 30);
        let mut clients = Vec::new();
        let mut held = Vec::new();
        for _ in 0..3 {
            clients.push(TcpStream::connect(addr).await?);
            let (tcp, _) = l.accept().await?;
            if let Some(c) = p.admit(tcp) {
                held.push(c);
            }
        }
        assert_eq!(held.len(), 2);
        assert_eq!(p.open(), 2);
        // The third was closed at once: its client reads EOF.
        let mut buf = [0u8; 1];
        let n = tokio::time::timeout(Duration::from_secs(5), clients[2].read(&mut buf)).await??;
        assert_eq!(n, 0);
        drop(held.pop());
        assert_eq!(p.open(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_peer_that_stops_reading_fails_the_writer() -> Result<(), Box<dyn std::error::Error>>
    {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        let _reader_that_never_reads = TcpStream::connect(l.local_addr()?).await?;
        let (tcp, _) = l.accept().await?;
        let mut c = policy(8, 1).admit(tcp).ok_or("admitted")?;
        let chunk = vec![0u8; 1 << 16];
        let started = std::time::Instant::now();
        let err = loop {
            if let Err(e) = c.write_all(&chunk).await {
                break e;
            }
            assert!(started.elapsed() < Duration::from_secs(30), "never failed");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("write_stall_timeout_secs"));
        Ok(())
    }
}
