//! `spawn_app()` over a temp data folder, and a client-side push/pull.

use std::{net::SocketAddr, path::Path, sync::Arc};

use mlmesh_proto::registry::v1::{self as pb, registry_client::RegistryClient};
use mlmesh_registry::{Application, Settings, registry::Registry};
use mlmesh_runtime::service::Service as _;
use mlmesh_runtime::{ServerSettings, testing::Running};
use mlmesh_tests::TempDir;
use sha2::{Digest, Sha256};
use tonic::{Code, transport::Channel};

pub type Client = RegistryClient<Channel>;

pub struct TestApp {
    #[allow(dead_code)]
    pub addr: SocketAddr,
    pub client: Client,
    pub registry: Arc<Registry>,
    running: Running,
}

pub fn settings(data: &Path) -> Settings {
    let mut s = Settings {
        server: ServerSettings::ephemeral(),
        ..Settings::default()
    };
    s.registry.data_dir = data.to_path_buf();
    // Housekeeping runs when a test asks for it.
    s.registry.housekeeping_secs = 3600;
    s
}

pub async fn spawn_app(data: &Path, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut s = settings(data);
    tweak(&mut s);
    let app = Application::build(s).await.expect("registry builds");
    let registry = app.registry();
    let running = Running::serve(app);
    let addr = running.addr;
    let client = RegistryClient::connect(format!("http://{addr}"))
        .await
        .expect("connects");
    TestApp {
        addr,
        client,
        registry,
        running,
    }
}

/// The storage a test runs on: the embedded default (SQLite and a local
/// folder), PostgreSQL metadata, S3 contents, or both shared ones (what
/// several replicas use).
#[derive(Clone, Copy, Debug)]
pub enum Store {
    Sqlite,
    Postgres,
    S3,
    PostgresS3,
}

/// A test's storage: a temp folder (staging; SQLite; local contents), on
/// PostgreSQL a database of its own in the shared test server, on S3 a key
/// prefix of its own in the shared test server's bucket.
pub struct Env {
    pub dir: TempDir,
    pub url: String,
    /// `(blob_url, endpoint)` on S3.
    pub s3: Option<(String, String)>,
}

impl Store {
    /// None (the reason printed) when this store cannot run here.
    pub fn env(self, label: &str) -> Option<Env> {
        let url = match self {
            Store::Sqlite | Store::S3 => String::new(),
            Store::Postgres | Store::PostgresS3 => {
                mlmesh_tests::postgres::Postgres::shared()?.database(label)
            }
        };
        let s3 = match self {
            Store::Sqlite | Store::Postgres => None,
            Store::S3 | Store::PostgresS3 => {
                let server = mlmesh_tests::s3::S3Server::shared()?;
                Some((server.prefix_url(label), server.endpoint.clone()))
            }
        };
        Some(Env {
            dir: TempDir::new("registry"),
            url,
            s3,
        })
    }
}

impl Env {
    /// A registry over this storage (again after a stop: same data).
    pub async fn spawn(&self, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        self.spawn_in(self.dir.path(), tweak).await
    }

    /// A registry over this storage's shared parts with its own local
    /// folder (another replica).
    pub async fn spawn_in(&self, dir: &Path, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let url = self.url.clone();
        let s3 = self.s3.clone();
        spawn_app(dir, move |s| {
            s.registry.metadata_url = mlmesh_registry::settings::DbUrl(url);
            if let Some((blob_url, endpoint)) = s3 {
                use_s3(s, blob_url, endpoint);
            }
            tweak(s);
        })
        .await
    }
}

/// Points `s` at the test S3 server's `blob_url`.
pub fn use_s3(s: &mut Settings, blob_url: String, endpoint: String) {
    use mlmesh_tests::s3::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
    s.registry.blob_url = blob_url;
    s.registry.s3.endpoint = endpoint;
    s.registry.s3.allow_http = true;
    s.registry.s3.region = "us-east-1".into();
    s.registry.s3.access_key_id = ACCESS_KEY_ID.into();
    s.registry.s3.secret_access_key = mlmesh_registry::settings::Secret(SECRET_ACCESS_KEY.into());
}

/// Generates `sqlite::<test>`, `postgres::<test>` and `s3::<test>` for
/// each test function (`async fn name(store: Store)`): one conformance
/// suite over both metadata stores and both blob stores. Those that need a
/// server print why they skip when it cannot be started.
macro_rules! on_every_store {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Store::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Store::Postgres).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    super::$name($crate::helpers::Store::S3).await;
                }
            )*
        }
    };
}
pub(crate) use on_every_store;

