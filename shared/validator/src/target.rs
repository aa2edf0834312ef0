//! What a run validates, whichever service serves it: an inference
//! version with the suite's tensor requests, or an embedding version with
//! the suite's texts. The run asks each the same questions.

use std::path::Path;

use mlmesh_proto::{inference as inf, registry::v1 as pb};
use mlmesh_validate::{
    checks::{Answers, CheckResult},
    suite::{Signature, Suite, Task},
};

use crate::{
    Job,
    budgets::Costed,
    embedding::EmbedServed,
    robustness,
    served::{InferCost, Served, requests},
};

pub enum Target {
    Inference {
        served: Served,
        requests: Vec<inf::ModelInferRequest>,
    },
    Embedding(EmbedServed),
}

impl Target {
    /// `which` version of `model`, served as the suite's task says.
    pub async fn start(
        job: &Job,
        reg: &mut mlmesh_registry_client::Client,
        suite: &Suite,
        model: &str,
        which: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        Ok(match suite.task {
            Task::Inference => Target::Inference {
                served: Served::start(reg, model, which, dir, &job.inference_bin, &job.env).await?,
                requests: requests(suite, model)?,
            },
            Task::Embedding => {
                let texts = suite
                    .examples
                    .iter()
                    .map(|e| e.inputs["text"].as_str().unwrap_or_default().to_owned())
                    .collect();
                Target::Embedding(
                    EmbedServed::start(reg, model, which, dir, &job.embedding_bin, &job.env, texts)
                        .await?,
                )
            }
        })
    }

    pub fn version(&self) -> &pb::Version {
        match self {
            Target::Inference { served, .. } => &served.version,
            Target::Embedding(e) => &e.version,
        }
    }

    pub async fn signature(&self) -> anyhow::Result<Signature> {
        match self {
            Target::Inference { served, .. } => served.signature().await,
            Target::Embedding(e) => e.signature().await,
        }
    }

    pub async fn answers(&self) -> anyhow::Result<Answers> {
        match self {
            Target::Inference { served, requests } => served.answers(requests).await,
            Target::Embedding(e) => e.answers().await,
        }
    }

    /// The vectors of a retrieval suite's corpus (none for other suites).
    pub async fn corpus(&self, suite: &Suite) -> anyhow::Result<Vec<Vec<f64>>> {
        match self {
            Target::Embedding(e) if !suite.corpus.is_empty() => {
                let texts: Vec<String> = suite.corpus.iter().map(|d| d.text.clone()).collect();
                e.corpus(&texts).await
            }
            _ => Ok(Vec::new()),
        }
    }

    /// The robustness probes, against what `ours` answered one by one.
    pub async fn robustness(&self, model: &str, ours: &Answers) -> anyhow::Result<CheckResult> {
        Ok(match self {
            Target::Inference { served, requests } => {
                robustness::probe(
                    &mut served.client.clone(),
                    model,
                    served.max_batch().await?,
                    requests,
                    ours,
                )
                .await
            }
            Target::Embedding(e) => e.probe(ours).await,
        })
    }

    /// The budgets' view of it.
    pub fn costed(&self) -> Box<dyn Costed + '_> {
        match self {
            Target::Inference { served, requests } => Box::new(InferCost { served, requests }),
            Target::Embedding(e) => Box::new(e),
        }
    }
}
