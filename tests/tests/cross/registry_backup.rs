//! `mlmesh registry backup` of a running registry and `mlmesh registry
//! restore` into an empty one, both real processes: the restored registry
//! has the same models, versions (byte for byte), aliases, alias history
//! and event log; a restore into a registry that holds models is refused.

use mlmesh_tests::OutputWithin as _;
use std::process::Command;

use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use mlmesh_tests::{Service, TempDir, binary, repo_root};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

fn start(data: &TempDir) -> Service {
    Service::start(
        "mlmesh-registry",
        &[(
            "MLMESH_REGISTRY__DATA_DIR",
            data.path().display().to_string(),
        )],
    )
}

fn cli(addr: &str, args: &[&str]) -> std::process::Output {
    Command::new(binary("mlmesh"))
        .current_dir(repo_root())
        .args(["registry", "--addr", addr])
        .args(args)
        .output_within(mlmesh_tests::CHILD_LIMIT)
        .expect("run mlmesh registry")
}

async fn push(c: &mut RegistryClient<Channel>, model: &str, files: &[(&str, Vec<u8>)]) -> i64 {
    let lineage = pb::Lineage {
        task: "classification".into(),
        ..Default::default()
    };
    crate::registry_support::push(c, model, files, Some(lineage), usize::MAX)
        .await
        .expect("push")
}

/// Everything observable about a registry, for comparison.
async fn state(c: &mut RegistryClient<Channel>) -> String {
    let mut out = String::new();
    let models = c
        .list_models(pb::ListModelsRequest::default())
        .await
        .expect("models")
        .into_inner();
    out += &format!("revision {}\n", models.revision);
    for m in models.models {
        out += &format!("{m:?}\n");
        let vs = c
            .list_versions(pb::ListVersionsRequest {
                model: m.name.clone(),
                ..Default::default()
            })
            .await
            .expect("versions")
            .into_inner();
        for v in vs.versions {
            out += &format!("{v:?}\n");
            let mut s = c
                .download(pb::DownloadRequest {
                    model: m.name.clone(),
                    selector: Some(pb::download_request::Selector::Version(v.version)),
                    ..Default::default()
                })
                .await
                .expect("download")
                .into_inner();
            let mut h = Sha256::new();
            while let Some(ch) = s.message().await.expect("chunk") {
                h.update(ch.path.as_bytes());
                h.update(&ch.data);
            }
            out += &format!("bytes {}\n", hex::encode(h.finalize()));
        }
        let hist = c
            .alias_history(pb::AliasHistoryRequest {
                model: m.name.clone(),
                ..Default::default()
            })
            .await
            .expect("history")
            .into_inner();
        out += &format!("{:?}\n", hist.moves);
    }
    let mut w = c
        .watch(pb::WatchRequest {
            start_revision: 1,
            filter: None,
        })
        .await
        .expect("watch")
        .into_inner();
    for _ in 0..models.revision {
        out += &format!("{:?}\n", w.message().await.expect("event"));
    }
    out
}

#[test]
fn backup_of_a_running_registry_restores_into_an_empty_one() {
    let _serial = mlmesh_tests::serial();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (a_data, b_data, backup_parent) = (
        TempDir::new("backup-a"),
        TempDir::new("backup-b"),
        TempDir::new("backup-dir"),
    );
    let a = start(&a_data);
    let b = start(&b_data);
    let (a_addr, b_addr) = (a.addr.to_string(), b.addr.to_string());
    let before = rt.block_on(async {
        let mut c = RegistryClient::connect(format!("http://{a_addr}"))
            .await
            .expect("a");
        for name in ["iris", "digits"] {
            c.create_model(pb::CreateModelRequest {
                name: name.into(),
                description: format!("{name} classifier"),
                tags: [("team".to_owned(), "ml".to_owned())].into(),
                metadata: None,
            })
            .await
            .expect("create");
        }
        let shared = vec![7u8; 300_000];
        push(
            &mut c,
            "iris",
            &[("model.onnx", shared.clone()), ("empty", Vec::new())],
        )
        .await;
        push(&mut c, "iris", &[("model.onnx", vec![1u8; 2_000_000])]).await;
        push(&mut c, "digits", &[("1/model.npz", shared)]).await;
        let third = push(&mut c, "digits", &[("1/model.npz", vec![3u8; 10])]).await;
        for (model, alias, v) in [
            ("iris", "production", 1),
            ("iris", "production", 2),
            ("digits", "staging", 1),
        ] {
            c.set_aliases(pb::SetAliasesRequest {
                model: model.into(),
                aliases: vec![pb::AliasTarget {
                    alias: alias.into(),
                    version: v,
                    expected_version: None,
                }],
                reason: "release".into(),
                override_policy: false,
            })
            .await
            .expect("alias");
        }
        c.rollback_alias(pb::RollbackAliasRequest {
            model: "iris".into(),
            alias: "production".into(),
            ..Default::default()
        })
        .await
        .expect("rollback");
        c.delete_version(pb::DeleteVersionRequest {
            model: "digits".into(),
            version: third,
        })
        .await
        .expect("delete");
        state(&mut c).await
    });

    let dir = backup_parent.path().join("snapshot");
    let out = cli(&a_addr, &["backup", dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("metadata.json").is_file());
    // A second backup into the same folder is refused (not empty).
    assert!(
        !cli(&a_addr, &["backup", dir.to_str().expect("utf-8")])
            .status
            .success()
    );

    let out = cli(&b_addr, &["restore", dir.to_str().expect("utf-8")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = rt.block_on(async {
        let mut c = RegistryClient::connect(format!("http://{b_addr}"))
            .await
            .expect("b");
        state(&mut c).await
    });
    assert_eq!(after, before, "the restored registry matches the original");
    // The restored registry goes on from the same revision.
    rt.block_on(async {
        let mut c = RegistryClient::connect(format!("http://{b_addr}"))
            .await
            .expect("b");
        let v = push(&mut c, "iris", &[("model.onnx", vec![9u8; 10])]).await;
        assert_eq!(v, 3);
    });
    // Restoring into a registry that holds models is refused.
    let out = cli(&b_addr, &["restore", dir.to_str().expect("utf-8")]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty registry"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
