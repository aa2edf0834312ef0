//! What `mlmesh bench model` calls: an Open Inference Protocol endpoint
//! (ours, MLServer, Triton — `inference.GRPCInferenceService/ModelInfer`)
//! with requests from a validation suite's examples, or an mlmesh
//! embedding endpoint with texts. Each call is checked: a status other
//! than OK, or an answer without outputs, counts as an error.

use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, bail};
use mlmesh_loadgen::Caller;
use mlmesh_proto::{
    embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient},
    inference::{self as inf, grpc_inference_service_client::GrpcInferenceServiceClient},
};
use mlmesh_runtime::client::{H2Channel, H2Settings};

/// Built-in texts for an embedding endpoint when no file is given.
const TEXTS: &[&str] = &[
    "How do I reset my password?",
    "Best practices for deploying gRPC services on Kubernetes.",
    "Vector search finds the nearest neighbours of a query embedding.",
    "The weather is lovely today.",
    "Where can I find the invoice for my last order?",
    "Transformers changed natural language processing.",
    "Latency matters more than throughput for interactive search.",
    "Kubernetes schedules pods onto nodes.",
];

/// The endpoint kind.
#[derive(clap::ValueEnum, Clone, Copy, Debug, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Oip,
    Embedding,
}

/// One target: a model (and version) behind an endpoint.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Target {
    pub endpoint: Endpoint,
    pub addr: String,
    pub model: String,
    /// OIP `model_version` ("" = the server's choice).
    pub version: String,
}

/// What every call sends, prepared once.
pub enum Work {
    Infer(Vec<inf::ModelInferRequest>),
    Embed(Vec<String>, usize),
}

impl Work {
    /// From a suite (OIP) or a JSON list of texts (embedding); `batch`
    /// texts per embedding call.
    pub fn load(
        endpoint: Endpoint,
        file: Option<&std::path::Path>,
        batch: usize,
    ) -> anyhow::Result<(Self, Vec<u8>)> {
        let bytes = match file {
            Some(f) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
            None => Vec::new(),
        };
        match endpoint {
            Endpoint::Oip => {
                if bytes.is_empty() {
                    bail!(
                        "--inputs: an OIP endpoint needs a validation suite whose examples are the requests"
                    );
                }
                let suite = mlmesh_validate::suite::Suite::parse(&bytes)
                    .context("--inputs is not a validation suite")?;
                let reqs = mlmesh_validator::requests(&suite, "")?;
                if reqs.is_empty() {
                    bail!("--inputs: the suite has no examples");
                }
                Ok((Self::Infer(reqs), bytes))
            }
            Endpoint::Embedding => {
                if !(1..=1024).contains(&batch) {
                    bail!("--batch: {batch} is not between 1 and 1024");
                }
                let texts: Vec<String> = if bytes.is_empty() {
                    TEXTS.iter().map(|t| (*t).to_owned()).collect()
                } else {
                    serde_json::from_slice(&bytes).context("--inputs: a JSON list of texts")?
                };
                if texts.is_empty() {
                    bail!("--inputs: no texts");
                }
                let digest_of = serde_json::to_vec(&(&texts, batch))?;
                Ok((Self::Embed(texts, batch), digest_of))
            }
        }
    }
}

fn channel(addr: &str) -> anyhow::Result<H2Channel> {
    let uri = if addr.contains("://") {
        addr.to_owned()
    } else {
        format!("http://{addr}")
    };
    let uri: http::Uri = uri.parse().with_context(|| format!("--addr {addr}"))?;
    H2Channel::lazy(uri, H2Settings::default(), None)
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("--addr {addr}"))
}

/// A caller sending `work` to `target`, cycling through its requests; a
/// call not answered within `timeout` counts as an error, so a stalled
/// server ends a run with failed calls instead of hanging it.
pub fn caller(
    target: &Target,
    work: &Arc<Work>,
    timeout: std::time::Duration,
) -> anyhow::Result<Caller> {
    let call = untimed(target, work)?;
    Ok(Arc::new(move || {
        let fut = call();
        Box::pin(async move {
            tokio::time::timeout(timeout, fut)
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer within {:.1} s (--call-timeout-secs)",
                        timeout.as_secs_f64()
                    ))
                })
        })
    }))
}

fn untimed(target: &Target, work: &Arc<Work>) -> anyhow::Result<Caller> {
    let ch = channel(&target.addr)?;
    let next = Arc::new(AtomicUsize::new(0));
    let (work, model, version) = (
        Arc::clone(work),
        target.model.clone(),
        target.version.clone(),
    );
    Ok(match target.endpoint {
        Endpoint::Oip => {
            let client = GrpcInferenceServiceClient::new(ch);
            Arc::new(move || {
                let (mut c, work, next) = (client.clone(), Arc::clone(&work), Arc::clone(&next));
                let (model, version) = (model.clone(), version.clone());
                Box::pin(async move {
                    let Work::Infer(reqs) = &*work else {
                        return Err("not an OIP workload".to_owned());
                    };
                    let mut rq = reqs[next.fetch_add(1, Ordering::Relaxed) % reqs.len()].clone();
                    rq.model_name = model;
                    rq.model_version = version;
                    let r = c
                        .model_infer(rq)
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                    if r.get_ref().outputs.is_empty() {
                        return Err("an answer without outputs".to_owned());
                    }
                    Ok(())
                })
            })
        }
        Endpoint::Embedding => {
            let client = EmbeddingServiceClient::new(ch);
            Arc::new(move || {
                let (mut c, work, next) = (client.clone(), Arc::clone(&work), Arc::clone(&next));
                let model = model.clone();
                Box::pin(async move {
                    let Work::Embed(texts, batch) = &*work else {
                        return Err("not an embedding workload".to_owned());
                    };
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let inputs = (0..*batch)
                        .map(|j| texts[(k * batch + j) % texts.len()].clone())
                        .collect();
                    let r = c
                        .embed(EmbedRequest {
                            inputs,
                            model,
                            ..Default::default()
                        })
                        .await
                        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?;
                    if r.get_ref().embeddings.len() != *batch {
                        return Err("an answer without every vector".to_owned());
                    }
                    Ok(())
                })
            })
        }
    })
}
