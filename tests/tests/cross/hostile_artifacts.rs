//! Hostile model artifacts reaching the inference service through its
//! registry follower, as processes: the registry is format-agnostic, so
//! whatever anyone pushes is fed to the inference service when an alias
//! moves. Each hostile version below (a compression bomb, with honest and
//! with lying sizes; `.npy` headers whose shape overflows or runs past the
//! data; a `config.pbtxt` nested too deep, too large, or naming a file
//! outside its folder) must fail to load with a reason naming the file or
//! field, while v1 keeps serving a client that calls throughout with zero
//! failures, the service's memory stays bounded, and a restart with the
//! hostile version cached and still aliased comes up healthy.

use std::{
    io::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use mlmesh_proto::{
    inference::{self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient},
    registry::v1::{self as pb, registry_client::RegistryClient},
};
use mlmesh_tests::{TempDir, repo_root};

use crate::registry_follow::{
    close, probabilities, refs, request, runtime, start_inference, start_registry,
};

const FAILED: &str = r#"mlmesh_inference_registry_syncs_total{model="digits",outcome="failure"}"#;

/// An `.npy` member: the magic, a version-1 header and `data`.
fn npy(header: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header.to_owned();
    // The header is padded so the data starts 64-byte aligned, as NumPy does.
    while !(10 + h.len() + 1).is_multiple_of(64) {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(data);
    b
}

/// Zip member options: stored, or deflated at `deflate_level`.
fn member_options(deflate_level: Option<i64>) -> zip::write::SimpleFileOptions {
    zip::write::SimpleFileOptions::default()
        .compression_method(if deflate_level.is_some() {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        })
        .compression_level(deflate_level)
}

/// An `.npz` of `members`, stored or deflated.
fn npz(members: &[(&str, Vec<u8>)], deflate: bool) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, bytes) in members {
        z.start_file(*name, member_options(deflate.then_some(1)))
            .expect("member");
        z.write_all(bytes).expect("write member");
    }
    z.finish().expect("zip").into_inner()
}

/// A compression bomb: one `W0.npy` member whose header is real and whose
/// data is zeros decompressing past the service's 2 GiB bound (in ~2 MB).
/// With `lie`, the zip's declared uncompressed sizes (local header and
/// central directory) are rewritten to 1,000 bytes, so only counting the
/// bytes as they inflate can catch it.
fn bomb(lie: bool) -> Vec<u8> {
    let total: u64 = (2 << 30) + (64 << 20);
    let mut z = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // ZIP64: the sizes sit in 8-byte extra fields, which `lie_about_sizes`
    // rewrites.
    z.start_file("W0.npy", member_options(Some(9)).large_file(true))
        .expect("member");
    let count = (total - 128) / 4;
    z.write_all(&npy(
        &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({count},), }}"),
        &[],
    ))
    .expect("header");
    let zeros = vec![0u8; 1 << 20];
    let mut written = 128u64;
    while written < total {
        z.write_all(&zeros).expect("zeros");
        written += zeros.len() as u64;
    }
    let mut bytes = z.finish().expect("zip").into_inner();
    if lie {
        lie_about_sizes(&mut bytes, written);
    }
    bytes
}

/// Rewrites every ZIP64 extra field's uncompressed size equal to `real`
/// to 1,000 bytes (with `large_file` the real sizes live there), in the
/// local header and in the central directory alike.
fn lie_about_sizes(bytes: &mut [u8], real: u64) {
    let needle = real.to_le_bytes();
    let mut patched = 0;
    let mut i = 0;
    while i + 8 <= bytes.len() {
        if bytes[i..i + 8] == needle {
            bytes[i..i + 8].copy_from_slice(&1000u64.to_le_bytes());
            patched += 1;
            i += 8;
        } else {
            i += 1;
        }
    }
    assert!(
        patched >= 2,
        "expected the size in the local header and the central directory, patched {patched}"
    );
}

