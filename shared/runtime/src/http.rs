//! Serving an axum router over HTTP/1.1 and HTTP/2 (the gateway's API, the
//! `/metrics` endpoints) with the bounds `axum::serve` cannot set:
//!
//! - connections admitted, kept alive and write-stall-checked by
//!   [`ConnPolicy`] (the same cap and rules as the gRPC server);
//! - request headers must arrive within `server.header_read_timeout_secs`
//!   (a client dribbling a header byte at a time is dropped);
//! - a request body must arrive whole within `server.body_timeout_secs`
//!   of the request's start (the total, not an idle gap: a body sent one
//!   byte every few seconds fails all the same); reading it then fails with
//!   [`BodyTimeout`];
//! - HTTP/2 keep-alive pings find dead peers; streams per connection as
//!   the gRPC server allows;
//! - graceful shutdown: in-flight requests finish within the grace period.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
};
use tokio::{net::TcpListener, time::Sleep};
use tower::ServiceExt as _;

use crate::{conn::ConnPolicy, settings::ServerSettings};

/// A request body did not arrive within `server.body_timeout_secs`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {0} s (server.body_timeout_secs)")]
pub struct BodyTimeout(pub u64);

/// A body that fails once its deadline passes before it has ended.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    secs: u64,
    done: bool,
}

impl<B> DeadlineBody<B> {
    pub fn new(inner: B, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limit)),
            secs: limit.as_secs(),
            done: false,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(r) = Pin::new(&mut self.inner).poll_frame(cx) {
            if r.is_none() {
                self.done = true;
            }
            return Poll::Ready(r.map(|f| f.map_err(Into::into)));
        }
        match self.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => {
                self.done = true;
                Poll::Ready(Some(Err(Box::new(BodyTimeout(self.secs)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `e` (a body read error, as axum reports it) was a deadline.
pub fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<BodyTimeout>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Serves `router` on `listener` until `shutdown` completes, then lets
/// requests in flight finish for at most `settings.shutdown_grace_secs`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    policy: ConnPolicy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(settings.header_read_timeout_secs))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(settings.http2_keepalive_interval())
        .keep_alive_timeout(settings.http2_keepalive_timeout())
        .max_concurrent_streams(settings.effective_streams());
    let body_limit = Duration::from_secs(settings.body_timeout_secs);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (conn, _peer) = tokio::select! {
            c = policy.accept(&listener) => c,
            () = &mut shutdown => break,
        };
        let router = router.clone();
        let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
            let req = req.map(|b| axum::body::Body::new(DeadlineBody::new(b, body_limit)));
            router.clone().oneshot(req)
        });
        let served = builder
            .serve_connection_with_upgrades(TokioIo::new(conn), svc)
            .into_owned();
        let watched = graceful.watch(served);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    let grace = settings.shutdown_grace();
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("HTTP: grace period expired with requests in flight");
    }
}
