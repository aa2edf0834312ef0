//! What the gateway does, independent of the protocol it is asked in: both
//! the gRPC service and the HTTP/JSON API call [`Core`].
//!
//! A gateway collection is a vector-search collection whose metadata
//! records the embedding model and chunking defaults (`mlmesh.*` keys), so
//! every gateway replica agrees on them without a store of its own. Each
//! chunk is one point whose payload is
//! `{document_id, chunk_index, text, metadata}`; its id is a UUID v5 of the
//! document id and chunk index, so re-ingesting a document overwrites its
//! chunks in place.

use std::{
    collections::HashMap,
    ops::Range,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use mlmesh_proto::{
    embedding::v1::{self as emb, embedding_service_client::EmbeddingServiceClient},
    gateway::v1 as gw,
    json,
    vector::v1::{self as vec, vector_search_client::VectorSearchClient},
};
use serde_json::{Map, Value as Json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Request;

use crate::{
    chunk,
    downstream::{Deadline, Pool},
    error::GatewayError,
    metrics::Metrics,
    settings::{ChunkUnit, ChunkingSettings, Settings},
};

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

const EMBED: &str = "mlmesh.embedding.v1.EmbeddingService/Embed";
const SIMILARITY: &str = "mlmesh.embedding.v1.EmbeddingService/Similarity";
const TOKENIZE: &str = "mlmesh.embedding.v1.EmbeddingService/Tokenize";
const INFO: &str = "mlmesh.embedding.v1.EmbeddingService/Info";
const V_CREATE: &str = "mlmesh.vector.v1.VectorSearch/CreateCollection";
const V_DELETE_COLLECTION: &str = "mlmesh.vector.v1.VectorSearch/DeleteCollection";
const V_LIST: &str = "mlmesh.vector.v1.VectorSearch/ListCollections";
const V_GET_COLLECTION: &str = "mlmesh.vector.v1.VectorSearch/GetCollection";
const V_UPSERT: &str = "mlmesh.vector.v1.VectorSearch/Upsert";
const V_DELETE: &str = "mlmesh.vector.v1.VectorSearch/Delete";
const V_SEARCH: &str = "mlmesh.vector.v1.VectorSearch/Search";

/// Collection metadata keys the gateway writes.
const META_MODEL: &str = "mlmesh.model";
const META_UNIT: &str = "mlmesh.chunk_unit";
const META_SIZE: &str = "mlmesh.chunk_size";
const META_OVERLAP: &str = "mlmesh.chunk_overlap";

/// Payload keys of a chunk.
const P_DOCUMENT_ID: &str = "document_id";
const P_CHUNK_INDEX: &str = "chunk_index";
const P_TEXT: &str = "text";
const P_METADATA: &str = "metadata";

/// How long a collection's model and chunking are reused before being
/// read again (they only change by delete and re-create).
const COLLECTION_TTL: Duration = Duration::from_secs(5);
/// How long the embedding service's model list is reused.
const MODELS_TTL: Duration = Duration::from_secs(30);
/// Longest document id.
const MAX_DOCUMENT_ID_BYTES: usize = 256;
/// Points per Upsert call.
const UPSERT_BATCH: usize = 256;
/// Documents per stale-chunk Delete call (3 filter conditions each).
const DELETE_BATCH: usize = 64;
/// Responses from the embedding service can be large (Tokenize of a 1 MiB
/// document); the service's own request limits bound them.
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

/// Namespace of chunk ids (UUID v5 of `document_id`, NUL, chunk index).
const CHUNK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d6c_6d65_7368_4000_8000_6368_756e_6b73);

/// The stable id of chunk `index` of `document_id`.
pub fn chunk_id(document_id: &str, index: usize) -> String {
    uuid::Uuid::new_v5(
        &CHUNK_NAMESPACE,
        format!("{document_id}\u{0}{index}").as_bytes(),
    )
    .to_string()
}

fn req<T>(msg: T, timeout: Duration) -> Request<T> {
    let mut r = Request::new(msg);
    r.set_timeout(timeout);
    r
}

/// The embedding service's models, as Info reports them.
#[derive(Debug)]
struct Models {
    fetched: Instant,
    by_name: HashMap<String, emb::ModelInfo>,
    default: String,
    max_client_batch: usize,
}

/// A gateway collection: a vector collection plus its recorded model and
/// chunking.
#[derive(Clone, Debug)]
pub struct CollectionView {
    pub name: String,
    pub model: String,
    pub dimension: u32,
    pub distance: vec::Distance,
    pub chunking: ChunkingSettings,
    pub chunks_count: u64,
    pub status: vec::IndexStatus,
}

impl CollectionView {
    fn from_info(info: vec::CollectionInfo, defaults: ChunkingSettings) -> Result<Self> {
        let Some(model) = info.metadata.get(META_MODEL) else {
            return Err(GatewayError::NotAGatewayCollection { name: info.name });
        };
        let m = &info.metadata;
        let chunking = ChunkingSettings {
            unit: match m.get(META_UNIT).map(String::as_str) {
                Some("characters") => ChunkUnit::Characters,
                Some("tokens") => ChunkUnit::Tokens,
                _ => defaults.unit,
            },
            size: m
                .get(META_SIZE)
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.size),
            overlap: m
                .get(META_OVERLAP)
                .and_then(|v| v.parse().ok())
                .unwrap_or(defaults.overlap),
        };
        Ok(Self {
            model: model.clone(),
            dimension: info.dimension,
            distance: info.distance(),
            chunking,
            chunks_count: info.points_count,
            status: info.status(),
            name: info.name,
        })
    }

    pub fn to_pb(&self) -> gw::Collection {
        gw::Collection {
            name: self.name.clone(),
            model: self.model.clone(),
            dimension: self.dimension,
            distance: self.distance.into(),
            chunking: Some(chunking_to_pb(self.chunking)),
            chunks_count: self.chunks_count,
            status: self.status.into(),
        }
    }
}

