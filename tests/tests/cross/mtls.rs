//! Mutual TLS across the mesh, with real processes and certificates this
//! test generates: every service serves TLS only and asks for a client
//! certificate from the mesh CA. A plaintext client, a client without a
//! certificate and one with a certificate from another CA are refused at
//! the handshake; a client whose certificate is not named in
//! `server.tls.admin_identities` reads but cannot write (PERMISSION_DENIED
//! naming the setting); the CI identity pushes a model; the inference
//! service follows it over TLS; the gateway calls embedding, vector-search
//! and inference over TLS with one trace across the hops, and its
//! forwarded unload is admitted by its certificate. `/healthz` on the
//! metrics port is the plain-HTTP probe of a TLS-only server.

use mlmesh_tests::OutputWithin as _;
use std::{
    process::Command,
    time::{Duration, Instant},
};

use mlmesh_proto::{
    inference::{self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient},
    registry::v1::{self as pb, registry_client::RegistryClient},
};
use mlmesh_runtime::{
    client::{H2Channel, H2Settings},
    tls::{ClientTls, ClientTlsSettings},
};
use mlmesh_tests::{
    HttpClient, Service, TempDir, binary,
    otlp::{OtlpCollector, SpanRow},
    repo_root,
};
use serde_json::json;

use crate::registry_follow::{close, probabilities, refs, request, runtime};

/// The mesh CA's files and one certificate per holder, in `dir`.
struct Pki {
    dir: TempDir,
}

impl Pki {
    /// Made by `mlmesh certs`, as a user would.
    fn new() -> Self {
        let dir = TempDir::new("mtls-pki");
        let certs = |out: &std::path::Path, holders: &[&str]| {
            let o = Command::new(binary("mlmesh"))
                .arg("certs")
                .arg("--out")
                .arg(out)
                .args(holders)
                .output_within(mlmesh_tests::CHILD_LIMIT)
                .expect("run mlmesh certs");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        certs(
            dir.path(),
            &[
                "registry=127.0.0.1,registry.test",
                "inference=127.0.0.1,inference.test",
                "embedding=127.0.0.1",
                "vector=127.0.0.1",
                "gateway=gateway.test",
                "ci=ci.test",
            ],
        );
        // The same name from another CA.
        let other = dir.path().join("other");
        certs(&other, &["ci=ci.test"]);
        std::fs::rename(other.join("ci.crt"), dir.path().join("stranger.crt")).expect("mv");
        std::fs::rename(other.join("ci.key"), dir.path().join("stranger.key")).expect("mv");
        Self { dir }
    }

    fn file(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// A TLS-only server presenting `holder`'s certificate, asking for
    /// client certificates, letting `admins` change state.
    fn server_env(&self, holder: &str, admins: &str) -> Vec<(&'static str, String)> {
        vec![
            (
                "MLMESH_SERVER__TLS__CERT_FILE",
                self.file(&format!("{holder}.crt")),
            ),
            (
                "MLMESH_SERVER__TLS__KEY_FILE",
                self.file(&format!("{holder}.key")),
            ),
            ("MLMESH_SERVER__TLS__CLIENT_CA_FILE", self.file("ca.crt")),
            ("MLMESH_SERVER__TLS__ADMIN_IDENTITIES", admins.to_owned()),
        ]
    }

    /// Client settings under `prefix` (`MLMESH_DOWNSTREAM__TLS`) with
    /// `holder`'s certificate.
    fn client_env(&self, prefix: &str, holder: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}__CA_FILE"), self.file("ca.crt")),
            (
                format!("{prefix}__CERT_FILE"),
                self.file(&format!("{holder}.crt")),
            ),
            (
                format!("{prefix}__KEY_FILE"),
                self.file(&format!("{holder}.key")),
            ),
        ]
    }

    /// A channel to `addr` as `holder` (none: no certificate), trusting
    /// `ca`.
    fn channel(&self, addr: std::net::SocketAddr, holder: Option<&str>, ca: &str) -> H2Channel {
        let s = ClientTlsSettings {
            ca_file: self.file(ca),
            cert_file: holder
                .map(|h| self.file(&format!("{h}.crt")))
                .unwrap_or_default(),
            key_file: holder
                .map(|h| self.file(&format!("{h}.key")))
                .unwrap_or_default(),
            reload_secs: 0,
        };
        let tls = ClientTls::from_settings(&s, "test").expect("client TLS");
        H2Channel::lazy(
            format!("https://{addr}").parse().expect("uri"),
            H2Settings::default(),
            tls,
        )
        .expect("channel")
    }
}

fn env_refs(v: &[(String, String)]) -> Vec<(&str, String)> {
    v.iter().map(|(k, x)| (k.as_str(), x.clone())).collect()
}

