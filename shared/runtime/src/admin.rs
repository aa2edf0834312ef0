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

/// What a caller was admitted as; the layer puts it in the request's
/// extensions of every protected call, so a handler can ask for more than
/// the method itself needs (the registry's policy override).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No credential is configured: every caller may do everything
    /// (loopback development).
    Open,
    /// A writer credential (`server.writer_token_file`,
    /// `server.tls.writer_identities`).
    Write,
    /// An admin credential (`server.admin_token_file`,
    /// `server.tls.admin_identities`).
    Admin,
}

impl Scope {
    /// The scope a handler finds in a request (none: an unprotected call,
    /// which admits nothing beyond reading).
    pub fn of<T>(req: &tonic::Request<T>) -> Option<Scope> {
        req.extensions().get::<Scope>().copied()
    }

    /// Whether this scope may do what only an admin may.
    pub fn is_admin(self) -> bool {
        matches!(self, Scope::Open | Scope::Admin)
    }
}

/// The credentials a server accepts, by scope.
#[derive(Clone, Debug, Default)]
pub struct Credentials {
    pub admin_token: Option<AdminToken>,
    pub admin_identities: Arc<[ServerName<'static>]>,
    pub writer_token: Option<AdminToken>,
    pub writer_identities: Arc<[ServerName<'static>]>,
}

impl Credentials {
    /// Whether any credential is configured (otherwise every call is open).
    pub fn any(&self) -> bool {
        self.admin_token.is_some()
            || self.writer_token.is_some()
            || !self.admin_identities.is_empty()
            || !self.writer_identities.is_empty()
    }

    /// The highest scope a call's token or certificate grants.
    fn scope_of<B>(&self, req: &Request<B>) -> Option<Scope> {
        let given = req.headers().get(ADMIN_TOKEN_HEADER).map(|v| v.as_bytes());
        let cert = req
            .extensions()
            .get::<ConnInfo>()
            .and_then(|c| c.peer_cert.as_ref());
        let token_is =
            |t: &Option<AdminToken>| matches!((t, given), (Some(t), Some(g)) if t.matches(g));
        let named = |ids: &[ServerName<'static>]| {
            !ids.is_empty() && cert.and_then(|c| c.named(ids)).is_some()
        };
        if token_is(&self.admin_token) || named(&self.admin_identities) {
            Some(Scope::Admin)
        } else if token_is(&self.writer_token) || named(&self.writer_identities) {
            Some(Scope::Write)
        } else {
            None
        }
    }
}

/// Refuses calls to `protected` paths that carry no writer or admin
/// credential, and calls to `admin_only` paths without an admin one.
#[derive(Clone, Debug)]
pub struct AdminLayer {
    pub credentials: Arc<Credentials>,
    pub protected: &'static [&'static str],
    pub admin_only: &'static [&'static str],
}

impl<S> Layer<S> for AdminLayer {
    type Service = Admin<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Admin {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Admin<S> {
    inner: S,
    layer: AdminLayer,
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let l = &self.layer;
        let path = req.uri().path().to_owned();
        let admin_only = l.admin_only.contains(&path.as_str());
        if !admin_only && !l.protected.contains(&path.as_str()) {
            return Either::Left(self.inner.call(req));
        }
        if !l.credentials.any() {
            req.extensions_mut().insert(Scope::Open);
            return Either::Left(self.inner.call(req));
        }
        let scope = l.credentials.scope_of(&req);
        if scope == Some(Scope::Admin) || (scope == Some(Scope::Write) && !admin_only) {
            tracing::debug!(method = path, ?scope, "protected call admitted");
            if let Some(scope) = scope {
                req.extensions_mut().insert(scope);
            }
            return Either::Left(self.inner.call(req));
        }
        let had_token = req.headers().contains_key(ADMIN_TOKEN_HEADER);
        let had_cert = req
            .extensions()
            .get::<ConnInfo>()
            .is_some_and(|c| c.peer_cert.is_some());
        let status = refusal(&path, admin_only, scope.is_some(), had_token, had_cert);
        tracing::warn!(
            method = path,
            reason = status.message(),
            "protected call refused"
        );
        Either::Right(ready(Ok(status.into_http())))
    }
}

/// Why a protected call was refused, naming what would admit it:
/// PERMISSION_DENIED for a credential of too low a scope or a certificate
/// that names no one listed, UNAUTHENTICATED for no or a wrong token.
fn refusal(
    path: &str,
    admin_only: bool,
    writer: bool,
    had_token: bool,
    had_cert: bool,
) -> tonic::Status {
    let accepted = if admin_only {
        format!(
            "an admin credential: a client certificate named in server.tls.admin_identities or `{ADMIN_TOKEN_HEADER}` metadata with the token of server.admin_token_file"
        )
    } else {
        format!(
            "a client certificate named in server.tls.admin_identities or server.tls.writer_identities, or `{ADMIN_TOKEN_HEADER}` metadata with the token of server.admin_token_file or server.writer_token_file"
        )
    };
    if writer {
        return tonic::Status::permission_denied(format!(
            "{path} needs the admin scope; the call's credential is a writer's (accepted: {accepted})"
        ));
    }
    if had_cert && !had_token {
        return tonic::Status::permission_denied(format!(
            "{path} changes state: the client certificate is not named in the configured identities (accepted: {accepted})"
        ));
    }
    let why = if had_token {
        "carries a wrong"
    } else {
        "lacks the"
    };
    tonic::Status::unauthenticated(format!(
        "{path} changes state: the call {why} credential (accepted: {accepted})"
    ))
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
