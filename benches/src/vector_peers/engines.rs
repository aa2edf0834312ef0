//! The three engines of `mlmesh-bench vector-peers`, each loaded with the
//! same vectors and asked the same queries: the mlmesh vector-search
//! service (release binary, embedded engine) and a Qdrant server over gRPC,
//! both driven by one load generator (tonic clients, one connection per
//! client, `batch` queries per call), and faiss in process (a Python child,
//! one thread per client).

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use mlmesh_tests::{Service, TempDir, repo_root};
use qdrant_client::{
    Payload, Qdrant,
    qdrant::{
        CollectionStatus, CreateCollectionBuilder, Distance, HnswConfigDiffBuilder, PointStruct,
        QuantizationType, ScalarQuantizationBuilder, UpsertPointsBuilder, VectorParamsBuilder,
        points_client::PointsClient,
    },
};

use super::{
    client::{COLLECTION, Client, K},
    corpus::Vectors,
};
use crate::{
    Stats, closed_loop,
    peer::{Peer, free_port},
    rss_kib,
};

const UPSERT_BATCH: usize = 500;

/// How an engine was loaded: wall time to load and to finish indexing, and
/// the memory the vectors and graph took.
pub struct Loaded {
    pub load_secs: f64,
    pub index_secs: f64,
    /// Resident memory added by the collection, KiB (after − before).
    pub added_kib: Option<u64>,
}

pub enum Engine {
    Mlmesh {
        svc: Service,
        addr: String,
        int8: bool,
    },
    Qdrant {
        peer: Peer,
        addr: String,
        int8: bool,
    },
    Faiss {
        python: Python,
        index: PathBuf,
        queries: PathBuf,
        dim: usize,
    },
}

/// The faiss peer: `benches/peers/faiss_peer.py` on a pinned faiss-cpu.
#[derive(Clone)]
pub struct Python {
    pub exe: String,
    pub path: PathBuf,
}

