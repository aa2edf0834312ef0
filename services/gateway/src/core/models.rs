//! Every model the mesh serves, whichever service serves it: the embedding
//! service's models and the inference service's ready model versions.

use super::{Core, Result};
use crate::downstream::Deadline;

/// Which service serves a model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    Embedding,
    Inference,
}

impl ModelKind {
    pub fn service(self) -> &'static str {
        match self {
            ModelKind::Embedding => "embedding",
            ModelKind::Inference => "inference",
        }
    }
}

/// One model, with the versions ready (inference) or its vector length
/// (embedding).
#[derive(Clone, Debug, PartialEq)]
pub struct ServedModel {
    pub name: String,
    pub kind: ModelKind,
    /// Ready versions, ascending; empty for embedding models.
    pub versions: Vec<String>,
    /// Vector length of an embedding model; 0 otherwise.
    pub dimension: u32,
    /// The model used when an embedding request names none.
    pub is_default: bool,
}

impl Core {
    /// The models of every service, embedding models first, each list by
    /// name. A service that does not answer fails the call (naming it)
    /// rather than being left out of the list silently.
    pub async fn list_models(&self, deadline: Deadline) -> Result<Vec<ServedModel>> {
        let (embedding, inference) = futures::future::join(
            self.embedding_models(deadline),
            self.inference_models(deadline),
        )
        .await;
        let mut out: Vec<ServedModel> = embedding?
            .into_iter()
            .map(|m| ServedModel {
                name: m.name,
                kind: ModelKind::Embedding,
                versions: Vec::new(),
                dimension: m.dimension,
                is_default: m.is_default,
            })
            .collect();
        let mut by_name: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for m in inference? {
            by_name.entry(m.name).or_default().push(m.version);
        }
        for (name, mut versions) in by_name {
            // Numeric versions in numeric order.
            versions.sort_by_key(|v| (v.parse::<u64>().unwrap_or(u64::MAX), v.clone()));
            versions.dedup();
            out.push(ServedModel {
                name,
                kind: ModelKind::Inference,
                versions,
                dimension: 0,
                is_default: false,
            });
        }
        Ok(out)
    }
}
