//! Streams that send stored bytes to a client (Download, Backup), bounded
//! so that clients who stop reading cannot starve anyone else:
//!
//! - at most `registry.max_concurrent_sends` run at once (one more is
//!   refused RESOURCE_EXHAUSTED naming the setting);
//! - each chunk is read on the blocking pool and the thread is returned
//!   before the chunk waits for the client, so a stalled reader holds a
//!   queue slot, not one of the threads that metadata calls need;
//! - a client that takes nothing for `registry.send_stall_secs` ends its
//!   stream: the producer stops, releases its slot and what it protects,
//!   and the stream ends with DEADLINE_EXCEEDED naming the setting (never
//!   with OK on truncated data).

use std::{
    io::Read,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use futures::{Stream, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::{
    blobs::BlobStore,
    error::{RegistryError, Result},
    registry::Registry,
};

/// Chunks read ahead of the client.
const READ_AHEAD: usize = 4;

type Failure = Arc<Mutex<Option<RegistryError>>>;

/// The client's end: the pieces, then the failure that ended them early.
pub(crate) struct Outbound<T> {
    rx: mpsc::Receiver<Result<T>>,
    failed: Failure,
}

impl<T: Send + 'static> Outbound<T> {
    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<T>> + Send {
        let failed = self.failed;
        tokio_stream::wrappers::ReceiverStream::new(self.rx).chain(futures::stream::iter(
            std::iter::from_fn(move || failed.lock().ok()?.take().map(Err)).take(1),
        ))
    }
}

/// The producer's end: its slot under the cap, the stall bound.
pub(crate) struct Feed<T> {
    tx: mpsc::Sender<Result<T>>,
    failed: Failure,
    stall: Duration,
    _slot: OwnedSemaphorePermit,
}

impl<T: Send + 'static> Feed<T> {
    /// Queues `item` for the client; false when the stream is over (the
    /// client went away, or took nothing for the stall bound).
    pub(crate) async fn send(&self, item: Result<T>) -> bool {
        match tokio::time::timeout(self.stall, self.tx.send(item)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                tracing::warn!(
                    stall_secs = self.stall.as_secs(),
                    "a client stopped reading its stream; ending it"
                );
                if let Ok(mut f) = self.failed.lock() {
                    *f = Some(RegistryError::Stalled(format!(
                        "the client read nothing for {} s (registry.send_stall_secs)",
                        self.stall.as_secs()
                    )));
                }
                false
            }
        }
    }

    /// Sends bytes `offset..offset + len` of the content `sha256`, in
    /// chunks of at most `chunk` bytes (one empty piece for an empty
    /// range), each turned into a piece by `piece(offset, bytes)`. False when the stream is over (a read
    /// failure was sent as the last item).
    pub(crate) async fn content(
        &self,
        blobs: &Arc<dyn BlobStore>,
        sha256: &str,
        offset: u64,
        len: u64,
        chunk: usize,
        piece: impl Fn(u64, Bytes) -> T,
    ) -> bool {
        let (b, d) = (Arc::clone(blobs), sha256.to_owned());
        let opened = tokio::task::spawn_blocking(move || b.read(&d, offset, len)).await;
        let mut reader = match opened.map_err(RegistryError::from).and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                self.send(Err(e)).await;
                return false;
            }
        };
        let (mut at, end) = (offset, offset + len);
        // An empty range still sends one (empty) piece: the client learns
        // of the file from it.
        let mut first = true;
        while first || at < end {
            first = false;
            let want = chunk.min((end - at) as usize);
            let read = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; want];
                let r = reader.read_exact(&mut buf);
                (reader, buf, r)
            })
            .await;
            let (r, buf) = match read {
                Ok((r, buf, Ok(()))) => (r, buf),
                Ok((_, _, Err(e))) => {
                    self.send(Err(RegistryError::Blobs(format!("reading {sha256}: {e}"))))
                        .await;
                    return false;
                }
                Err(e) => {
                    self.send(Err(e.into())).await;
                    return false;
                }
            };
            reader = r;
            if !self.send(Ok(piece(at, Bytes::from(buf)))).await {
                return false;
            }
            at += want as u64;
        }
        true
    }
}

impl Registry {
    /// A new outbound stream, or RESOURCE_EXHAUSTED when
    /// `registry.max_concurrent_sends` are running.
    pub(crate) fn outbound<T: Send + 'static>(&self) -> Result<(Feed<T>, Outbound<T>)> {
        let slot = Arc::clone(&self.sends).try_acquire_owned().map_err(|_| {
            RegistryError::Exhausted(format!(
                "{} downloads and backups are running; at most that many at once (registry.max_concurrent_sends): retry later",
                self.settings.max_concurrent_sends
            ))
        })?;
        let (tx, rx) = mpsc::channel(READ_AHEAD);
        let failed: Failure = Arc::default();
        Ok((
            Feed {
                tx,
                failed: Arc::clone(&failed),
                stall: Duration::from_secs(self.settings.send_stall_secs),
                _slot: slot,
            },
            Outbound { rx, failed },
        ))
    }
}
