//! The storage engines behind the API, one trait for both: the embedded
//! Qdrant engine ([`embedded`], default) and a Qdrant cluster ([`qdrant`]).
//!
//! Backends receive requests the API layer has already validated (names,
//! dimensions, finite components, limits), so both answer the same inputs
//! with the same statuses.

pub mod embedded;
pub mod oplog;
pub mod qdrant;

use std::sync::Arc;

use async_trait::async_trait;

use crate::{
    error::VectorError,
    model::{
        CollectionConfig, CollectionInfo, Filter, Hit, Metadata, Point, PointId, PointSelector,
        Record, ScrollQuery, SearchQuery, SparseVector, TextIndex,
    },
};

/// How a text becomes a point's sparse vector (BM25's document side).
pub type SparseOf = Arc<dyn Fn(&str) -> SparseVector + Send + Sync>;

/// What a fill of sparse vectors from payload text did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filled {
    /// Points given a sparse vector.
    pub indexed: u64,
    /// Points without one and without a string under the key: left as they
    /// are.
    pub without_text: u64,
}

pub type Result<T, E = VectorError> = std::result::Result<T, E>;

/// A store of collections of points. Every method may block on I/O or CPU
/// internally only off the async reactor.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// `embedded` or `qdrant`, for logs and metrics.
    fn kind(&self) -> &'static str;

    async fn create_collection(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: Metadata,
    ) -> Result<()>;
    async fn delete_collection(&self, name: &str) -> Result<()>;
    /// Sorted names.
    async fn list_collections(&self) -> Result<Vec<String>>;
    /// The collection's fixed configuration; used by the API layer to
    /// validate every write and search before it reaches the engine.
    async fn collection_config(&self, name: &str) -> Result<CollectionConfig>;
    async fn collection_info(&self, name: &str) -> Result<CollectionInfo>;
    /// Gives a collection without a text index the index `index` (never
    /// `None`), keeping its points; existing points have no sparse vector
    /// until written again or filled ([`Backend::fill_sparse`]). A
    /// collection that has `index` already is left as it is; one with
    /// another index is refused ([`VectorError::TextIndexExists`]).
    async fn add_text_index(&self, collection: &str, index: TextIndex) -> Result<()>;
    /// Gives every point without a sparse vector the one `sparse_of` makes
    /// of the string under its payload's top-level `key`. Writes racing
    /// with it win: a point upserted meanwhile keeps what that write gave
    /// it.
    async fn fill_sparse(&self, collection: &str, key: &str, sparse_of: SparseOf)
    -> Result<Filled>;

    /// Returns once the points are durable.
    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<()>;
    /// Existing points among `ids`, in the order of `ids`.
    async fn get(
        &self,
        collection: &str,
        ids: Vec<PointId>,
        with_payload: bool,
        with_vectors: bool,
    ) -> Result<Vec<Record>>;
    async fn delete(&self, collection: &str, selector: PointSelector) -> Result<()>;
    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64>;
    /// A page in id order and the id the next page starts at.
    async fn scroll(
        &self,
        collection: &str,
        query: ScrollQuery,
    ) -> Result<(Vec<Record>, Option<PointId>)>;
    /// One result list per query, in order, best hit first.
    async fn search(&self, collection: &str, queries: Vec<SearchQuery>) -> Result<Vec<Vec<Hit>>>;

    /// Point counts per collection, for the `points` gauge.
    async fn point_counts(&self) -> Vec<(String, u64)> {
        let Ok(names) = self.list_collections().await else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Ok(info) = self.collection_info(&name).await {
                out.push((name, info.points_count));
            }
        }
        out
    }

    /// Stops background work and makes everything durable; called once
    /// after the server has drained.
    async fn close(&self) {}
}
