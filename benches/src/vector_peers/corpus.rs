//! The vectors every engine gets: MiniLM embeddings of real passages (the
//! Python and PostgreSQL manuals, `benches/peers/fetch-doc-corpus.sh`),
//! made once by the release embedding service and cached by content, or the
//! clustered synthetic set of `mlmesh-bench vector`.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail, ensure};
use futures::{StreamExt as _, TryStreamExt as _};
use mlmesh_proto::embedding::v1::{EmbedRequest, embedding_service_client::EmbeddingServiceClient};
use mlmesh_tests::{Service, repo_root};
use sha2::{Digest as _, Sha256};

use crate::vector::{Rng, dataset, normalize};

/// Data vectors then query vectors, `dim` floats each, unit length.
pub struct Vectors {
    pub dim: usize,
    pub data: Vec<Vec<f32>>,
    pub queries: Vec<Vec<f32>>,
    pub label: String,
}

impl Vectors {
    /// Writes data and queries as little-endian float32 files (the faiss
    /// peer reads them).
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        let (d, q) = (dir.join("data.f32"), dir.join("queries.f32"));
        std::fs::write(&d, as_bytes(&self.data))?;
        std::fs::write(&q, as_bytes(&self.queries))?;
        Ok((d, q))
    }
}

fn as_bytes(v: &[Vec<f32>]) -> Vec<u8> {
    v.iter()
        .flat_map(|x| x.iter().flat_map(|f| f.to_le_bytes()))
        .collect()
}

/// The clustered synthetic set: `clusters` random unit centres, each point
/// a centre plus noise of norm ≈ 0.6.
pub fn clustered(points: usize, queries: usize, dim: usize, clusters: usize) -> Vectors {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let centres: Vec<Vec<f32>> = (0..clusters)
        .map(|_| normalize((0..dim).map(|_| rng.normal()).collect()))
        .collect();
    Vectors {
        dim,
        data: dataset(&mut rng, &centres, points, dim),
        queries: dataset(&mut rng, &centres, queries, dim),
        label: format!("clustered synthetic ({clusters} centres), {dim} dimensions"),
    }
}

/// One passage of the corpus and where it sits in its manual.
#[derive(Clone, Debug)]
pub struct Passage {
    pub text: String,
    /// `python` or `postgresql`.
    pub source: String,
    pub page: String,
    /// The id of the enclosing section (a URL fragment).
    pub section: String,
    /// That section's title.
    pub heading: String,
    /// The HTML block it came from: `p`, `li`, `pre`, `h2`, …
    pub kind: String,
}

/// The corpus's passages in the fixed shuffled order every bench uses
/// (Fisher–Yates with a fixed seed: the same split on every machine),
/// the first `n` of them.
pub fn shuffled(corpus: &Path, n: usize) -> anyhow::Result<Vec<Passage>> {
    let mut all = records(corpus)?;
    ensure!(
        all.len() >= n,
        "{} has {} passages; {n} asked",
        corpus.display(),
        all.len()
    );
    let mut rng = Rng(0xC0_4B05_D0C5);
    for i in (1..all.len()).rev() {
        let j = (rng.next_f64() * (i + 1) as f64) as usize % (i + 1);
        all.swap(i, j);
    }
    all.truncate(n);
    Ok(all)
}

/// `points + queries` passages of `corpus`, shuffled (see [`shuffled`]):
/// the first `points` are the data, the rest the held-out queries.
/// Embedded by the release embedding service (default model, normalised),
/// cached under `.cache/mlmesh/bench/`.
pub async fn embedded(corpus: &Path, points: usize, queries: usize) -> anyhow::Result<Vectors> {
    let texts: Vec<String> = shuffled(corpus, points + queries)?
        .into_iter()
        .map(|p| p.text)
        .collect();
    let mut all = embeddings(&texts).await?;
    let dim = all.first().map_or(0, Vec::len);
    let q = all.split_off(points);
    Ok(Vectors {
        dim,
        data: all,
        queries: q,
        label: format!(
            "all-MiniLM-L6-v2 embeddings of passages from the Python 3.11 and PostgreSQL 15 manuals ({}), {dim} dimensions",
            corpus.display()
        ),
    })
}

