//! A lean gRPC client channel: unary calls over one HTTP/2 connection per
//! upstream address, speaking `h2` directly.
//!
//! Why not tonic's `Channel`: every call through it crosses a `tower::Buffer`
//! task, then hyper's dispatch task, and hyper spawns one more task to pipe
//! the request body, so the request leaves as two TCP segments (HEADERS, then
//! DATA) written by different tasks, often on different threads. On a hop
//! whose whole budget is a fraction of a millisecond (the gateway's), those
//! wake-ups are the cost. Here the calling task writes HEADERS and DATA into
//! the connection in one go and only the connection task touches the socket,
//! so a unary request is one segment and one wake-up.
//!
//! What it keeps from a real channel: lazy connect with a timeout, reconnect
//! after the connection dies (a call never waits on a dead connection),
//! HTTP/2 keep-alive pings so a silently vanished peer is noticed, large flow
//! control windows, TLS (mutual when the client has a certificate, see
//! [`crate::tls`]) for `https://` addresses, and precise statuses: failing to connect or losing the
//! connection is UNAVAILABLE naming the address, so callers can retry
//! elsewhere. Generated tonic clients run on it unchanged
//! (`FooClient::new(channel)`). Request bodies are collected first (one
//! frame, as unary calls send), except for a request carrying the
//! [`StreamingBody`] extension: its body is sent frame by frame as the
//! caller produces it, under HTTP/2 flow control (bidirectional streams
//! forwarded by the gateway).

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http::{Request, Response, Uri, Version, uri::PathAndQuery};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use tonic::Status;
use tower_service::Service;

use crate::tls::ClientTls;

/// Flow-control windows large enough that an embedding batch or an upsert
/// never stalls on WINDOW_UPDATE round trips (hyper's client defaults).
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;

/// Marks a request whose body is a stream of messages to send as they come
/// (`request.extensions_mut().insert(StreamingBody)`), not collected first.
#[derive(Clone, Copy, Debug)]
pub struct StreamingBody;

/// Settings of an [`H2Channel`].
#[derive(Clone, Copy, Debug)]
pub struct H2Settings {
    /// How long a TCP connect may take before the call fails UNAVAILABLE.
    pub connect_timeout: Duration,
    /// Interval of HTTP/2 PINGs on an open connection; a PING unanswered
    /// for as long closes the connection (the next call reconnects).
    pub keep_alive: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            keep_alive: Duration::from_secs(30),
        }
    }
}

/// A cloneable gRPC channel to one address (all clones share the
/// connection).
#[derive(Clone)]
pub struct H2Channel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for H2Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Channel")
            .field("uri", &self.shared.uri)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// `http://host:port`: scheme and authority of every request.
    uri: Uri,
    /// `host:port` to connect to.
    addr: String,
    settings: H2Settings,
    /// TLS for an `https://` address, with the name the server's
    /// certificate must carry.
    tls: Option<(ClientTls, rustls::pki_types::ServerName<'static>)>,
    /// The open connection's sender and its generation, if any.
    conn: Mutex<Option<(u64, h2::client::SendRequest<Bytes>)>>,
    /// Serializes connection attempts (one connect, not one per caller).
    connecting: tokio::sync::Mutex<u64>,
}

impl H2Channel {
    /// A channel to `uri` (`http://host:port`, or `https://host:port`
    /// with `tls`); nothing connects until the first call. The server's
    /// certificate must name `tls`'s server name, or else the URI's host.
    pub fn lazy(uri: Uri, settings: H2Settings, tls: Option<ClientTls>) -> Result<Self, String> {
        let (Some(host), Some(port)) = (uri.host(), uri.port_u16()) else {
            return Err(format!("{uri} needs a host and a port"));
        };
        let tls = match (uri.scheme_str(), tls) {
            (Some("http"), None) => None,
            (Some("https"), Some(tls)) => {
                let name = match tls.server_name() {
                    Some(n) => n.clone(),
                    None => crate::tls::server_name(host)?,
                };
                Some((tls, name))
            }
            (Some("https"), None) => {
                return Err(format!(
                    "{uri}: https:// needs a TLS client configuration (a CA file)"
                ));
            }
            (Some("http"), Some(_)) => {
                return Err(format!(
                    "{uri}: TLS is configured, so the address must be https://"
                ));
            }
            _ => return Err(format!("{uri}: only http:// and https:// are supported")),
        };
        let addr = format!("{host}:{port}");
        Ok(Self {
            shared: Arc::new(Shared {
                uri,
                addr,
                settings,
                tls,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(0),
            }),
        })
    }

