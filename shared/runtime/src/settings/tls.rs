//! Settings of TLS (`[server.tls]`, and a client's `[….tls]` sections),
//! beside the other settings so that they need nothing of the TLS
//! machinery in [`crate::tls`], which builds configurations from them.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Settings of a server's TLS (section `[server.tls]`).
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ServerTlsSettings {
    /// PEM certificate chain the server presents; empty: plaintext.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// PEM CA bundle that client certificates must chain to; set: every
    /// client must present one (mutual TLS).
    pub client_ca_file: String,
    /// Client-certificate names (DNS or IP subject alternative names)
    /// allowed to call the state-changing RPCs; a list or a
    /// comma-separated string.
    #[serde(deserialize_with = "names_list")]
    pub admin_identities: Vec<String>,
    /// Names (DNS or IP) of client certificates allowed to call the
    /// state-changing RPCs except the admin-only ones (see
    /// `server.writer_token_file`); a list or a comma-separated string.
    #[serde(deserialize_with = "names_list")]
    pub writer_identities: Vec<String>,
    /// How often the files are checked for a change, in seconds; 0: read
    /// once at start.
    pub reload_secs: u64,
    /// A TLS handshake must complete within this, in seconds (a client
    /// that connects and says nothing holds a slot no longer).
    pub handshake_timeout_secs: u64,
}

impl Default for ServerTlsSettings {
    fn default() -> Self {
        Self {
            cert_file: String::new(),
            key_file: String::new(),
            client_ca_file: String::new(),
            admin_identities: Vec::new(),
            writer_identities: Vec::new(),
            reload_secs: 30,
            handshake_timeout_secs: 10,
        }
    }
}

/// Settings of a client's TLS to the services it calls.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClientTlsSettings {
    /// PEM CA bundle the servers' certificates must chain to; set: calls
    /// use TLS.
    pub ca_file: String,
    /// PEM certificate chain presented to servers that ask for one.
    pub cert_file: String,
    /// PEM private key of `cert_file`.
    pub key_file: String,
    /// How often the files are checked for a change, in seconds; 0: read
    /// once at start.
    pub reload_secs: u64,
}

impl Default for ClientTlsSettings {
    fn default() -> Self {
        Self {
            ca_file: String::new(),
            cert_file: String::new(),
            key_file: String::new(),
            reload_secs: 30,
        }
    }
}

/// A list of names, from a TOML array or a comma-separated string (as an
/// environment variable gives it).
fn names_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Names {
        One(String),
        Many(Vec<String>),
    }
    let all = match Names::deserialize(d)? {
        Names::One(s) => s.split(',').map(str::to_owned).collect::<Vec<_>>(),
        Names::Many(v) => v,
    };
    Ok(all
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}