impl TestApp {
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Sum of the `/metrics` samples whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.running.metric(prefix).await
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    /// How many contents the blob store holds (whichever store it is).
    pub async fn stored_blobs(&self) -> usize {
        let blobs = self.registry.blob_store();
        tokio::task::spawn_blocking(move || blobs.list())
            .await
            .expect("list task")
            .expect("list blobs")
            .len()
    }

    pub async fn delete_versions(&self, model: &str, versions: &[i64]) {
        for &version in versions {
            self.client()
                .delete_version(pb::DeleteVersionRequest {
                    model: model.into(),
                    version,
                })
                .await
                .expect("delete version");
        }
    }

    pub async fn create(&self, name: &str) -> pb::Model {
        self.client()
            .create_model(pb::CreateModelRequest {
                name: name.into(),
                ..Default::default()
            })
            .await
            .expect("create model")
            .into_inner()
    }

    /// Declares `files` and uploads them whole; returns the committed version.
    pub async fn push(&self, model: &str, files: &[(&str, Vec<u8>)]) -> pb::Version {
        let up = self.start(model, files).await.expect("start upload");
        let resp = self
            .send(&up.upload_id, files, 64 * 1024)
            .await
            .expect("upload");
        resp.version.expect("committed")
    }

    pub async fn start(
        &self,
        model: &str,
        files: &[(&str, Vec<u8>)],
    ) -> Result<pb::Upload, tonic::Status> {
        self.client()
            .start_upload(pb::StartUploadRequest {
                model: model.into(),
                files: manifest(files),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// Sends every file in chunks of `chunk` bytes.
    pub async fn send(
        &self,
        upload_id: &str,
        files: &[(&str, Vec<u8>)],
        chunk: usize,
    ) -> Result<pb::UploadFilesResponse, tonic::Status> {
        let mut msgs = Vec::new();
        for (path, bytes) in files {
            let mut off = 0;
            loop {
                let end = (off + chunk).min(bytes.len());
                msgs.push(pb::UploadChunk {
                    upload_id: upload_id.into(),
                    path: (*path).into(),
                    offset: off as u64,
                    data: bytes[off..end].to_vec().into(),
                });
                off = end;
                if off >= bytes.len() {
                    break;
                }
            }
        }
        self.send_chunks(msgs).await
    }

    pub async fn send_chunks(
        &self,
        msgs: Vec<pb::UploadChunk>,
    ) -> Result<pb::UploadFilesResponse, tonic::Status> {
        self.client()
            .upload_files(tokio_stream::iter(msgs))
            .await
            .map(|r| r.into_inner())
    }

    /// Every byte of every file of a version, by path.
    pub async fn pull(&self, model: &str, version: i64) -> Vec<(String, Vec<u8>)> {
        let mut stream = self
            .client()
            .download(pb::DownloadRequest {
                model: model.into(),
                selector: Some(pb::download_request::Selector::Version(version)),
                ..Default::default()
            })
            .await
            .expect("download")
            .into_inner();
        let mut out: Vec<(String, Vec<u8>)> = Vec::new();
        while let Some(c) = stream.message().await.expect("chunk") {
            match out.last_mut() {
                Some((p, bytes)) if *p == c.path => {
                    assert_eq!(c.offset as usize, bytes.len(), "offsets follow on");
                    bytes.extend_from_slice(&c.data);
                }
                _ => out.push((c.path, c.data.to_vec())),
            }
        }
        out
    }

    pub async fn set_alias(
        &self,
        model: &str,
        alias: &str,
        version: i64,
        expected: Option<i64>,
    ) -> Result<pb::SetAliasesResponse, tonic::Status> {
        self.client()
            .set_aliases(pb::SetAliasesRequest {
                model: model.into(),
                aliases: vec![pb::AliasTarget {
                    alias: alias.into(),
                    version,
                    expected_version: expected,
                }],
                reason: "test".into(),
                override_policy: false,
            })
            .await
            .map(|r| r.into_inner())
    }
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

pub fn manifest(files: &[(&str, Vec<u8>)]) -> Vec<pb::FileEntry> {
    files
        .iter()
        .map(|(p, b)| pb::FileEntry {
            path: (*p).into(),
            size: b.len() as u64,
            sha256: sha256(b),
        })
        .collect()
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
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

/// Asserts a status code and that the message names every `needle`.
pub fn assert_status<T: std::fmt::Debug>(
    r: Result<T, tonic::Status>,
    code: Code,
    needles: &[&str],
) {
    let s = r.expect_err("an error status");
    assert_eq!(s.code(), code, "{s:?}");
    for n in needles {
        assert!(s.message().contains(n), "{n:?} not in {:?}", s.message());
    }
}
