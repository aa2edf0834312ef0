//! `mlmesh-bench retrieval`: how well dense, sparse (BM25) and hybrid search
//! find what a person means, on a real corpus with answers nobody here
//! wrote, and what each costs.
//!
//! Corpus: the passages of the Python 3.11 and PostgreSQL 15 manuals
//! (`benches/peers/fetch-doc-corpus.sh`), the same 100,000 as
//! `mlmesh-bench vector-peers` (same seeded shuffle, so the cached MiniLM
//! embeddings are reused); headings themselves are left out of the
//! collection.
//!
//! Queries: section titles of the manuals ("Reading and Writing Files",
//! "Dealing with Bugs", "Using 2to3"), taken from the corpus with a fixed
//! seed among titles that are unique across both manuals and at least two
//! words long, leading section numbers removed. The relevant passages of a
//! query are the passages of its section: the manuals' authors decided
//! what belongs under that title, not us.
//!
//! Measured per mode (limit 10): nDCG@10 (binary gains), recall@10 (share of
//! the section's passages in the top 10, at most 10 of them counted) and
//! MRR@10; then latency at 1 and 8 clients (closed loop, the query's vector
//! and text already computed, modes alternating per round, medians).

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use clap::Parser;
use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use mlmesh_tests::{Service, TempDir, repo_root};
use tonic::transport::Channel;

use crate::{
    Stats, closed_loop, median,
    vector::Rng,
    vector_peers::{client::mlmesh_ids, corpus},
};

#[derive(Parser)]
pub struct RetrievalArgs {
    /// Passages, one JSON object per line (benches/peers/fetch-doc-corpus.sh).
    #[arg(long, default_value = ".cache/mlmesh/corpus/docs.jsonl")]
    corpus: PathBuf,
    /// Passages taken from the shuffled corpus (the vector-peers data set).
    #[arg(long, default_value_t = 100_000)]
    points: usize,
    /// The shuffled corpus's length the embeddings were cached for
    /// (vector-peers: points + its 1,000 queries).
    #[arg(long, default_value_t = 101_000)]
    shuffled: usize,
    /// Section titles asked.
    #[arg(long, default_value_t = 500)]
    queries: usize,
    /// Concurrent clients for the latency rounds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8")]
    clients: Vec<usize>,
    /// Seconds per mode, client count and round.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Candidates per retriever in hybrid searches (0: the service's
    /// default).
    #[arg(long, default_value_t = 0)]
    candidates: u32,
}

const K: usize = 10;
const COLLECTION: &str = "retrieval";
const MODES: [(pb::SearchMode, &str); 3] = [
    (pb::SearchMode::Dense, "dense"),
    (pb::SearchMode::Sparse, "sparse (BM25)"),
    (pb::SearchMode::Hybrid, "hybrid (RRF)"),
];

/// A query: a section title and the ids of that section's passages.
struct Query {
    title: String,
    relevant: HashSet<u64>,
}

/// "3.1. Using Python as a Calculator" → "Using Python as a Calculator";
/// appendix numbers too ("J.2.5. Detection by configure").
fn title(heading: &str) -> String {
    let t = heading.trim();
    match t.split_once(' ') {
        Some((number, rest))
            if number.ends_with('.')
                && number.chars().any(|c| c.is_ascii_digit())
                && number
                    .chars()
                    .all(|c| c.is_ascii_digit() || c.is_ascii_uppercase() || c == '.') =>
        {
            rest.trim().to_owned()
        }
        _ => t.to_owned(),
    }
}

fn is_heading(kind: &str) -> bool {
    matches!(kind, "h1" | "h2" | "h3" | "h4")
}