pub fn chunking_to_pb(c: ChunkingSettings) -> gw::Chunking {
    gw::Chunking {
        unit: match c.unit {
            ChunkUnit::Tokens => gw::ChunkUnit::Tokens,
            ChunkUnit::Characters => gw::ChunkUnit::Characters,
        }
        .into(),
        size: c.size,
        overlap: c.overlap,
    }
}

/// `over` laid on `base`: its non-zero fields win. `field` names it in errors.
fn merge_chunking(
    field: &str,
    base: ChunkingSettings,
    over: Option<&gw::Chunking>,
) -> Result<ChunkingSettings> {
    let Some(o) = over else { return Ok(base) };
    let unit = match gw::ChunkUnit::try_from(o.unit) {
        Ok(gw::ChunkUnit::Unspecified) => base.unit,
        Ok(gw::ChunkUnit::Tokens) => ChunkUnit::Tokens,
        Ok(gw::ChunkUnit::Characters) => ChunkUnit::Characters,
        Err(_) => {
            return Err(GatewayError::invalid(
                format!("{field}.unit"),
                format!("{} is not TOKENS or CHARACTERS", o.unit),
            ));
        }
    };
    let c = ChunkingSettings {
        unit,
        size: if o.size == 0 { base.size } else { o.size },
        overlap: if o.size == 0 && o.overlap == 0 {
            base.overlap
        } else {
            o.overlap
        },
    };
    if c.overlap >= c.size {
        return Err(GatewayError::invalid(
            format!("{field}.overlap"),
            format!(
                "{} must be less than the chunk size ({})",
                c.overlap, c.size
            ),
        ));
    }
    Ok(c)
}

/// Rewrites a search filter over document metadata into one over chunk
/// payloads: `lang` → `metadata.lang`; `document_id` stays.
fn payload_filter(f: vec::Filter) -> vec::Filter {
    use vec::condition::Condition as C;
    let rewrite = |conds: Vec<vec::Condition>| {
        conds
            .into_iter()
            .map(|c| vec::Condition {
                condition: c.condition.map(|c| match c {
                    C::Field(mut f) => {
                        if f.key != P_DOCUMENT_ID {
                            f.key = format!("{P_METADATA}.{}", f.key);
                        }
                        C::Field(f)
                    }
                    C::Filter(inner) => C::Filter(payload_filter(inner)),
                    other => other,
                }),
            })
            .collect()
    };
    vec::Filter {
        must: rewrite(f.must),
        should: rewrite(f.should),
        must_not: rewrite(f.must_not),
    }
}

fn keyword(key: &str, value: &str) -> vec::Condition {
    vec::Condition {
        condition: Some(vec::condition::Condition::Field(vec::FieldCondition {
            key: key.into(),
            test: Some(vec::field_condition::Test::Keyword(value.into())),
        })),
    }
}

/// One admitted call: its concurrency slot and its place in `in_flight`.
#[derive(Debug)]
pub struct Admission {
    _permit: OwnedSemaphorePermit,
    gauge: prometheus::IntGauge,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The protocol-independent gateway.
pub struct Core {
    embedding: Arc<Pool>,
    vector: Arc<Pool>,
    settings: Settings,
    models: RwLock<Option<Arc<Models>>>,
    collections: RwLock<HashMap<String, (Instant, CollectionView)>>,
    admission: Arc<Semaphore>,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("embedding", &self.embedding)
            .field("vector", &self.vector)
            .finish_non_exhaustive()
    }
}

