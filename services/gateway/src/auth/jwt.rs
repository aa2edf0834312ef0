//! JWT bearer tokens: signatures checked with the issuer's JWKS (fetched,
//! cached for `auth.jwt.cache_secs`, fetched again at once for an unknown
//! `kid` but at most every 10 s), then expiry, not-before (both with
//! `auth.jwt.leeway_secs` of skew), issuer and audience. While the JWKS
//! cannot be fetched, the keys fetched before keep verifying, and a failed
//! fetch is not retried for 10 s: callers never queue behind a dead JWKS
//! endpoint. One fetch runs at a time. Only
//! asymmetric algorithms (RS*, PS*, ES*, EdDSA) are accepted: a token can
//! never choose to be checked with a shared secret.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation, jwk::JwkSet};
use serde_json::Value as Json;

use super::{AuthError, Caller, Scope};
use crate::settings::JwtSettings;

/// Shortest time between two fetches caused by unknown `kid`s.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

struct Keys {
    fetched: Option<Instant>,
    /// The last fetch tried, whether it worked or not.
    tried: Option<Instant>,
    by_kid: HashMap<String, DecodingKey>,
}

pub struct JwtVerifier {
    settings: JwtSettings,
    client: reqwest::Client,
    keys: RwLock<Keys>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("jwks_url", &self.settings.jwks_url)
            .finish_non_exhaustive()
    }
}

fn unauthenticated(why: impl Into<String>) -> AuthError {
    AuthError::Unauthenticated(why.into())
}

impl JwtVerifier {
    pub fn new(settings: &JwtSettings) -> Result<Self, String> {
        let url: reqwest::Url = settings
            .jwks_url
            .parse()
            .map_err(|e| format!("{:?} is not a URL: {e}", settings.jwks_url))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err("an http(s) URL is required".into());
        }
        mlmesh_runtime::tls::install_default_provider();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            settings: settings.clone(),
            client,
            keys: RwLock::new(Keys {
                fetched: None,
                tried: None,
                by_kid: HashMap::new(),
            }),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self, kid: &str) -> (Option<DecodingKey>, Option<Instant>) {
        let k = self.keys.read().unwrap_or_else(|e| e.into_inner());
        (k.by_kid.get(kid).cloned(), k.fetched)
    }

    fn tried_recently(&self) -> bool {
        let k = self.keys.read().unwrap_or_else(|e| e.into_inner());
        k.tried.is_some_and(|t| t.elapsed() < REFETCH_EVERY)
    }

    async fn fetch(&self) -> Result<(), String> {
        self.keys.write().unwrap_or_else(|e| e.into_inner()).tried = Some(Instant::now());
        let resp = self
            .client
            .get(&self.settings.jwks_url)
            .send()
            .await
            .map_err(|e| format!("fetching the JWKS failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("the JWKS answered {}", resp.status()));
        }
        let set: JwkSet = resp
            .json()
            .await
            .map_err(|e| format!("the JWKS is not a JWK set: {e}"))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = &jwk.common.key_id else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(k) => {
                    by_kid.insert(kid.clone(), k);
                }
                Err(e) => tracing::warn!(kid, error = %e, "JWKS key skipped"),
            }
        }
        tracing::info!(keys = by_kid.len(), url = %self.settings.jwks_url, "JWKS fetched");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Keys {
            fetched: Some(Instant::now()),
            tried: Some(Instant::now()),
            by_kid,
        };
        Ok(())
    }

    /// The key for `kid`: cached while fresh, else fetched (an unknown kid
    /// fetches again unless a fetch just happened).
    async fn key(&self, kid: &str) -> Result<DecodingKey, AuthError> {
        let ttl = Duration::from_secs(self.settings.cache_secs);
        let (key, fetched) = self.cached(kid);
        let fresh = fetched.is_some_and(|t| t.elapsed() < ttl);
        if let (Some(k), true) = (&key, fresh) {
            return Ok(k.clone());
        }
        // A known but stale key: verify with it rather than wait while a
        // refresh is under way or has just failed.
        let _one = match (&key, self.fetching.try_lock()) {
            (_, Ok(guard)) => guard,
            (Some(k), Err(_)) => return Ok(k.clone()),
            (None, Err(_)) => self.fetching.lock().await,
        };
        // Someone may have fetched while this call waited.
        let (key, fetched) = self.cached(kid);
        let fresh = fetched.is_some_and(|t| t.elapsed() < ttl);
        if let (Some(k), true) = (&key, fresh) {
            return Ok(k.clone());
        }
        if self.tried_recently() {
            return key.ok_or_else(|| {
                unauthenticated(format!(
                    "the token's signing key (kid {kid:?}) is not in the JWKS"
                ))
            });
        }
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS unavailable");
            // A stale key still verifies rather than failing everyone.
            return key.ok_or_else(|| unauthenticated(format!("cannot check the token: {e}")));
        }
        self.cached(kid).0.ok_or_else(|| {
            unauthenticated(format!(
                "the token's signing key (kid {kid:?}) is not in the JWKS"
            ))
        })
    }

    /// The caller a valid token names.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| unauthenticated(format!("malformed JWT: {e}")))?;
        if matches!(
            header.alg,
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512
        ) {
            return Err(unauthenticated(
                "JWTs signed with a shared secret (HS*) are not accepted",
            ));
        }
        let kid = header
            .kid
            .ok_or_else(|| unauthenticated("the JWT has no kid header"))?;
        let key = self.key(&kid).await?;
        let s = &self.settings;
        let mut v = Validation::new(header.alg);
        if s.audience.is_empty() {
            v.validate_aud = false;
        } else {
            v.set_audience(&[&s.audience]);
        }
        if !s.issuer.is_empty() {
            v.set_issuer(&[&s.issuer]);
        }
        v.set_required_spec_claims(&["exp", "sub"]);
        v.validate_nbf = true;
        v.leeway = s.leeway_secs;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Json>>(token, &key, &v)
            .map_err(|e| unauthenticated(format!("invalid JWT: {e}")))?;
        let claims = data.claims;
        let name = claims
            .get("sub")
            .and_then(Json::as_str)
            .unwrap_or_default()
            .to_owned();
        let scopes = match claims.get(&s.scopes_claim) {
            Some(Json::String(list)) => list.split_whitespace().filter_map(Scope::parse).collect(),
            Some(Json::Array(list)) => list
                .iter()
                .filter_map(Json::as_str)
                .filter_map(Scope::parse)
                .collect(),
            _ => Vec::new(),
        };
        let tier = claims
            .get(&s.tier_claim)
            .and_then(Json::as_str)
            .unwrap_or(&s.default_tier)
            .to_owned();
        Ok(Caller {
            label: format!("jwt:{tier}"),
            name,
            tier,
            scopes,
        })
    }
}
