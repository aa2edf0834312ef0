//! Mutual TLS between the services of a mesh (rustls, ring).
//!
//! A server with `server.tls.cert_file` and `key_file` speaks TLS only
//! (ALPN `h2`); with `client_ca_file` too, every client must present a
//! certificate chaining to that CA, or the handshake fails before any
//! request is read. Its client-certificate names are the caller's identity:
//! `server.tls.admin_identities` lists those allowed to call the
//! state-changing RPCs (see [`crate::admin`]).
//!
//! A client (the gateway's downstream calls, the inference service's
//! registry follower) with a CA file verifies each server against it and
//! against the name it dialled (or a configured one, for replicas dialled
//! by address), and presents its own certificate when it has one.
//!
//! Files are PEM, as Kubernetes TLS Secrets and cert-manager write them
//! (`tls.crt`, `tls.key`, `ca.crt`). They are read with a size bound and
//! checked at start (a bad file fails start naming the setting); afterwards
//! they are re-read when they change (`reload_secs`), so a rotated
//! certificate is used by the next connection without a restart, and a bad
//! rotation keeps the previous configuration serving (and is logged).

mod identity;
pub mod pki;
mod reload;

use std::{path::Path, sync::Arc, time::Duration};

use rustls::{
    ClientConfig, RootCertStore, ServerConfig,
    crypto::CryptoProvider,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    server::WebPkiClientVerifier,
};

/// The settings live with the other settings (a leaf module); here for
/// the paths callers know.
pub use crate::settings::tls::{ClientTlsSettings, ServerTlsSettings};
pub use identity::{PeerCert, parse_names};
pub use reload::Reloading;

use crate::settings::SettingsError;

/// Largest PEM file read (a chain of a few certificates, a key, a CA
/// bundle): bounded before it is read.
const MAX_PEM_BYTES: u64 = 1 << 20;

/// Makes ring this process's default rustls provider, for clients that
/// take the default (reqwest); the same provider tonic's TLS uses here.
/// Idempotent.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(key: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Value {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// The bytes of a PEM file a setting names, bounded before reading.
fn read_pem(path: &str, key: &str) -> Result<Vec<u8>, SettingsError> {
    let p = Path::new(path);
    let len = std::fs::metadata(p)
        .map_err(|e| invalid(key, format!("cannot read {path}: {e}")))?
        .len();
    if len > MAX_PEM_BYTES {
        return Err(invalid(
            key,
            format!("{path} is {len} bytes; a PEM file holds at most {MAX_PEM_BYTES}"),
        ));
    }
    std::fs::read(p).map_err(|e| invalid(key, format!("cannot read {path}: {e}")))
}

fn certs(path: &str, key: &str) -> Result<Vec<CertificateDer<'static>>, SettingsError> {
    let pem = read_pem(path, key)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(key, format!("{path}: not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(key, format!("{path} holds no certificate")));
    }
    Ok(certs)
}

fn private_key(path: &str, key: &str) -> Result<PrivateKeyDer<'static>, SettingsError> {
    let pem = read_pem(path, key)?;
    PrivateKeyDer::from_pem_slice(&pem)
        .map_err(|e| invalid(key, format!("{path}: no PEM private key: {e}")))
}

fn roots(path: &str, key: &str) -> Result<Arc<RootCertStore>, SettingsError> {
    let mut store = RootCertStore::empty();
    for c in certs(path, key)? {
        store
            .add(c)
            .map_err(|e| invalid(key, format!("{path}: not a usable CA certificate: {e}")))?;
    }
    Ok(Arc::new(store))
}

/// Both of a certificate and its key, or neither.
fn pair<'a>(
    cert: &'a str,
    key: &'a str,
    section: &str,
) -> Result<Option<(&'a str, &'a str)>, SettingsError> {
    match (cert.trim(), key.trim()) {
        ("", "") => Ok(None),
        ("", _) => Err(invalid(
            &format!("{section}.cert_file"),
            "empty while key_file is set (both or neither)",
        )),
        (_, "") => Err(invalid(
            &format!("{section}.key_file"),
            "empty while cert_file is set (both or neither)",
        )),
        (c, k) => Ok(Some((c, k))),
    }
}

