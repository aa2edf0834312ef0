//! The soak's calls and their references: what each caller sends (ModelInfer
//! on iris-logreg, Embed, Search, in turn) and how each answer is checked
//! against a reference from outside the mesh.

use std::time::Duration;

use anyhow::Context as _;
use mlmesh_proto::{
    embedding::v1::EmbedRequest,
    gateway::v1::{self as gw, gateway_client::GatewayClient},
    inference::{
        self as pb, grpc_inference_service_client::GrpcInferenceServiceClient,
        model_infer_request::InferInputTensor,
    },
};
use mlmesh_tests::repo_root;
use serde_json::Value;
use tonic::{Code, transport::Channel};

/// References for the answers, from outside the mesh.
pub(super) struct Refs {
    iris_rows: Vec<[f32; 4]>,
    iris_probs: Vec<Vec<f32>>,
    golden: Vec<(String, Vec<f32>)>,
    /// (query text, document id it was copied from).
    pub(super) queries: Vec<(String, String)>,
}

pub(super) fn refs() -> anyhow::Result<Refs> {
    let r: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("services/inference/tests/data/references.json"),
    )?)?;
    let m = &r["models"]["iris-logreg"];
    let rows: Vec<[f32; 4]> = m["input"]["data"]
        .as_array()
        .context("iris rows")?
        .iter()
        .filter_map(|row| {
            let v: Vec<f32> = row
                .as_array()?
                .iter()
                .filter_map(|x| x.as_f64().map(|x| x as f32))
                .collect();
            v.try_into().ok()
        })
        .collect();
    let probs: Vec<Vec<f32>> = m["onnxruntime"]["probabilities"]
        .as_array()
        .context("iris probabilities")?
        .iter()
        .map(|row| {
            row.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_f64().map(|x| x as f32))
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let g: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("services/embedding/tests/data/minilm-golden.json"),
    )?)?;
    let golden = g["items"]
        .as_array()
        .context("golden items")?
        .iter()
        .take(16)
        .filter_map(|it| {
            Some((
                it["text"].as_str()?.to_owned(),
                it["embedding"]
                    .as_array()?
                    .iter()
                    .filter_map(|x| x.as_f64().map(|x| x as f32))
                    .collect(),
            ))
        })
        .collect();
    let queries = crate::TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| ((*t).to_owned(), format!("doc-{i}")))
        .collect();
    anyhow::ensure!(
        !rows.is_empty() && rows.len() == probs.len(),
        "iris references"
    );
    Ok(Refs {
        iris_rows: rows,
        iris_probs: probs,
        golden,
        queries,
    })
}

#[derive(Clone)]
pub(super) struct Conn {
    infer: GrpcInferenceServiceClient<Channel>,
    pub(super) gateway: GatewayClient<Channel>,
}

impl Conn {
    pub(super) async fn open(addr: &str) -> anyhow::Result<Self> {
        let ch = Channel::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("connecting to the gateway at {addr}"))?;
        Ok(Self {
            infer: GrpcInferenceServiceClient::new(ch.clone()),
            gateway: GatewayClient::new(ch),
        })
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(f32::MIN_POSITIVE)
}

pub(super) enum Outcome {
    Ok,
    Shed,
    Wrong(String),
    Failed(String),
}

/// One call of kind `i % 3`, checked.
pub(super) async fn call(c: &mut Conn, refs: &Refs, collection: &str, i: usize) -> Outcome {
    let status = |s: tonic::Status, what: &str| {
        if s.code() == Code::ResourceExhausted {
            Outcome::Shed
        } else {
            Outcome::Failed(format!("{what}: {:?} {}", s.code(), s.message()))
        }
    };
    match i % 3 {
        0 => {
            let k = i % refs.iris_rows.len();
            let row = refs.iris_rows[k];
            let rq = pb::ModelInferRequest {
                model_name: "iris-logreg".into(),
                inputs: vec![InferInputTensor {
                    name: "input".into(),
                    datatype: "FP32".into(),
                    shape: vec![1, 4],
                    ..Default::default()
                }],
                outputs: vec![pb::model_infer_request::InferRequestedOutputTensor {
                    name: "probabilities".into(),
                    ..Default::default()
                }],
                raw_input_contents: vec![row.iter().flat_map(|x| x.to_le_bytes()).collect()],
                ..Default::default()
            };
            match c.infer.model_infer(rq).await {
                Ok(r) => {
                    let r = r.into_inner();
                    let got: Vec<f32> = r
                        .raw_output_contents
                        .first()
                        .map(|b| {
                            b.chunks_exact(4)
                                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                                .collect()
                        })
                        .unwrap_or_default();
                    let want = &refs.iris_probs[k];
                    if got.len() == want.len()
                        && got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-4)
                    {
                        Outcome::Ok
                    } else {
                        Outcome::Wrong(format!("iris row {k}: {got:?}, onnxruntime {want:?}"))
                    }
                }
                Err(s) => status(s, "ModelInfer"),
            }
        }
        1 => {
            let (text, want) = &refs.golden[i % refs.golden.len()];
            match c
                .gateway
                .embed(EmbedRequest {
                    inputs: vec![text.clone()],
                    ..Default::default()
                })
                .await
            {
                Ok(r) => {
                    let r = r.into_inner();
                    let cos = r
                        .embeddings
                        .first()
                        .map_or(0.0, |e| cosine(&e.values, want));
                    if cos >= 0.99 {
                        Outcome::Ok
                    } else {
                        Outcome::Wrong(format!("{text:?}: cosine {cos} to sentence-transformers"))
                    }
                }
                Err(s) => status(s, "Embed"),
            }
        }
        _ => {
            let (q, doc) = &refs.queries[i % refs.queries.len()];
            match c
                .gateway
                .search(gw::SearchRequest {
                    collection: collection.to_owned(),
                    query: q.clone(),
                    limit: 3,
                    ..Default::default()
                })
                .await
            {
                Ok(r) => {
                    let hits = r.into_inner().hits;
                    match hits.first() {
                        Some(h) if &h.document_id == doc => Outcome::Ok,
                        other => Outcome::Wrong(format!(
                            "search {q:?}: top hit {:?}, expected {doc}",
                            other.map(|h| &h.document_id)
                        )),
                    }
                }
                Err(s) => status(s, "Search"),
            }
        }
    }
}