impl Python {
    fn run(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let script = repo_root().join("benches/peers/faiss_peer.py");
        let out = Command::new(&self.exe)
            .arg(&script)
            .args(args)
            .env("PYTHONPATH", &self.path)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        ensure!(
            out.status.success(),
            "faiss_peer.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let line = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(line.trim()).with_context(|| format!("faiss_peer.py printed {line:?}"))
    }

    pub fn version(&self) -> anyhow::Result<String> {
        let out = Command::new(&self.exe)
            .args(["-c", "import faiss; print(faiss.__version__)"])
            .env("PYTHONPATH", &self.path)
            .output()?;
        ensure!(
            out.status.success(),
            "faiss is not importable from {} (make faiss): {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Exact top-K of every query (IndexFlatIP): the reference answers.
    pub fn truth(
        &self,
        data: &Path,
        queries: &Path,
        dim: usize,
        dir: &Path,
    ) -> anyhow::Result<Vec<Vec<u64>>> {
        let out = dir.join("truth.i64");
        self.run(&[
            "truth",
            "--data",
            &data.display().to_string(),
            "--queries",
            &queries.display().to_string(),
            "--dim",
            &dim.to_string(),
            "--k",
            &K.to_string(),
            "--out",
            &out.display().to_string(),
        ])?;
        read_ids(&out)
    }
}

fn read_ids(path: &Path) -> anyhow::Result<Vec<Vec<u64>>> {
    let bytes = std::fs::read(path)?;
    let ids: Vec<u64> = bytes
        .chunks_exact(8)
        .map(|b| i64::from_le_bytes(b.try_into().unwrap_or_default()).max(0) as u64)
        .collect();
    Ok(ids.chunks(K).map(<[u64]>::to_vec).collect())
}

/// Under both servers' default indexing threshold (10,000 KB of vectors):
/// searched exactly, never indexed, so there is no graph to wait for.
fn small(v: &Vectors) -> bool {
    v.data.len() * v.dim * 4 < 10_000 * 1024
}

/// HNSW parameters every engine is built with.
#[derive(Clone, Copy)]
pub struct Hnsw {
    pub m: u32,
    pub ef_construct: u32,
}

impl Engine {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mlmesh { int8: false, .. } => "mlmesh vector-search",
            Self::Mlmesh { int8: true, .. } => "mlmesh vector-search, int8",
            Self::Qdrant { int8: false, .. } => "Qdrant server",
            Self::Qdrant { int8: true, .. } => "Qdrant server, int8",
            Self::Faiss { .. } => "faiss HNSW (in process)",
        }
    }

    /// The vector-search service on a fresh data folder, loaded over gRPC.
    /// `env`: extra settings for the service (`MLMESH_VECTOR__SEGMENTS=1`).
    pub async fn mlmesh(
        v: &Vectors,
        hnsw: Hnsw,
        int8: bool,
        env: &[(String, String)],
        folder: &TempDir,
    ) -> anyhow::Result<(Self, Loaded)> {
        let mut vars = vec![
            (
                "MLMESH_VECTOR__DATA_DIR",
                folder.path().display().to_string(),
            ),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ];
        vars.extend(env.iter().map(|(k, v)| (k.as_str(), v.clone())));
        let svc = Service::start("mlmesh-vector-search", &vars);
        let addr = format!("http://{}", svc.addr);
        let before = rss_kib(svc.child.id()).map(|r| r.0);
        let mut c = VectorSearchClient::connect(addr.clone()).await?;
        c.create_collection(pb::CreateCollectionRequest {
            name: COLLECTION.into(),
            dimension: v.dim as u32,
            distance: pb::Distance::Cosine.into(),
            hnsw: Some(pb::HnswConfig {
                m: hnsw.m,
                ef_construct: hnsw.ef_construct,
            }),
            metadata: Default::default(),
            ..Default::default()
        })
        .await?;
        let t0 = Instant::now();
        for (b, chunk) in v.data.chunks(UPSERT_BATCH).enumerate() {
            let points = chunk
                .iter()
                .enumerate()
                .map(|(j, x)| pb::Point {
                    id: Some(pb::PointId {
                        kind: Some(pb::point_id::Kind::Num((b * UPSERT_BATCH + j) as u64)),
                    }),
                    vector: x.clone(),
                    payload: None,
                    ..Default::default()
                })
                .collect();
            c.upsert(pb::UpsertRequest {
                collection: COLLECTION.into(),
                points,
            })
            .await?;
        }
        let load_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        loop {
            let info = c
                .get_collection(pb::GetCollectionRequest {
                    name: COLLECTION.into(),
                })
                .await?
                .into_inner();
            if info.status() == pb::IndexStatus::Ready
                && (info.indexed_vectors_count >= v.data.len() as u64 || small(v))
            {
                break;
            }
            if t1.elapsed() > Duration::from_secs(1800) {
                bail!("not indexed after 30 minutes: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let index_secs = t1.elapsed().as_secs_f64();
        let added_kib = rss_kib(svc.child.id())
            .zip(before)
            .map(|(a, b)| a.0.saturating_sub(b));
        Ok((
            Self::Mlmesh { svc, addr, int8 },
            Loaded {
                load_secs,
                index_secs,
                added_kib,
            },
        ))
    }

    /// A Qdrant server from `bin` on free loopback ports, its defaults, the
    /// same HNSW parameters; loaded with `wait=true` upserts.
    pub async fn qdrant(
        bin: &Path,
        v: &Vectors,
        hnsw: Hnsw,
        int8: bool,
        dir: &Path,
    ) -> anyhow::Result<(Self, Loaded)> {
        let (http, grpc) = (free_port()?, free_port()?);
        let mut cmd = Command::new(bin);
        cmd.current_dir(dir)
            .env("QDRANT__SERVICE__HOST", "127.0.0.1")
            .env("QDRANT__SERVICE__HTTP_PORT", http.port().to_string())
            .env("QDRANT__SERVICE__GRPC_PORT", grpc.port().to_string())
            .env("QDRANT__STORAGE__STORAGE_PATH", dir.join("storage"))
            .env("QDRANT__STORAGE__SNAPSHOTS_PATH", dir.join("snapshots"))
            .env("QDRANT__TELEMETRY_DISABLED", "true")
            .env("QDRANT__LOG_LEVEL", "WARN");
        let peer = Peer::start(cmd, grpc, dir.join("qdrant.out"))?;
        let addr = format!("http://{grpc}");
        let before = rss_kib(peer.child.id()).map(|r| r.0);
        let client = Qdrant::from_url(&addr).build()?;
        let mut create = CreateCollectionBuilder::new(COLLECTION)
            .vectors_config(VectorParamsBuilder::new(v.dim as u64, Distance::Cosine))
            .hnsw_config(
                HnswConfigDiffBuilder::default()
                    .m(u64::from(hnsw.m))
                    .ef_construct(u64::from(hnsw.ef_construct)),
            );
        if int8 {
            // What mlmesh's INT8 asks of its engine.
            create = create.quantization_config(
                ScalarQuantizationBuilder::default()
                    .r#type(QuantizationType::Int8.into())
                    .quantile(0.99)
                    .always_ram(true),
            );
        }
        client.create_collection(create).await?;
        let t0 = Instant::now();
        for (b, chunk) in v.data.chunks(UPSERT_BATCH).enumerate() {
            let points: Vec<PointStruct> = chunk
                .iter()
                .enumerate()
                .map(|(j, x)| {
                    PointStruct::new((b * UPSERT_BATCH + j) as u64, x.clone(), Payload::new())
                })
                .collect();
            client
                .upsert_points(UpsertPointsBuilder::new(COLLECTION, points).wait(true))
                .await?;
        }
        let load_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        loop {
            let info = client
                .collection_info(COLLECTION)
                .await?
                .result
                .context("no collection info")?;
            if info.status == CollectionStatus::Green as i32
                && (info.indexed_vectors_count.unwrap_or(0) >= v.data.len() as u64 || small(v))
            {
                break;
            }
            if t1.elapsed() > Duration::from_secs(1800) {
                bail!("Qdrant not indexed after 30 minutes: {info:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let index_secs = t1.elapsed().as_secs_f64();
        let added_kib = rss_kib(peer.child.id())
            .zip(before)
            .map(|(a, b)| a.0.saturating_sub(b));
        Ok((
            Self::Qdrant { peer, addr, int8 },
            Loaded {
                load_secs,
                index_secs,
                added_kib,
            },
        ))
    }

    /// faiss `IndexHNSWFlat` (inner product) built from the data file.
    pub fn faiss(
        python: Python,
        data: &Path,
        queries: &Path,
        dim: usize,
        hnsw: Hnsw,
        dir: &Path,
    ) -> anyhow::Result<(Self, Loaded)> {
        let index = dir.join("hnsw.faiss");
        let t0 = Instant::now();
        let r = python.run(&[
            "build",
            "--data",
            &data.display().to_string(),
            "--dim",
            &dim.to_string(),
            "--m",
            &hnsw.m.to_string(),
            "--ef-construction",
            &hnsw.ef_construct.to_string(),
            "--index",
            &index.display().to_string(),
        ])?;
        let index_secs = r["build_secs"]
            .as_f64()
            .unwrap_or_else(|| t0.elapsed().as_secs_f64());
        let engine = Self::Faiss {
            python,
            index,
            queries: queries.to_owned(),
            dim,
        };
        // The index's resident size: what loading it adds to the process.
        let probe = engine.faiss_search(1, 0.0, 16, 1, None)?;
        let added_kib = probe.1["index_kib"].as_u64();
        Ok((
            engine,
            Loaded {
                load_secs: 0.0,
                index_secs,
                added_kib,
            },
        ))
    }

    fn faiss_search(
        &self,
        clients: usize,
        secs: f64,
        ef: u32,
        batch: usize,
        answers: Option<&Path>,
    ) -> anyhow::Result<(Stats, serde_json::Value)> {
        let Self::Faiss {
            python,
            index,
            queries,
            dim,
        } = self
        else {
            bail!("not faiss");
        };
        let (ix, q) = (index.display().to_string(), queries.display().to_string());
        let mut args = vec![
            "search".to_owned(),
            "--index".into(),
            ix,
            "--queries".into(),
            q,
            "--dim".into(),
            dim.to_string(),
            "--k".into(),
            K.to_string(),
            "--ef".into(),
            ef.to_string(),
            "--clients".into(),
            clients.to_string(),
            "--seconds".into(),
            secs.to_string(),
            "--batch".into(),
            batch.to_string(),
        ];
        if let Some(a) = answers {
            args.extend(["--answers".into(), a.display().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = python.run(&args)?;
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let s = Stats {
            lat: Vec::new(),
            texts_per_sec: f("qps"),
            p50: Duration::from_secs_f64(f("p50_ms") / 1e3),
            p95: Duration::ZERO,
            p99: Duration::from_secs_f64(f("p99_ms") / 1e3),
            requests: r["calls"].as_u64().unwrap_or(0) as usize,
        };
        Ok((s, r))
    }

    /// Every query once, in order, at search breadth `ef`: the ids found.
    pub async fn answers(
        &self,
        queries: &[Vec<f32>],
        ef: u32,
        dir: &Path,
    ) -> anyhow::Result<Vec<Vec<u64>>> {
        if let Self::Faiss { .. } = self {
            let out = dir.join(format!("answers-{ef}.i64"));
            self.faiss_search(1, 0.0, ef, 1, Some(&out))?;
            return read_ids(&out);
        }
        let mut c = self.client().await?;
        let mut all = Vec::with_capacity(queries.len());
        for q in queries {
            all.push(c.search(q, ef).await?);
        }
        Ok(all)
    }

    /// `clients` callers searching for `secs` at breadth `ef`, `batch`
    /// queries per call (Stats count queries; latencies are per call).
    pub async fn round(
        &self,
        queries: &Arc<Vec<Vec<f32>>>,
        clients: usize,
        secs: f64,
        ef: u32,
        batch: usize,
    ) -> anyhow::Result<Stats> {
        if let Self::Faiss { .. } = self {
            return Ok(self.faiss_search(clients, secs, ef, batch, None)?.0);
        }
        let mut conns = Vec::new();
        for _ in 0..clients {
            conns.push(self.client().await?);
        }
        let queries = Arc::clone(queries);
        let mut stats = closed_loop(conns, secs, move |mut c: Client, i| {
            let queries = Arc::clone(&queries);
            async move {
                if batch == 1 {
                    let hits = c.search(&queries[i % queries.len()], ef).await?;
                    ensure!(hits.len() == K, "expected {K} hits, got {}", hits.len());
                } else {
                    let first = (i * batch) % queries.len();
                    let qs: Vec<&[f32]> = (first..first + batch)
                        .map(|j| queries[j % queries.len()].as_slice())
                        .collect();
                    let all = c.search_batch(&qs, ef).await?;
                    ensure!(
                        all.len() == batch && all.iter().all(|h| h.len() == K),
                        "expected {batch} answers of {K} hits"
                    );
                }
                Ok(c)
            }
        })
        .await?;
        stats.texts_per_sec *= batch as f64;
        Ok(stats)
    }

    async fn client(&self) -> anyhow::Result<Client> {
        Ok(match self {
            Self::Mlmesh { addr, .. } => {
                Client::Mlmesh(VectorSearchClient::connect(addr.clone()).await?)
            }
            Self::Qdrant { addr, .. } => Client::Qdrant(PointsClient::connect(addr.clone()).await?),
            Self::Faiss { .. } => bail!("faiss has no gRPC client"),
        })
    }

    /// Resident memory of the serving process now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        match self {
            Self::Mlmesh { svc, .. } => rss_kib(svc.child.id()).map(|r| r.0),
            Self::Qdrant { peer, .. } => rss_kib(peer.child.id()).map(|r| r.0),
            Self::Faiss { .. } => None,
        }
    }
}
