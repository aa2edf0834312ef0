//! `spawn_mesh()`: embedding + vector-search + gateway, each a real server
//! on its own port, the gateway pointed at the other two.

use std::net::SocketAddr;

use mlmesh_gateway::Settings;
use mlmesh_proto::gateway::v1::{self as gw, gateway_client::GatewayClient};
use mlmesh_runtime::ServerSettings;
use mlmesh_runtime::service::Service as _;
use mlmesh_tests::{HttpClient, TempDir};
use tonic::transport::Channel;

/// A server running on this test's runtime; stopped on `stop()`.
pub use mlmesh_runtime::testing::Running;

pub async fn spawn_embedding() -> Running {
    let root = mlmesh_tests::repo_root();
    let mut s = mlmesh_embedding::Settings {
        server: ServerSettings::ephemeral(),
        ..Default::default()
    };
    s.embedding.models[0].path = root.join(mlmesh_embedding::settings::DEFAULT_MODEL_DIR);
    s.embedding.ort_dylib_path = Some(root.join(mlmesh_embedding::settings::DEFAULT_ORT_DYLIB));
    assert!(
        s.embedding.models[0].path.join("model.onnx").is_file(),
        "model assets missing: run `make models` first"
    );
    Running::spawn::<mlmesh_embedding::Application>(s).await
}

pub async fn spawn_vector(data: &TempDir) -> Running {
    let s = mlmesh_vector_search::Settings::for_tests(data.path().to_owned());
    Running::spawn::<mlmesh_vector_search::Application>(s).await
}

pub struct Gateway {
    pub grpc: GatewayClient<Channel>,
    pub http_addr: SocketAddr,
    running: Running,
}

impl Gateway {
    pub fn http(&self) -> HttpClient {
        HttpClient::new(self.http_addr)
    }

    /// Sum of the gateway's `/metrics` samples whose line starts with `prefix`.
    pub async fn metric(&self, prefix: &str) -> f64 {
        self.running.metric(prefix).await
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }
}

pub async fn spawn_gateway(settings: Settings) -> Gateway {
    let app = mlmesh_gateway::Application::build(settings)
        .await
        .expect("gateway builds");
    let http_addr = app.http_addr().expect("http enabled");
    let running = Running::serve(app);
    let grpc = GatewayClient::connect(format!("http://{}", running.addr))
        .await
        .expect("connects");
    Gateway {
        grpc,
        http_addr,
        running,
    }
}

/// The three services, wired.
pub struct Mesh {
    pub gateway: Gateway,
    pub embedding: Running,
    pub vector: Running,
    _data: TempDir,
}

pub async fn spawn_mesh() -> Mesh {
    spawn_mesh_with(|_| {}).await
}

pub async fn spawn_mesh_with(tweak: impl FnOnce(&mut Settings)) -> Mesh {
    let data = TempDir::new("gateway-test");
    let embedding = spawn_embedding().await;
    let vector = spawn_vector(&data).await;
    let mut s = Settings::for_tests(
        vec![embedding.addr.to_string()],
        vec![vector.addr.to_string()],
    );
    tweak(&mut s);
    let gateway = spawn_gateway(s).await;
    Mesh {
        gateway,
        embedding,
        vector,
        _data: data,
    }
}

impl Mesh {
    pub fn grpc(&self) -> GatewayClient<Channel> {
        self.gateway.grpc.clone()
    }

    pub async fn stop(self) {
        self.gateway.stop().await;
        self.vector.stop().await;
        self.embedding.stop().await;
    }

    /// Creates a gateway collection with a unique name.
    pub async fn collection(&self, label: &str, chunking: Option<gw::Chunking>) -> String {
        let name = format!("{label}-{}", std::process::id() ^ rand_suffix());
        self.grpc()
            .create_collection(gw::CreateCollectionRequest {
                name: name.clone(),
                chunking,
                ..Default::default()
            })
            .await
            .expect("create collection");
        name
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A free port nobody listens on (bound, then released).
pub fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let a = l.local_addr().expect("addr");
    drop(l);
    a.to_string()
}

pub fn doc(id: &str, text: &str, metadata: serde_json::Value) -> gw::Document {
    gw::Document {
        id: id.into(),
        text: text.into(),
        metadata: metadata
            .as_object()
            .cloned()
            .map(mlmesh_proto::json::json_to_struct),
    }
}
