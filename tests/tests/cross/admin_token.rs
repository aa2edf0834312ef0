//! State-changing RPCs need the admin token (`server.admin_token_file`),
//! with real processes: the registry refuses writes without it or with a
//! wrong one (UNAUTHENTICATED naming the metadata key and the setting),
//! `mlmesh registry` sends it from `--admin-token-file`, reads stay open so
//! the inference service still follows an alias without any token, and the
//! inference service refuses an unload without it while serving on; a
//! gateway forwards an unload with its `downstream.admin_token_file`.

use mlmesh_tests::OutputWithin as _;
use std::{
    process::Command,
    time::{Duration, Instant},
};

use mlmesh_proto::{
    inference::{self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient},
    registry::v1::{self as pb, registry_client::RegistryClient},
};
use mlmesh_tests::{Service, TempDir, binary, repo_root};

use crate::registry_follow::{
    close, probabilities, refs, request, runtime, start_inference, start_registry,
};

const TOKEN: &str = "a-test-admin-token-0123456789";

fn cli(addr: &str, token: Option<&std::path::Path>, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(binary("mlmesh"));
    cmd.current_dir(repo_root())
        .env_remove("MLMESH_ADMIN_TOKEN_FILE")
        .args(["registry", "--addr", addr]);
    if let Some(t) = token {
        cmd.arg("--admin-token-file").arg(t);
    }
    cmd.args(args)
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run mlmesh registry")
}

fn with_token<T>(msg: T, token: &str) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert("x-mlmesh-admin-token", token.parse().expect("ascii"));
    r
}

fn assert_refused(r: Result<impl std::fmt::Debug, tonic::Status>, what: &str) {
    let e = r.expect_err(what);
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{what}: {e:?}");
    assert!(
        e.message().contains("x-mlmesh-admin-token")
            && e.message().contains("server.admin_token_file"),
        "{what}: the error names the key and the setting: {}",
        e.message()
    );
}

#[test]
fn state_changing_calls_need_the_admin_token_and_reads_stay_open() {
    let _serial = mlmesh_tests::serial();
    let rt = runtime();
    let (dir, reg_data, cache, repo, folder) = (
        TempDir::new("admin-token"),
        TempDir::new("admin-registry"),
        TempDir::new("admin-cache"),
        TempDir::new("admin-repo"),
        TempDir::new("admin-folder"),
    );
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token file");
    let token_env = (
        "MLMESH_SERVER__ADMIN_TOKEN_FILE",
        token_file.display().to_string(),
    );
    let registry = start_registry(&reg_data, std::slice::from_ref(&token_env));
    let addr = registry.addr.to_string();

    rt.block_on(async {
        let mut c = RegistryClient::connect(format!("http://{addr}"))
            .await
            .expect("registry");
        let create = || pb::CreateModelRequest {
            name: "digits".into(),
            ..Default::default()
        };
        assert_refused(c.create_model(create()).await, "create without a token");
        assert_refused(
            c.create_model(with_token(create(), "a-wrong-token-0123456789"))
                .await,
            "create with a wrong token",
        );
        assert_refused(
            c.restore(tokio_stream::iter(Vec::<pb::BackupChunk>::new()))
                .await,
            "restore without a token",
        );
        // Reads are open.
        let models = c
            .list_models(pb::ListModelsRequest::default())
            .await
            .expect("list without a token")
            .into_inner();
        assert!(models.models.is_empty(), "nothing was created: {models:?}");
    });

    // The CLI: refused without the token, served with it.
    let out = cli(&addr, None, &["create", "digits"]);
    assert!(!out.status.success(), "create without --admin-token-file");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.admin_token_file"), "{err}");
    std::fs::copy(
        repo_root().join("services/inference/models/digits-mlp-npz/1/model.npz"),
        folder.path().join("model.npz"),
    )
    .expect("copy model");
    let folder_arg = folder.path().display().to_string();
    for args in [
        vec!["create", "digits"],
        vec!["push", "digits", &folder_arg],
        vec!["alias", "set", "digits", "production", "1", "--expect", "0"],
    ] {
        let out = cli(&addr, Some(&token_file), &args);
        assert!(
            out.status.success(),
            "{args:?} with the token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = cli(&addr, None, &["list"]);
    assert!(out.status.success(), "list needs no token");
    assert!(String::from_utf8_lossy(&out.stdout).contains("digits"));

    // The follower reads without a token; the inference service's own
    // repository calls need its token.
    let inference = start_inference(&registry, &repo, &cache, &[token_env]);
    let iaddr = inference.addr;
    let refs = refs();
    rt.block_on(async {
        let mut ic = GrpcInferenceServiceClient::connect(format!("http://{iaddr}"))
            .await
            .expect("inference");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = ic.model_infer(request(&refs.row)).await {
                assert!(close(&probabilities(&r.into_inner()), &refs.v1));
                break;
            }
            assert!(Instant::now() < deadline, "digits@production not served");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let unload = || ipb::RepositoryModelUnloadRequest {
            model_name: "digits".into(),
            ..Default::default()
        };
        assert_refused(
            ic.repository_model_unload(unload()).await,
            "unload without a token",
        );
        ic.repository_index(ipb::RepositoryIndexRequest::default())
            .await
            .expect("the index needs no token");
        let r = ic
            .model_infer(request(&refs.row))
            .await
            .expect("still serving after the refused unload");
        assert!(close(&probabilities(&r.into_inner()), &refs.v1));
        // Through the gateway: it forwards the unload with its own token
        // (downstream.admin_token_file), or without one.
        let mut via = Vec::new();
        for token in [None, Some(token_file.display().to_string())] {
            let mut env = vec![
                ("MLMESH_DOWNSTREAM__INFERENCE", iaddr.to_string()),
                ("MLMESH_DOWNSTREAM__EMBEDDING", "127.0.0.1:9".into()),
                ("MLMESH_DOWNSTREAM__VECTOR_SEARCH", "127.0.0.1:9".into()),
                ("MLMESH_HTTP__LISTEN", "off".into()),
            ];
            if let Some(t) = token {
                env.push(("MLMESH_DOWNSTREAM__ADMIN_TOKEN_FILE", t));
            }
            via.push(Service::start("mlmesh-gateway", &env));
        }
        let mut without = GrpcInferenceServiceClient::connect(format!("http://{}", via[0].addr))
            .await
            .expect("gateway");
        let e = without
            .repository_model_unload(unload())
            .await
            .expect_err("a gateway without the token cannot unload");
        assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
        without
            .model_infer(request(&refs.row))
            .await
            .expect("inference through the gateway needs no token");
        let mut with = GrpcInferenceServiceClient::connect(format!("http://{}", via[1].addr))
            .await
            .expect("gateway");
        with.repository_model_unload(unload())
            .await
            .expect("the gateway with downstream.admin_token_file unloads");
    });
}
