//! Who may call a service's state-changing RPCs (the registry's writes, the
//! inference service's repository load/unload). Two credentials, either of
//! which admits such a call:
//!
//! - on mutual TLS, a client certificate valid for one of
//!   `server.tls.admin_identities` (the gateway's, a CI job's);
//! - `x-mlmesh-admin-token` metadata equal to `server.admin_token_file`'s
//!   token (for TLS terminated before the service, or no TLS).
//!
//! When neither is configured the calls are open (loopback development).
//! A refused call gets UNAUTHENTICATED (no credential) or
//! PERMISSION_DENIED (a certificate not on the list) before any of it is
//! decoded. Reads stay open to every caller the network and the TLS
//! handshake let in (the chart's NetworkPolicies say who that is).
//!
//! A dedicated metadata key rather than `authorization`: the gateway reads
//! `authorization` for its own API keys and JWTs, and a client's credential
//! for the gateway must never double as one for the services behind it.
//!
//! One layer for every service; a service names its protected methods
//! (full gRPC paths) with [`crate::GrpcServer::protect`].

use std::{
    path::Path,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::{Either, Ready, ready};
use http::{Request, Response};
use rustls::pki_types::ServerName;
use tonic::metadata::{Ascii, MetadataMap, MetadataValue};
use tower_layer::Layer;
use tower_service::Service;

use crate::{conn::ConnInfo, settings::SettingsError};

/// The metadata key that carries the admin token.
pub const ADMIN_TOKEN_HEADER: &str = "x-mlmesh-admin-token";

/// Longest token file read (a token is a line, not a document).
const MAX_TOKEN_BYTES: u64 = 4096;

/// A secret token, held as the metadata value it travels as (checked once,
/// at load); its `Debug` never shows it.
#[derive(Clone)]
pub struct AdminToken(MetadataValue<Ascii>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// The token of the file a setting names (`key` = `value`), or none
    /// when the setting is empty.
    pub fn from_setting(value: &str, key: &str) -> Result<Option<Self>, SettingsError> {
        match value.trim() {
            "" => Ok(None),
            path => Self::from_file(Path::new(path), key).map(Some),
        }
    }

    /// Reads the token from `path` (surrounding whitespace trimmed); an
    /// unreadable, oversized or empty file fails naming `key`.
    pub fn from_file(path: &Path, key: &str) -> Result<Self, SettingsError> {
        let fail = |reason: String| SettingsError::Value {
            key: key.into(),
            reason,
        };
        let len = std::fs::metadata(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?
            .len();
        if len > MAX_TOKEN_BYTES {
            return Err(fail(format!(
                "{} is {len} bytes; a token file holds at most {MAX_TOKEN_BYTES}",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
        let token = text.trim();
        if token.len() < 16 {
            return Err(fail(format!(
                "the token in {} is shorter than 16 characters",
                path.display()
            )));
        }
        let not_ascii = || {
            fail(format!(
                "the token in {} must be printable ASCII without spaces (it travels as gRPC metadata)",
                path.display()
            ))
        };
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(not_ascii());
        }
        let mut value = MetadataValue::try_from(token).map_err(|_| not_ascii())?;
        value.set_sensitive(true);
        Ok(Self(value))
    }

    /// Adds the token to a call's metadata (a client presenting it: the
    /// CLI, the gateway forwarding a model load).
    pub fn attach(&self, metadata: &mut MetadataMap) {
        metadata.insert(ADMIN_TOKEN_HEADER, self.0.clone());
    }

    /// Whether `given` is the token, in time independent of where they
    /// differ.
    pub fn matches(&self, given: &[u8]) -> bool {
        let own = self.0.as_bytes();
        if given.len() != own.len() {
            return false;
        }
        given.iter().zip(own).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

/// Refuses calls to `protected` paths that carry neither credential.
#[derive(Clone, Debug)]
pub struct AdminLayer {
    pub token: Option<AdminToken>,
    pub identities: Arc<[ServerName<'static>]>,
    pub protected: &'static [&'static str],
}

impl<S> Layer<S> for AdminLayer {
    type Service = Admin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admin {
            inner,
            token: self.token.clone(),
            identities: Arc::clone(&self.identities),
            protected: self.protected,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Admin<S> {
    inner: S,
    token: Option<AdminToken>,
    identities: Arc<[ServerName<'static>]>,
    protected: &'static [&'static str],
}

impl<S, B, RB> Service<Request<B>> for Admin<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
    RB: Default,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = Either<S::Future, Ready<Result<Response<RB>, S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if self.token.is_none() && self.identities.is_empty() {
            return Either::Left(self.inner.call(req));
        }
        let path = req.uri().path();
        if !self.protected.contains(&path) {
            return Either::Left(self.inner.call(req));
        }
        let given = req.headers().get(ADMIN_TOKEN_HEADER);
        if let (Some(token), Some(v)) = (&self.token, given)
            && token.matches(v.as_bytes())
        {
            return Either::Left(self.inner.call(req));
        }
        let cert = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.peer_cert.as_ref());
        if let Some(name) = cert.and_then(|c| c.named(&self.identities)) {
            tracing::debug!(method = path, identity = ?name, "admin call by certificate");
            return Either::Left(self.inner.call(req));
        }
        let status = refusal(
            path,
            given.is_some(),
            cert.is_some() && !self.identities.is_empty(),
            self.token.is_some(),
        );
        tracing::warn!(
            method = path,
            reason = status.message(),
            "admin call refused"
        );
        Either::Right(ready(Ok(status.into_http())))
    }
}

/// Why a protected call was refused, naming what would admit it.
fn refusal(path: &str, had_token: bool, cert_not_listed: bool, token_set: bool) -> tonic::Status {
    let accepted = if token_set {
        format!(
            "a client certificate named in server.tls.admin_identities or `{ADMIN_TOKEN_HEADER}` metadata with the token of server.admin_token_file"
        )
    } else {
        "a client certificate named in server.tls.admin_identities".to_owned()
    };
    if cert_not_listed && !had_token {
        return tonic::Status::permission_denied(format!(
            "{path} changes state: the client certificate is not named in server.tls.admin_identities (accepted: {accepted})"
        ));
    }
    let why = if had_token {
        "carries a wrong"
    } else {
        "lacks the"
    };
    if token_set {
        tonic::Status::unauthenticated(format!(
            "{path} changes state: the call {why} `{ADMIN_TOKEN_HEADER}` metadata (accepted: {accepted})"
        ))
    } else {
        tonic::Status::unauthenticated(format!(
            "{path} changes state: the call has no client certificate named in server.tls.admin_identities"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(text: &str) -> (std::path::PathBuf, AdminTokenResult) {
        let dir = std::env::temp_dir().join(format!(
            "mlmesh-admin-{}-{}",
            std::process::id(),
            text.len()
        ));
        let _ = std::fs::create_dir_all(&dir);
        let p = dir.join("token");
        let _ = std::fs::write(&p, text);
        let r = AdminToken::from_file(&p, "server.admin_token_file");
        (p, r)
    }

    type AdminTokenResult = Result<AdminToken, SettingsError>;

    #[test]
    fn tokens_are_checked_at_load_and_compared_whole() {
        let (_, ok) = token_file("  s3cret-s3cret-s3cret\n");
        let t = ok.expect("a good token loads");
        assert!(t.matches(b"s3cret-s3cret-s3cret"));
        assert!(!t.matches(b"s3cret-s3cret-s3cre"));
        assert!(!t.matches(b"s3cret-s3cret-s3creT"));
        assert!(!format!("{t:?}").contains("s3cret"));
        let mut m = MetadataMap::new();
        t.attach(&mut m);
        assert_eq!(
            m.get(ADMIN_TOKEN_HEADER).map(|v| v.as_bytes()),
            Some(&b"s3cret-s3cret-s3cret"[..])
        );
        let (_, short) = token_file("short");
        let e = short.expect_err("too short").to_string();
        assert!(
            e.contains("server.admin_token_file") && e.contains("16"),
            "{e}"
        );
        let (_, spaced) = token_file("has a space inside it");
        assert!(spaced.is_err());
    }
}
