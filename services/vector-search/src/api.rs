//! The tonic implementation of `mlmesh.vector.v1.VectorSearch`: validates
//! every request against the collection's configuration and the limits in
//! settings, admits it under `vector.max_in_flight`, calls the backend, and
//! records metrics. Backends only ever see valid requests.

use std::{collections::HashMap, future::Future, sync::Arc, time::Instant};

use mlmesh_proto::vector::v1::{self as pb, vector_search_server::VectorSearch};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::{
    backend::Backend,
    convert,
    error::VectorError,
    fusion::Plan,
    metrics::Metrics,
    model::{Hit, PointId, PointSelector, Record, ScrollQuery},
    settings::VectorSettings,
    text::Bm25,
};

/// Query text beyond this many bytes in one call is turned into sparse
/// vectors on the blocking pool rather than on the reactor.
const INLINE_TEXT_BYTES: usize = 4096;

/// The gRPC face of a [`Backend`].
#[derive(Clone)]
pub struct VectorApi {
    backend: Arc<dyn Backend>,
    metrics: Metrics,
    limits: Arc<VectorSettings>,
    admission: Arc<Semaphore>,
    bm25: Arc<Bm25>,
    /// Cores this process may use.
    cores: usize,
}

impl VectorApi {
    pub fn new(
        backend: Arc<dyn Backend>,
        metrics: Metrics,
        limits: VectorSettings,
        bm25: Arc<Bm25>,
    ) -> Self {
        let admission = Arc::new(Semaphore::new(limits.max_in_flight));
        Self {
            backend,
            metrics,
            limits: Arc::new(limits),
            admission,
            bm25,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }

    /// Admits, traces, times and counts one call.
    async fn call<T, F>(&self, method: &'static str, collection: &str, f: F) -> Result<T, Status>
    where
        F: Future<Output = Result<T, VectorError>>,
    {
        let start = Instant::now();
        let result = match self.admission.try_acquire() {
            Err(_) => Err(VectorError::Busy {
                in_flight: self.limits.max_in_flight,
                max: self.limits.max_in_flight,
            }),
            Ok(_permit) => {
                self.metrics.in_flight.inc();
                let span = mlmesh_runtime::call_span!(
                    "vector.call",
                    method,
                    collection,
                    backend = self.backend.kind()
                );
                let r = f.instrument(span).await;
                self.metrics.in_flight.dec();
                r
            }
        };
        let result = result.map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        self.metrics.rpc.record(method, code, start.elapsed());
        result
    }

    async fn search_many(
        &self,
        collection: &str,
        requests: Vec<(String, pb::SearchRequest)>,
    ) -> Result<Vec<pb::SearchResponse>, VectorError> {
        convert::collection_name("collection", collection)?;
        let config = self.backend.collection_config(collection).await?;
        let plan_all = {
            let (name, limits, bm25) = (
                collection.to_owned(),
                Arc::clone(&self.limits),
                Arc::clone(&self.bm25),
            );
            move |requests: Vec<(String, pb::SearchRequest)>| {
                requests
                    .into_iter()
                    .map(|(prefix, r)| {
                        convert::search_plan(&prefix, r, &name, &config, &limits, &bm25)
                    })
                    .collect::<Result<Vec<_>, _>>()
            }
        };
        let text: usize = requests.iter().map(|(_, r)| convert::text_bytes(r)).sum();
        let plans = if text > INLINE_TEXT_BYTES {
            tokio::task::spawn_blocking(move || plan_all(requests))
                .await
                .map_err(|e| VectorError::Storage(format!("text task failed: {e}")))??
        } else {
            plan_all(requests)?
        };
        let start = Instant::now();
        let mut results = self.run_retrievers(collection, &plans).await?.into_iter();
        self.metrics
            .search_seconds
            .with_label_values(&[collection])
            .observe(start.elapsed().as_secs_f64());
        let fused: Vec<Vec<Hit>> = plans
            .iter()
            .map(|plan| plan.finish(results.by_ref().take(plan.parts.len()).collect()))
            .collect();
        let fused = self.read_after_fusion(collection, &plans, fused).await?;
        Ok(fused
            .into_iter()
            .map(|hits| pb::SearchResponse {
                hits: hits.into_iter().map(convert::hit_out).collect(),
            })
            .collect())
    }

    /// Every retriever query of `plans`, answers in plan and part order.
    /// Several searches go to the engine in one call; a single hybrid
    /// search runs its two retrievers side by side while cores are idle, so
    /// that its latency is the slower retriever's rather than their sum.
    /// (When every core is busy the split only adds a hand-off.)
    async fn run_retrievers(
        &self,
        collection: &str,
        plans: &[Plan],
    ) -> Result<Vec<Vec<Hit>>, VectorError> {
        if let [plan] = plans
            && let [(_, first), (_, second)] = plan.parts.as_slice()
            && self.has_idle_cores()
        {
            let (a, b) = tokio::try_join!(
                self.backend.search(collection, vec![first.clone()]),
                self.backend.search(collection, vec![second.clone()]),
            )?;
            return Ok(a.into_iter().chain(b).collect());
        }
        let queries = plans
            .iter()
            .flat_map(|p| p.parts.iter().map(|(_, q)| q.clone()))
            .collect();
        self.backend.search(collection, queries).await
    }

    /// Fewer calls in flight than cores.
    fn has_idle_cores(&self) -> bool {
        let in_flight = self
            .limits
            .max_in_flight
            .saturating_sub(self.admission.available_permits());
        in_flight < self.cores
    }

    /// The payloads and vectors of the fused hits of every plan that asked
    /// for them, read by id in one backend call. A point deleted between
    /// the search and the read is dropped from the answer.
    async fn read_after_fusion(
        &self,
        collection: &str,
        plans: &[Plan],
        mut fused: Vec<Vec<Hit>>,
    ) -> Result<Vec<Vec<Hit>>, VectorError> {
        let asks: Vec<_> = plans.iter().map(|p| p.read_after_fusion).collect();
        let ids: Vec<PointId> = fused
            .iter()
            .zip(&asks)
            .filter(|(_, ask)| ask.is_some())
            .flat_map(|(hits, _)| hits.iter().map(|h| h.id))
            .collect();
        if ids.is_empty() {
            return Ok(fused);
        }
        let any = |pick: fn((bool, bool)) -> bool| asks.iter().flatten().any(|a| pick(*a));
        let records: HashMap<PointId, Record> = self
            .backend
            .get(collection, ids, any(|a| a.0), any(|a| a.1))
            .await?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        for (hits, ask) in fused.iter_mut().zip(asks) {
            let Some((with_payload, with_vectors)) = ask else {
                continue;
            };
            hits.retain_mut(|h| {
                let Some(r) = records.get(&h.id) else {
                    return false;
                };
                h.payload = r.payload.clone().filter(|_| with_payload);
                h.vector = r.vector.clone().filter(|_| with_vectors);
                true
            });
        }
        Ok(fused)
    }
}

#[tonic::async_trait]
impl VectorSearch for VectorApi {
    async fn create_collection(
        &self,
        request: Request<pb::CreateCollectionRequest>,
    ) -> Result<Response<pb::CreateCollectionResponse>, Status> {
        let r = request.into_inner();
        self.call("CreateCollection", &r.name.clone(), async {
            let config = convert::collection_config(&r, &self.limits)?;
            let metadata = convert::metadata(&r.metadata)?;
            self.backend
                .create_collection(&r.name, config, metadata)
                .await?;
            tracing::info!(collection = %r.name, ?config, "collection created");
            Ok(Response::new(pb::CreateCollectionResponse {}))
        })
        .await
    }

    async fn delete_collection(
        &self,
        request: Request<pb::DeleteCollectionRequest>,
    ) -> Result<Response<pb::DeleteCollectionResponse>, Status> {
        let r = request.into_inner();
        self.call("DeleteCollection", &r.name, async {
            convert::collection_name("name", &r.name)?;
            self.backend.delete_collection(&r.name).await?;
            let _ = self.metrics.points.remove_label_values(&[r.name.as_str()]);
            tracing::info!(collection = %r.name, "collection deleted");
            Ok(Response::new(pb::DeleteCollectionResponse {}))
        })
        .await
    }

    async fn list_collections(
        &self,
        _request: Request<pb::ListCollectionsRequest>,
    ) -> Result<Response<pb::ListCollectionsResponse>, Status> {
        self.call("ListCollections", "", async {
            let names = self.backend.list_collections().await?;
            Ok(Response::new(pb::ListCollectionsResponse { names }))
        })
        .await
    }

    async fn get_collection(
        &self,
        request: Request<pb::GetCollectionRequest>,
    ) -> Result<Response<pb::CollectionInfo>, Status> {
        let r = request.into_inner();
        self.call("GetCollection", &r.name, async {
            convert::collection_name("name", &r.name)?;
            let info = self.backend.collection_info(&r.name).await?;
            Ok(Response::new(convert::collection_info(info)))
        })
        .await
    }

    async fn add_text_index(
        &self,
        request: Request<pb::AddTextIndexRequest>,
    ) -> Result<Response<pb::AddTextIndexResponse>, Status> {
        let r = request.into_inner();
        self.call("AddTextIndex", &r.collection, async {
            let (index, key) = convert::add_text_index(&r, &self.limits)?;
            self.backend.add_text_index(&r.collection, index).await?;
            let Some(key) = key else {
                return Ok(Response::new(pb::AddTextIndexResponse::default()));
            };
            let bm25 = Arc::clone(&self.bm25);
            let filled = self
                .backend
                .fill_sparse(
                    &r.collection,
                    &key,
                    Arc::new(move |text| bm25.document(text)),
                )
                .await?;
            tracing::info!(
                collection = %r.collection,
                indexed = filled.indexed,
                without_text = filled.without_text,
                "filled the text index from payload key {key:?}"
            );
            Ok(Response::new(pb::AddTextIndexResponse {
                points_indexed: filled.indexed,
                points_without_text: filled.without_text,
            }))
        })
        .await
    }

    async fn upsert(
        &self,
        request: Request<pb::UpsertRequest>,
    ) -> Result<Response<pb::UpsertResponse>, Status> {
        let r = request.into_inner();
        let collection = r.collection.clone();
        self.call("Upsert", &collection, async {
            convert::collection_name("collection", &collection)?;
            let config = self.backend.collection_config(&collection).await?;
            // Validation and BM25 over up to `max_upsert_points` texts: CPU
            // work, off the reactor.
            let (limits, bm25) = (Arc::clone(&self.limits), Arc::clone(&self.bm25));
            let points =
                tokio::task::spawn_blocking(move || convert::points(r, &config, &limits, &bm25))
                    .await
                    .map_err(|e| VectorError::Storage(format!("upsert task failed: {e}")))??;
            let n = points.len() as u64;
            let start = Instant::now();
            self.backend.upsert(&collection, points).await?;
            self.metrics
                .upsert_seconds
                .with_label_values(&[collection.as_str()])
                .observe(start.elapsed().as_secs_f64());
            self.metrics
                .upserted_points
                .with_label_values(&[collection.as_str()])
                .inc_by(n);
            Ok(Response::new(pb::UpsertResponse { upserted: n }))
        })
        .await
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::GetResponse>, Status> {
        let r = request.into_inner();
        self.call("Get", &r.collection, async {
            convert::collection_name("collection", &r.collection)?;
            let ids = convert::point_ids(
                "ids",
                &r.ids,
                self.limits.max_page_size,
                "vector.max_page_size",
            )?;
            let records = self
                .backend
                .get(&r.collection, ids, r.with_payload, r.with_vectors)
                .await?;
            Ok(Response::new(pb::GetResponse {
                points: records.into_iter().map(convert::record_out).collect(),
            }))
        })
        .await
    }

    async fn delete(
        &self,
        request: Request<pb::DeleteRequest>,
    ) -> Result<Response<pb::DeleteResponse>, Status> {
        let r = request.into_inner();
        self.call("Delete", &r.collection, async {
            convert::collection_name("collection", &r.collection)?;
            let selector = match r.selector {
                None => {
                    return Err(VectorError::Empty {
                        field: "selector".into(),
                        hint: "set ids or filter",
                    });
                }
                Some(pb::delete_request::Selector::Ids(list)) => PointSelector::Ids(
                    convert::point_ids(
                        "ids.ids",
                        &list.ids,
                        self.limits.max_upsert_points,
                        "vector.max_upsert_points",
                    )?,
                ),
                Some(pb::delete_request::Selector::Filter(f)) => {
                    let f = convert::filter("filter", f, self.limits.max_filter_conditions)?;
                    if convert::filter_is_empty(&f) {
                        return Err(VectorError::Empty {
                            field: "filter".into(),
                            hint: "a delete filter needs at least one condition (DeleteCollection removes everything)",
                        });
                    }
                    PointSelector::Filter(f)
                }
            };
            // Unknown collection → NOT_FOUND before anything else.
            self.backend.collection_config(&r.collection).await?;
            self.backend.delete(&r.collection, selector).await?;
            Ok(Response::new(pb::DeleteResponse {}))
        })
        .await
    }

    async fn count(
        &self,
        request: Request<pb::CountRequest>,
    ) -> Result<Response<pb::CountResponse>, Status> {
        let r = request.into_inner();
        self.call("Count", &r.collection, async {
            convert::collection_name("collection", &r.collection)?;
            let filter = r
                .filter
                .map(|f| convert::filter("filter", f, self.limits.max_filter_conditions))
                .transpose()?;
            let count = self.backend.count(&r.collection, filter).await?;
            Ok(Response::new(pb::CountResponse { count }))
        })
        .await
    }

    async fn scroll(
        &self,
        request: Request<pb::ScrollRequest>,
    ) -> Result<Response<pb::ScrollResponse>, Status> {
        let r = request.into_inner();
        self.call("Scroll", &r.collection, async {
            convert::collection_name("collection", &r.collection)?;
            let query = ScrollQuery {
                filter: r
                    .filter
                    .map(|f| convert::filter("filter", f, self.limits.max_filter_conditions))
                    .transpose()?,
                limit: convert::page_size("limit", r.limit, &self.limits)?,
                offset: r
                    .offset
                    .as_ref()
                    .map(|o| convert::point_id("offset", Some(o)))
                    .transpose()?,
                with_payload: r.with_payload,
                with_vectors: r.with_vectors,
            };
            let (records, next) = self.backend.scroll(&r.collection, query).await?;
            Ok(Response::new(pb::ScrollResponse {
                points: records.into_iter().map(convert::record_out).collect(),
                next_offset: next.map(convert::point_id_out),
            }))
        })
        .await
    }

    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let r = request.into_inner();
        let collection = r.collection.clone();
        self.call("Search", &collection, async {
            let mut results = self
                .search_many(&collection, vec![(String::new(), r)])
                .await?;
            Ok(Response::new(results.pop().unwrap_or_default()))
        })
        .await
    }

    async fn search_batch(
        &self,
        request: Request<pb::SearchBatchRequest>,
    ) -> Result<Response<pb::SearchBatchResponse>, Status> {
        let r = request.into_inner();
        let collection = r.collection;
        self.call("SearchBatch", &collection, async {
            if r.searches.is_empty() {
                return Err(VectorError::Empty {
                    field: "searches".into(),
                    hint: "at least one search is required",
                });
            }
            if r.searches.len() > self.limits.max_batch_searches {
                return Err(VectorError::OverLimit {
                    field: "searches count".into(),
                    got: r.searches.len(),
                    max: self.limits.max_batch_searches,
                    setting: "vector.max_batch_searches",
                });
            }
            let mut requests = Vec::with_capacity(r.searches.len());
            for (i, s) in r.searches.into_iter().enumerate() {
                if !s.collection.is_empty() && s.collection != collection {
                    return Err(VectorError::invalid(
                        format!("searches[{i}].collection"),
                        format!(
                            "{:?} differs from the batch's collection {collection:?}; leave it empty",
                            s.collection
                        ),
                    ));
                }
                requests.push((format!("searches[{i}]."), s));
            }
            let results = self.search_many(&collection, requests).await?;
            Ok(Response::new(pb::SearchBatchResponse { results }))
        })
        .await
    }
}
