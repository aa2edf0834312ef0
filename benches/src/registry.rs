//! `mlmesh-bench registry`: artifact upload and download through the
//! registry (release binary, loopback gRPC) against a plain `cp` plus
//! `sha256sum` of the same bytes on the same disk, with the registry's RSS
//! as the artifact grows; and the time from an alias move to the inference
//! service answering with the new version.

use std::{
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use mlmesh_proto::{
    inference::{
        self as ipb, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    },
    registry::v1::{self as pb, registry_client::RegistryClient},
};
use mlmesh_tests::{Service, TempDir, repo_root};
use sha2::{Digest, Sha256};
use tonic::transport::Channel;

use crate::{median, rss_kib};

#[derive(clap::Args, Debug)]
pub struct RegistryArgs {
    /// Artifact sizes in MB (each uploaded and downloaded in every round).
    #[arg(long, value_delimiter = ',', default_value = "100,500")]
    sizes: Vec<u64>,
    /// Rounds, alternating the registry and the plain copy.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Alias moves timed until the inference service answers with the new version.
    #[arg(long, default_value_t = 20)]
    promotions: usize,
    /// Bytes per upload message.
    #[arg(long, default_value_t = 1 << 20)]
    chunk_bytes: usize,
    /// Where the artifacts, copies and the registry's data go (one disk).
    #[arg(long, default_value = ".cache/mlmesh/bench-registry")]
    dir: PathBuf,
}

/// Writes `mb` MB of pseudo-random bytes (a new content per seed).
fn make_artifact(path: &Path, mb: u64, seed: u64) -> anyhow::Result<()> {
    let mut f = File::create(path)?;
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    for _ in 0..mb {
        for w in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            w.copy_from_slice(&x.to_le_bytes());
        }
        f.write_all(&buf)?;
    }
    f.sync_all()?;
    Ok(())
}

fn sha256_file(path: &Path) -> anyhow::Result<String> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// `cp src dst && sync dst && sha256sum dst`: seconds.
fn plain_copy(src: &Path, dst: &Path) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let ok = Command::new("cp").arg(src).arg(dst).status()?.success()
        && Command::new("sync").arg(dst).status()?.success()
        && Command::new("sha256sum")
            .arg(dst)
            .stdout(std::process::Stdio::null())
            .status()?
            .success();
    if !ok {
        bail!("cp / sync / sha256sum failed");
    }
    let secs = t0.elapsed().as_secs_f64();
    std::fs::remove_file(dst)?;
    Ok(secs)
}

/// Samples a process's RSS every 20 ms; the peak in KiB.
struct RssPeak {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
}

impl RssPeak {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (Arc::clone(&stop), Arc::clone(&peak));
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some((rss, _)) = rss_kib(pid) {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self { stop, peak }
    }

    fn finish(self) -> f64 {
        self.stop.store(true, Ordering::Relaxed);
        self.peak.load(Ordering::Relaxed) as f64 / 1024.0
    }
}

type Client = RegistryClient<Channel>;

