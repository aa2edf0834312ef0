//! The cluster backend: a Qdrant server or cluster over gRPC
//! (`qdrant-client`). Our model maps one to one onto Qdrant's: a collection
//! with one unnamed dense vector (and, with a text index, a sparse vector
//! named `text`, IDF-modified for BM25), u64/UUID ids, JSON payloads, and
//! the same filter conditions.
//!
//! `text_index` holds what concerns the sparse vector: adding it to a
//! collection in place, filling it from payloads, clearing it before
//! deletes.
//!
//! Collection configurations are cached for request validation, for at most
//! [`CONFIG_TTL`] (a text index another replica adds is seen within it);
//! the cache entry is dropped whenever Qdrant answers NOT_FOUND, so a
//! collection deleted by another replica is noticed on the next call.

use std::{
    collections::HashMap,
    sync::RwLock,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use qdrant_client::{
    Payload as QPayload, Qdrant, QdrantError,
    qdrant::{
        self as q, Condition as QCondition, CountPointsBuilder, CreateCollectionBuilder,
        DeletePointsBuilder, Filter as QFilter, GetPointsBuilder, HnswConfigDiffBuilder,
        NamedVectors, PointStruct, PointsIdsList, QuantizationSearchParamsBuilder,
        ScalarQuantizationBuilder, ScrollPointsBuilder, SearchBatchPointsBuilder,
        SearchParamsBuilder, SearchPointsBuilder, SparseVectorParams, SparseVectorsConfigBuilder,
        UpsertPointsBuilder, Vector as QInputVector, VectorParamsBuilder,
        quantization_config::Quantization as QQuantization,
        vectors_config::Config as QVectorsConfig,
    },
};
use tonic::Code;

mod convert;
mod text_index;

use self::convert::*;
use super::{Backend, Filled, Result, SparseOf};
use crate::{
    error::{OpenError, VectorError},
    model::{
        CollectionConfig, CollectionInfo, Distance, Filter, Hit, Hnsw, IndexStatus, Metadata,
        Point, PointId, PointSelector, Quantization, Query, Record, ScrollQuery, SearchQuery,
        TextIndex,
    },
    settings::QdrantSettings,
};

pub struct QdrantBackend {
    client: Qdrant,
    shard_number: u32,
    replication_factor: u32,
    /// Each with when it was read from Qdrant.
    configs: RwLock<HashMap<String, (CollectionConfig, Instant)>>,
}

/// How long a cached collection configuration is trusted.
const CONFIG_TTL: Duration = Duration::from_secs(5);

impl QdrantBackend {
    /// Builds the client; connects lazily (the first call reports an
    /// unreachable cluster as UNAVAILABLE).
    pub fn connect(settings: &QdrantSettings) -> Result<Self, OpenError> {
        let mut builder =
            Qdrant::from_url(&settings.url).timeout(Duration::from_secs(settings.timeout_secs));
        if !settings.api_key.is_empty() {
            builder = builder.api_key(settings.api_key.clone());
        }
        // The server's version check would make start-up depend on the
        // cluster being up; health is reported per call instead.
        let client = builder
            .skip_compatibility_check()
            .build()
            .map_err(|e| OpenError::Qdrant(e.to_string()))?;
        Ok(Self {
            client,
            shard_number: settings.shard_number,
            replication_factor: settings.replication_factor,
            configs: RwLock::new(HashMap::new()),
        })
    }

    /// Maps a client error for a call on `collection`.
    fn error(&self, collection: &str, e: QdrantError) -> VectorError {
        let status = match e {
            QdrantError::ResponseError { status } => status,
            QdrantError::ResourceExhaustedError { status, .. } => status,
            other => return VectorError::Backend(other.to_string()),
        };
        match status.code() {
            Code::NotFound => {
                self.forget(collection);
                VectorError::CollectionNotFound {
                    name: collection.into(),
                }
            }
            Code::AlreadyExists => VectorError::CollectionExists {
                name: collection.into(),
            },
            Code::InvalidArgument if status.message().contains("already exists") => {
                VectorError::CollectionExists {
                    name: collection.into(),
                }
            }
            Code::InvalidArgument => VectorError::invalid("request", status.message()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Unknown => {
                VectorError::Unavailable(format!("{}: {}", status.code(), status.message()))
            }
            Code::ResourceExhausted => VectorError::Overloaded(status.message().to_owned()),
            _ => VectorError::Backend(format!("{}: {}", status.code(), status.message())),
        }
    }

    fn forget(&self, collection: &str) {
        if let Ok(mut c) = self.configs.write() {
            c.remove(collection);
        }
    }

    async fn fetch_info(&self, name: &str) -> Result<(CollectionConfig, q::CollectionInfo)> {
        let info = self
            .client
            .collection_info(name)
            .await
            .map_err(|e| self.error(name, e))?
            .result
            .ok_or_else(|| VectorError::Backend("collection info without a result".into()))?;
        let config = info.config.as_ref();
        let params = config
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.vectors_config.as_ref())
            .and_then(|v| v.config.as_ref());
        let Some(QVectorsConfig::Params(params)) = params else {
            return Err(VectorError::Backend(format!(
                "collection {name:?} does not have one unnamed dense vector; it was not created by mlmesh"
            )));
        };
        let distance = match q::Distance::try_from(params.distance) {
            Ok(q::Distance::Cosine) => Distance::Cosine,
            Ok(q::Distance::Dot) => Distance::Dot,
            Ok(q::Distance::Euclid) => Distance::Euclid,
            _ => {
                return Err(VectorError::Backend(format!(
                    "collection {name:?} uses a distance mlmesh does not support"
                )));
            }
        };
        let hnsw = config.and_then(|c| c.hnsw_config.as_ref());
        let quantization = match config
            .and_then(|c| c.quantization_config.as_ref())
            .and_then(|q| q.quantization.as_ref())
        {
            None => Quantization::None,
            Some(QQuantization::Scalar(s)) if s.r#type == q::QuantizationType::Int8 as i32 => {
                Quantization::Int8
            }
            Some(other) => {
                return Err(VectorError::Backend(format!(
                    "collection {name:?} uses a quantization mlmesh does not support ({other:?}); it was not created by mlmesh"
                )));
            }
        };
        let sparse = config
            .and_then(|c| c.params.as_ref())
            .and_then(|p| p.sparse_vectors_config.as_ref())
            .and_then(|s| s.map.get(SPARSE_NAME));
        let text_index = match sparse.map(|s| s.modifier) {
            None => TextIndex::None,
            Some(Some(m)) if m == q::Modifier::Idf as i32 => TextIndex::Bm25,
            Some(_) => TextIndex::Sparse,
        };
        let cfg = CollectionConfig {
            text_index,
            dimension: params.size as usize,
            distance,
            hnsw: Hnsw {
                m: hnsw.and_then(|h| h.m).unwrap_or(16) as usize,
                ef_construct: hnsw.and_then(|h| h.ef_construct).unwrap_or(100) as usize,
            },
            quantization,
        };
        if let Ok(mut c) = self.configs.write() {
            c.insert(name.to_owned(), (cfg, Instant::now()));
        }
        Ok((cfg, info))
    }
}