fn queries(passages: &[corpus::Passage], all: &[corpus::Passage], n: usize) -> Vec<Query> {
    // Titles used by more than one section anywhere in the corpus are
    // ambiguous ("Examples", "Notes"): left out.
    let mut sections_per_title: HashMap<String, HashSet<(String, String, String)>> = HashMap::new();
    for p in all {
        sections_per_title
            .entry(title(&p.heading).to_lowercase())
            .or_default()
            .insert((p.source.clone(), p.page.clone(), p.section.clone()));
    }
    let mut by_section: HashMap<(String, String, String), (String, HashSet<u64>)> = HashMap::new();
    for (i, p) in passages.iter().enumerate() {
        if is_heading(&p.kind) || p.section.is_empty() {
            continue;
        }
        by_section
            .entry((p.source.clone(), p.page.clone(), p.section.clone()))
            .or_insert_with(|| (title(&p.heading), HashSet::new()))
            .1
            .insert(i as u64);
    }
    let mut candidates: Vec<Query> = by_section
        .into_values()
        .filter(|(t, _)| {
            t.split_whitespace().count() >= 2
                && sections_per_title
                    .get(&t.to_lowercase())
                    .is_some_and(|s| s.len() == 1)
        })
        .map(|(title, relevant)| Query { title, relevant })
        .collect();
    // A fixed order before the seeded draw: the same queries every run.
    candidates.sort_by(|a, b| a.title.cmp(&b.title));
    let mut rng = Rng(0x5EC7_1075);
    for i in (1..candidates.len()).rev() {
        let j = (rng.next_f64() * (i + 1) as f64) as usize % (i + 1);
        candidates.swap(i, j);
    }
    candidates.truncate(n);
    candidates
}

/// nDCG@K with binary gains, recall@K (of at most K relevant) and the
/// reciprocal rank of the first relevant hit.
fn quality(found: &[u64], relevant: &HashSet<u64>) -> (f64, f64, f64) {
    let dcg: f64 = found
        .iter()
        .take(K)
        .enumerate()
        .filter(|(_, id)| relevant.contains(id))
        .map(|(i, _)| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(K))
        .map(|i| 1.0 / ((i + 2) as f64).log2())
        .sum();
    let hits = found
        .iter()
        .take(K)
        .filter(|id| relevant.contains(id))
        .count();
    let rr = found
        .iter()
        .take(K)
        .position(|id| relevant.contains(id))
        .map_or(0.0, |p| 1.0 / (p + 1) as f64);
    (
        if ideal > 0.0 { dcg / ideal } else { 0.0 },
        hits as f64 / relevant.len().min(K) as f64,
        rr,
    )
}

fn request(mode: pb::SearchMode, vector: &[f32], text: &str, candidates: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: COLLECTION.into(),
        vector: if mode == pb::SearchMode::Sparse {
            Vec::new()
        } else {
            vector.to_vec()
        },
        text: if mode == pb::SearchMode::Dense {
            String::new()
        } else {
            text.to_owned()
        },
        mode: mode.into(),
        limit: K as u32,
        candidates: if mode == pb::SearchMode::Hybrid {
            candidates
        } else {
            0
        },
        ..Default::default()
    }
}

