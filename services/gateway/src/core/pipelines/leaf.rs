//! One leaf step of a run: the call to its service (embedding, inference,
//! vector search), its outputs as tensors, and which model version
//! answered.

use std::collections::BTreeMap;

use mlmesh_proto::{embedding::v1 as emb, gateway::v1 as gw, inference as pb};

use super::{Values, choose::lookup};
use crate::{
    core::{Core, Result},
    downstream::Deadline,
    error::GatewayError,
    pipeline::spec::StepSpec,
    tensor::{DataType, Tensor},
};

impl Core {
    /// Calls the service of a leaf step (`instead`: a fallback model);
    /// returns its outputs, the model and version that answered, and the
    /// service.
    pub(super) async fn call_leaf(
        &self,
        step: &StepSpec,
        instead: Option<&crate::pipeline::spec::ModelRef>,
        values: &Values,
        deadline: Deadline,
    ) -> Result<(BTreeMap<String, Tensor>, String, String, &'static str)> {
        match step {
            StepSpec::Embed { model, input, .. } => {
                let texts = lookup(values, input)?.strings(input)?;
                let n = texts.len() as i64;
                let resp = self
                    .embed(
                        emb::EmbedRequest {
                            inputs: texts,
                            model: model.clone(),
                            ..Default::default()
                        },
                        deadline,
                    )
                    .await?;
                let dim = resp.embeddings.first().map_or(0, |e| e.values.len()) as i64;
                let t = Tensor::f32(
                    vec![n, dim],
                    resp.embeddings.into_iter().flat_map(|e| e.values),
                );
                Ok((
                    BTreeMap::from([("embedding".to_owned(), t)]),
                    resp.model,
                    String::new(),
                    "embedding",
                ))
            }
            StepSpec::Infer {
                model,
                version,
                inputs,
                outputs,
                ..
            } => {
                let (model, version) = match instead {
                    Some(f) => (&f.model, &f.version),
                    None => (model, version),
                };
                let mut rq = pb::ModelInferRequest {
                    model_name: model.clone(),
                    model_version: version.clone(),
                    ..Default::default()
                };
                for (name, r) in inputs {
                    let t = lookup(values, r)?;
                    rq.inputs.push(pb::model_infer_request::InferInputTensor {
                        name: name.clone(),
                        datatype: t.datatype.name().to_owned(),
                        shape: t.shape.clone(),
                        ..Default::default()
                    });
                    rq.raw_input_contents.push(t.raw.clone());
                }
                rq.outputs = outputs
                    .iter()
                    .map(|o| pb::model_infer_request::InferRequestedOutputTensor {
                        name: o.clone(),
                        ..Default::default()
                    })
                    .collect();
                let resp = self.model_infer(rq, deadline).await?;
                let mut out = BTreeMap::new();
                for (i, o) in resp.outputs.iter().enumerate() {
                    let Some(raw) = resp.raw_output_contents.get(i) else {
                        return Err(GatewayError::Internal(format!(
                            "model {model:?} answered output {:?} without raw contents",
                            o.name
                        )));
                    };
                    let datatype = DataType::parse(&o.datatype).ok_or_else(|| {
                        GatewayError::Internal(format!(
                            "model {model:?} answered output {:?} of unknown datatype {:?}",
                            o.name, o.datatype
                        ))
                    })?;
                    out.insert(
                        o.name.clone(),
                        Tensor {
                            datatype,
                            shape: o.shape.clone(),
                            raw: raw.clone(),
                        },
                    );
                }
                if let Some(missing) = outputs.iter().find(|o| !out.contains_key(*o)) {
                    return Err(GatewayError::Internal(format!(
                        "model {model:?} did not answer output {missing:?}"
                    )));
                }
                Ok((out, resp.model_name, resp.model_version, "inference"))
            }
            StepSpec::Search {
                collection,
                query,
                limit,
                ..
            } => {
                let q = lookup(values, query)?.strings(query)?;
                let [q] = <[String; 1]>::try_from(q).map_err(|q| {
                    GatewayError::invalid(
                        query,
                        format!("a search takes one query, not {}", q.len()),
                    )
                })?;
                let resp = self
                    .search(
                        gw::SearchRequest {
                            collection: collection.clone(),
                            query: q,
                            limit: *limit,
                            ..Default::default()
                        },
                        deadline,
                    )
                    .await?;
                let k = resp.hits.len() as i64;
                let texts: Vec<&str> = resp.hits.iter().map(|h| h.text.as_str()).collect();
                let ids: Vec<&str> = resp.hits.iter().map(|h| h.document_id.as_str()).collect();
                let out = BTreeMap::from([
                    ("text".to_owned(), Tensor::texts(&texts)),
                    ("document_id".to_owned(), Tensor::texts(&ids)),
                    (
                        "score".to_owned(),
                        Tensor::f32(vec![k], resp.hits.iter().map(|h| h.score)),
                    ),
                ]);
                Ok((out, collection.clone(), String::new(), "vector-search"))
            }
            _ => Err(GatewayError::Internal(
                "a combining step inside a combining step (refused at start)".into(),
            )),
        }
    }
}
