//! The in-process test harness every service's `spawn_app()` is built on:
//! a real service on `127.0.0.1:0`, served on the test's runtime until the
//! test stops it (and drained, as on SIGTERM), plus its `/metrics` read
//! back. Each service's `tests/api/helpers.rs` wraps a [`Running`] with
//! its generated client and the settings its tests start from.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    sync::oneshot,
    task::JoinHandle,
};

use crate::service::Service;

/// A service serving in this process.
pub struct Running {
    /// The gRPC address bound.
    pub addr: SocketAddr,
    /// The `/metrics` address, when enabled.
    pub metrics_addr: Option<SocketAddr>,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl Running {
    /// Builds `S` from `settings` and serves it. Panics (the test fails)
    /// when it does not build.
    pub async fn spawn<S: Service>(settings: S::Settings) -> Self {
        let app = S::build(settings)
            .await
            .unwrap_or_else(|e| panic!("{} builds: {e}", S::NAME));
        Self::serve(app)
    }

    /// Serves an already built `app` (a test that needs a handle on its
    /// internals takes it before).
    pub fn serve<S: Service>(app: S) -> Self {
        let addr = app.local_addr();
        let metrics_addr = app.metrics_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            if let Err(e) = app
                .run_until_stopped(async {
                    let _ = stopped.await;
                })
                .await
            {
                panic!("{} serves: {e}", S::NAME);
            }
        });
        Self {
            addr,
            metrics_addr,
            stop,
            handle,
        }
    }

    /// `GET /metrics`, as text (empty when metrics are off).
    pub async fn metrics(&self) -> String {
        let Some(addr) = self.metrics_addr else {
            return String::new();
        };
        let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
            return String::new();
        };
        let mut body = String::new();
        if s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .is_ok()
        {
            let _ = s.read_to_string(&mut body).await;
        }
        body
    }

    /// The sum of the `/metrics` samples whose line starts with `prefix`
    /// (`name` or `name{labels}`); 0 when there are none.
    pub async fn metric(&self, prefix: &str) -> f64 {
        metric_sum(&self.metrics().await, prefix)
    }

    /// Stops the service as SIGTERM would and waits (≤ 30 s) for it to
    /// drain; panics when it does not stop in time or failed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(30), self.handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("the service task failed: {e}"),
            Err(_) => panic!("the service did not stop within 30 s"),
        }
    }
}

/// The sum of the Prometheus samples in `text` whose line starts with
/// `prefix`; 0 when there are none.
pub fn metric_sum(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