pub async fn run(args: RetrievalArgs) -> anyhow::Result<()> {
    ensure!(
        args.points > 0 && args.points <= args.shuffled && args.queries > 0,
        "--points must be between 1 and --shuffled, --queries positive"
    );
    let root = repo_root();
    let path = root.join(&args.corpus);
    let all = corpus::records(&path)?;
    let shuffled = corpus::shuffled(&path, args.shuffled)?;
    let texts: Vec<String> = shuffled.iter().map(|p| p.text.clone()).collect();
    let mut vectors = corpus::embeddings(&texts).await?;
    vectors.truncate(args.points);
    let data = &shuffled[..args.points];
    let qs = queries(data, &all, args.queries);
    ensure!(
        !qs.is_empty(),
        "no usable section titles in {}",
        path.display()
    );
    let titles: Vec<String> = qs.iter().map(|q| q.title.clone()).collect();
    let query_vectors = corpus::embeddings(&titles).await?;

    println!("# mlmesh-bench retrieval");
    let indexed = data.iter().filter(|p| !is_heading(&p.kind)).count();
    println!(
        "{indexed} passages of the Python 3.11 and PostgreSQL 15 manuals ({}; headings are not passages); {} queries: section titles unique across both manuals, relevant = that section's passages (median {} per query); all-MiniLM-L6-v2 embeddings; top {K}; {} cores",
        path.display(),
        qs.len(),
        median(qs.iter().map(|q| q.relevant.len() as f64).collect()),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "examples: {}",
        qs.iter()
            .take(5)
            .map(|q| format!("{:?}", q.title))
            .collect::<Vec<_>>()
            .join(", ")
    );

    let folder = TempDir::new("bench-retrieval");
    let svc = Service::start(
        "mlmesh-vector-search",
        &[
            (
                "MLMESH_VECTOR__DATA_DIR",
                folder.path().display().to_string(),
            ),
            (
                "MLMESH_TELEMETRY__LOG_LEVEL",
                "warn,mlmesh_runtime=info".into(),
            ),
        ],
    );
    let addr = format!("http://{}", svc.addr);
    let mut c = VectorSearchClient::connect(addr.clone()).await?;
    c.create_collection(pb::CreateCollectionRequest {
        name: COLLECTION.into(),
        dimension: vectors[0].len() as u32,
        distance: pb::Distance::Cosine.into(),
        text_index: pb::TextIndex::Bm25.into(),
        ..Default::default()
    })
    .await?;
    let t0 = Instant::now();
    let points: Vec<pb::Point> = data
        .iter()
        .zip(&vectors)
        .enumerate()
        .filter(|(_, (p, _))| !is_heading(&p.kind))
        .map(|(i, (p, v))| pb::Point {
            id: Some(pb::PointId {
                kind: Some(pb::point_id::Kind::Num(i as u64)),
            }),
            vector: v.clone(),
            text: p.text.clone(),
            ..Default::default()
        })
        .collect();
    for chunk in points.chunks(500) {
        c.upsert(pb::UpsertRequest {
            collection: COLLECTION.into(),
            points: chunk.to_vec(),
        })
        .await?;
    }
    let load = t0.elapsed();
    loop {
        let info = c
            .get_collection(pb::GetCollectionRequest {
                name: COLLECTION.into(),
            })
            .await?
            .into_inner();
        if info.status() == pb::IndexStatus::Ready && info.indexed_vectors_count >= indexed as u64 {
            break;
        }
        if t0.elapsed() > Duration::from_secs(1800) {
            bail!("not indexed after 30 minutes: {info:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!(
        "loaded (vectors and BM25 texts) in {:.1} s, indexed in {:.1} s",
        load.as_secs_f64(),
        t0.elapsed().as_secs_f64() - load.as_secs_f64()
    );

    println!();
    println!("## Quality");
    println!();
    println!("| mode | nDCG@{K} | recall@{K} | MRR@{K} | queries with a relevant hit |");
    println!("|---|---:|---:|---:|---:|");
    let mut ndcg = HashMap::new();
    for (mode, label) in MODES {
        let (mut n, mut r, mut rr, mut any) = (0.0, 0.0, 0.0, 0);
        for (q, v) in qs.iter().zip(&query_vectors) {
            let found = mlmesh_ids(
                c.search(request(mode, v, &q.title, args.candidates))
                    .await?
                    .into_inner(),
            );
            let (a, b, m) = quality(&found, &q.relevant);
            n += a;
            r += b;
            rr += m;
            any += usize::from(m > 0.0);
        }
        let count = qs.len() as f64;
        ndcg.insert(label, n / count);
        println!(
            "| {label} | {:.3} | {:.3} | {:.3} | {any} of {} |",
            n / count,
            r / count,
            rr / count,
            qs.len()
        );
    }

    println!();
    println!(
        "## Latency ({} rounds of {} s, modes alternating; the query's vector and text given)",
        args.rounds, args.duration
    );
    println!();
    println!("| clients | mode | QPS | p50 ms | p99 ms |");
    println!("|---:|---|---:|---:|---:|");
    let work: Arc<Vec<(Vec<f32>, String)>> = Arc::new(
        query_vectors
            .iter()
            .cloned()
            .zip(titles.iter().cloned())
            .collect(),
    );
    let mut ratios = Vec::new();
    for &clients in &args.clients {
        let mut rounds: Vec<Vec<Stats>> = MODES.iter().map(|_| Vec::new()).collect();
        for r in 0..args.rounds.max(1) + 1 {
            for k in 0..MODES.len() {
                let i = (k + r) % MODES.len();
                let s = timed(
                    &addr,
                    MODES[i].0,
                    &work,
                    clients,
                    args.duration,
                    args.candidates,
                )
                .await?;
                // The first round warms connections and caches.
                if r > 0 {
                    rounds[i].push(s);
                }
            }
        }
        let p50 = |i: usize| median(rounds[i].iter().map(|s| s.p50.as_secs_f64()).collect());
        for (i, (_, label)) in MODES.iter().enumerate() {
            let med = |f: &dyn Fn(&Stats) -> f64| median(rounds[i].iter().map(f).collect());
            println!(
                "| {clients} | {label} | {:.0} | {:.3} | {:.3} |",
                med(&|s| s.texts_per_sec),
                p50(i) * 1e3,
                med(&|s| s.p99.as_secs_f64() * 1e3),
            );
        }
        ratios.push(format!(
            "- {clients} clients: hybrid p50 ÷ dense p50 = **{:.2}×** (target ≤ 1.5×)",
            p50(2) / p50(0)
        ));
    }
    println!();
    println!("## Targets");
    println!();
    let (d, s, h) = (ndcg["dense"], ndcg["sparse (BM25)"], ndcg["hybrid (RRF)"]);
    println!(
        "- nDCG@{K}: hybrid {h:.3} vs dense {d:.3} and sparse {s:.3}: {}",
        if h >= d && h >= s {
            "**met** (hybrid ≥ both)"
        } else {
            "**not met**"
        }
    );
    for r in ratios {
        println!("{r}");
    }
    Ok(())
}

async fn timed(
    addr: &str,
    mode: pb::SearchMode,
    work: &Arc<Vec<(Vec<f32>, String)>>,
    clients: usize,
    secs: f64,
    candidates: u32,
) -> anyhow::Result<Stats> {
    let mut conns: Vec<VectorSearchClient<Channel>> = Vec::new();
    for _ in 0..clients {
        conns.push(
            VectorSearchClient::connect(addr.to_owned())
                .await
                .context("connecting")?,
        );
    }
    let work = Arc::clone(work);
    closed_loop(conns, secs, move |mut c, i| {
        let work = Arc::clone(&work);
        async move {
            let (v, t) = &work[i % work.len()];
            c.search(request(mode, v, t, candidates)).await?;
            Ok(c)
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_lose_their_numbers_only() {
        assert_eq!(title("3.1. Using Python"), "Using Python");
        assert_eq!(title("12.4. CREATE INDEX"), "CREATE INDEX");
        assert_eq!(
            title("J.2.5. Detection by configure"),
            "Detection by configure"
        );
        assert_eq!(title("A. Appendix"), "A. Appendix");
        assert_eq!(title("Dealing with Bugs"), "Dealing with Bugs");
        assert_eq!(
            title("2to3 — Automated translation"),
            "2to3 — Automated translation"
        );
    }

    #[test]
    fn ndcg_recall_and_mrr_follow_their_definitions() {
        let relevant: HashSet<u64> = [1, 2].into();
        let (n, r, m) = quality(&[1, 2, 3], &relevant);
        assert!((n - 1.0).abs() < 1e-12 && (r - 1.0).abs() < 1e-12 && (m - 1.0).abs() < 1e-12);
        let (n, r, m) = quality(&[3, 1], &relevant);
        let want = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((n - want).abs() < 1e-12, "{n} vs {want}");
        assert!((r - 0.5).abs() < 1e-12 && (m - 0.5).abs() < 1e-12);
        assert_eq!(quality(&[7, 8], &relevant), (0.0, 0.0, 0.0));
    }
}
