//! The vector-search domain model, independent of gRPC and of the engine:
//! what the API layer validates into and what every [`crate::backend`] takes.

use std::{collections::BTreeMap, fmt};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A JSON object attached to a point.
pub type Payload = serde_json::Map<String, serde_json::Value>;

/// A point id: an unsigned integer or a UUID.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum PointId {
    Num(u64),
    Uuid(Uuid),
}

impl fmt::Display for PointId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PointId::Num(n) => write!(f, "{n}"),
            PointId::Uuid(u) => write!(f, "{u}"),
        }
    }
}

/// How closeness is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Distance {
    Cosine,
    Dot,
    Euclid,
}

impl Distance {
    /// True when a larger score means closer.
    pub fn higher_is_better(self) -> bool {
        !matches!(self, Distance::Euclid)
    }
}

/// HNSW graph parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hnsw {
    pub m: usize,
    pub ef_construct: usize,
}

/// How a collection's vectors are kept for search.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// float32 vectors only.
    #[default]
    None,
    /// Each component also kept as one byte (scaled to the 0.99 quantile);
    /// graph searches compare bytes, then rescore with the float32 originals.
    Int8,
}

/// The text retriever a collection keeps beside its dense vector: one
/// sparse vector per point, searched through an inverted index.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum TextIndex {
    /// Dense vectors only.
    #[default]
    None,
    /// BM25: texts become term-frequency sparse vectors (see [`crate::text`]);
    /// the engine weights query terms by their inverse document frequency
    /// over the collection at search time.
    Bm25,
    /// Sparse vectors computed by the client, scored by dot product.
    Sparse,
}

impl TextIndex {
    pub fn exists(self) -> bool {
        !matches!(self, TextIndex::None)
    }

    /// The proto enum value's name, for messages.
    pub fn proto_name(self) -> &'static str {
        match self {
            TextIndex::None => "TEXT_INDEX_NONE",
            TextIndex::Bm25 => "TEXT_INDEX_BM25",
            TextIndex::Sparse => "TEXT_INDEX_SPARSE",
        }
    }
}

/// What a collection is created with; fixed for its lifetime.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectionConfig {
    pub dimension: usize,
    pub distance: Distance,
    pub hnsw: Hnsw,
    /// Absent in collections made before quantization existed: none.
    #[serde(default)]
    pub quantization: Quantization,
    /// Absent in collections made before text indexes existed: none.
    #[serde(default)]
    pub text_index: TextIndex,
}

/// A sparse vector: `values[i]` is the weight of dimension `indices[i]`.
/// Indices are unique (checked by the API layer).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseVector {
    pub indices: Vec<u32>,
    pub values: Vec<f32>,
}

/// Free-form labels stored with a collection (sorted, so listings are stable).
pub type Metadata = BTreeMap<String, String>;

/// Whether the collection's index is up to date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IndexStatus {
    Ready,
    Pending,
    Optimizing,
}

#[derive(Clone, Debug, PartialEq)]
pub struct CollectionInfo {
    pub name: String,
    pub config: CollectionConfig,
    pub points_count: u64,
    pub indexed_vectors_count: u64,
    pub segments_count: u32,
    pub status: IndexStatus,
    pub metadata: Metadata,
}

/// A point to store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub id: PointId,
    pub vector: Vec<f32>,
    pub payload: Payload,
    /// Collections with a text index: the point's sparse vector (from its
    /// text, or given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sparse: Option<SparseVector>,
}

/// A stored point as read back; payload and vectors only when asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub id: PointId,
    pub payload: Option<Payload>,
    pub vector: Option<Vec<f32>>,
    pub sparse: Option<SparseVector>,
}

/// The retrievers a search can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Retriever {
    Dense,
    Sparse,
}

/// Where one retriever placed a hit (rank 1 = its best).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Found {
    pub retriever: Retriever,
    pub rank: u32,
    pub score: f32,
}

