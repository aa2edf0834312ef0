//! `spawn_app()`: one real embedding service per test, on its own port.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use mlmesh_embedding::{Application, Settings};
use mlmesh_proto::embedding::v1::{self as pb, embedding_service_client::EmbeddingServiceClient};
use mlmesh_runtime::ServerSettings;
use tokio::{io::AsyncReadExt as _, io::AsyncWriteExt as _, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub client: EmbeddingServiceClient<Channel>,
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

pub fn repo_root() -> PathBuf {
    mlmesh_tests::repo_root()
}

/// Settings for a test: ephemeral ports, the cached default model.
pub fn test_settings() -> Settings {
    let root = repo_root();
    let mut s = Settings {
        server: ServerSettings::ephemeral(),
        ..Settings::default()
    };
    s.embedding.models[0].path = root.join(mlmesh_embedding::settings::DEFAULT_MODEL_DIR);
    s.embedding.ort_dylib_path = Some(root.join(mlmesh_embedding::settings::DEFAULT_ORT_DYLIB));
    assert!(
        s.embedding.models[0].path.join("model.onnx").is_file(),
        "model assets missing: run `make models` first"
    );
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    tweak(&mut settings);
    let app = Application::build(settings).await.expect("service builds");
    let addr = app.local_addr();
    let metrics_addr = app.metrics_addr().expect("metrics enabled");
    let (stop, stopped) = oneshot::channel::<()>();
    let handle = tokio::spawn(async move {
        app.run_until_stopped(async {
            let _ = stopped.await;
        })
        .await
        .expect("server runs");
    });
    let client = EmbeddingServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    TestApp {
        addr,
        metrics_addr,
        client,
        stop: Some(stop),
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn client(&self) -> EmbeddingServiceClient<Channel> {
        self.client.clone()
    }

    /// Embeds with defaults (normalize, truncate right).
    pub async fn embed(&self, inputs: &[&str]) -> Vec<Vec<f32>> {
        self.client()
            .embed(request(inputs))
            .await
            .expect("embed succeeds")
            .into_inner()
            .embeddings
            .into_iter()
            .map(|e| e.values)
            .collect()
    }

    /// GET /metrics, as text.
    pub async fn metrics(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(self.metrics_addr)
            .await
            .expect("metrics port");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut body = String::new();
        s.read_to_string(&mut body).await.expect("read");
        body
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, prefix: &str) -> f64 {
        mlmesh_tests::metric_sum(&self.metrics().await, prefix)
    }

    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(20), h)
                .await
                .expect("stops in time")
                .expect("server task ok");
        }
    }
}

pub fn request(inputs: &[&str]) -> pb::EmbedRequest {
    pb::EmbedRequest {
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

pub fn norm(a: &[f32]) -> f32 {
    a.iter().map(|x| x * x).sum::<f32>().sqrt()
}
