//! The load generator's connection to either server: mlmesh's
//! `Search` / `SearchBatch` and Qdrant's `Query` / `QueryBatch`, one or
//! several top-K queries per call, answers as point ids.

use mlmesh_proto::vector::v1::{self as pb, vector_search_client::VectorSearchClient};
use qdrant_client::qdrant::{
    Query, QueryBatchPoints, QueryPoints, SearchParams, point_id::PointIdOptions,
    points_client::PointsClient,
};
use tonic::transport::Channel;

/// Hits asked of every engine per query.
pub const K: usize = 10;
/// The one collection every engine is loaded into.
pub(super) const COLLECTION: &str = "bench";

/// One connection of the load generator: a generated tonic client for
/// either API, one top-K query per call.
pub enum Client {
    Mlmesh(VectorSearchClient<Channel>),
    Qdrant(PointsClient<Channel>),
}

fn mlmesh_search(q: &[f32], ef: u32) -> pb::SearchRequest {
    pb::SearchRequest {
        collection: COLLECTION.into(),
        vector: q.to_vec(),
        limit: K as u32,
        ef,
        ..Default::default()
    }
}

/// The point ids of a search answer, best first (uuid ids left out).
pub(crate) fn mlmesh_ids(r: pb::SearchResponse) -> Vec<u64> {
    r.hits
        .into_iter()
        .filter_map(|h| match h.id?.kind? {
            pb::point_id::Kind::Num(n) => Some(n),
            pb::point_id::Kind::Uuid(_) => None,
        })
        .collect()
}

/// The Query API: Qdrant's recommended way to search (its Search call is
/// deprecated).
fn qdrant_query(q: &[f32], ef: u32) -> QueryPoints {
    QueryPoints {
        collection_name: COLLECTION.into(),
        query: Some(Query::new_nearest(q.to_vec())),
        limit: Some(K as u64),
        params: Some(SearchParams {
            hnsw_ef: Some(u64::from(ef)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn qdrant_ids(points: Vec<qdrant_client::qdrant::ScoredPoint>) -> Vec<u64> {
    points
        .into_iter()
        .filter_map(|p| match p.id?.point_id_options? {
            PointIdOptions::Num(n) => Some(n),
            PointIdOptions::Uuid(_) => None,
        })
        .collect()
}

impl Client {
    /// Several queries in one call: mlmesh's SearchBatch, Qdrant's
    /// QueryBatch.
    pub async fn search_batch(&mut self, qs: &[&[f32]], ef: u32) -> anyhow::Result<Vec<Vec<u64>>> {
        Ok(match self {
            Self::Mlmesh(c) => c
                .search_batch(pb::SearchBatchRequest {
                    collection: COLLECTION.into(),
                    searches: qs.iter().map(|q| mlmesh_search(q, ef)).collect(),
                })
                .await?
                .into_inner()
                .results
                .into_iter()
                .map(mlmesh_ids)
                .collect(),
            Self::Qdrant(c) => c
                .query_batch(QueryBatchPoints {
                    collection_name: COLLECTION.into(),
                    query_points: qs.iter().map(|q| qdrant_query(q, ef)).collect(),
                    ..Default::default()
                })
                .await?
                .into_inner()
                .result
                .into_iter()
                .map(|r| qdrant_ids(r.result))
                .collect(),
        })
    }

    pub async fn search(&mut self, q: &[f32], ef: u32) -> anyhow::Result<Vec<u64>> {
        Ok(match self {
            Self::Mlmesh(c) => mlmesh_ids(c.search(mlmesh_search(q, ef)).await?.into_inner()),
            Self::Qdrant(c) => qdrant_ids(c.query(qdrant_query(q, ef)).await?.into_inner().result),
        })
    }
}
