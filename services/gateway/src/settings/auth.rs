//! Section `[auth]` of the gateway's settings: who may call (API keys,
//! JWTs) and how much (tiers).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether callers must authenticate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Required when keys or JWT are configured; with neither, allowed only
    /// when every listener is on loopback (the gateway refuses to start
    /// otherwise).
    #[default]
    Auto,
    /// Every caller must present a valid API key or JWT.
    Required,
    /// No authentication, on any address (say so explicitly).
    None,
}

/// One API key: only its SHA-256 is stored.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// Who it belongs to: in logs, traces and metrics labels.
    pub name: String,
    /// Hex SHA-256 of the key (`printf %s "$KEY" | sha256sum`).
    pub sha256: String,
    /// Its rate-limit tier (a key of `auth.tiers`).
    #[serde(default = "default_tier")]
    pub tier: String,
    /// What it may call: embed, search, ingest, predict, admin, observe
    /// (the console's views of the mesh and the registry), promote (moving
    /// model aliases through the registry's gate).
    pub scopes: Vec<String>,
}

fn default_tier() -> String {
    "default".into()
}

/// A rate-limit tier; limits are per caller and per gateway replica.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct Tier {
    /// Sustained calls per second (GCRA); 0 for no limit.
    pub requests_per_second: f64,
    /// Calls allowed at once above the sustained rate.
    pub burst: u32,
    /// Sustained embedding inputs (texts) per second; 0 for no limit.
    pub inputs_per_second: f64,
    /// Inputs allowed at once above that rate (at least the largest batch).
    pub inputs_burst: u32,
    /// Calls (streams included, for their whole life) one caller may have
    /// in flight on this replica; 0 for no limit. Beside the global
    /// `limits.max_in_flight`, so one caller cannot take every slot.
    pub max_concurrent: u32,
}

impl Default for Tier {
    fn default() -> Self {
        Self {
            requests_per_second: 50.0,
            burst: 100,
            inputs_per_second: 1000.0,
            inputs_burst: 2048,
            max_concurrent: 64,
        }
    }
}

/// JWT bearer tokens checked against a JWKS.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct JwtSettings {
    /// Where the signing keys are (`https://issuer/.well-known/jwks.json`);
    /// empty: no JWT.
    pub jwks_url: String,
    /// Required `iss`. Empty fails at start unless `allow_any_issuer`.
    pub issuer: String,
    /// Required `aud`. Empty fails at start unless `allow_any_audience`:
    /// without it, a token the issuer minted for any other service would
    /// be accepted here.
    pub audience: String,
    /// Accept tokens of any `iss` (explicit opt-out of the issuer check).
    pub allow_any_issuer: bool,
    /// Accept tokens of any `aud` (explicit opt-out of the audience check).
    pub allow_any_audience: bool,
    /// Clock skew allowed for `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Claim with the scopes (space-separated string or list).
    pub scopes_claim: String,
    /// Claim naming the tier; absent: `default_tier`.
    pub tier_claim: String,
    pub default_tier: String,
    /// How long fetched keys are trusted, in seconds; an unknown `kid`
    /// fetches again sooner (at most every 10 s).
    pub cache_secs: u64,
}

/// Section `[auth]`: who may call, and how much.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub mode: AuthMode,
    /// API keys inline.
    pub keys: Vec<ApiKey>,
    /// A TOML file with more keys (`[[keys]]`, same fields), kept out of
    /// the main settings (a mounted Secret).
    pub keys_file: Option<std::path::PathBuf>,
    pub jwt: JwtSettings,
    /// Tiers by name; `default` always exists.
    pub tiers: BTreeMap<String, Tier>,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Auto,
            keys: Vec::new(),
            keys_file: None,
            jwt: JwtSettings {
                scopes_claim: "scope".into(),
                tier_claim: "tier".into(),
                default_tier: "default".into(),
                cache_secs: 300,
                leeway_secs: 30,
                ..JwtSettings::default()
            },
            tiers: BTreeMap::from([("default".to_owned(), Tier::default())]),
        }
    }
}
