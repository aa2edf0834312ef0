//! Who is calling, what they may call, and how much: API keys (stored as
//! SHA-256 hashes) and JWT bearer tokens checked against a JWKS, scopes per
//! operation, per-caller GCRA rate limits by tier. One tower layer
//! ([`layer::AuthLayer`]) applies it to the gRPC, HTTP and MCP faces alike.
//!
//! Credentials: `authorization: Bearer <key or JWT>` or `x-api-key: <key>`.
//! A token with two dots is a JWT; anything else is looked up as a key.
//! Limits are per gateway replica (N replicas allow N times the rate).

pub mod jwt;
pub mod layer;
pub mod limits;
pub mod scope;

use std::{collections::HashMap, sync::Arc, time::Duration};

use sha2::{Digest as _, Sha256};

pub use scope::Scope;

use crate::settings::{ApiKey, AuthMode, AuthSettings, Settings};

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The key's name, or the JWT's `sub`.
    pub name: String,
    /// Bounded label for metrics: the key's name, or `jwt:<tier>`.
    pub label: String,
    pub tier: String,
    pub scopes: Vec<Scope>,
}

tokio::task_local! {
    /// The caller of the request being served (set by the auth layer).
    static CALLER: Arc<Caller>;
}

/// The caller of the current request, when authentication is on.
pub fn current_caller() -> Option<Arc<Caller>> {
    CALLER.try_with(Arc::clone).ok()
}

/// Runs `f` as a request of `caller`.
pub async fn scoped<F: Future>(caller: Arc<Caller>, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No credentials, or ones that do not check out.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the scope the operation needs.
    #[error("{caller} may not call this: it needs the {scope:?} scope (has: {has})")]
    PermissionDenied {
        caller: String,
        /// The caller's bounded metrics label.
        label: String,
        scope: &'static str,
        has: String,
    },
    /// Over the tier's limit; retry after the delay.
    #[error("rate limit of tier {tier:?} reached for {caller} ({what}); retry in {retry_after:?}")]
    RateLimited {
        caller: String,
        tier: String,
        what: &'static str,
        retry_after: Duration,
        limit: u32,
    },
}

/// Why the auth settings cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("`{key}`: {reason}")]
pub struct AuthConfigError {
    pub key: String,
    pub reason: String,
}

