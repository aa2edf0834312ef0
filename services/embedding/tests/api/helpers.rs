//! `spawn_app()`: one real embedding service per test, on its own port.

use std::{net::SocketAddr, path::PathBuf};

use mlmesh_embedding::{Application, Settings};
use mlmesh_proto::embedding::v1::{self as pb, embedding_service_client::EmbeddingServiceClient};
use mlmesh_runtime::{ServerSettings, testing::Running};
use tonic::transport::Channel;

pub struct TestApp {
    pub addr: SocketAddr,
    pub client: EmbeddingServiceClient<Channel>,
    running: Running,
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
    let running = Running::spawn::<Application>(settings).await;
    let addr = running.addr;
    let client = EmbeddingServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
    TestApp {
        addr,
        client,
        running,
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
        self.running.metrics().await
    }

    /// The value of one metric sample line (`name{labels}`), 0 when absent.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.running.metric(prefix).await
    }

    pub async fn stop(self) {
        self.running.stop().await;
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