impl Core {
    pub fn new(settings: Settings, metrics: Metrics) -> Result<Self, String> {
        let d = &settings.downstream;
        // Discovered pools start empty and are filled by their watchers.
        let fixed = |list: &[String]| match d.discovery {
            crate::settings::Discovery::Static => list.to_vec(),
            crate::settings::Discovery::Kubernetes => Vec::new(),
        };
        let embedding = Pool::new("embedding", &fixed(&d.embedding), d, metrics.clone())?;
        let vector = Pool::new(
            "vector-search",
            &fixed(&d.vector_search),
            d,
            metrics.clone(),
        )?;
        Ok(Self {
            embedding,
            vector,
            admission: Arc::new(Semaphore::new(settings.limits.max_in_flight)),
            settings,
            models: RwLock::new(None),
            collections: RwLock::new(HashMap::new()),
            metrics,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn pools(&self) -> [&Arc<Pool>; 2] {
        [&self.embedding, &self.vector]
    }

    /// The deadline of a call whose caller allows `caller` (none: the
    /// configured default; longer: cut to it).
    pub fn deadline(&self, caller: Option<Duration>) -> Deadline {
        let max = self.settings.downstream.request_timeout();
        Deadline::after(caller.map_or(max, |c| c.min(max)))
    }

    /// A slot among `limits.max_in_flight`, or RESOURCE_EXHAUSTED at once.
    /// Counted in `in_flight` until dropped, including when the caller
    /// cancels and the call's future is dropped mid-way.
    pub fn admit(&self) -> Result<Admission> {
        let permit = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| GatewayError::Overloaded {
                limit: self.settings.limits.max_in_flight,
            })?;
        self.metrics.in_flight.inc();
        Ok(Admission {
            _permit: permit,
            gauge: self.metrics.in_flight.clone(),
        })
    }

    // ---- embedding service -------------------------------------------

    /// Forwards an Embed request unchanged.
    pub async fn embed(
        &self,
        r: emb::EmbedRequest,
        deadline: Deadline,
    ) -> Result<emb::EmbedResponse> {
        Ok(self
            .embedding
            .call(EMBED, deadline, true, |ch, t| {
                let m = r.clone();
                async move {
                    EmbeddingServiceClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .embed(req(m, t))
                        .await
                }
            })
            .await?)
    }

    /// Forwards a Similarity request unchanged.
    pub async fn similarity(
        &self,
        r: emb::SimilarityRequest,
        deadline: Deadline,
    ) -> Result<emb::SimilarityResponse> {
        Ok(self
            .embedding
            .call(SIMILARITY, deadline, true, |ch, t| {
                let m = r.clone();
                async move { EmbeddingServiceClient::new(ch).similarity(req(m, t)).await }
            })
            .await?)
    }

    async fn models(&self, deadline: Deadline, refresh: bool) -> Result<Arc<Models>> {
        if !refresh
            && let Some(m) = self.models.read().ok().and_then(|m| m.clone())
            && m.fetched.elapsed() < MODELS_TTL
        {
            return Ok(m);
        }
        let info = self
            .embedding
            .call(INFO, deadline, true, |ch, t| async move {
                EmbeddingServiceClient::new(ch)
                    .info(req(emb::InfoRequest {}, t))
                    .await
            })
            .await?;
        let default = info
            .models
            .iter()
            .find(|m| m.is_default)
            .or(info.models.first())
            .map(|m| m.name.clone())
            .ok_or_else(|| {
                GatewayError::Internal("the embedding service serves no model".into())
            })?;
        let m = Arc::new(Models {
            fetched: Instant::now(),
            by_name: info
                .models
                .into_iter()
                .map(|m| (m.name.clone(), m))
                .collect(),
            default,
            max_client_batch: info.max_client_batch.max(1) as usize,
        });
        if let Ok(mut slot) = self.models.write() {
            *slot = Some(Arc::clone(&m));
        }
        Ok(m)
    }

    /// The model named `name` (empty: the default), refreshing the list
    /// once when it is not known.
    async fn model(&self, name: &str, deadline: Deadline) -> Result<(Arc<Models>, emb::ModelInfo)> {
        for refresh in [false, true] {
            let models = self.models(deadline, refresh).await?;
            let key = if name.is_empty() {
                &models.default
            } else {
                name
            };
            if let Some(m) = models.by_name.get(key).cloned() {
                return Ok((models, m));
            }
            if refresh {
                let mut served: Vec<&str> = models.by_name.keys().map(String::as_str).collect();
                served.sort_unstable();
                return Err(GatewayError::ModelNotFound {
                    model: name.to_owned(),
                    served: served.join(", "),
                });
            }
        }
        unreachable!("the loop returns on its second pass")
    }

    async fn embed_texts(
        &self,
        model: &str,
        texts: Vec<String>,
        deadline: Deadline,
    ) -> Result<(Vec<Vec<f32>>, u64)> {
        let n = texts.len();
        let resp = self
            .embed(
                emb::EmbedRequest {
                    inputs: texts,
                    model: model.to_owned(),
                    ..Default::default()
                },
                deadline,
            )
            .await?;
        if resp.embeddings.len() != n {
            return Err(GatewayError::Internal(format!(
                "the embedding service returned {} vectors for {n} inputs",
                resp.embeddings.len()
            )));
        }
        let tokens = resp.usage.map_or(0, |u| u.prompt_tokens);
        Ok((
            resp.embeddings.into_iter().map(|e| e.values).collect(),
            tokens,
        ))
    }

    /// Byte ranges of each text's non-special tokens, and how many special
    /// tokens the model adds per input.
    async fn tokenize(
        &self,
        model: &str,
        texts: Vec<String>,
        deadline: Deadline,
    ) -> Result<(Vec<Vec<Range<usize>>>, usize)> {
        let resp = self
            .embedding
            .call(TOKENIZE, deadline, true, |ch, t| {
                let m = emb::TokenizeRequest {
                    inputs: texts.clone(),
                    model: model.to_owned(),
                    truncate: Some(false),
                    ..Default::default()
                };
                async move {
                    EmbeddingServiceClient::new(ch)
                        .max_decoding_message_size(MAX_RESPONSE_BYTES)
                        .tokenize(req(m, t))
                        .await
                }
            })
            .await?;
        let mut specials = 0;
        let ranges = resp
            .inputs
            .into_iter()
            .map(|input| {
                let (special, plain): (Vec<_>, Vec<_>) =
                    input.tokens.into_iter().partition(|t| t.special);
                specials = specials.max(special.len());
                plain
                    .into_iter()
                    .map(|t| t.start as usize..t.end as usize)
                    .collect()
            })
            .collect();
        Ok((ranges, specials))
    }

    // ---- collections -------------------------------------------------

    fn forget(&self, name: &str) {
        if let Ok(mut c) = self.collections.write() {
            c.remove(name);
        }
    }

    async fn fetch_collection(&self, name: &str, deadline: Deadline) -> Result<CollectionView> {
        let info = self
            .vector
            .call(V_GET_COLLECTION, deadline, true, |ch, t| {
                let m = vec::GetCollectionRequest {
                    name: name.to_owned(),
                };
                async move { VectorSearchClient::new(ch).get_collection(req(m, t)).await }
            })
            .await?;
        let view = CollectionView::from_info(info, self.settings.chunking)?;
        if let Ok(mut c) = self.collections.write() {
            c.insert(name.to_owned(), (Instant::now(), view.clone()));
        }
        Ok(view)
    }

    /// The collection's model and chunking, from a short-lived cache.
    async fn collection(&self, name: &str, deadline: Deadline) -> Result<CollectionView> {
        if name.is_empty() {
            return Err(GatewayError::invalid(
                "collection",
                "a collection name is required",
            ));
        }
        if let Some((at, v)) = self
            .collections
            .read()
            .ok()
            .and_then(|c| c.get(name).cloned())
            && at.elapsed() < COLLECTION_TTL
        {
            return Ok(v);
        }
        self.fetch_collection(name, deadline).await
    }

    /// Largest token chunk the model reads whole.
    fn max_chunk_tokens(model: &emb::ModelInfo, specials: usize) -> u32 {
        model.max_input_tokens.saturating_sub(specials as u32)
    }

    fn check_chunk_size(
        field: &str,
        c: ChunkingSettings,
        model: &emb::ModelInfo,
        specials: usize,
    ) -> Result<()> {
        let max = Self::max_chunk_tokens(model, specials);
        if c.unit == ChunkUnit::Tokens && c.size > max {
            return Err(GatewayError::invalid(
                format!("{field}.size"),
                format!(
                    "{} tokens is more than model {:?} reads ({max} besides its special tokens)",
                    c.size, model.name
                ),
            ));
        }
        Ok(())
    }

    pub async fn create_collection(
        &self,
        r: gw::CreateCollectionRequest,
        deadline: Deadline,
    ) -> Result<gw::Collection> {
        let (_, model) = self.model(&r.model, deadline).await?;
        let chunking = merge_chunking("chunking", self.settings.chunking, r.chunking.as_ref())?;
        if chunking.unit == ChunkUnit::Tokens {
            let (_, specials) = self
                .tokenize(&model.name, vec![String::new()], deadline)
                .await?;
            Self::check_chunk_size("chunking", chunking, &model, specials)?;
        }
        let distance = match vec::Distance::try_from(r.distance) {
            Ok(vec::Distance::Unspecified) => vec::Distance::Cosine,
            Ok(d) => d,
            Err(_) => {
                return Err(GatewayError::invalid(
                    "distance",
                    format!("{} is not COSINE, DOT or EUCLID", r.distance),
                ));
            }
        };
        let metadata: HashMap<String, String> = [
            (META_MODEL, model.name.clone()),
            (META_UNIT, chunking.unit.as_str().to_owned()),
            (META_SIZE, chunking.size.to_string()),
            (META_OVERLAP, chunking.overlap.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let create = vec::CreateCollectionRequest {
            name: r.name.clone(),
            dimension: model.dimension,
            distance: distance.into(),
            hnsw: None,
            metadata,
        };
        // Not retried: a create that reached the service and lost its
        // answer would come back ALREADY_EXISTS.
        self.vector
            .call(V_CREATE, deadline, false, |ch, t| {
                let m = create.clone();
                async move {
                    VectorSearchClient::new(ch)
                        .create_collection(req(m, t))
                        .await
                }
            })
            .await?;
        tracing::info!(collection = %r.name, model = %model.name, ?chunking, "collection created");
        Ok(self.fetch_collection(&r.name, deadline).await?.to_pb())
    }

    pub async fn delete_collection(&self, name: &str, deadline: Deadline) -> Result<()> {
        self.forget(name);
        self.vector
            .call(V_DELETE_COLLECTION, deadline, true, |ch, t| {
                let m = vec::DeleteCollectionRequest {
                    name: name.to_owned(),
                };
                async move {
                    VectorSearchClient::new(ch)
                        .delete_collection(req(m, t))
                        .await
                }
            })
            .await?;
        self.forget(name);
        Ok(())
    }

    pub async fn get_collection(&self, name: &str, deadline: Deadline) -> Result<gw::Collection> {
        if name.is_empty() {
            return Err(GatewayError::invalid(
                "name",
                "a collection name is required",
            ));
        }
        Ok(self.fetch_collection(name, deadline).await?.to_pb())
    }

    pub async fn list_collections(&self, deadline: Deadline) -> Result<Vec<gw::Collection>> {
        let names = self
            .vector
            .call(V_LIST, deadline, true, |ch, t| async move {
                VectorSearchClient::new(ch)
                    .list_collections(req(vec::ListCollectionsRequest {}, t))
                    .await
            })
            .await?
            .names;
        let views =
            futures::future::join_all(names.iter().map(|n| self.fetch_collection(n, deadline)))
                .await;
        let mut out = Vec::new();
        for v in views {
            match v {
                Ok(v) => out.push(v.to_pb()),
                // Not ours, or deleted since the listing.
                Err(GatewayError::NotAGatewayCollection { .. }) => {}
                Err(e) if e.code() == tonic::Code::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    // ---- documents -----------------------------------------------------

    fn check_documents(&self, docs: &[gw::Document]) -> Result<()> {
        let l = &self.settings.limits;
        if docs.is_empty() {
            return Err(GatewayError::invalid(
                "documents",
                "at least one document is required",
            ));
        }
        if docs.len() > l.max_documents {
            return Err(GatewayError::invalid(
                "documents",
                format!(
                    "{} documents; the limit is {} (limits.max_documents)",
                    docs.len(),
                    l.max_documents
                ),
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in docs.iter().enumerate() {
            if d.text.trim().is_empty() {
                return Err(GatewayError::invalid(
                    format!("documents[{i}].text"),
                    "is empty",
                ));
            }
            if d.text.len() > l.max_document_bytes {
                return Err(GatewayError::invalid(
                    format!("documents[{i}].text"),
                    format!(
                        "{} bytes; the limit is {} (limits.max_document_bytes)",
                        d.text.len(),
                        l.max_document_bytes
                    ),
                ));
            }
            if d.id.len() > MAX_DOCUMENT_ID_BYTES {
                return Err(GatewayError::invalid(
                    format!("documents[{i}].id"),
                    format!("{} bytes; the limit is {MAX_DOCUMENT_ID_BYTES}", d.id.len()),
                ));
            }
            if !d.id.is_empty() && !seen.insert(d.id.as_str()) {
                return Err(GatewayError::invalid(
                    format!("documents[{i}].id"),
                    format!("{:?} appears twice in the request", d.id),
                ));
            }
        }
        Ok(())
    }

    pub async fn ingest(
        &self,
        r: gw::IngestRequest,
        deadline: Deadline,
    ) -> Result<gw::IngestResponse> {
        self.check_documents(&r.documents)?;
        let coll = self.collection(&r.collection, deadline).await?;
        let chunking = merge_chunking("chunking", coll.chunking, r.chunking.as_ref())?;
        let (models, model) = self.model(&coll.model, deadline).await?;
        let batch = models.max_client_batch;

        // Cut every document into byte ranges.
        let ranges: Vec<Vec<Range<usize>>> = match chunking.unit {
            ChunkUnit::Characters => r
                .documents
                .iter()
                .map(|d| {
                    chunk::by_characters(&d.text, chunking.size as usize, chunking.overlap as usize)
                })
                .collect(),
            ChunkUnit::Tokens => {
                let mut out = Vec::with_capacity(r.documents.len());
                for group in r.documents.chunks(batch) {
                    let texts = group.iter().map(|d| d.text.clone()).collect();
                    let (toks, specials) = self.tokenize(&model.name, texts, deadline).await?;
                    Self::check_chunk_size("chunking", chunking, &model, specials)?;
                    out.extend(toks.iter().map(|t| {
                        chunk::by_tokens(t, chunking.size as usize, chunking.overlap as usize)
                    }));
                }
                out
            }
        };
        let total: usize = ranges.iter().map(Vec::len).sum();
        if total > self.settings.limits.max_chunks {
            return Err(GatewayError::invalid(
                "documents",
                format!(
                    "would make {total} chunks; the limit is {} (limits.max_chunks): send fewer or larger chunks",
                    self.settings.limits.max_chunks
                ),
            ));
        }

        // Document ids, chunk texts and payloads.
        let ids: Vec<String> = r
            .documents
            .iter()
            .map(|d| {
                if d.id.is_empty() {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    d.id.clone()
                }
            })
            .collect();
        let mut texts = Vec::with_capacity(total);
        let mut payloads = Vec::with_capacity(total);
        let mut out_docs = Vec::with_capacity(r.documents.len());
        for (i, (doc, rs)) in r.documents.iter().zip(&ranges).enumerate() {
            let metadata = match doc.metadata.clone() {
                Some(s) => {
                    json::struct_to_json(&format!("documents[{i}].metadata"), s).map_err(|e| {
                        GatewayError::invalid(e.field, format!("{} is not a JSON number", e.value))
                    })?
                }
                None => Map::new(),
            };
            let mut chunk_ids = Vec::with_capacity(rs.len());
            for (j, range) in rs.iter().enumerate() {
                let text = doc.text.get(range.clone()).ok_or_else(|| {
                    GatewayError::Internal(format!(
                        "the tokenizer returned offsets {range:?} that do not fall on characters of documents[{i}]"
                    ))
                })?;
                let mut p = Map::new();
                p.insert(P_DOCUMENT_ID.into(), Json::String(ids[i].clone()));
                p.insert(P_CHUNK_INDEX.into(), Json::from(j as u64));
                p.insert(P_TEXT.into(), Json::String(text.to_owned()));
                p.insert(P_METADATA.into(), Json::Object(metadata.clone()));
                texts.push(text.to_owned());
                payloads.push(p);
                chunk_ids.push(chunk_id(&ids[i], j));
            }
            out_docs.push(gw::IngestedDocument {
                id: ids[i].clone(),
                chunk_ids,
            });
        }

        // Embed, several batches in flight.
        let batches: Vec<Vec<String>> = texts.chunks(batch).map(<[String]>::to_vec).collect();
        let embedded: Vec<(Vec<Vec<f32>>, u64)> = futures::stream::iter(batches)
            .map(|b| self.embed_texts(&model.name, b, deadline))
            .buffered(self.settings.limits.ingest_concurrency)
            .try_collect()
            .await?;
        let prompt_tokens = embedded.iter().map(|(_, t)| t).sum();
        let vectors = embedded.into_iter().flat_map(|(v, _)| v);

        // Store: deterministic ids make the upsert safe to retry.
        let points: Vec<vec::Point> = out_docs
            .iter()
            .flat_map(|d| d.chunk_ids.iter())
            .zip(vectors)
            .zip(payloads)
            .map(|((id, vector), payload)| vec::Point {
                id: Some(vec::PointId {
                    kind: Some(vec::point_id::Kind::Uuid(id.clone())),
                }),
                vector,
                payload: Some(json::json_to_struct(payload)),
            })
            .collect();
        for group in points.chunks(UPSERT_BATCH) {
            let m = vec::UpsertRequest {
                collection: coll.name.clone(),
                points: group.to_vec(),
            };
            self.vector
                .call(V_UPSERT, deadline, true, |ch, t| {
                    let m = m.clone();
                    async move { VectorSearchClient::new(ch).upsert(req(m, t)).await }
                })
                .await
                .inspect_err(|_| self.forget(&coll.name))?;
        }

        // A re-ingested document may have had more chunks before: delete
        // those past its new end (after the upsert, so it is never absent).
        for group in out_docs.chunks(DELETE_BATCH) {
            let should = group
                .iter()
                .map(|d| vec::Condition {
                    condition: Some(vec::condition::Condition::Filter(vec::Filter {
                        must: vec![
                            keyword(P_DOCUMENT_ID, &d.id),
                            vec::Condition {
                                condition: Some(vec::condition::Condition::Field(
                                    vec::FieldCondition {
                                        key: P_CHUNK_INDEX.into(),
                                        test: Some(vec::field_condition::Test::Range(vec::Range {
                                            gte: Some(d.chunk_ids.len() as f64),
                                            ..Default::default()
                                        })),
                                    },
                                )),
                            },
                        ],
                        ..Default::default()
                    })),
                })
                .collect();
            let m = vec::DeleteRequest {
                collection: coll.name.clone(),
                selector: Some(vec::delete_request::Selector::Filter(vec::Filter {
                    should,
                    ..Default::default()
                })),
            };
            self.vector
                .call(V_DELETE, deadline, true, |ch, t| {
                    let m = m.clone();
                    async move { VectorSearchClient::new(ch).delete(req(m, t)).await }
                })
                .await?;
        }
        self.metrics
            .chunks_ingested
            .with_label_values(&[&coll.name])
            .inc_by(total as u64);
        Ok(gw::IngestResponse {
            documents: out_docs,
            chunks: total as u64,
            prompt_tokens,
        })
    }

    // ---- retrieval -----------------------------------------------------

    fn check_query(&self, q: &str) -> Result<()> {
        if q.trim().is_empty() {
            return Err(GatewayError::invalid("query", "must not be empty"));
        }
        let max = self.settings.limits.max_query_bytes;
        if q.len() > max {
            return Err(GatewayError::invalid(
                "query",
                format!(
                    "{} bytes; the limit is {max} (limits.max_query_bytes)",
                    q.len()
                ),
            ));
        }
        Ok(())
    }

    fn check_top_k(&self, field: &str, k: u32, default: u32) -> Result<u32> {
        let max = self.settings.limits.max_top_k;
        match k {
            0 => Ok(default.min(max)),
            k if k <= max => Ok(k),
            k => Err(GatewayError::invalid(
                field,
                format!("{k} is above the limit of {max} (limits.max_top_k)"),
            )),
        }
    }

    pub async fn search(
        &self,
        r: gw::SearchRequest,
        deadline: Deadline,
    ) -> Result<gw::SearchResponse> {
        self.check_query(&r.query)?;
        let limit = self.check_top_k("limit", r.limit, 10)?;
        let coll = self.collection(&r.collection, deadline).await?;
        let t0 = Instant::now();
        let (mut vectors, _) = self
            .embed_texts(&coll.model, vec![r.query], deadline)
            .await?;
        let embed_us = t0.elapsed().as_micros() as u64;
        let vector = vectors.pop().unwrap_or_default();
        let t1 = Instant::now();
        let m = vec::SearchRequest {
            collection: coll.name.clone(),
            vector,
            limit,
            filter: r.filter.map(payload_filter),
            score_threshold: r.score_threshold,
            with_payload: true,
            ..Default::default()
        };
        let resp = self
            .vector
            .call(V_SEARCH, deadline, true, |ch, t| {
                let m = m.clone();
                async move { VectorSearchClient::new(ch).search(req(m, t)).await }
            })
            .await
            .inspect_err(|_| self.forget(&coll.name))?;
        let search_us = t1.elapsed().as_micros() as u64;
        let hits = resp.hits.into_iter().map(hit).collect();
        Ok(gw::SearchResponse {
            hits,
            embed_us,
            search_us,
        })
    }

    pub async fn rag_query(
        &self,
        r: gw::RagQueryRequest,
        deadline: Deadline,
    ) -> Result<gw::RagQueryResponse> {
        let top_k = self.check_top_k("top_k", r.top_k, self.settings.rag.default_top_k)?;
        let max_chars = match r.max_context_chars {
            0 => self.settings.rag.max_context_chars,
            n => n,
        } as usize;
        let found = self
            .search(
                gw::SearchRequest {
                    collection: r.collection,
                    query: r.query,
                    limit: top_k,
                    filter: r.filter,
                    score_threshold: r.score_threshold,
                },
                deadline,
            )
            .await?;
        Ok(assemble(found.hits, max_chars))
    }

    /// Whether each replica of each downstream service answers its health
    /// check with SERVING: `(service, replica, status)`.
    pub async fn readiness(&self) -> Vec<(&'static str, String, String)> {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let checks = self.pools().into_iter().flat_map(|p| {
            p.channels().into_iter().map(move |(addr, ch)| async move {
                let mut rq = Request::new(HealthCheckRequest::default());
                rq.set_timeout(Duration::from_secs(1));
                let status = match tokio::time::timeout(
                    Duration::from_secs(1),
                    HealthClient::new(ch).check(rq),
                )
                .await
                {
                    Ok(Ok(r)) => r.into_inner().status().as_str_name().to_owned(),
                    Ok(Err(s)) => format!("{:?}: {}", s.code(), s.message()),
                    Err(_) => "no answer within 1 s".to_owned(),
                };
                (p.service(), addr, status)
            })
        });
        futures::future::join_all(checks).await
    }
}

/// A vector hit as a gateway hit.
fn hit(h: vec::ScoredPoint) -> gw::Hit {
    let chunk_id = match h.id.and_then(|i| i.kind) {
        Some(vec::point_id::Kind::Uuid(u)) => u,
        Some(vec::point_id::Kind::Num(n)) => n.to_string(),
        None => String::new(),
    };
    let mut p = h.payload.unwrap_or_default().fields;
    let mut take_str = |k: &str| match p.remove(k).and_then(|v| v.kind) {
        Some(prost_types::value::Kind::StringValue(s)) => s,
        _ => String::new(),
    };
    let document_id = take_str(P_DOCUMENT_ID);
    let text = take_str(P_TEXT);
    let chunk_index = match p.remove(P_CHUNK_INDEX).and_then(|v| v.kind) {
        Some(prost_types::value::Kind::NumberValue(n)) => n as u32,
        _ => 0,
    };
    let metadata = match p.remove(P_METADATA).and_then(|v| v.kind) {
        Some(prost_types::value::Kind::StructValue(s)) => Some(s),
        _ => None,
    };
    gw::Hit {
        chunk_id,
        score: h.score,
        document_id,
        chunk_index,
        text,
        metadata,
    }
}

/// The RAG answer: chunks best first into a context of at most
/// `max_chars` characters (a chunk that does not fit whole is left out,
/// later smaller ones may still fit), and their documents.
pub fn assemble(hits: Vec<gw::Hit>, max_chars: usize) -> gw::RagQueryResponse {
    const SEP: &str = "\n\n";
    let mut context = String::new();
    let mut used_chars = 0;
    let mut used: Vec<usize> = Vec::new();
    for (i, h) in hits.iter().enumerate() {
        let block = format!("[{}] {}", used.len() + 1, h.text.trim());
        let extra = block.chars().count() + if used.is_empty() { 0 } else { SEP.len() };
        if used_chars + extra > max_chars {
            continue;
        }
        if !used.is_empty() {
            context.push_str(SEP);
        }
        context.push_str(&block);
        used_chars += extra;
        used.push(i);
    }
    let truncated = used.len() < hits.len();
    let mut sources: Vec<gw::Source> = Vec::new();
    for &i in &used {
        let h = &hits[i];
        match sources.iter_mut().find(|s| s.document_id == h.document_id) {
            Some(s) => s.chunk_indexes.push(h.chunk_index),
            None => sources.push(gw::Source {
                document_id: h.document_id.clone(),
                score: h.score,
                metadata: h.metadata.clone(),
                chunk_indexes: vec![h.chunk_index],
            }),
        }
    }
    // Context order first, then the ones left out, so `chunks[..used]`
    // is exactly the context.
    let mut order = used.clone();
    order.extend((0..hits.len()).filter(|i| !used.contains(i)));
    let mut slots: Vec<Option<gw::Hit>> = hits.into_iter().map(Some).collect();
    let chunks = order.into_iter().filter_map(|i| slots[i].take()).collect();
    gw::RagQueryResponse {
        context,
        chunks,
        used_chunks: used.len() as u32,
        sources,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(doc: &str, idx: u32, score: f32, text: &str) -> gw::Hit {
        gw::Hit {
            chunk_id: chunk_id(doc, idx as usize),
            score,
            document_id: doc.into(),
            chunk_index: idx,
            text: text.into(),
            metadata: None,
        }
    }

    #[test]
    fn chunk_ids_are_stable_and_distinct() {
        assert_eq!(chunk_id("a", 0), chunk_id("a", 0));
        assert_ne!(chunk_id("a", 0), chunk_id("a", 1));
        assert_ne!(chunk_id("a1", 0), chunk_id("a", 10));
    }

    #[test]
    fn context_is_bounded_and_numbered_and_sources_grouped() {
        let hits = vec![
            h("d1", 0, 0.9, "alpha beta"),
            h("d2", 3, 0.8, &"x".repeat(100)),
            h("d1", 1, 0.7, "gamma"),
        ];
        let r = assemble(hits, 40);
        assert_eq!(r.context, "[1] alpha beta\n\n[2] gamma");
        assert!(r.context.chars().count() <= 40);
        assert!(r.truncated);
        assert_eq!(r.used_chunks, 2);
        assert_eq!(r.chunks.len(), 3);
        assert_eq!(r.chunks[2].document_id, "d2", "left-out chunks come last");
        assert_eq!(r.sources.len(), 1);
        assert_eq!(r.sources[0].document_id, "d1");
        assert_eq!(r.sources[0].chunk_indexes, [0, 1]);
        let all = assemble(vec![h("d1", 0, 0.9, "a")], 1000);
        assert!(!all.truncated);
    }

    #[test]
    fn chunking_overrides_merge_and_are_checked() {
        let base = ChunkingSettings::default();
        assert_eq!(merge_chunking("c", base, None).expect("none"), base);
        let o = gw::Chunking {
            unit: gw::ChunkUnit::Characters.into(),
            size: 500,
            overlap: 50,
        };
        let m = merge_chunking("c", base, Some(&o)).expect("valid");
        assert_eq!(
            (m.unit, m.size, m.overlap),
            (ChunkUnit::Characters, 500, 50)
        );
        let bad = gw::Chunking {
            size: 10,
            overlap: 10,
            ..Default::default()
        };
        let e = merge_chunking("chunking", base, Some(&bad)).expect_err("overlap");
        assert!(e.to_string().contains("chunking.overlap"), "{e}");
    }

    #[test]
    fn filters_are_rewritten_onto_metadata() {
        let f = vec::Filter {
            must: vec![keyword("lang", "en"), keyword(P_DOCUMENT_ID, "d1")],
            must_not: vec![vec::Condition {
                condition: Some(vec::condition::Condition::Filter(vec::Filter {
                    must: vec![keyword("a.b", "x")],
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        let g = payload_filter(f);
        let key = |c: &vec::Condition| match &c.condition {
            Some(vec::condition::Condition::Field(f)) => f.key.clone(),
            _ => String::new(),
        };
        assert_eq!(key(&g.must[0]), "metadata.lang");
        assert_eq!(key(&g.must[1]), "document_id");
        let Some(vec::condition::Condition::Filter(inner)) = &g.must_not[0].condition else {
            panic!("nested")
        };
        assert_eq!(key(&inner.must[0]), "metadata.a.b");
    }
}