    fn current(&self) -> Option<(u64, h2::client::SendRequest<Bytes>)> {
        self.shared.conn.lock().ok().and_then(|c| c.clone())
    }

    fn forget(&self, generation: u64) {
        forget(&self.shared, generation);
    }

    /// The open connection, or a new one.
    async fn sender(&self) -> Result<(u64, h2::client::SendRequest<Bytes>), Status> {
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let mut last_generation = self.shared.connecting.lock().await;
        // Someone else may have connected while we waited for the lock.
        if let Some(c) = self.current() {
            return Ok(c);
        }
        let generation = *last_generation + 1;
        let sender = connect(&self.shared, generation).await?;
        *last_generation = generation;
        if let Ok(mut c) = self.shared.conn.lock() {
            *c = Some((generation, sender.clone()));
        }
        Ok((generation, sender))
    }

    async fn unary(
        &self,
        request: Request<tonic::body::Body>,
    ) -> Result<Response<RecvBody>, Status> {
        let (mut parts, body) = request.into_parts();
        let streaming = parts.extensions.get::<StreamingBody>().is_some();
        // Unary bodies are one ready frame; collecting costs nothing and
        // lets HEADERS and DATA go out together.
        let (body, rest) = if streaming {
            (Bytes::new(), Some(body))
        } else {
            let b = body
                .collect()
                .await
                .map_err(|e| Status::internal(format!("cannot encode the request: {e}")))?
                .to_bytes();
            (b, None)
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        let mut uri = Uri::builder().path_and_query(path);
        if let Some(s) = self.shared.uri.scheme() {
            uri = uri.scheme(s.clone());
        }
        if let Some(a) = self.shared.uri.authority() {
            uri = uri.authority(a.clone());
        }
        parts.uri = uri
            .build()
            .map_err(|e| Status::internal(format!("bad request URI: {e}")))?;
        parts.version = Version::HTTP_2;

        // A connection that died since it was cached fails `ready` at once;
        // forget it and connect again, once.
        let mut attempt = 0;
        let (generation, mut sender) = loop {
            let (generation, sender) = self.sender().await?;
            match sender.ready().await {
                Ok(s) => break (generation, s),
                Err(e) => {
                    self.forget(generation);
                    attempt += 1;
                    if attempt > 1 {
                        return Err(self.lost(&e));
                    }
                }
            }
        };
        let request = Request::from_parts(parts, ());
        let end = body.is_empty() && rest.is_none();
        let (response, mut stream) = sender.send_request(request, end).map_err(|e| {
            self.forget(generation);
            self.lost(&e)
        })?;
        if let Some(rest) = rest {
            tokio::spawn(pump(rest, stream));
        } else if !end {
            // A stream that is no longer active here means the peer has
            // already answered, reset it or lost the connection (a TLS peer
            // that refuses our certificate closes right after the
            // handshake); the response says which, so wait for it rather
            // than report h2's local "inactive stream".
            let _ = stream.send_data(body, true);
        }
        let response = response.await.map_err(|e| {
            if e.is_io() || e.is_go_away() {
                self.forget(generation);
            }
            self.h2_status(&e)
        })?;
        let addr = self.shared.addr.clone();
        Ok(response.map(|recv| RecvBody {
            recv,
            data_done: false,
            addr,
        }))
    }

    fn lost(&self, e: &h2::Error) -> Status {
        Status::unavailable(format!("connection to {} failed: {e}", self.shared.addr))
    }

    fn h2_status(&self, e: &h2::Error) -> Status {
        h2_status(&self.shared.addr, e)
    }
}

/// Sends a streaming request body as its frames come, each within the
/// flow-control capacity the peer grants; ends the stream when the body
/// ends, resets it when the body fails. Ends early when the peer resets.
async fn pump(mut body: tonic::body::Body, mut stream: h2::SendStream<Bytes>) {
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            stream.send_reset(h2::Reason::CANCEL);
            return;
        };
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        while !data.is_empty() {
            stream.reserve_capacity(data.len());
            match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
                Some(Ok(n)) if n > 0 => {
                    let chunk = data.split_to(n.min(data.len()));
                    if stream.send_data(chunk, false).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                _ => return,
            }
        }
    }
    let _ = stream.send_data(Bytes::new(), true);
}

fn forget(shared: &Shared, generation: u64) {
    if let Ok(mut c) = shared.conn.lock()
        && c.as_ref().is_some_and(|(g, _)| *g == generation)
    {
        *c = None;
    }
}

