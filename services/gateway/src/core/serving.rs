//! What each inference replica serves, for the console's Serving page:
//! its models and versions with their state (`RepositoryIndex`), memory
//! used against `inference.memory_budget_mb`, evictions, queue depth, and
//! the batch-size and queue-time distributions — read from the replica's
//! own metrics over gRPC (`mlmesh.mesh.v1.Introspection/Samples`), one
//! bounded call per replica, all replicas at once. And model loads and
//! unloads from HTTP (Triton's repository extension paths), sent to every
//! replica as the gRPC ones are.

use std::{collections::BTreeMap, time::Duration};

use bytes::Bytes;
use futures::future::join_all;
use mlmesh_proto::{
    inference::{self as pb, grpc_inference_service_client::GrpcInferenceServiceClient},
    mesh::v1::{SamplesRequest, StatusRequest, introspection_client::IntrospectionClient},
};
use prost::Message as _;
use serde_json::{Value as Json, json};
use tonic::Request;

use super::{Core, InferenceMethod, Result};
use crate::{downstream::Deadline, error::GatewayError};

/// How long one replica may take to answer.
const REPLICA_DEADLINE: Duration = Duration::from_secs(2);

/// The families read from each replica.
const FAMILIES: &[&str] = &[
    "mlmesh_inference_model_loaded_bytes",
    "mlmesh_inference_memory_budget_bytes",
    "mlmesh_inference_model_evictions_total",
    "mlmesh_inference_queue_depth",
    "mlmesh_inference_requests_total",
    "mlmesh_inference_batch_size",
    "mlmesh_inference_queue_duration_seconds",
    "mlmesh_inference_registry_version",
];

/// A histogram's per-bucket counts (not cumulative) by upper bound.
#[derive(Default)]
struct Histogram {
    cumulative: BTreeMap<String, (f64, f64)>,
    count: f64,
}

impl Histogram {
    fn json(&self, scale: f64) -> Json {
        let mut bounds: Vec<(f64, f64)> = self.cumulative.values().copied().collect();
        bounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut prev = 0.0;
        let mut buckets = Vec::new();
        for (le, c) in &bounds {
            let n = (c - prev).max(0.0);
            prev = *c;
            if n > 0.0 {
                buckets.push(json!({"le": if le.is_finite() { json!(le * scale) } else { json!("+Inf") }, "count": n}));
            }
        }
        let quantile = |q: f64| -> Option<f64> {
            let want = q * self.count;
            let mut lower = 0.0;
            let mut below = 0.0;
            for (le, c) in &bounds {
                if *c >= want && self.count > 0.0 {
                    if !le.is_finite() {
                        return Some(lower * scale);
                    }
                    let inside = (c - below).max(1.0);
                    return Some((lower + (le - lower) * ((want - below) / inside)) * scale);
                }
                lower = *le;
                below = *c;
            }
            None
        };
        json!({"count": self.count, "buckets": buckets, "p50": quantile(0.5), "p99": quantile(0.99)})
    }
}

fn label<'a>(labels: &'a std::collections::HashMap<String, String>, k: &str) -> &'a str {
    labels.get(k).map_or("", String::as_str)
}

impl Core {
    /// Every inference replica's models, memory, queues and batches.
    pub async fn serving(&self) -> Result<Json> {
        let pool = self.inference_pool()?;
        let replicas = pool.channels().into_iter().map(|(address, ch)| async move {
            let mut index = Request::new(pb::RepositoryIndexRequest {
                repository_name: String::new(),
                ready: false,
            });
            index.set_timeout(REPLICA_DEADLINE);
            let mut samples = Request::new(SamplesRequest {
                families: FAMILIES.iter().map(|f| (*f).to_owned()).collect(),
            });
            samples.set_timeout(REPLICA_DEADLINE);
            let mut status = Request::new(StatusRequest {});
            status.set_timeout(REPLICA_DEADLINE);
            let mut oip = GrpcInferenceServiceClient::new(ch.clone());
            let (mut intro, mut intro2) = (
                IntrospectionClient::new(ch.clone()),
                IntrospectionClient::new(ch),
            );
            let (index, samples, status) = tokio::join!(
                tokio::time::timeout(REPLICA_DEADLINE, oip.repository_index(index)),
                tokio::time::timeout(REPLICA_DEADLINE, intro.samples(samples)),
                tokio::time::timeout(REPLICA_DEADLINE, intro2.status(status)),
            );
            let fail = |what: &str, e: String| json!({"address": address, "error": format!("{what}: {e}")});
            let index = match index {
                Ok(Ok(r)) => r.into_inner(),
                Ok(Err(s)) => return fail("repository index", s.message().to_owned()),
                Err(_) => return fail("repository index", "no answer within 2 s".into()),
            };
            let samples = match samples {
                Ok(Ok(r)) => r.into_inner().samples,
                Ok(Err(s)) => return fail("metrics", s.message().to_owned()),
                Err(_) => return fail("metrics", "no answer within 2 s".into()),
            };
            let resident = match status {
                Ok(Ok(r)) => r.into_inner().resident_bytes,
                _ => 0,
            };
            replica_json(&address, &index, &samples, resident)
        });
        Ok(json!({ "replicas": join_all(replicas).await }))
    }