/// Uploads `path` as a new version of `model`; seconds from StartUpload to
/// the committed answer (the client's own hashing before it not counted).
async fn upload(
    c: &mut Client,
    model: &str,
    path: &Path,
    sha: &str,
    chunk: usize,
) -> anyhow::Result<(f64, i64)> {
    let size = std::fs::metadata(path)?.len();
    let t0 = Instant::now();
    let up = c
        .start_upload(pb::StartUploadRequest {
            model: model.into(),
            files: vec![pb::FileEntry {
                path: "model.bin".into(),
                size,
                sha256: sha.into(),
            }],
            ..Default::default()
        })
        .await?
        .into_inner();
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::UploadChunk>(4);
    let path = path.to_path_buf();
    let id = up.upload_id.clone();
    let reader = std::thread::spawn(move || -> anyhow::Result<()> {
        let mut f = File::open(&path)?;
        let mut offset = 0u64;
        loop {
            let mut buf = vec![0u8; chunk];
            let n = f.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let msg = pb::UploadChunk {
                upload_id: if offset == 0 {
                    id.clone()
                } else {
                    String::new()
                },
                path: "model.bin".into(),
                offset,
                data: buf.into(),
            };
            offset += n as u64;
            if tx.blocking_send(msg).is_err() {
                return Ok(());
            }
        }
    });
    let r = c
        .upload_files(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let secs = t0.elapsed().as_secs_f64();
    reader
        .join()
        .map_err(|_| anyhow::anyhow!("reader panicked"))??;
    let v = r.version.context("the upload did not commit")?;
    Ok((secs, v.version))
}

/// Downloads a version to `dst`, hashing as it writes (what `mlmesh
/// registry pull` does); seconds, including the final fsync.
async fn download(
    c: &mut Client,
    model: &str,
    version: i64,
    dst: &Path,
    sha: &str,
) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut s = c
        .download(pb::DownloadRequest {
            model: model.into(),
            selector: Some(pb::download_request::Selector::Version(version)),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut f = File::create(dst)?;
    let mut h = Sha256::new();
    while let Some(ch) = s.message().await? {
        f.write_all(&ch.data)?;
        h.update(&ch.data);
    }
    f.sync_all()?;
    let secs = t0.elapsed().as_secs_f64();
    if hex::encode(h.finalize()) != sha {
        bail!("the downloaded bytes do not match");
    }
    std::fs::remove_file(dst)?;
    Ok(secs)
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    let dir = repo_root().join(&args.dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("registry-data");
    let svc = Service::start(
        "mlmesh-registry",
        &[
            ("MLMESH_REGISTRY__DATA_DIR", data.display().to_string()),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ],
    );
    let pid = svc.child.id();
    let mut c = RegistryClient::connect(format!("http://{}", svc.addr)).await?;
    c.create_model(pb::CreateModelRequest {
        name: "artifact".into(),
        ..Default::default()
    })
    .await?;
    println!("# mlmesh-bench registry");
    println!(
        "one file per version, {} rounds alternating registry and plain copy, medians; everything under {} (one disk); {} cores; idle registry RSS {:.1} MB",
        args.rounds,
        dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        rss_kib(pid).map_or(0.0, |r| r.0 as f64 / 1024.0)
    );
    println!();
    println!(
        "| size | plain cp + sha256sum | registry upload | ratio | registry download (+ client sha256) | ratio | registry peak RSS up / down |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut seed = 0;
    for &mb in &args.sizes {
        let (mut plain, mut up, mut down) = (Vec::new(), Vec::new(), Vec::new());
        let (mut rss_up, mut rss_down) = (0f64, 0f64);
        for _ in 0..args.rounds {
            seed += 1;
            let art = dir.join(format!("artifact-{seed}"));
            make_artifact(&art, mb, seed)?;
            let sha = sha256_file(&art)?;
            plain.push(plain_copy(&art, &dir.join("copy"))?);
            let peak = RssPeak::start(pid);
            let (secs, version) = upload(&mut c, "artifact", &art, &sha, args.chunk_bytes).await?;
            rss_up = rss_up.max(peak.finish());
            up.push(secs);
            let peak = RssPeak::start(pid);
            down.push(download(&mut c, "artifact", version, &dir.join("pulled"), &sha).await?);
            rss_down = rss_down.max(peak.finish());
            std::fs::remove_file(&art)?;
        }
        let mbps = |secs: f64| mb as f64 / secs;
        let (p, u, d) = (median(plain), median(up), median(down));
        println!(
            "| {mb} MB | {:.0} MB/s | {:.0} MB/s | {:.2}× | {:.0} MB/s | {:.2}× | {:.1} / {:.1} MB |",
            mbps(p),
            mbps(u),
            p / u,
            mbps(d),
            p / d,
            rss_up,
            rss_down
        );
    }
    promotions(&svc, &mut c, args.promotions).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Alias moves until the inference service (following the alias) answers
/// with the new version: p50 / p90 over `n` moves between two versions.
async fn promotions(reg: &Service, c: &mut Client, n: usize) -> anyhow::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let root = repo_root();
    c.create_model(pb::CreateModelRequest {
        name: "digits".into(),
        ..Default::default()
    })
    .await?;
    let mut served = Vec::new();
    for file in [
        root.join("services/inference/models/digits-mlp-npz/1/model.npz"),
        root.join("services/inference/tests/data/digits-mlp-npz-v2.npz"),
    ] {
        let bytes = std::fs::read(&file)?;
        let up = c
            .start_upload(pb::StartUploadRequest {
                model: "digits".into(),
                files: vec![pb::FileEntry {
                    path: "model.npz".into(),
                    size: bytes.len() as u64,
                    sha256: hex::encode(Sha256::digest(&bytes)),
                }],
                ..Default::default()
            })
            .await?
            .into_inner();
        let r = c
            .upload_files(tokio_stream::iter(vec![pb::UploadChunk {
                upload_id: up.upload_id,
                path: "model.npz".into(),
                offset: 0,
                data: bytes.into(),
            }]))
            .await?
            .into_inner();
        served.push(r.version.context("committed")?.version);
    }
    let set = |c: &mut Client, v: i64| {
        let mut c = c.clone();
        async move {
            c.set_aliases(pb::SetAliasesRequest {
                model: "digits".into(),
                aliases: vec![pb::AliasTarget {
                    alias: "production".into(),
                    version: v,
                    expected_version: None,
                }],
                reason: "bench".into(),
                override_policy: false,
            })
            .await
        }
    };
    set(c, served[0]).await?;
    let (repo, cache) = (
        TempDir::new("bench-infer-repo"),
        TempDir::new("bench-infer-cache"),
    );
    let inf = Service::start(
        "mlmesh-inference",
        &[
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
            (
                "MLMESH_INFERENCE__MODEL_REPOSITORY",
                repo.path().display().to_string(),
            ),
            ("MLMESH_INFERENCE__REGISTRY_ADDR", reg.addr.to_string()),
            (
                "MLMESH_INFERENCE__REGISTRY_MODELS",
                "registry://digits@production".into(),
            ),
            (
                "MLMESH_INFERENCE__REGISTRY_CACHE_DIR",
                cache.path().display().to_string(),
            ),
        ],
    );
    let mut ic = GrpcInferenceServiceClient::connect(format!("http://{}", inf.addr)).await?;
    let req = ipb::ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![vec![0u8; 64 * 4].into()],
        ..Default::default()
    };
    let answered = |ic: &mut GrpcInferenceServiceClient<Channel>, want: i64| {
        let mut ic = ic.clone();
        let req = req.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = ic.model_infer(req.clone()).await
                    && r.get_ref().model_version == want.to_string()
                {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!("version {want} not served within 30 s");
                }
            }
        }
    };
    answered(&mut ic, served[0]).await?;
    let mut times = Vec::new();
    for i in 0..n {
        let v = served[(i + 1) % 2];
        let t0 = Instant::now();
        set(c, v).await?;
        answered(&mut ic, v).await?;
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let p90 = {
        let mut t = times.clone();
        t.sort_by(f64::total_cmp);
        t[(t.len() * 9 / 10).min(t.len() - 1)]
    };
    println!();
    println!(
        "alias move → inference answers with the new version (first move: pull + verify + load + warm + swap; later moves find the version in the cache): p50 {:.1} ms, p90 {p90:.1} ms over {n} moves",
        median(times)
    );
    drop(inf);
    Ok(())
}