/// One MiniLM vector per text, in order: from the cache (keyed by the
/// texts' content) or made by the release embedding service and cached.
pub async fn embeddings(texts: &[String]) -> anyhow::Result<Vec<Vec<f32>>> {
    let mut h = Sha256::new();
    for t in texts {
        h.update(t.as_bytes());
        h.update([0]);
    }
    let key = hex::encode(&h.finalize()[..8]);
    let cache = repo_root().join(".cache/mlmesh/bench");
    let file = cache.join(format!("minilm-{key}.f32"));
    let flat = match std::fs::read(&file) {
        Ok(bytes) => {
            println!("embeddings: cached in {}", file.display());
            bytes
        }
        Err(_) => {
            let bytes = embed_all(texts).await?;
            std::fs::create_dir_all(&cache)?;
            let part = file.with_extension("part");
            std::fs::write(&part, &bytes)?;
            std::fs::rename(&part, &file)?;
            bytes
        }
    };
    let floats: Vec<f32> = flat
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    ensure!(
        !floats.is_empty() && floats.len().is_multiple_of(texts.len()),
        "{} does not hold {} vectors",
        file.display(),
        texts.len()
    );
    let dim = floats.len() / texts.len();
    Ok(floats.chunks_exact(dim).map(<[f32]>::to_vec).collect())
}

/// The passages of a corpus file (one JSON object per line), in file order.
pub fn records(corpus: &Path) -> anyhow::Result<Vec<Passage>> {
    let text = std::fs::read_to_string(corpus).with_context(|| {
        format!(
            "reading {} (make it with benches/peers/fetch-doc-corpus.sh)",
            corpus.display()
        )
    })?;
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)?;
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            let text = v["text"]
                .as_str()
                .map(str::to_owned)
                .context("a corpus line without \"text\"")?;
            Ok(Passage {
                text,
                source: field("source"),
                page: field("page"),
                section: field("section"),
                heading: field("heading"),
                kind: field("kind"),
            })
        })
        .collect()
}

/// The passages' texts, in file order.
pub fn passages(corpus: &Path) -> anyhow::Result<Vec<String>> {
    Ok(records(corpus)?.into_iter().map(|p| p.text).collect())
}

/// Every text through the release embedding service, in order: batches of
/// 32 on two connections.
async fn embed_all(texts: &[String]) -> anyhow::Result<Vec<u8>> {
    let svc = Service::start("mlmesh-embedding", &[]);
    let addr = format!("http://{}", svc.addr);
    let t0 = std::time::Instant::now();
    println!(
        "embeddings: {} texts through the embedding service…",
        texts.len()
    );
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(EmbeddingServiceClient::connect(addr.clone()).await?);
    }
    // Batches of similar length (by characters), so little of each model
    // run goes to padding; the vectors are put back in the texts' order.
    let mut order: Vec<usize> = (0..texts.len()).collect();
    order.sort_by_key(|&i| texts[i].len());
    let batches: Vec<Vec<String>> = order
        .chunks(32)
        .map(|c| c.iter().map(|&i| texts[i].clone()).collect())
        .collect();
    let out: Vec<Vec<Vec<f32>>> = futures::stream::iter(batches.into_iter().enumerate())
        .map(|(i, inputs)| {
            let mut c = clients[i % 2].clone();
            async move {
                let n = inputs.len();
                let r = c
                    .embed(EmbedRequest {
                        inputs,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                if r.embeddings.len() != n {
                    bail!("asked for {n} embeddings, got {}", r.embeddings.len());
                }
                Ok(r.embeddings.into_iter().map(|e| e.values).collect())
            }
        })
        .buffered(2)
        .try_collect()
        .await?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "embeddings: {} texts in {secs:.0} s ({:.0} texts/s)",
        texts.len(),
        texts.len() as f64 / secs
    );
    let mut vectors = vec![Vec::new(); texts.len()];
    for (&i, v) in order.iter().zip(out.into_iter().flatten()) {
        vectors[i] = v;
    }
    Ok(as_bytes(&vectors))
}
