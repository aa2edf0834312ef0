//! The model registry from the client side, written once for every caller
//! (the inference service's follower, `mlmesh registry`, tests and
//! benches):
//!
//! - [`names`]: what a model or alias name may be (the registry enforces
//!   the same rule);
//! - [`source`]: what `registry://<model>@<alias|version>` names, parsed
//!   when settings load;
//! - [`connect`]: a lazily connected [`Client`] (TLS and the admin token
//!   when given, request bodies streamed);
//! - [`pull`]: a version into a folder, every file checked against its
//!   size and SHA-256, fsynced, and the folder moved into place whole;
//! - [`push`]: a folder as a new version, hashed locally, only the bytes
//!   the registry lacks sent, resumable.

pub mod layout;
pub mod names;
pub mod pull;
pub mod push;
pub mod source;

use std::path::PathBuf;

use mlmesh_proto::registry::v1::registry_client::RegistryClient;
use mlmesh_runtime::{
    admin::AdminToken,
    client::{H2Channel, H2Settings, StreamingBody},
    tls::ClientTls,
};

pub use crate::{
    pull::pull,
    push::{PushEvent, push},
    source::{Selector, Source},
};

/// A registry client over [`RegistryChannel`].
pub type Client = RegistryClient<RegistryChannel>;

/// Why a registry operation failed; the message names the call, file or
/// limit.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered a call with an error.
    #[error("{call}: {}", .status.message())]
    Rpc {
        call: &'static str,
        #[source]
        status: tonic::Status,
    },
    /// A local file or folder could not be read or written.
    #[error("{}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// What was received or found does not match what it must be (a digest,
    /// a size, a path outside the folder, a file missing).
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub(crate) fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc { call, status }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::Io { path, source }
    }

    /// The gRPC code of a failed call, if the registry answered one.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// The channel every registry client uses: one HTTP/2 connection
/// ([`H2Channel`], TLS when configured), the admin token (if any) on every
/// call, and every request body sent as it is produced (an upload streams
/// files of any size rather than collecting them first).
#[derive(Clone, Debug)]
pub struct RegistryChannel {
    channel: H2Channel,
    token: Option<AdminToken>,
}

impl tower_service::Service<http::Request<tonic::body::Body>> for RegistryChannel {
    type Response =
        <H2Channel as tower_service::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = tonic::Status;
    type Future = <H2Channel as tower_service::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.channel.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        if let Some(t) = &self.token {
            let mut m = tonic::metadata::MetadataMap::new();
            t.attach(&mut m);
            req.headers_mut().extend(m.into_headers());
        }
        req.extensions_mut().insert(StreamingBody);
        self.channel.call(req)
    }
}

/// A client of the registry at `addr` (`host:port`): `https://` with `tls`,
/// else plaintext. Nothing connects until the first call, which names the
/// address if it fails. The error is why `addr` is not usable.
pub fn connect(
    addr: &str,
    tls: Option<ClientTls>,
    token: Option<AdminToken>,
) -> Result<Client, String> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let uri = format!("{scheme}://{}", addr.trim())
        .parse()
        .map_err(|e| format!("{addr:?} is not a host:port: {e}"))?;
    let channel = H2Channel::lazy(uri, H2Settings::default(), tls)?;
    Ok(RegistryClient::new(RegistryChannel { channel, token }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_before_any_connect() {
        assert!(connect("127.0.0.1:50054", None, None).is_ok());
        for bad in ["", "no port", "http://x:1"] {
            assert!(connect(bad, None, None).is_err(), "{bad:?}");
        }
    }
}
