//! `spawn_app()`, temporary model repositories and tensor helpers.

use std::{
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use mlmesh_inference::{Application, Settings, models::ModelManager};
use mlmesh_proto::inference::{
    self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
    model_infer_request::InferInputTensor,
};
use mlmesh_runtime::service::Service as _;
use mlmesh_runtime::{ServerSettings, testing::Running};
use mlmesh_tests::TempDir;
use serde_json::Value;
use tonic::transport::Channel;

pub type Client = GrpcInferenceServiceClient<Channel>;

pub fn repo_root() -> PathBuf {
    mlmesh_tests::repo_root()
}

pub fn references() -> Value {
    let p = repo_root().join("services/inference/tests/data/references.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("references.json")).expect("json")
}

/// A model repository in a temp folder, filled from the bundled models.
pub struct TempRepo {
    pub dir: TempDir,
}

impl TempRepo {
    pub fn with(models: &[&str]) -> Self {
        let dir = TempDir::new("infer-repo");
        let src = repo_root().join("services/inference/models");
        for m in models {
            mlmesh_tests::copy_dir(&src.join(m), &dir.path().join(m)).expect("copy model");
        }
        Self { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path().join(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        // Written beside, then renamed: a poller never sees half a file.
        let tmp = p.with_extension("part");
        std::fs::write(&tmp, bytes).expect("write");
        std::fs::rename(&tmp, &p).expect("rename");
    }
}

#[allow(dead_code)]
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub models: std::sync::Arc<ModelManager>,
    running: Running,
}

pub async fn spawn_app(repo: &Path, tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let mut s = Settings {
        server: ServerSettings::ephemeral(),
        ..Settings::default()
    };
    s.inference.model_repository = repo.to_path_buf();
    s.inference.ort_dylib_path =
        Some(repo_root().join(mlmesh_inference::settings::DEFAULT_ORT_DYLIB));
    tweak(&mut s);
    let app = Application::build(s).await.expect("service builds");
    let models = app.models();
    let running = Running::serve(app);
    let addr = running.addr;
    let client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .expect("connects")
        .max_decoding_message_size(256 << 20)
        .max_encoding_message_size(256 << 20);
    TestApp {
        addr,
        client,
        models,
        running,
    }
}

impl TestApp {
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub async fn stop(self) {
        self.running.stop().await;
    }

    pub async fn metrics(&self) -> String {
        self.running.metrics().await
    }

    /// RepositoryIndex rows of `model`.
    pub async fn index(&self, model: &str) -> Vec<pb::repository_index_response::ModelIndex> {
        self.client()
            .repository_index(pb::RepositoryIndexRequest::default())
            .await
            .expect("index")
            .into_inner()
            .models
            .into_iter()
            .filter(|m| m.name == model)
            .collect()
    }
}

/// An FP32 input in raw_input_contents.
pub fn f32_request(model: &str, input: &str, rows: usize, data: &[f32]) -> pb::ModelInferRequest {
    let cols = data.len() / rows.max(1);
    pb::ModelInferRequest {
        model_name: model.into(),
        inputs: vec![InferInputTensor {
            name: input.into(),
            datatype: "FP32".into(),
            shape: vec![rows as i64, cols as i64],
            ..Default::default()
        }],
        raw_input_contents: vec![
            data.iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        ],
        ..Default::default()
    }
}

/// Output `name` of a response, as f32.
pub fn output_f32(resp: &pb::ModelInferResponse, name: &str) -> (Vec<i64>, Vec<f32>) {
    let i = resp
        .outputs
        .iter()
        .position(|o| o.name == name)
        .unwrap_or_else(|| panic!("no output {name}"));
    assert_eq!(resp.outputs[i].datatype, "FP32");
    let raw = &resp.raw_output_contents[i];
    (
        resp.outputs[i].shape.clone(),
        raw.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}

pub fn flat(v: &Value) -> Vec<f32> {
    match v {
        Value::Array(a) => a.iter().flat_map(flat).collect(),
        Value::Number(n) => vec![n.as_f64().expect("number") as f32],
        Value::Bool(b) => vec![f32::from(u8::from(*b))],
        other => panic!("not numeric: {other}"),
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The digits test rows (32 × 64) from the references.
pub fn digits_rows() -> Vec<Vec<f32>> {
    let r = references();
    r["models"]["digits-mlp"]["input"]["data"]
        .as_array()
        .expect("rows")
        .iter()
        .map(flat)
        .collect()
}

/// A float32 `.npy` member.
fn npy_f32(shape: &[usize], data: &[f32]) -> Vec<u8> {
    let dims = shape.iter().map(|d| format!("{d},")).collect::<String>();
    let mut h = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({dims}), }}");
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    for x in data {
        b.extend_from_slice(&x.to_le_bytes());
    }
    b
}

fn npy_text(s: &str) -> Vec<u8> {
    let mut h = format!(
        "{{'descr': '|u1', 'fortran_order': False, 'shape': ({},), }}",
        s.len()
    );
    while (10 + h.len() + 1) % 64 != 0 {
        h.push(' ');
    }
    h.push('\n');
    let mut b = b"\x93NUMPY\x01\x00".to_vec();
    b.extend_from_slice(&(h.len() as u16).to_le_bytes());
    b.extend_from_slice(h.as_bytes());
    b.extend_from_slice(s.as_bytes());
    b
}

/// A linear `.npz` model `inputs → outputs` with all weights `w`: its
/// memory is `(inputs + 1) × outputs × 4` bytes.
pub fn linear_npz(inputs: usize, outputs: usize, w: f32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    {
        let mut z = zip::ZipWriter::new(&mut out);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        let members = [
            (
                "W0.npy",
                npy_f32(&[inputs, outputs], &vec![w; inputs * outputs]),
            ),
            ("b0.npy", npy_f32(&[outputs], &vec![0.0; outputs])),
            (
                "meta.npy",
                npy_text(
                    r#"{"format": "mlmesh-npz/1", "input": "input", "outputs": {"values": "output"}}"#,
                ),
            ),
        ];
        for (name, bytes) in members {
            z.start_file(name, opts).expect("zip member");
            z.write_all(&bytes).expect("write");
        }
        z.finish().expect("zip");
    }
    out.into_inner()
}