/// A hostile version: what it is, its files, words its failure must hold.
type Case = (
    &'static str,
    Vec<(&'static str, Vec<u8>)>,
    Vec<&'static str>,
);

/// The hostile versions, in the order they are pushed.
fn hostile_versions() -> Vec<Case> {
    let config = |extra: &str| {
        format!(
            "name: \"digits\"\nbackend: \"mlmesh_npz\"\nmax_batch_size: 8\n{extra}\n\
             input [ {{ name: \"input\" data_type: TYPE_FP32 dims: [ 64 ] }} ]\n"
        )
    };
    let v1 =
        std::fs::read(repo_root().join("services/inference/models/digits-mlp-npz/1/model.npz"))
            .expect("v1 model");
    vec![
        (
            "a compression bomb with honest sizes",
            vec![("model.npz", bomb(false))],
            vec!["model.npz", "decompresses to more than"],
        ),
        (
            "a compression bomb whose sizes lie",
            vec![("model.npz", bomb(true))],
            vec![
                "model.npz",
                "W0",
                "more than the 1000 bytes its header declares",
            ],
        ),
        (
            "an .npy whose shape overflows",
            vec![(
                "model.npz",
                npz(
                    &[(
                        "W0.npy",
                        npy(
                            "{'descr': '<f4', 'fortran_order': False, 'shape': (4294967296, 4294967296, 4294967296), }",
                            &[0; 16],
                        ),
                    )],
                    false,
                ),
            )],
            vec!["model.npz", "W0", "overflows"],
        ),
        (
            "an .npy whose shape runs past its data",
            vec![(
                "model.npz",
                npz(
                    &[(
                        "W0.npy",
                        npy(
                            "{'descr': '<f4', 'fortran_order': False, 'shape': (100000000, 64), }",
                            &[0; 64],
                        ),
                    )],
                    true,
                ),
            )],
            vec!["model.npz", "W0", "needs"],
        ),
        (
            "an .npy whose header is longer than the member",
            vec![(
                "model.npz",
                npz(
                    &[("W0.npy", b"\x93NUMPY\x01\x00\xff\xff{'descr'".to_vec())],
                    false,
                ),
            )],
            vec!["model.npz", "W0", "truncated header"],
        ),
        (
            "a config.pbtxt nested 40,000 deep",
            vec![
                (
                    "config.pbtxt",
                    config(&format!(
                        "parameters {}{}",
                        "{ key: \"k\" value ".repeat(40_000),
                        "}".repeat(40_000)
                    ))
                    .into_bytes(),
                ),
                ("1/model.npz", v1.clone()),
            ],
            vec!["config.pbtxt", "nested more than"],
        ),
        (
            "a config.pbtxt of 2 MiB",
            vec![
                (
                    "config.pbtxt",
                    config(&format!("# {}", "x".repeat(2 << 20))).into_bytes(),
                ),
                ("1/model.npz", v1.clone()),
            ],
            vec!["config.pbtxt", "larger than 1048576 bytes"],
        ),
        (
            "a config.pbtxt naming a file outside its folder",
            vec![
                (
                    "config.pbtxt",
                    config("default_model_filename: \"../../../../../../etc/passwd\"").into_bytes(),
                ),
                ("1/model.npz", v1),
            ],
            vec!["default_model_filename", "inside the version folder"],
        ),
    ]
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    crate::attacks::peak_rss_kib(pid) / 1024
}

async fn move_alias(reg: &mut RegistryClient<tonic::transport::Channel>, from: i64, to: i64) {
    reg.set_aliases(pb::SetAliasesRequest {
        model: "digits".into(),
        aliases: vec![pb::AliasTarget {
            alias: "production".into(),
            version: to,
            expected_version: Some(from),
        }],
        reason: format!("move to v{to}"),
        override_policy: false,
    })
    .await
    .expect("move the alias");
}

async fn digits_row(ic: &mut GrpcInferenceServiceClient<tonic::transport::Channel>) -> String {
    let index = ic
        .repository_index(ipb::RepositoryIndexRequest::default())
        .await
        .expect("index")
        .into_inner();
    index
        .models
        .iter()
        .find(|m| m.name == "digits")
        .map(|m| format!("{} v{}: {}", m.state, m.version, m.reason))
        .unwrap_or_else(|| "digits is not in the index".into())
}

/// Waits until `ic` answers with v1's outputs.
async fn served_v1(ic: &mut GrpcInferenceServiceClient<tonic::transport::Channel>, what: &str) {
    let r = refs();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(a) = ic.model_infer(request(&r.row)).await {
            let a = a.into_inner();
            assert_eq!(a.model_version, "1", "{what}");
            assert!(close(&probabilities(&a), &r.v1), "v1's outputs {what}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "v1 not served within 30 s {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn hostile_artifacts_through_the_follower_fail_to_load_and_harm_nobody() {
    let _serial = mlmesh_tests::serial();
    let rt = runtime();
    let (reg_data, cache, repo) = (
        TempDir::new("hostile-registry"),
        TempDir::new("hostile-cache"),
        TempDir::new("hostile-repo"),
    );
    let registry = start_registry(&reg_data, &[]);
    let cases = hostile_versions();
    let reg_addr = registry.addr;
    let mut reg = rt.block_on(async {
        let mut c = RegistryClient::connect(format!("http://{reg_addr}"))
            .await
            .expect("registry");
        c.create_model(pb::CreateModelRequest {
            name: "digits".into(),
            ..Default::default()
        })
        .await
        .expect("create");
        let v1 =
            std::fs::read(repo_root().join("services/inference/models/digits-mlp-npz/1/model.npz"))
                .expect("v1 model");
        crate::registry_support::push(&mut c, "digits", &[("1/model.npz", v1)], None, 1 << 20)
            .await
            .expect("push v1");
        move_alias(&mut c, 0, 1).await;
        c
    });
    let mut inference = start_inference(&registry, &repo, &cache, &[]);
    let (addr, pid) = (inference.addr, inference.child.id());
    let metrics = inference
        .metrics_addr
        .expect("the inference metrics address");
    let last = rt.block_on(async {
        let mut ic = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("inference");
        served_v1(&mut ic, "before the hostile versions").await;
        let base_rss = peak_rss_mib(pid);

        // A well-behaved client calls throughout.
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let client = {
            let (mut c, stop, ok, failures) =
                (ic.clone(), stop.clone(), ok.clone(), failures.clone());
            let r = refs();
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match c.model_infer(request(&r.row)).await {
                        Ok(a) if close(&probabilities(a.get_ref()), &r.v1) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(a) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("wrong answer from v{}", a.get_ref().model_version)),
                        Err(s) => failures.lock().expect("lock").push(s.to_string()),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };

        let mut from = 1;
        for (n, (what, files, words)) in cases.into_iter().enumerate() {
            let version = crate::registry_support::push(&mut reg, "digits", &files, None, 1 << 20)
                .await
                .unwrap_or_else(|e| panic!("push {what}: {e}"));
            drop(files);
            move_alias(&mut reg, from, version).await;
            from = version;
            let t0 = Instant::now();
            while inference_metric(metrics, FAILED).await < (n + 1) as f64 {
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "{what}: the failed sync was not counted; digits: {}",
                    digits_row(&mut ic).await
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let row = digits_row(&mut ic).await;
            assert!(
                row.starts_with("READY v1"),
                "{what}: v1 keeps serving: {row}"
            );
            for w in &words {
                assert!(row.contains(w), "{what}: the reason names {w:?}: {row}");
            }
            eprintln!("{what}: refused ({row})");
        }
        stop.store(true, Ordering::Relaxed);
        client.await.expect("client");
        let failures = failures.lock().expect("lock").clone();
        assert!(
            failures.is_empty(),
            "the well-behaved client failed: {failures:?}"
        );
        assert!(ok.load(Ordering::Relaxed) > 0, "the client was answered");
        // Neither bomb is inflated: the honest one is refused on its
        // declared size, the lying one one byte past its claim.
        let peak = peak_rss_mib(pid);
        assert!(
            peak < base_rss + 256,
            "peak RSS {peak} MiB (before: {base_rss} MiB)"
        );
        eprintln!("inference peak RSS {peak} MiB (before the hostile versions: {base_rss} MiB)");
        from
    });
    assert!(
        inference.child.try_wait().expect("status").is_none(),
        "the inference service is still running"
    );
    drop(inference);

    // A restart with the last hostile version cached and still aliased:
    // the service comes up, says why digits is not served, and serves v1
    // again once the alias moves back.
    inference = start_inference(&registry, &repo, &cache, &[]);
    let addr = inference.addr;
    let metrics = inference
        .metrics_addr
        .expect("the inference metrics address");
    rt.block_on(async {
        let mut ic = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
            .await
            .expect("inference after the restart");
        let t0 = Instant::now();
        while inference_metric(metrics, FAILED).await < 1.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the restarted service did not try the aliased version"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let row = digits_row(&mut ic).await;
        assert!(
            row.contains("default_model_filename"),
            "after the restart the reason is shown: {row}"
        );
        let mut health = tonic_health::pb::health_client::HealthClient::new(
            tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .expect("uri")
                .connect()
                .await
                .expect("health"),
        );
        let status = health
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await
            .expect("health check")
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
        move_alias(&mut reg, last, 1).await;
        served_v1(&mut ic, "after the restart and the alias moved back").await;
    });
    assert!(inference.child.try_wait().expect("status").is_none());
    drop(inference);
    drop(registry);
}

/// The sum of the inference service's `/metrics` samples starting with
/// `name` (scraped off the reactor).
async fn inference_metric(metrics: std::net::SocketAddr, name: &'static str) -> f64 {
    tokio::task::spawn_blocking(move || {
        mlmesh_tests::metric_sum(&mlmesh_tests::scrape(metrics), name)
    })
    .await
    .unwrap_or(0.0)
}
