//! An embedding version served for validation: pulled from the registry
//! (verified) into a folder of its own and served by its own
//! `mlmesh-embedding` process on a loopback port; each example is one text
//! whose vector is the output `embedding`; its robustness probes.

use std::{path::Path, process::Child, time::Duration};

use anyhow::{Context as _, bail};
use mlmesh_proto::{
    embedding::v1::{self as epb, embedding_service_client::EmbeddingServiceClient},
    registry::v1 as pb,
};
use mlmesh_runtime::client::{H2Channel, H2Settings};
use mlmesh_validate::{
    checks::{Answers, CheckResult},
    suite::{Signature, TensorSpec},
};
use tonic::Code;

use crate::served::{resolve, rss_mb, spawn_service};

type Client = EmbeddingServiceClient<H2Channel>;

/// How long one probe may take before it counts as a hang.
const PROBE_DEADLINE: Duration = Duration::from_secs(10);
/// Texts of the batch compared with single calls.
const BATCH_TEXTS: usize = 8;

/// One embedding version, served by its own process.
pub struct EmbedServed {
    pub version: pb::Version,
    child: Child,
    pub client: Client,
    /// The name the process serves it under (the registry model's).
    model: String,
    pub load_time: Duration,
    /// The suite's texts, in order.
    pub texts: Vec<String>,
}