/// A search hit.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub id: PointId,
    pub score: f32,
    pub payload: Option<Payload>,
    pub vector: Option<Vec<f32>>,
    /// Filled by the API layer (see [`crate::fusion`]); backends leave it
    /// empty.
    pub found_by: Vec<Found>,
}

/// A boolean combination of conditions (see `Filter` in the proto).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filter {
    pub must: Vec<Condition>,
    pub should: Vec<Condition>,
    pub must_not: Vec<Condition>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Keyword { key: String, value: String },
    Integer { key: String, value: i64 },
    Bool { key: String, value: bool },
    Range { key: String, range: Range },
    HasId(Vec<PointId>),
    Filter(Filter),
}

/// Numeric bounds; at least one is set.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Range {
    pub gt: Option<f64>,
    pub gte: Option<f64>,
    pub lt: Option<f64>,
    pub lte: Option<f64>,
}

impl Range {
    pub fn contains(&self, v: f64) -> bool {
        self.gt.is_none_or(|b| v > b)
            && self.gte.is_none_or(|b| v >= b)
            && self.lt.is_none_or(|b| v < b)
            && self.lte.is_none_or(|b| v <= b)
    }
}

/// Which points to delete.
#[derive(Clone, Debug, PartialEq)]
pub enum PointSelector {
    Ids(Vec<PointId>),
    Filter(Filter),
}

/// What one engine query looks for: the nearest dense vectors, or the
/// best-scoring sparse ones (dot product, IDF-weighted on BM25 collections).
#[derive(Clone, Debug, PartialEq)]
pub enum Query {
    Dense(Vec<f32>),
    Sparse(SparseVector),
}

/// One query of one retriever.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    pub query: Query,
    pub limit: usize,
    pub filter: Option<Filter>,
    pub score_threshold: Option<f32>,
    pub ef: Option<usize>,
    pub exact: bool,
    pub with_payload: bool,
    pub with_vectors: bool,
    /// Quantized collections: candidates per hit before rescoring (≥ 1).
    pub oversampling: Option<f64>,
    /// Quantized collections: rescore with the originals (the default).
    pub rescore: bool,
}

/// One page of a scroll.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrollQuery {
    pub filter: Option<Filter>,
    pub limit: usize,
    pub offset: Option<PointId>,
    pub with_payload: bool,
    pub with_vectors: bool,
}

/// Scores `v` against `q` the way the engine does (cosine on normalized
/// vectors, dot, or Euclidean distance). Used by the exact-scan baseline of
/// the benchmark and by tests.
pub fn score(distance: Distance, q: &[f32], v: &[f32]) -> f32 {
    match distance {
        Distance::Cosine => {
            let (mut dot, mut nq, mut nv) = (0.0f32, 0.0f32, 0.0f32);
            for (a, b) in q.iter().zip(v) {
                dot += a * b;
                nq += a * a;
                nv += b * b;
            }
            if nq == 0.0 || nv == 0.0 {
                0.0
            } else {
                dot / (nq.sqrt() * nv.sqrt())
            }
        }
        Distance::Dot => q.iter().zip(v).map(|(a, b)| a * b).sum(),
        Distance::Euclid => q
            .iter()
            .zip(v)
            .map(|(a, b)| (a - b) * (a - b))
            .sum::<f32>()
            .sqrt(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_bounds_are_strict_or_inclusive_as_named() {
        let r = Range {
            gt: Some(1.0),
            lte: Some(3.0),
            ..Range::default()
        };
        assert!(!r.contains(1.0));
        assert!(r.contains(1.5));
        assert!(r.contains(3.0));
        assert!(!r.contains(3.1));
    }

    #[test]
    fn scores_follow_the_distance() {
        let (a, b) = ([1.0, 0.0], [3.0, 4.0]);
        assert!((score(Distance::Cosine, &a, &b) - 0.6).abs() < 1e-6);
        assert!((score(Distance::Dot, &a, &b) - 3.0).abs() < 1e-6);
        assert!((score(Distance::Euclid, &a, &b) - 20f32.sqrt()).abs() < 1e-6);
    }
}