fn healthz(metrics: std::net::SocketAddr) -> u16 {
    let (status, _) = HttpClient::new(metrics)
        .request("GET", "/healthz", &[], b"")
        .expect("healthz");
    status
}

#[test]
fn the_mesh_speaks_mutual_tls_end_to_end_and_refuses_strangers() {
    let _serial = mlmesh_tests::serial();
    let rt = runtime();
    let pki = Pki::new();
    let (reg_data, cache, repo) = (
        TempDir::new("mtls-registry"),
        TempDir::new("mtls-cache"),
        TempDir::new("mtls-repo"),
    );
    let mut env = pki.server_env("registry", "ci.test");
    env.push((
        "MLMESH_REGISTRY__DATA_DIR",
        reg_data.path().display().to_string(),
    ));
    let registry = Service::start("mlmesh-registry", &env);
    let raddr = registry.addr;
    assert_eq!(healthz(registry.metrics_addr.expect("metrics")), 200);

    rt.block_on(async {
        // Plaintext: the server speaks only TLS.
        let plain = async {
            RegistryClient::connect(format!("http://{raddr}"))
                .await
                .map_err(|e| tonic::Status::unavailable(e.to_string()))?
                .list_models(pb::ListModelsRequest::default())
                .await
        };
        let r = tokio::time::timeout(Duration::from_secs(20), plain)
            .await
            .expect("a plaintext call ends");
        assert!(r.is_err(), "a plaintext client was served: {r:?}");
        // TLS without a client certificate, or with one from another CA.
        for (holder, what) in [(None, "no certificate"), (Some("stranger"), "another CA")] {
            let e = RegistryClient::new(pki.channel(raddr, holder, "ca.crt"))
                .list_models(pb::ListModelsRequest::default())
                .await
                .expect_err(what);
            assert_eq!(e.code(), tonic::Code::Unavailable, "{what}: {e:?}");
        }
        // A certificate from the mesh CA reads; not named, it cannot write.
        let mut reader = RegistryClient::new(pki.channel(raddr, Some("gateway"), "ca.crt"));
        reader
            .list_models(pb::ListModelsRequest::default())
            .await
            .expect("a mesh certificate reads");
        let e = reader
            .create_model(pb::CreateModelRequest {
                name: "digits".into(),
                ..Default::default()
            })
            .await
            .expect_err("not an admin identity");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("server.tls.admin_identities"),
            "{}",
            e.message()
        );
    });

    // `mlmesh registry` over mutual TLS: the gateway's certificate is
    // refused a write naming the setting; the CI identity pushes v1 and
    // points production at it.
    let folder = TempDir::new("mtls-folder");
    std::fs::copy(
        repo_root().join("services/inference/models/digits-mlp-npz/1/model.npz"),
        folder.path().join("model.npz"),
    )
    .expect("copy model");
    let cli = |holder: &str, args: &[&str]| {
        Command::new(binary("mlmesh"))
            .current_dir(repo_root())
            .args(["registry", "--addr", &raddr.to_string()])
            .args(["--tls-ca-file", &pki.file("ca.crt")])
            .args(["--tls-cert-file", &pki.file(&format!("{holder}.crt"))])
            .args(["--tls-key-file", &pki.file(&format!("{holder}.key"))])
            .args(args)
            .output_within(mlmesh_tests::CHILD_LIMIT)
            .expect("run mlmesh registry")
    };
    let out = cli("gateway", &["create", "digits"]);
    assert!(
        !out.status.success(),
        "the gateway's certificate may not write"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.tls.admin_identities"), "{err}");
    let folder_arg = folder.path().display().to_string();
    for args in [
        vec!["create", "digits"],
        vec!["push", "digits", &folder_arg],
        vec!["alias", "set", "digits", "production", "1", "--expect", "0"],
    ] {
        let out = cli("ci", &args);
        assert!(
            out.status.success(),
            "{args:?} as ci.test: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // The inference service follows the alias over TLS and serves TLS.
    let mut ienv = pki.server_env("inference", "gateway.test");
    let follow = pki.client_env("MLMESH_INFERENCE__REGISTRY_TLS", "inference");
    ienv.extend(env_refs(&follow));
    ienv.extend([
        (
            "MLMESH_INFERENCE__MODEL_REPOSITORY",
            repo.path().display().to_string(),
        ),
        ("MLMESH_INFERENCE__REGISTRY_ADDR", raddr.to_string()),
        (
            "MLMESH_INFERENCE__REGISTRY_MODELS",
            "registry://digits@production".into(),
        ),
        (
            "MLMESH_INFERENCE__REGISTRY_CACHE_DIR",
            cache.path().display().to_string(),
        ),
    ]);
    let (collector, otlp) = rt.block_on(OtlpCollector::start());
    let otel = ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{otlp}"));
    ienv.push(otel.clone());
    let inference = Service::start("mlmesh-inference", &ienv);
    let iaddr = inference.addr;
    let refs = refs();
    rt.block_on(async {
        let mut ic = GrpcInferenceServiceClient::new(pki.channel(iaddr, Some("ci"), "ca.crt"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(r) = ic.model_infer(request(&refs.row)).await {
                assert!(close(&probabilities(&r.into_inner()), &refs.v1));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "digits@production never served over TLS"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // CI may change the registry, not the inference service.
        let e = ic
            .repository_model_unload(ipb::RepositoryModelUnloadRequest {
                model_name: "digits".into(),
                ..Default::default()
            })
            .await
            .expect_err("ci.test is not an inference admin");
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    });

    // Embedding and vector-search behind TLS, the gateway calling all
    // three over mutual TLS and exporting its traces.
    let mut eenv = pki.server_env("embedding", "");
    eenv.push(otel.clone());
    let embedding = Service::start("mlmesh-embedding", &eenv);
    let vdata = TempDir::new("mtls-vector");
    let mut venv = pki.server_env("vector", "");
    venv.extend([
        (
            "MLMESH_VECTOR__DATA_DIR",
            vdata.path().display().to_string(),
        ),
        otel.clone(),
    ]);
    let vector = Service::start("mlmesh-vector-search", &venv);
    let downstream = pki.client_env("MLMESH_DOWNSTREAM__TLS", "gateway");
    let mut genv = env_refs(&downstream);
    genv.extend([
        ("MLMESH_HTTP__LISTEN", "127.0.0.1:0".into()),
        ("MLMESH_DOWNSTREAM__EMBEDDING", embedding.addr.to_string()),
        ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", vector.addr.to_string()),
        ("MLMESH_DOWNSTREAM__INFERENCE", iaddr.to_string()),
        otel,
    ]);
    let gateway = Service::start("mlmesh-gateway", &genv);
    let http = gateway.http_addr.expect("http");
    let trace_id = "7bf92f3577b34da6a3ce929d0e0e4737";
    let caller = "30f067aa0ba902b8";
    rt.block_on(async {
        let (s, b) = tokio::task::spawn_blocking(move || {
            let mut h = HttpClient::new(http);
            let (s, b) = h.post_json("/v1/collections", &json!({"name": "tls"}));
            assert_eq!(s, 201, "{b}");
            let (s, b) = h.post_json(
                "/v1/collections/tls/documents",
                &json!({"documents": [{"id": "d", "text": "Certificates name every service."}]}),
            );
            assert_eq!(s, 200, "{b}");
            h.post_json(
                "/v1/collections/tls/search",
                &json!({"query": "who is who?", "limit": 1}),
            )
        })
        .await
        .expect("join");
        assert_eq!(s, 200, "search through TLS hops: {b}");
        assert_eq!(b["hits"][0]["document_id"], "d", "{b}");

        let mut gc = GrpcInferenceServiceClient::connect(format!("http://{}", gateway.addr))
            .await
            .expect("gateway");
        let mut req = tonic::Request::new(request(&refs.row));
        req.metadata_mut().insert(
            "traceparent",
            format!("00-{trace_id}-{caller}-01").parse().expect("ascii"),
        );
        let r = gc.model_infer(req).await.expect("inference over TLS");
        assert!(close(&probabilities(&r.into_inner()), &refs.v1));
        // The gateway's certificate is an inference admin identity.
        gc.repository_model_unload(ipb::RepositoryModelUnloadRequest {
            model_name: "digits".into(),
            ..Default::default()
        })
        .await
        .expect("the gateway's forwarded unload is admitted by its certificate");
    });

    // SIGTERM flushes the exporters.
    for s in [&gateway, &inference] {
        s.terminate();
    }
    let (mut gateway, mut inference) = (gateway, inference);
    assert_eq!(gateway.wait(Duration::from_secs(30)), Some(0));
    assert_eq!(inference.wait(Duration::from_secs(30)), Some(0));
    let spans: Vec<SpanRow> = collector
        .spans()
        .into_iter()
        .filter(|s| s.trace == trace_id)
        .collect();
    let find = |service: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name.ends_with("GRPCInferenceService/ModelInfer"))
    };
    let client = spans
        .iter()
        .find(|s| {
            s.service == "mlmesh-gateway" && s.parent != caller && s.name.ends_with("/ModelInfer")
        })
        .unwrap_or_else(|| panic!("no gateway client span: {spans:#?}"));
    let server =
        find("mlmesh-inference").unwrap_or_else(|| panic!("no inference span: {spans:#?}"));
    assert_eq!(server.parent, client.id, "the trace crosses the TLS hop");
}
