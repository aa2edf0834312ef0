//! Who may call the gateway, against real processes and real clients: API
//! keys (hashed in a keys file) with scopes and tiers, the official OpenAI
//! Python client with a key (200) and without (401), a gRPC client seeing
//! UNAUTHENTICATED, PERMISSION_DENIED and RESOURCE_EXHAUSTED with
//! `google.rpc.RetryInfo`, JWTs signed by a test key served from a local
//! JWKS endpoint (including a key rotation mid-test), and a burst over the
//! tier's limit answered 429 with `Retry-After`.

use mlmesh_tests::OutputWithin as _;
use std::{
    process::Command,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use mlmesh_proto::{
    embedding::v1::EmbedRequest,
    gateway::v1::{self as gw, gateway_client::GatewayClient},
};
use mlmesh_tests::{HttpClient, MeshProcesses, TempDir, repo_root};
use prost::Message as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tonic::{Code, Request, metadata::MetadataValue};

const KEY_A: &str = "mlm_test_key_team_a_7f3c9d";
const KEY_B: &str = "mlm_test_key_team_b_1e8a42";

struct Signer {
    kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl Signer {
    fn new(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("key")
            .as_ref()
            .to_vec();
        let public = Ed25519KeyPair::from_pkcs8(&pkcs8)
            .expect("pair")
            .public_key()
            .as_ref()
            .to_vec();
        Self {
            kid: kid.into(),
            pkcs8,
            public,
        }
    }

    fn jwk(&self) -> Value {
        json!({
            "kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "use": "sig", "kid": self.kid,
            "x": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&self.public),
        })
    }

    fn token(&self, sub: &str, scope: &str, aud: &str) -> String {
        self.sign(&claims(sub, scope, aud))
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(
            &header,
            claims,
            &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
        )
        .expect("sign")
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn claims(sub: &str, scope: &str, aud: &str) -> Value {
    json!({"sub": sub, "scope": scope, "aud": aud, "iss": "https://issuer.test",
           "exp": now() + 600, "iat": now()})
}

/// A token with a hand-written header (`alg` of the attacker's choice),
/// signed by `sign` over `header.payload`.
fn hand_signed(header: Value, claims: &Value, sign: impl Fn(&[u8]) -> Vec<u8>) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let signing_input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64(&sig))
}

/// A JWKS endpoint whose key set the test can change; no keys at all
/// (`None`) stands for the endpoint being down (503).
async fn jwks_server(keys: Arc<Mutex<Option<Vec<Value>>>>) -> std::net::SocketAddr {
    let app = axum::Router::new().route(
        "/jwks.json",
        axum::routing::get(move || {
            let keys = Arc::clone(&keys);
            async move {
                let k = keys.lock().expect("keys").clone();
                match k {
                    Some(k) => (
                        axum::http::StatusCode::OK,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        json!({ "keys": k }).to_string(),
                    ),
                    None => (
                        axum::http::StatusCode::SERVICE_UNAVAILABLE,
                        [(axum::http::header::CONTENT_TYPE, "text/plain")],
                        "down".to_owned(),
                    ),
                }
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(l, app).await });
    addr
}

fn with_token<T>(msg: T, token: &str) -> Request<T> {
    let mut r = Request::new(msg);
    let v: MetadataValue<_> = format!("Bearer {token}").parse().expect("ascii");
    r.metadata_mut().insert("authorization", v);
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_are_authenticated_scoped_and_limited() {
    let _serial = mlmesh_tests::serial_async().await;
    let first = Signer::new("key-1");
    let second = Signer::new("key-2");
    let published = Arc::new(Mutex::new(Some(vec![first.jwk()])));
    let jwks = jwks_server(Arc::clone(&published)).await;

    let dir = TempDir::new("auth");
    let sha = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        format!(
            "[[keys]]\nname = \"team-a\"\nsha256 = \"{}\"\ntier = \"small\"\nscopes = [\"embed\", \"search\", \"predict\"]\n\n\
             [[keys]]\nname = \"team-b\"\nsha256 = \"{}\"\nscopes = [\"search\"]\n",
            sha(KEY_A),
            sha(KEY_B)
        ),
    )
    .expect("keys file");
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nkeys_file = \"{}\"\n\n[auth.tiers.small]\nrequests_per_second = 0.5\nburst = 8\n\n\
             [auth.jwt]\njwks_url = \"http://{jwks}/jwks.json\"\nissuer = \"https://issuer.test\"\naudience = \"mlmesh\"\ncache_secs = 2\n",
            keys.display()
        ),
    )
    .expect("settings");
    let mesh = MeshProcesses::start_with(&[], &[("MLMESH_CONFIG", config.display().to_string())]);
    let http = mesh.gateway.http_addr.expect("http");

    // The OpenAI Python client: with the key, without, with a wrong one.
    let site = repo_root().join(".cache/mlmesh/py/openai");
    if site.join(".mlmesh-stamp").is_file() {
        let script = r#"
import json, sys, openai
out = {}
for name, key in [("with_key", sys.argv[2]), ("no_key", ""), ("wrong_key", "sk-wrong")]:
    c = openai.OpenAI(base_url=sys.argv[1], api_key=key or "x", max_retries=0, timeout=60,
                      default_headers={} if key else {"Authorization": ""})
    try:
        r = c.embeddings.create(model="all-MiniLM-L6-v2", input="hello")
        out[name] = {"status": 200, "dim": len(r.data[0].embedding)}
    except openai.APIStatusError as e:
        out[name] = {"status": e.status_code, "class": type(e).__name__,
                     "www": e.response.headers.get("www-authenticate")}
print(json.dumps(out))
"#;
        let base = format!("http://{http}/v1");
        let out = tokio::task::spawn_blocking(move || {
            Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
                .args(["-c", script, &base, KEY_A])
                .env("PYTHONPATH", site)
                .env("NO_PROXY", "127.0.0.1,localhost")
                .env_remove("OPENAI_API_KEY")
                .output_within(mlmesh_tests::CHILD_LIMIT)
                .expect("python3")
        })
        .await
        .expect("join");
        let got: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&out.stderr)));
        assert_eq!(got["with_key"]["status"], 200, "{got}");
        assert_eq!(got["with_key"]["dim"], 384);
        assert_eq!(got["no_key"]["status"], 401, "{got}");
        assert_eq!(got["no_key"]["class"], "AuthenticationError");
        assert!(
            got["no_key"]["www"]
                .as_str()
                .is_some_and(|w| w.starts_with("Bearer")),
            "{got}"
        );
        assert_eq!(got["wrong_key"]["status"], 401, "{got}");
        assert!(
            got["wrong_key"]["www"]
                .as_str()
                .is_some_and(|w| w.contains("invalid_token")),
            "{got}"
        );
    } else {
        eprintln!(
            "skipped the OpenAI client part: run scripts/fetch-openai-client.sh (make test does)"
        );
    }

    // gRPC: each status.
    let mut g = GatewayClient::connect(format!("http://{}", mesh.gateway.addr))
        .await
        .expect("connect");
    let embed = || EmbedRequest {
        inputs: vec!["hello".into()],
        ..Default::default()
    };
    let e = g.embed(embed()).await.expect_err("no credentials");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = g
        .embed(with_token(embed(), KEY_B))
        .await
        .expect_err("team-b lacks embed");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("\"embed\""), "{e:?}");
    // Health stays open (probes carry no credentials).
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(format!("http://{}", mesh.gateway.addr))
            .expect("uri")
            .connect()
            .await
            .expect("connect"),
    );
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .expect("health without credentials");

    // Team-a's tier: a burst of 8, then 0.5 calls/s. The OpenAI client used
    // one; gRPC calls take the rest, then RESOURCE_EXHAUSTED with RetryInfo.
    let mut exhausted = None;
    for _ in 0..12 {
        match g.embed(with_token(embed(), KEY_A)).await {
            Ok(_) => {}
            Err(s) => {
                exhausted = Some(s);
                break;
            }
        }
    }
    let s = exhausted.expect("the burst ran out");
    assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
    #[derive(prost::Message)]
    struct RpcStatus {
        #[prost(int32, tag = "1")]
        code: i32,
        #[prost(string, tag = "2")]
        message: String,
        #[prost(message, repeated, tag = "3")]
        details: Vec<prost_types::Any>,
    }
    let details = RpcStatus::decode(s.details()).expect("google.rpc.Status");
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    #[derive(prost::Message)]
    struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        retry_delay: Option<prost_types::Duration>,
    }
    let info = RetryInfo::decode(details.details[0].value.as_slice()).expect("RetryInfo");
    let delay = info.retry_delay.expect("delay");
    assert!(
        delay.seconds <= 2 && (delay.seconds > 0 || delay.nanos > 0),
        "{delay:?}"
    );

    // The same over HTTP: 429 with Retry-After and x-ratelimit-*.
    let mut h = HttpClient::new(http);
    let body = serde_json::to_vec(&json!({"input": "hi"})).expect("json");
    let (status, _) = h
        .request(
            "POST",
            "/v1/embeddings",
            &[
                ("authorization", &format!("Bearer {KEY_A}")),
                ("content-type", "application/json"),
            ],
            &body,
        )
        .expect("post");
    assert_eq!(status, 429);
    let raw = raw_headers(http, "POST", "/v1/embeddings", KEY_A, &body);
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: "), "{raw}");
    assert!(
        raw.to_ascii_lowercase().contains("x-ratelimit-limit: 8"),
        "{raw}"
    );
    // Team-b (default tier) is within its limits, and the open routes open.
    let raw = raw_headers(http, "POST", "/v1/collections", KEY_B, b"{\"name\": \"x\"}");
    assert!(
        raw.starts_with("HTTP/1.1 403"),
        "team-b may not create: {raw}"
    );
    assert_eq!(h.request("GET", "/healthz", &[], &[]).expect("get").0, 200);
    // The MCP endpoint sits behind the same layer.
    let raw = raw_headers(http, "POST", "/mcp", "not-a-key", b"{}");
    assert!(raw.starts_with("HTTP/1.1 401"), "{raw}");

    // JWT: signed by the published key.
    let t1 = first.token("alice", "embed predict", "mlmesh");
    let r = g
        .embed(with_token(embed(), &t1))
        .await
        .expect("a valid JWT");
    assert_eq!(r.into_inner().embeddings.len(), 1);
    let wrong_aud = first.token("alice", "embed", "someone-else");
    let e = g
        .embed(with_token(embed(), &wrong_aud))
        .await
        .expect_err("audience");
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let no_scope = first.token("bob", "search", "mlmesh");
    let e = g
        .embed(with_token(embed(), &no_scope))
        .await
        .expect_err("scope");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Rotation: the issuer publishes a new key and signs with it; the
    // gateway has not seen its kid, fetches the JWKS again and accepts it.
    if let Some(k) = published.lock().expect("keys").as_mut() {
        k.push(second.jwk());
    }
    tokio::time::sleep(std::time::Duration::from_secs(11)).await; // past the refetch guard
    let t2 = second.token("carol", "predict", "mlmesh");
    let r = g
        .list_pipelines(with_token(gw::ListPipelinesRequest {}, &t2))
        .await
        .expect("a token signed by the rotated-in key");
    assert!(r.into_inner().pipelines.is_empty());
    // A forged token (right kid, other key) is refused.
    let forged = Signer {
        kid: "key-2".into(),
        ..Signer::new("x")
    }
    .token("mallory", "predict", "mlmesh");
    let e = g
        .list_pipelines(with_token(gw::ListPipelinesRequest {}, &forged))
        .await
        .expect_err("forged");
    assert_eq!(e.code(), Code::Unauthenticated);
    // Forgeries of the classic kinds, each refused.
    fn hs(key: &[u8]) -> impl Fn(&[u8]) -> Vec<u8> + '_ {
        move |input: &[u8]| {
            ring::hmac::sign(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key), input)
                .as_ref()
                .to_vec()
        }
    }
    let jwk_text = first.jwk().to_string();
    let attacks = [
        (
            "alg none",
            hand_signed(
                json!({"alg": "none", "typ": "JWT", "kid": "key-1"}),
                &claims("mallory", "predict", "mlmesh"),
                |_| Vec::new(),
            ),
        ),
        (
            "HS256 with the public key as secret",
            hand_signed(
                json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"}),
                &claims("mallory", "predict", "mlmesh"),
                hs(&first.public),
            ),
        ),
        (
            "HS256 with the JWK text as secret",
            hand_signed(
                json!({"alg": "HS256", "typ": "JWT", "kid": "key-1"}),
                &claims("mallory", "predict", "mlmesh"),
                hs(jwk_text.as_bytes()),
            ),
        ),
        (
            "not before an hour from now",
            first.sign(
                &json!({"sub": "mallory", "scope": "predict", "aud": "mlmesh",
                "iss": "https://issuer.test", "exp": now() + 7200, "nbf": now() + 3600}),
            ),
        ),
        (
            "other issuer",
            first.sign(
                &json!({"sub": "mallory", "scope": "predict", "aud": "mlmesh",
                "iss": "https://evil.test", "exp": now() + 600}),
            ),
        ),
        (
            "expired",
            first.sign(
                &json!({"sub": "mallory", "scope": "predict", "aud": "mlmesh",
                "iss": "https://issuer.test", "exp": now() - 600}),
            ),
        ),
    ];
    for (what, token) in attacks {
        let e = g
            .list_pipelines(with_token(gw::ListPipelinesRequest {}, &token))
            .await
            .expect_err(what);
        assert_eq!(e.code(), Code::Unauthenticated, "{what}: {e:?}");
    }
    // The JWKS endpoint goes down: the keys fetched before keep serving
    // (the cache has expired; refreshes fail), several callers at once.
    *published.lock().expect("keys") = None;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let calls = (0..8).map(|i| {
        let mut g = g.clone();
        let t = first.token(&format!("user{i}"), "predict", "mlmesh");
        async move {
            g.list_pipelines(with_token(gw::ListPipelinesRequest {}, &t))
                .await
        }
    });
    for r in futures::future::join_all(calls).await {
        r.expect("cached keys serve while the JWKS is down");
    }

    // Outcomes counted per caller (bounded labels).
    let m = mlmesh_tests::scrape(mesh.gateway.metrics_addr.expect("metrics"));
    assert!(
        m.contains(
            "mlmesh_gateway_auth_requests_total{caller=\"team-a\",outcome=\"rate_limited\"}"
        ),
        "{m}"
    );
    assert!(
        m.contains("mlmesh_gateway_auth_requests_total{caller=\"jwt:default\",outcome=\"ok\"}"),
        "{m}"
    );
    mesh.stop();
}

/// One request with a bearer key on a fresh connection; the status line
/// and headers.
fn raw_headers(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    key: &str,
    body: &[u8],
) -> String {
    let auth = format!("Bearer {key}");
    mlmesh_tests::raw_http(
        addr,
        method,
        path,
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        body,
    )
}

#[test]
fn an_exposed_gateway_without_auth_refuses_to_start() {
    let out = Command::new(mlmesh_tests::binary("mlmesh-gateway"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.mode") && err.contains("0.0.0.0"),
        "{err}"
    );
}
