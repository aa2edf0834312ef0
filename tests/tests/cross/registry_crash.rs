//! The registry binary as a process under `kill -9`: while versions are
//! pushed and an alias is moved continuously, the process is killed at
//! random moments and restarted. After every restart each acknowledged
//! version is there byte for byte, and no version is visible whose files
//! are not all whole (no half-made version). Digests by the `sha2` crate.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use mlmesh_tests::{Service, TempDir};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::registry_support::{push, sha256};

/// A version the registry acknowledged, with the digests of its files.
type Acked = (i64, Vec<String>);

fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn start(data: &TempDir) -> Service {
    Service::start(
        "mlmesh-registry",
        &[
            (
                "MLMESH_REGISTRY__DATA_DIR",
                data.path().display().to_string(),
            ),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ],
    )
}

async fn client(svc: &Service) -> RegistryClient<Channel> {
    RegistryClient::connect(format!("http://{}", svc.addr))
        .await
        .expect("connect")
}

/// Pushes one version of two files; Ok(version) once acknowledged.
async fn push_seeded(
    c: &mut RegistryClient<Channel>,
    seed: u64,
) -> Result<(i64, Vec<String>), tonic::Status> {
    let files = [
        (
            "weights.bin",
            content(seed, 200_000 + (seed as usize % 7) * 50_000),
        ),
        ("config.json", format!("{{\"seed\": {seed}}}").into_bytes()),
    ];
    let version = push(c, "m", &files, None, 32 * 1024).await?;
    c.set_aliases(pb::SetAliasesRequest {
        model: "m".into(),
        aliases: vec![pb::AliasTarget {
            alias: "production".into(),
            version,
            expected_version: None,
        }],
        reason: String::new(),
        override_policy: false,
    })
    .await?;
    Ok((version, files.iter().map(|(_, b)| sha256(b)).collect()))
}

/// Every byte of a version's files, hashed per file in manifest order.
async fn pulled_digests(c: &mut RegistryClient<Channel>, version: i64) -> Vec<String> {
    let mut s = c
        .download(pb::DownloadRequest {
            model: "m".into(),
            selector: Some(pb::download_request::Selector::Version(version)),
            ..Default::default()
        })
        .await
        .expect("download")
        .into_inner();
    let mut out: Vec<(String, Sha256)> = Vec::new();
    while let Some(ch) = s.message().await.expect("chunk") {
        if out.last().is_none_or(|(p, _)| *p != ch.path) {
            out.push((ch.path.clone(), Sha256::new()));
        }
        if let Some((_, h)) = out.last_mut() {
            h.update(&ch.data);
        }
    }
    out.into_iter()
        .map(|(_, h)| hex::encode(h.finalize()))
        .collect()
}

#[test]
fn kill_9_never_shows_a_half_made_version_and_keeps_every_acknowledged_one() {
    let _serial = mlmesh_tests::serial();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let data = TempDir::new("registry-crash");
    let mut svc = start(&data);
    rt.block_on(async {
        client(&svc)
            .await
            .create_model(pb::CreateModelRequest {
                name: "m".into(),
                ..Default::default()
            })
            .await
            .expect("create");
    });
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let mut seed = 0u64;
    for round in 0..5u64 {
        let mut c = rt.block_on(client(&svc));
        let writer = {
            let acked = Arc::clone(&acked);
            let first = seed;
            rt.spawn(async move {
                let mut s = first;
                loop {
                    s += 1;
                    match push_seeded(&mut c, s).await {
                        Ok(v) => acked.lock().expect("lock").push(v),
                        Err(_) => return s, // the process died mid-call
                    }
                }
            })
        };
        // Kill at a moment that moves with the round (30–330 ms in).
        std::thread::sleep(Duration::from_millis(30 + (round * 75) % 300));
        svc.kill();
        seed = rt.block_on(writer).expect("writer") + 1;
        svc = start(&data);
        rt.block_on(async {
            let mut c = client(&svc).await;
            let listed = c
                .list_versions(pb::ListVersionsRequest {
                    model: "m".into(),
                    page_size: 1000,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner()
                .versions;
            // Every visible version is whole.
            for v in &listed {
                let want: Vec<String> = v.files.iter().map(|f| f.sha256.clone()).collect();
                assert_eq!(
                    pulled_digests(&mut c, v.version).await,
                    want,
                    "version {}",
                    v.version
                );
            }
            // Every acknowledged version is visible with what was sent.
            let acked = acked.lock().expect("lock").clone();
            for (version, digests) in &acked {
                let v = listed
                    .iter()
                    .find(|v| v.version == *version)
                    .unwrap_or_else(|| {
                        panic!("acknowledged version {version} lost in round {round}")
                    });
                let got: Vec<String> = v.files.iter().map(|f| f.sha256.clone()).collect();
                assert_eq!(&got, digests);
            }
            // The alias points at a version that exists.
            let m = c
                .get_model(pb::GetModelRequest { name: "m".into() })
                .await
                .expect("model")
                .into_inner();
            if let Some(p) = m.aliases.get("production") {
                assert!(listed.iter().any(|v| v.version == *p));
            }
            eprintln!(
                "round {round}: {} versions acknowledged, {} visible",
                acked.len(),
                listed.len()
            );
        });
    }
    assert!(
        acked.lock().expect("lock").len() >= 3,
        "the writer got some versions acknowledged"
    );
    svc.terminate();
    assert_eq!(svc.wait(Duration::from_secs(30)), Some(0));
}