fn config_error(key: &str, reason: impl Into<String>) -> AuthConfigError {
    AuthConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// The gateway's authentication and limits.
#[derive(Debug)]
pub struct Auth {
    /// SHA-256 (raw) → the key's caller.
    keys: HashMap<[u8; 32], Arc<Caller>>,
    jwt: Option<jwt::JwtVerifier>,
    pub limits: limits::Limits,
    /// Callers seen, by their bounded label (a key's name, `jwt:<tier>`):
    /// as many entries as keys and tiers, whatever callers send.
    seen: std::sync::Mutex<HashMap<String, Seen>>,
}

/// When a caller (label) last got through, and how often.
#[derive(Clone, Debug)]
struct Seen {
    name: String,
    tier: String,
    scopes: Vec<Scope>,
    last_ms: u64,
    calls: u64,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysFile {
    keys: Vec<ApiKey>,
}

impl Auth {
    /// The auth settings made usable, or `None` when authentication is off.
    /// A gateway with neither keys nor JWT on a non-loopback address is an
    /// error unless `auth.mode = "none"` says so.
    pub fn from_settings(settings: &Settings) -> Result<Option<Arc<Self>>, AuthConfigError> {
        let a = &settings.auth;
        let mut keys = a.keys.clone();
        if let Some(path) = &a.keys_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                config_error(
                    "auth.keys_file",
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let file: KeysFile = parse_keys_file(&text)
                .map_err(|e| config_error("auth.keys_file", format!("{}: {e}", path.display())))?;
            keys.extend(file.keys);
        }
        let configured = !keys.is_empty() || !a.jwt.jwks_url.is_empty();
        match a.mode {
            AuthMode::None => return Ok(None),
            AuthMode::Auto if !configured => {
                let exposed = std::iter::once(settings.server.listen)
                    .chain(settings.http.listen)
                    .find(|addr| !addr.ip().is_loopback());
                if let Some(addr) = exposed {
                    return Err(config_error(
                        "auth.mode",
                        format!(
                            "the gateway listens on {addr}, beyond loopback, with no API keys or JWT configured; \
                             configure auth.keys / auth.jwt, or set auth.mode = \"none\" to serve without authentication"
                        ),
                    ));
                }
                return Ok(None);
            }
            AuthMode::Required if !configured => {
                return Err(config_error(
                    "auth.mode",
                    "\"required\" needs auth.keys, auth.keys_file or auth.jwt.jwks_url",
                ));
            }
            _ => {}
        }
        Ok(Some(Arc::new(Self::build(a, keys)?)))
    }

    fn build(a: &AuthSettings, keys: Vec<ApiKey>) -> Result<Self, AuthConfigError> {
        let mut by_hash = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let key = format!("auth.keys[{i}]");
            let hash = hex::decode(k.sha256.trim())
                .ok()
                .and_then(|h| <[u8; 32]>::try_from(h).ok())
                .ok_or_else(|| {
                    config_error(
                        &format!("{key}.sha256"),
                        "64 hex digits (a SHA-256) expected",
                    )
                })?;
            if !a.tiers.contains_key(&k.tier) {
                return Err(config_error(
                    &format!("{key}.tier"),
                    format!("no tier {:?} in auth.tiers", k.tier),
                ));
            }
            let scopes = k
                .scopes
                .iter()
                .map(|s| {
                    Scope::parse(s).ok_or_else(|| {
                        config_error(
                            &format!("{key}.scopes"),
                            format!("unknown scope {s:?} (embed, search, ingest, predict, admin, observe, promote)"),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let caller = Caller {
                name: k.name.clone(),
                label: k.name.clone(),
                tier: k.tier.clone(),
                scopes,
            };
            if by_hash.insert(hash, Arc::new(caller)).is_some() {
                return Err(config_error(
                    &format!("{key}.sha256"),
                    "the same key is listed twice",
                ));
            }
        }
        let jwt = if a.jwt.jwks_url.is_empty() {
            None
        } else {
            for (key, value, allowed, optout) in [
                (
                    "auth.jwt.issuer",
                    &a.jwt.issuer,
                    a.jwt.allow_any_issuer,
                    "auth.jwt.allow_any_issuer",
                ),
                (
                    "auth.jwt.audience",
                    &a.jwt.audience,
                    a.jwt.allow_any_audience,
                    "auth.jwt.allow_any_audience",
                ),
            ] {
                if value.is_empty() && !allowed {
                    return Err(config_error(
                        key,
                        format!("is empty: set it, or set {optout} = true to accept any"),
                    ));
                }
            }
            if a.jwt.leeway_secs > 300 {
                return Err(config_error(
                    "auth.jwt.leeway_secs",
                    format!("{}; at most 300", a.jwt.leeway_secs),
                ));
            }
            if !a.tiers.contains_key(&a.jwt.default_tier) {
                return Err(config_error(
                    "auth.jwt.default_tier",
                    format!("no tier {:?} in auth.tiers", a.jwt.default_tier),
                ));
            }
            Some(jwt::JwtVerifier::new(&a.jwt).map_err(|e| config_error("auth.jwt.jwks_url", e))?)
        };
        let limits = limits::Limits::new(&a.tiers).map_err(|(k, e)| config_error(&k, e))?;
        Ok(Self {
            keys: by_hash,
            jwt,
            limits,
            seen: std::sync::Mutex::new(HashMap::new()),
        })
    }

    /// Notes that `caller` got through now.
    pub fn saw(&self, caller: &Caller) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut g = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = g.get_mut(&caller.label) {
            s.last_ms = now;
            s.calls += 1;
            // A JWT label is shared by its tier's subjects: the latest.
            if s.name != caller.name {
                s.name.clone_from(&caller.name);
            }
            return;
        }
        g.insert(
            caller.label.clone(),
            Seen {
                name: caller.name.clone(),
                tier: caller.tier.clone(),
                scopes: caller.scopes.clone(),
                last_ms: now,
                calls: 1,
            },
        );
    }

    /// Who may call (keys by name, tier and scopes, never their hashes;
    /// whether JWTs are accepted) and when each caller was last seen.
    pub fn access(&self) -> serde_json::Value {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let scopes = |s: &[Scope]| s.iter().map(|s| s.as_str()).collect::<Vec<_>>();
        let mut keys: Vec<serde_json::Value> = self
            .keys
            .values()
            .map(|c| {
                let s = seen.get(&c.label);
                serde_json::json!({
                    "kind": "key", "name": c.name, "tier": c.tier, "scopes": scopes(&c.scopes),
                    "last_seen_ms": s.map(|s| s.last_ms), "calls": s.map_or(0, |s| s.calls),
                })
            })
            .collect();
        keys.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        let mut jwt: Vec<serde_json::Value> = seen
            .iter()
            .filter(|(label, _)| label.starts_with("jwt:"))
            .map(|(label, s)| {
                serde_json::json!({
                    "kind": "jwt", "name": label, "last_subject": s.name, "tier": s.tier,
                    "scopes": scopes(&s.scopes), "last_seen_ms": s.last_ms, "calls": s.calls,
                })
            })
            .collect();
        jwt.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
        serde_json::json!({
            "authentication": true,
            "jwt": self.jwt.is_some(),
            "callers": keys.into_iter().chain(jwt).collect::<Vec<_>>(),
        })
    }

    /// The caller presenting `token`.
    pub async fn authenticate(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        if token.matches('.').count() == 2 {
            let Some(jwt) = &self.jwt else {
                return Err(AuthError::Unauthenticated(
                    "bearer JWTs are not accepted here (no auth.jwt configured)".into(),
                ));
            };
            return jwt.verify(token).await.map(Arc::new);
        }
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.keys
            .get(&hash)
            .cloned()
            .ok_or_else(|| AuthError::Unauthenticated("unknown API key".into()))
    }
}

/// Parses the keys file (TOML) with the settings' own parser.
fn parse_keys_file(text: &str) -> Result<KeysFile, String> {
    config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .and_then(config::Config::try_deserialize)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Settings;

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn a_jwt_issuer_or_audience_left_empty_fails_unless_waived() {
        let mut s = Settings::default();
        s.auth.jwt.jwks_url = "http://127.0.0.1:9/jwks.json".into();
        s.auth.jwt.issuer = "https://issuer.test".into();
        let e = Auth::from_settings(&s).expect_err("no audience");
        assert_eq!(e.key, "auth.jwt.audience");
        assert!(e.to_string().contains("allow_any_audience"), "{e}");
        s.auth.jwt.audience = "mlmesh".into();
        s.auth.jwt.issuer.clear();
        let e = Auth::from_settings(&s).expect_err("no issuer");
        assert_eq!(e.key, "auth.jwt.issuer");
        s.auth.jwt.allow_any_issuer = true;
        assert!(Auth::from_settings(&s).expect("waived").is_some());
        s.auth.jwt.leeway_secs = 3600;
        let e = Auth::from_settings(&s).expect_err("leeway");
        assert_eq!(e.key, "auth.jwt.leeway_secs");
    }

    #[tokio::test]
    async fn keys_are_matched_by_hash_and_exposure_needs_a_decision() {
        let mut s = Settings::default();
        assert!(Auth::from_settings(&s).expect("loopback").is_none());
        s.http.listen = Some("0.0.0.0:8080".parse().expect("addr"));
        let e = Auth::from_settings(&s).expect_err("exposed");
        assert_eq!(e.key, "auth.mode");
        s.auth.mode = AuthMode::None;
        assert!(Auth::from_settings(&s).expect("explicit").is_none());
        s.auth.mode = AuthMode::Auto;
        s.auth.keys.push(ApiKey {
            name: "team-a".into(),
            sha256: sha("secret-a"),
            tier: "default".into(),
            scopes: vec!["embed".into()],
        });
        let auth = Auth::from_settings(&s).expect("valid").expect("on");
        let c = auth.authenticate("secret-a").await.expect("known");
        assert_eq!(c.name, "team-a");
        assert!(auth.authenticate("secret-b").await.is_err());
        s.auth.keys[0].scopes = vec!["fly".into()];
        let e = Auth::from_settings(&s).expect_err("scope");
        assert_eq!(e.key, "auth.keys[0].scopes");
    }
}