#[async_trait]
impl Backend for QdrantBackend {
    fn kind(&self) -> &'static str {
        "qdrant"
    }

    async fn create_collection(
        &self,
        name: &str,
        config: CollectionConfig,
        metadata: Metadata,
    ) -> Result<()> {
        if self
            .client
            .collection_exists(name)
            .await
            .map_err(|e| self.error(name, e))?
        {
            return Err(VectorError::CollectionExists { name: name.into() });
        }
        let distance = match config.distance {
            Distance::Cosine => q::Distance::Cosine,
            Distance::Dot => q::Distance::Dot,
            Distance::Euclid => q::Distance::Euclid,
        };
        let mut create = CreateCollectionBuilder::new(name)
            .vectors_config(VectorParamsBuilder::new(config.dimension as u64, distance))
            .hnsw_config(
                HnswConfigDiffBuilder::default()
                    .m(config.hnsw.m as u64)
                    .ef_construct(config.hnsw.ef_construct as u64),
            );
        let modifier = match config.text_index {
            TextIndex::None => None,
            TextIndex::Bm25 => Some(q::Modifier::Idf),
            TextIndex::Sparse => Some(q::Modifier::None),
        };
        if let Some(m) = modifier {
            let mut sparse = SparseVectorsConfigBuilder::default();
            sparse.add_named_vector_params(
                SPARSE_NAME,
                SparseVectorParams {
                    index: None,
                    modifier: Some(m as i32),
                },
            );
            create = create.sparse_vectors_config(sparse);
        }
        match config.quantization {
            Quantization::None => {}
            Quantization::Int8 => {
                // The same settings as the embedded engine's INT8.
                create = create.quantization_config(
                    ScalarQuantizationBuilder::default()
                        .r#type(q::QuantizationType::Int8.into())
                        .quantile(0.99)
                        .always_ram(true),
                );
            }
        }
        self.client
            .create_collection(
                create
                    .metadata(
                        metadata
                            .into_iter()
                            .map(|(k, v)| (k, serde_json::Value::String(v)))
                            .collect::<HashMap<_, _>>(),
                    )
                    .shard_number(self.shard_number)
                    .replication_factor(self.replication_factor),
            )
            .await
            .map_err(|e| self.error(name, e))?;
        if let Ok(mut c) = self.configs.write() {
            c.insert(name.to_owned(), (config, Instant::now()));
        }
        Ok(())
    }

    async fn delete_collection(&self, name: &str) -> Result<()> {
        // Qdrant answers a delete of a missing collection with success.
        let exists = self
            .client
            .collection_exists(name)
            .await
            .map_err(|e| self.error(name, e))?;
        self.forget(name);
        if !exists {
            return Err(VectorError::CollectionNotFound { name: name.into() });
        }
        self.client
            .delete_collection(name)
            .await
            .map_err(|e| self.error(name, e))?;
        Ok(())
    }

    async fn list_collections(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .client
            .list_collections()
            .await
            .map_err(|e| self.error("", e))?
            .collections
            .into_iter()
            .map(|c| c.name)
            .collect();
        names.sort();
        Ok(names)
    }

    async fn collection_config(&self, name: &str) -> Result<CollectionConfig> {
        let cached = self.configs.read().ok().and_then(|c| c.get(name).copied());
        if let Some((c, read)) = cached
            && read.elapsed() < CONFIG_TTL
        {
            return Ok(c);
        }
        Ok(self.fetch_info(name).await?.0)
    }

    async fn add_text_index(&self, collection: &str, index: TextIndex) -> Result<()> {
        self.add_sparse_vector(collection, index).await
    }

    async fn fill_sparse(
        &self,
        collection: &str,
        key: &str,
        sparse_of: SparseOf,
    ) -> Result<Filled> {
        self.fill_from_payload(collection, key, sparse_of).await
    }

    async fn collection_info(&self, name: &str) -> Result<CollectionInfo> {
        let (config, info) = self.fetch_info(name).await?;
        let status = match q::CollectionStatus::try_from(info.status) {
            Ok(q::CollectionStatus::Green) => IndexStatus::Ready,
            Ok(q::CollectionStatus::Yellow) => IndexStatus::Optimizing,
            _ => IndexStatus::Pending,
        };
        Ok(CollectionInfo {
            name: name.to_owned(),
            config,
            points_count: info.points_count.unwrap_or(0),
            indexed_vectors_count: info.indexed_vectors_count.unwrap_or(0),
            segments_count: info.segments_count as u32,
            status,
            metadata: info
                .config
                .iter()
                .flat_map(|c| &c.metadata)
                .filter_map(|(k, v)| match &v.kind {
                    Some(q::value::Kind::StringValue(s)) => Some((k.clone(), s.clone())),
                    _ => None,
                })
                .collect(),
        })
    }

    async fn upsert(&self, collection: &str, points: Vec<Point>) -> Result<()> {
        let points: Vec<PointStruct> = points
            .into_iter()
            .map(|p| match p.sparse {
                None => PointStruct::new(to_q_id(p.id), p.vector, QPayload::from(p.payload)),
                Some(s) => PointStruct::new(
                    to_q_id(p.id),
                    NamedVectors::from(vec![
                        (String::new(), QInputVector::new_dense(p.vector)),
                        (
                            SPARSE_NAME.to_owned(),
                            QInputVector::new_sparse(s.indices, s.values),
                        ),
                    ]),
                    QPayload::from(p.payload),
                ),
            })
            .collect();
        self.client
            .upsert_points(UpsertPointsBuilder::new(collection, points).wait(true))
            .await
            .map_err(|e| self.error(collection, e))?;
        Ok(())
    }

    async fn get(
        &self,
        collection: &str,
        ids: Vec<PointId>,
        with_payload: bool,
        with_vectors: bool,
    ) -> Result<Vec<Record>> {
        let q_ids: Vec<q::PointId> = ids.iter().copied().map(to_q_id).collect();
        let found = self
            .client
            .get_points(
                GetPointsBuilder::new(collection, q_ids)
                    .with_payload(with_payload)
                    .with_vectors(with_vectors),
            )
            .await
            .map_err(|e| self.error(collection, e))?
            .result;
        let mut by_id: HashMap<PointId, Record> = found
            .into_iter()
            .filter_map(|r| {
                let id = from_q_id(r.id)?;
                let (vector, sparse) = vectors_of(r.vectors);
                Some((
                    id,
                    Record {
                        id,
                        payload: with_payload.then(|| payload_of(r.payload)),
                        vector,
                        sparse,
                    },
                ))
            })
            .collect();
        Ok(ids.iter().filter_map(|id| by_id.remove(id)).collect())
    }

    async fn delete(&self, collection: &str, selector: PointSelector) -> Result<()> {
        if self
            .collection_config(collection)
            .await?
            .text_index
            .exists()
        {
            self.clear_terms(collection, &selector).await?;
        }
        let builder = DeletePointsBuilder::new(collection).wait(true);
        let builder = match selector {
            PointSelector::Ids(ids) => builder.points(PointsIdsList {
                ids: ids.into_iter().map(to_q_id).collect(),
            }),
            PointSelector::Filter(f) => builder.points(to_q_filter(&f)),
        };
        self.client
            .delete_points(builder)
            .await
            .map_err(|e| self.error(collection, e))?;
        Ok(())
    }

    async fn count(&self, collection: &str, filter: Option<Filter>) -> Result<u64> {
        let mut builder = CountPointsBuilder::new(collection).exact(true);
        if let Some(f) = filter {
            builder = builder.filter(to_q_filter(&f));
        }
        Ok(self
            .client
            .count(builder)
            .await
            .map_err(|e| self.error(collection, e))?
            .result
            .map_or(0, |r| r.count))
    }

    async fn scroll(
        &self,
        collection: &str,
        query: ScrollQuery,
    ) -> Result<(Vec<Record>, Option<PointId>)> {
        let mut builder = ScrollPointsBuilder::new(collection)
            .limit(query.limit as u32)
            .with_payload(query.with_payload)
            .with_vectors(query.with_vectors);
        if let Some(f) = &query.filter {
            builder = builder.filter(to_q_filter(f));
        }
        if let Some(o) = query.offset {
            builder = builder.offset(to_q_id(o));
        }
        let page = self
            .client
            .scroll(builder)
            .await
            .map_err(|e| self.error(collection, e))?;
        let records = page
            .result
            .into_iter()
            .filter_map(|r| {
                let (vector, sparse) = vectors_of(r.vectors);
                Some(Record {
                    id: from_q_id(r.id)?,
                    payload: query.with_payload.then(|| payload_of(r.payload)),
                    vector,
                    sparse,
                })
            })
            .collect();
        Ok((
            records,
            page.next_page_offset.and_then(|o| from_q_id(Some(o))),
        ))
    }

    async fn search(&self, collection: &str, queries: Vec<SearchQuery>) -> Result<Vec<Vec<Hit>>> {
        let flags: Vec<(bool, bool)> = queries
            .iter()
            .map(|q| (q.with_payload, q.with_vectors))
            .collect();
        let searches: Vec<q::SearchPoints> = queries
            .into_iter()
            .map(|sq| {
                let mut quantization =
                    QuantizationSearchParamsBuilder::default().rescore(sq.rescore);
                if let Some(o) = sq.oversampling {
                    quantization = quantization.oversampling(o);
                }
                let mut params = SearchParamsBuilder::default()
                    .exact(sq.exact)
                    .quantization(quantization);
                if let Some(ef) = sq.ef {
                    params = params.hnsw_ef(ef as u64);
                }
                let mut b = match sq.query {
                    Query::Dense(v) => SearchPointsBuilder::new(collection, v, sq.limit as u64),
                    Query::Sparse(s) => {
                        SearchPointsBuilder::new(collection, s.values, sq.limit as u64)
                            .vector_name(SPARSE_NAME)
                            .sparse_indices(s.indices)
                    }
                };
                b = b
                    .params(params)
                    .with_payload(sq.with_payload)
                    .with_vectors(sq.with_vectors);
                if let Some(f) = &sq.filter {
                    b = b.filter(to_q_filter(f));
                }
                if let Some(t) = sq.score_threshold {
                    b = b.score_threshold(t);
                }
                b.build()
            })
            .collect();
        let results = self
            .client
            .search_batch_points(SearchBatchPointsBuilder::new(collection, searches))
            .await
            .map_err(|e| self.error(collection, e))?
            .result;
        Ok(results
            .into_iter()
            .zip(flags)
            .map(|(batch, (wp, _))| {
                batch
                    .result
                    .into_iter()
                    .filter_map(|h| {
                        Some(Hit {
                            id: from_q_id(h.id)?,
                            score: h.score,
                            payload: wp.then(|| payload_of(h.payload)),
                            vector: vectors_of(h.vectors).0,
                            found_by: Vec::new(),
                        })
                    })
                    .collect()
            })
            .collect())
    }
}