    /// Loads (`load`) or unloads `model` on every inference replica, as the
    /// gRPC RepositoryModelLoad / RepositoryModelUnload do (audited there).
    pub async fn repository_action(
        &self,
        model: &str,
        load: bool,
        deadline: Deadline,
    ) -> Result<()> {
        if model.is_empty() || model.len() > 256 {
            return Err(GatewayError::invalid(
                "model",
                "a model name of 1 to 256 bytes",
            ));
        }
        let (name, body) = if load {
            (
                "RepositoryModelLoad",
                pb::RepositoryModelLoadRequest {
                    model_name: model.to_owned(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
        } else {
            (
                "RepositoryModelUnload",
                pb::RepositoryModelUnloadRequest {
                    model_name: model.to_owned(),
                    ..Default::default()
                }
                .encode_to_vec(),
            )
        };
        let m = InferenceMethod::from_path(&format!("/inference.GRPCInferenceService/{name}"))
            .ok_or_else(|| GatewayError::Internal(format!("no method {name}")))?;
        self.forward_inference(m, Bytes::from(body), deadline)
            .await
            .map(|_| ())
    }
}

fn replica_json(
    address: &str,
    index: &pb::RepositoryIndexResponse,
    samples: &[mlmesh_proto::mesh::v1::Sample],
    resident: u64,
) -> Json {
    let mut loaded: BTreeMap<String, f64> = BTreeMap::new();
    let mut evictions: BTreeMap<String, f64> = BTreeMap::new();
    let mut registry_version: BTreeMap<String, f64> = BTreeMap::new();
    let mut depth: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut requests: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut batch: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    let mut queue: BTreeMap<(String, String), Histogram> = BTreeMap::new();
    let mut budget = 0.0;
    for s in samples {
        let model = label(&s.labels, "model").to_owned();
        let mv = (model.clone(), label(&s.labels, "version").to_owned());
        let le = || {
            let l = label(&s.labels, "le");
            (
                l.to_owned(),
                if l == "+Inf" {
                    f64::INFINITY
                } else {
                    l.parse().unwrap_or(f64::NAN)
                },
            )
        };
        match s.name.as_str() {
            "mlmesh_inference_model_loaded_bytes" => {
                loaded.insert(model, s.value);
            }
            "mlmesh_inference_memory_budget_bytes" => budget = s.value,
            "mlmesh_inference_model_evictions_total" => {
                *evictions.entry(model).or_default() += s.value;
            }
            "mlmesh_inference_registry_version" => {
                registry_version.insert(model, s.value);
            }
            "mlmesh_inference_queue_depth" => {
                depth.insert(mv, s.value);
            }
            "mlmesh_inference_requests_total" => {
                *requests.entry(mv).or_default() += s.value;
            }
            "mlmesh_inference_batch_size_bucket"
            | "mlmesh_inference_queue_duration_seconds_bucket" => {
                let (key, bound) = le();
                if bound.is_nan() {
                    continue;
                }
                let h = if s.name.starts_with("mlmesh_inference_batch") {
                    batch.entry(mv).or_default()
                } else {
                    queue.entry(mv).or_default()
                };
                h.cumulative.insert(key, (bound, s.value));
                if bound.is_infinite() {
                    h.count = s.value;
                }
            }
            _ => {}
        }
    }
    let models: Vec<Json> = index
        .models
        .iter()
        .map(|m| {
            let mv = (m.name.clone(), m.version.clone());
            json!({
                "name": m.name,
                "version": m.version,
                "state": m.state,
                "reason": m.reason,
                "loaded_bytes": loaded.get(&m.name),
                "registry_version": registry_version.get(&m.name),
                "evictions": evictions.get(&m.name).copied().unwrap_or(0.0),
                "queue_depth": depth.get(&mv).copied().unwrap_or(0.0),
                "requests": requests.get(&mv).copied().unwrap_or(0.0),
                "batch_size": batch.get(&mv).map(|h| h.json(1.0)),
                "queue_ms": queue.get(&mv).map(|h| h.json(1000.0)),
            })
        })
        .collect();
    json!({
        "address": address,
        "resident_bytes": resident,
        "loaded_bytes": loaded.values().sum::<f64>(),
        "budget_bytes": budget,
        "evictions": evictions.values().sum::<f64>(),
        "models": models,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_become_buckets_and_quantiles() {
        let mut h = Histogram::default();
        for (le, c) in [("1", 0.0), ("2", 50.0), ("4", 100.0), ("+Inf", 100.0)] {
            let b = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("number")
            };
            h.cumulative.insert(le.into(), (b, c));
        }
        h.count = 100.0;
        let j = h.json(1.0);
        assert_eq!(j["buckets"].as_array().map(Vec::len), Some(2));
        assert_eq!(j["p50"], 2.0);
        let p99 = j["p99"].as_f64().expect("p99");
        assert!((3.9..=4.0).contains(&p99), "{p99}");
    }
}