/// The status for an HTTP/2 error on a call to `addr`: a lost connection or
/// a refused stream is UNAVAILABLE (the call can go elsewhere); the rest as
/// the gRPC spec maps RST_STREAM reasons.
fn h2_status(addr: &str, e: &h2::Error) -> Status {
    if e.is_io() || e.is_go_away() {
        return Status::unavailable(format!("connection to {addr} lost: {e}"));
    }
    match e.reason() {
        Some(h2::Reason::REFUSED_STREAM) => {
            Status::unavailable(format!("{addr} refused the stream: {e}"))
        }
        Some(h2::Reason::CANCEL) => Status::cancelled(format!("{addr} cancelled the call: {e}")),
        Some(h2::Reason::ENHANCE_YOUR_CALM) => {
            Status::resource_exhausted(format!("{addr} asked to slow down: {e}"))
        }
        _ => Status::internal(format!("HTTP/2 error from {addr}: {e}")),
    }
}

/// Connects, handshakes and spawns the connection task.
async fn connect(
    shared: &Arc<Shared>,
    generation: u64,
) -> Result<h2::client::SendRequest<Bytes>, Status> {
    let addr = shared.addr.clone();
    let tcp = tokio::time::timeout(
        shared.settings.connect_timeout,
        tokio::net::TcpStream::connect(&addr),
    )
    .await
    .map_err(|_| {
        Status::unavailable(format!(
            "tcp connect error: connecting to {addr} timed out after {:?}",
            shared.settings.connect_timeout
        ))
    })?
    .map_err(|e| Status::unavailable(format!("tcp connect error: {addr}: {e}")))?;
    // Small unary calls must not wait on Nagle's algorithm.
    let _ = tcp.set_nodelay(true);
    let Some((tls, name)) = &shared.tls else {
        return start(tcp, shared, generation).await;
    };
    let stream = tokio::time::timeout(
        shared.settings.connect_timeout,
        tls.connect(name.clone(), tcp),
    )
    .await
    .map_err(|_| {
        Status::unavailable(format!(
            "TLS handshake with {addr} timed out after {:?}",
            shared.settings.connect_timeout
        ))
    })?
    .map_err(|e| Status::unavailable(format!("TLS handshake with {addr} failed: {e}")))?;
    start(stream, shared, generation).await
}

/// The HTTP/2 handshake on an open stream, and the task that drives the
/// connection and pings it.
async fn start<T>(
    io: T,
    shared: &Arc<Shared>,
    generation: u64,
) -> Result<h2::client::SendRequest<Bytes>, Status>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let addr = shared.addr.clone();
    let (sender, mut connection) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| Status::unavailable(format!("HTTP/2 handshake with {addr} failed: {e}")))?;
    let mut pings = connection.ping_pong();
    let keep_alive = shared.settings.keep_alive;
    let weak = Arc::downgrade(shared);
    tokio::spawn(async move {
        let alive = async {
            let Some(pings) = pings.as_mut() else {
                return std::future::pending::<()>().await;
            };
            loop {
                tokio::time::sleep(keep_alive).await;
                match tokio::time::timeout(keep_alive, pings.ping(h2::Ping::opaque())).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(%addr, error = %e, "keep-alive ping failed");
                        return;
                    }
                    Err(_) => {
                        tracing::warn!(%addr, "keep-alive ping unanswered; closing the connection");
                        return;
                    }
                }
            }
        };
        tokio::select! {
            r = &mut connection => {
                if let Err(e) = r {
                    tracing::debug!(%addr, error = %e, "HTTP/2 connection ended");
                }
            }
            () = alive => {}
        }
        if let Some(shared) = weak.upgrade() {
            forget(&shared, generation);
        }
    });
    Ok(sender)
}

impl Service<Request<tonic::body::Body>> for H2Channel {
    type Response = Response<RecvBody>;
    type Error = Status;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Connection state is handled per call, where a failure can name it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<tonic::body::Body>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.unary(request).await })
    }
}

/// A response body: DATA frames, then the trailers (`grpc-status`).
pub struct RecvBody {
    recv: h2::RecvStream,
    data_done: bool,
    addr: String,
}

impl Body for RecvBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if !this.data_done {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Hand the window back as we consume, so large responses
                    // keep flowing.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(h2_status(&this.addr, &e)))),
                None => this.data_done = true,
            }
        }
        match ready!(this.recv.poll_trailers(cx)) {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(h2_status(&this.addr, &e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }
}
