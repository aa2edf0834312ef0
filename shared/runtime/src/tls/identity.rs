//! Who a TLS client is: the names (DNS or IP subject alternative names) of
//! the certificate it presented, checked the way a client checks a
//! server's (wildcards included), against a list from the settings.

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};

/// The certificate a client presented in the handshake (already verified
/// against `server.tls.client_ca_file`).
#[derive(Clone, Debug)]
pub struct PeerCert(Arc<CertificateDer<'static>>);

impl PeerCert {
    pub fn new(der: CertificateDer<'static>) -> Self {
        Self(Arc::new(der))
    }

    /// The first of `names` this certificate is valid for.
    pub fn named<'n>(&self, names: &'n [ServerName<'static>]) -> Option<&'n ServerName<'static>> {
        let ee = webpki::EndEntityCert::try_from(&*self.0).ok()?;
        names
            .iter()
            .find(|n| ee.verify_is_valid_for_subject_name(n).is_ok())
    }
}

/// `names` as certificate names; the first that is none names `key`.
pub fn parse_names(
    names: &[String],
    key: &str,
) -> Result<Vec<ServerName<'static>>, crate::SettingsError> {
    names
        .iter()
        .map(|n| {
            super::server_name(n.trim()).map_err(|reason| crate::SettingsError::Value {
                key: key.to_owned(),
                reason,
            })
        })
        .collect()
}