impl Drop for EmbedServed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl EmbedServed {
    pub async fn start(
        reg: &mut mlmesh_registry_client::Client,
        model: &str,
        which: &str,
        dir: &Path,
        bin: &Path,
        env: &[(String, String)],
        texts: Vec<String>,
    ) -> anyhow::Result<Self> {
        let version = resolve(reg, model, which).await?;
        mlmesh_registry_client::pull(
            reg,
            &version,
            dir,
            |p| Ok(std::path::PathBuf::from(p)),
            |_| {},
        )
        .await
        .with_context(|| format!("pulling {model} v{}", version.version))?;
        let spawned = std::time::Instant::now();
        let settings = [(
            "MLMESH_EMBEDDING__MODELS",
            format!("{model}={}", dir.display()),
        )];
        let (child, addr) = spawn_service(bin, &[], &settings, env)?;
        let uri = format!("http://{addr}").parse()?;
        let channel =
            H2Channel::lazy(uri, H2Settings::default(), None).map_err(anyhow::Error::msg)?;
        let mut served = Self {
            version,
            child,
            client: EmbeddingServiceClient::new(channel).max_decoding_message_size(256 << 20),
            model: model.to_owned(),
            load_time: Duration::ZERO,
            texts,
        };
        // The process listens once its models are loaded.
        for _ in 0..600 {
            if served.info().await.is_ok() {
                served.load_time = spawned.elapsed();
                return Ok(served);
            }
            if let Ok(Some(status)) = served.child.try_wait() {
                bail!(
                    "the embedding service serving {model} v{} exited ({status})",
                    served.version.version
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{model} v{} was not ready within 60 s",
            served.version.version
        )
    }

    async fn info(&self) -> Result<epb::InfoResponse, tonic::Status> {
        Ok(self
            .client
            .clone()
            .info(epb::InfoRequest {})
            .await?
            .into_inner())
    }

    pub fn rss_mb(&self) -> Option<f64> {
        rss_mb(&self.child)
    }

    /// A text in, a vector of the model's dimension out.
    pub async fn signature(&self) -> anyhow::Result<Signature> {
        let info = self.info().await.context("Info")?;
        let m = info
            .models
            .iter()
            .find(|m| m.name == self.model)
            .with_context(|| format!("the embedding service does not list {:?}", self.model))?;
        Ok(Signature {
            inputs: vec![TensorSpec {
                name: "text".into(),
                datatype: "BYTES".into(),
                shape: vec![-1],
            }],
            outputs: vec![TensorSpec {
                name: "embedding".into(),
                datatype: "FP32".into(),
                shape: vec![-1, i64::from(m.dimension)],
            }],
        })
    }

    fn request(&self, texts: Vec<String>) -> epb::EmbedRequest {
        epb::EmbedRequest {
            inputs: texts,
            model: self.model.clone(),
            ..Default::default()
        }
    }

    /// One text's vector.
    pub async fn embed_one(&self, text: &str) -> Result<Vec<f64>, tonic::Status> {
        let r = self
            .client
            .clone()
            .embed(self.request(vec![text.to_owned()]))
            .await?
            .into_inner();
        Ok(r.embeddings
            .first()
            .map(|e| e.values.iter().map(|v| f64::from(*v)).collect())
            .unwrap_or_default())
    }

    /// Every corpus document's vector, in order, in batches of 32.
    pub async fn corpus(&self, texts: &[String]) -> anyhow::Result<Vec<Vec<f64>>> {
        let mut out = Vec::with_capacity(texts.len());
        for (i, chunk) in texts.chunks(32).enumerate() {
            let r = self
                .client
                .clone()
                .embed(self.request(chunk.to_vec()))
                .await
                .with_context(|| format!("corpus documents from {}", i * 32))?
                .into_inner();
            if r.embeddings.len() != chunk.len() {
                bail!(
                    "{} vectors for {} corpus documents",
                    r.embeddings.len(),
                    chunk.len()
                );
            }
            out.extend(
                r.embeddings
                    .iter()
                    .map(|e| e.values.iter().map(|v| f64::from(*v)).collect()),
            );
        }
        Ok(out)
    }

    /// Every text's vector, one call each.
    pub async fn answers(&self) -> anyhow::Result<Answers> {
        let mut out = Vec::with_capacity(self.texts.len());
        for (i, t) in self.texts.iter().enumerate() {
            let v = self.embed_one(t).await.with_context(|| {
                format!("example {i} on {} v{}", self.model, self.version.version)
            })?;
            out.push([("embedding".to_owned(), v)].into_iter().collect());
        }
        Ok(out)
    }

    /// Probes an embedding service must answer with a clear status (and
    /// stay live): an empty text, a text of 100,000 characters, no text at
    /// all, one text over the batch limit, an unknown model; and the first
    /// texts in one batch must get the vectors they got alone.
    pub async fn probe(&self, singles: &Answers) -> CheckResult {
        let limit = self
            .info()
            .await
            .map_or(64, |i| i.max_client_batch as usize);
        let long = "validation ".repeat(10_000);
        let mut unknown = self.request(vec!["x".into()]);
        unknown.model = "no-such-model".into();
        let probes: Vec<(String, epb::EmbedRequest)> = vec![
            ("empty text".into(), self.request(vec![String::new()])),
            ("100,000 characters".into(), self.request(vec![long])),
            ("no text".into(), self.request(Vec::new())),
            (
                format!("one over the batch limit ({})", limit + 1),
                self.request(vec!["x".into(); limit + 1]),
            ),
            ("unknown model".into(), unknown),
        ];
        let mut outcomes = Vec::new();
        let mut passed = true;
        for (name, rq) in probes {
            let mut client = self.client.clone();
            let mut r = tonic::Request::new(rq);
            r.set_timeout(PROBE_DEADLINE);
            let code = match tokio::time::timeout(
                PROBE_DEADLINE + Duration::from_secs(1),
                client.embed(r),
            )
            .await
            {
                Ok(Ok(_)) => Code::Ok,
                Ok(Err(s)) => s.code(),
                Err(_) => Code::DeadlineExceeded,
            };
            let clear = matches!(
                code,
                Code::Ok
                    | Code::InvalidArgument
                    | Code::OutOfRange
                    | Code::ResourceExhausted
                    | Code::NotFound
            );
            passed &= clear;
            outcomes.push(format!("{name}: {code:?}"));
        }
        let live = self.info().await.is_ok();
        passed &= live;
        let n = BATCH_TEXTS.min(self.texts.len());
        let batch = self
            .client
            .clone()
            .embed(self.request(self.texts[..n].to_vec()))
            .await;
        let same = match batch {
            Ok(r) => {
                let r = r.into_inner();
                let worst = r
                    .embeddings
                    .iter()
                    .zip(singles)
                    .map(|(e, s)| {
                        let a: Vec<f64> = e.values.iter().map(|v| f64::from(*v)).collect();
                        cosine(&a, s.get("embedding").map_or(&[][..], Vec::as_slice))
                    })
                    .fold(1.0f64, f64::min);
                if r.embeddings.len() == n && worst >= 0.9999 {
                    format!("a batch of {n} equals {n} single calls (worst cosine {worst:.6})")
                } else {
                    passed = false;
                    format!("a batch of {n} differs from single calls (worst cosine {worst:.6})")
                }
            }
            Err(s) => {
                passed = false;
                format!("a batch of {n} failed: {:?} {}", s.code(), s.message())
            }
        };
        CheckResult::new(
            "robustness",
            passed,
            format!(
                "{} probes ({}); {}; {}",
                outcomes.len(),
                outcomes.join(", "),
                if live {
                    "the service is live afterwards"
                } else {
                    "the service no longer answers"
                },
                same
            ),
        )
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() || a.is_empty() {
        return 0.0;
    }
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

impl crate::budgets::Costed for EmbedServed {
    fn load_time(&self) -> Duration {
        self.load_time
    }

    fn rss_mb(&self) -> Option<f64> {
        EmbedServed::rss_mb(self)
    }

    fn call(&self, i: usize) -> futures::future::BoxFuture<'_, Result<(), tonic::Status>> {
        let text = self.texts[i % self.texts.len().max(1)].clone();
        Box::pin(async move { self.embed_one(&text).await.map(|_| ()) })
    }
}