/// A server's TLS: the current configuration (reloaded on change) and the
/// handshake bound.
#[derive(Clone)]
pub struct ServerTls {
    config: Reloading<ServerConfig>,
    handshake_timeout: Duration,
    mutual: bool,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("mutual", &self.mutual)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The TLS of `s` (`section` names it in errors), or none when no
    /// certificate is set. Reads and checks every file now.
    pub fn from_settings(
        s: &ServerTlsSettings,
        section: &str,
    ) -> Result<Option<Self>, SettingsError> {
        let Some((cert, key)) = pair(&s.cert_file, &s.key_file, section)? else {
            if !s.client_ca_file.trim().is_empty() {
                return Err(invalid(
                    &format!("{section}.client_ca_file"),
                    "set without cert_file and key_file (a server needs its own certificate to ask for the client's)",
                ));
            }
            return Ok(None);
        };
        let (cert, key) = (cert.to_owned(), key.to_owned());
        let ca = s.client_ca_file.trim().to_owned();
        let section = section.to_owned();
        let mut files = vec![cert.clone(), key.clone()];
        if !ca.is_empty() {
            files.push(ca.clone());
        }
        let mutual = !ca.is_empty();
        let build = move || -> Result<ServerConfig, SettingsError> {
            let builder = ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(&section, e.to_string()))?;
            let builder = if ca.is_empty() {
                builder.with_no_client_auth()
            } else {
                let ca_key = format!("{section}.client_ca_file");
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(roots(&ca, &ca_key)?, provider())
                        .build()
                        .map_err(|e| invalid(&ca_key, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            };
            let cert_key = format!("{section}.cert_file");
            let mut config = builder
                .with_single_cert(
                    certs(&cert, &cert_key)?,
                    private_key(&key, &format!("{section}.key_file"))?,
                )
                .map_err(|e| invalid(&cert_key, format!("does not fit key_file: {e}")))?;
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        };
        Ok(Some(Self {
            config: Reloading::start(files, s.reload_secs, build)?,
            handshake_timeout: Duration::from_secs(s.handshake_timeout_secs.max(1)),
            mutual,
        }))
    }

    /// Whether clients must present a certificate.
    pub fn is_mutual(&self) -> bool {
        self.mutual
    }

    /// The server side of a handshake on `io`, within the handshake
    /// timeout; the client's certificate when it presented one.
    pub async fn accept<IO>(
        &self,
        io: IO,
    ) -> std::io::Result<(tokio_rustls::server::TlsStream<IO>, Option<PeerCert>)>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.config.get());
        let stream = tokio::time::timeout(self.handshake_timeout, acceptor.accept(io))
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "TLS handshake not done within {} s (server.tls.handshake_timeout_secs)",
                        self.handshake_timeout.as_secs()
                    ),
                )
            })??;
        let peer = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| PeerCert::new(c.clone().into_owned()));
        Ok((stream, peer))
    }
}

/// A client's TLS: the current configuration (reloaded on change), and the
/// name servers must present when it is not the dialled host.
#[derive(Clone)]
pub struct ClientTls {
    config: Reloading<ClientConfig>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

impl ClientTls {
    /// The TLS of `s` (`section` names it in errors), or none when no CA
    /// is set. Reads and checks every file now.
    pub fn from_settings(
        s: &ClientTlsSettings,
        section: &str,
    ) -> Result<Option<Self>, SettingsError> {
        let own =
            pair(&s.cert_file, &s.key_file, section)?.map(|(c, k)| (c.to_owned(), k.to_owned()));
        let ca = s.ca_file.trim().to_owned();
        if ca.is_empty() {
            if own.is_some() {
                return Err(invalid(
                    &format!("{section}.ca_file"),
                    "empty while cert_file is set (a client needs the CA to verify the servers it presents its certificate to)",
                ));
            }
            return Ok(None);
        }
        let mut files = vec![ca.clone()];
        if let Some((c, k)) = &own {
            files.extend([c.clone(), k.clone()]);
        }
        let section = section.to_owned();
        let build = move || -> Result<ClientConfig, SettingsError> {
            let builder = ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| invalid(&section, e.to_string()))?
                .with_root_certificates(roots(&ca, &format!("{section}.ca_file"))?);
            let mut config = match &own {
                None => builder.with_no_client_auth(),
                Some((cert, key)) => {
                    let cert_key = format!("{section}.cert_file");
                    builder
                        .with_client_auth_cert(
                            certs(cert, &cert_key)?,
                            private_key(key, &format!("{section}.key_file"))?,
                        )
                        .map_err(|e| invalid(&cert_key, format!("does not fit key_file: {e}")))?
                }
            };
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(config)
        };
        Ok(Some(Self {
            config: Reloading::start(files, s.reload_secs, build)?,
            server_name: None,
        }))
    }

    /// The same, verifying servers for `name` whatever address is dialled
    /// (replicas found by discovery are dialled by pod IP; their
    /// certificate names their Service).
    pub fn for_name(&self, name: &str) -> Result<Self, String> {
        Ok(Self {
            config: self.config.clone(),
            server_name: Some(server_name(name)?),
        })
    }

    /// The name set by [`ClientTls::for_name`].
    pub fn server_name(&self) -> Option<&ServerName<'static>> {
        self.server_name.as_ref()
    }

    /// The client side of a handshake on `io`, verifying the server's
    /// certificate for `name`.
    pub async fn connect<IO>(
        &self,
        name: ServerName<'static>,
        io: IO,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        tokio_rustls::TlsConnector::from(self.config.get())
            .connect(name, io)
            .await
    }
}

/// `host` as the name a server's certificate must carry.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(h.to_owned())
        .map_err(|e| format!("{host:?} is not a TLS server name: {e}"))
}

#[cfg(test)]
mod tests;
