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
//!
//! One `impl Core` per capability: `embeddings` (the embedding service),
//! `collections`, `ingest`, `search` (search and RAG context); this module
//! holds the state they share, the helpers, and readiness.

use std::{
    collections::HashMap,
    ops::Range,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use futures::{StreamExt as _, TryStreamExt as _};
use mlmesh_proto::{embedding::v1 as emb, gateway::v1 as gw, json, vector::v1 as vec};
use serde_json::{Map, Value as Json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::Request;

use crate::{
    chunk,
    downstream::{Deadline, Pool, rpc},
    error::GatewayError,
    metrics::Metrics,
    settings::{ChunkUnit, ChunkingSettings, Endpoint, Settings},
};

mod aggregate;
pub mod audit;
mod collections;
mod doc_locks;
mod embeddings;
mod inference;
mod ingest;
pub mod mesh;
mod models;
mod pipelines;
pub mod registry;
mod search;
mod serving;
pub mod shadow;

pub use collections::{CollectionView, chunking_to_pb};
pub use inference::{Forwarding, InferenceMethod, RawStream};
pub use models::{ModelKind, ServedModel};
pub use pipelines::{PipelineRun, StepReport};
pub use search::{assemble, found_by_json, search_mode};

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

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
/// The ingest that wrote a chunk (see `ingest.rs`).
const P_REVISION: &str = "revision";

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

/// Namespace of chunk ids (UUID v5 of `document_id`, NUL, revision, NUL,
/// chunk index).
const CHUNK_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6d6c_6d65_7368_4000_8000_6368_756e_6b73);

/// The id of chunk `index` of `document_id` as ingest `revision` writes
/// it: stable for one ingest (its upserts can be retried), distinct between
/// ingests (one never overwrites another's chunks).
pub fn chunk_id(document_id: &str, revision: u64, index: usize) -> String {
    uuid::Uuid::new_v5(
        &CHUNK_NAMESPACE,
        format!("{document_id}\u{0}{revision}\u{0}{index}").as_bytes(),
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
    inference: Arc<Pool>,
    registry: Arc<Pool>,
    settings: Settings,
    models: RwLock<Option<Arc<Models>>>,
    collections: RwLock<HashMap<String, (Instant, CollectionView)>>,
    admission: Arc<Semaphore>,
    /// One ingest at a time per document (see `doc_locks`).
    documents: doc_locks::DocumentLocks,
    /// The inference service's admin token, sent with forwarded model
    /// loads and unloads (`downstream.admin_token_file`).
    inference_admin: Option<mlmesh_runtime::admin::AdminToken>,
    /// The registry's token, sent with forwarded alias moves
    /// (`downstream.registry_token_file`).
    registry_token: Option<mlmesh_runtime::admin::AdminToken>,
    /// Changes made through this gateway, newest last (see `audit`).
    pub audit: audit::Audit,
    /// Authentication and limits, when on.
    pub auth: Option<Arc<crate::auth::Auth>>,
    pub metrics: Metrics,
    /// Live inference calls mirrored to shadow models (`[shadow]`).
    pub shadows: Arc<shadow::Shadows>,
    /// The gateway's own introspection figures (see `mesh`).
    own_status: mlmesh_runtime::introspection::Status,
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
    pub fn new(
        settings: Settings,
        metrics: Metrics,
        auth: Option<Arc<crate::auth::Auth>>,
    ) -> Result<Self, String> {
        let d = &settings.downstream;
        // Discovered pools start empty and are filled by their watchers.
        let fixed = |list: &[Endpoint]| match d.discovery {
            crate::settings::Discovery::Static => {
                list.iter().map(|e| e.as_str().to_owned()).collect()
            }
            crate::settings::Discovery::Kubernetes => Vec::new(),
        };
        let tls = mlmesh_runtime::tls::ClientTls::from_settings(&d.tls, "downstream.tls")
            .map_err(|e| e.to_string())?;
        let pool = |name, list: &[Endpoint]| {
            Pool::new(name, &fixed(list), d, tls.clone(), metrics.clone())
        };
        let embedding = pool("embedding", &d.embedding)?;
        let vector = pool("vector-search", &d.vector_search)?;
        let inference = pool("inference", &d.inference)?;
        let registry = pool("registry", &d.registry)?;
        let registry_token = mlmesh_runtime::admin::AdminToken::from_setting(
            &d.registry_token_file,
            "downstream.registry_token_file",
        )
        .map_err(|e| e.to_string())?;
        let inference_admin = mlmesh_runtime::admin::AdminToken::from_setting(
            &d.admin_token_file,
            "downstream.admin_token_file",
        )
        .map_err(|e| e.to_string())?;
        let shadows = Arc::new(shadow::Shadows::new(
            &settings.shadow,
            Arc::clone(&inference),
            metrics.clone(),
        ));
        Ok(Self {
            inference_admin,
            embedding,
            vector,
            inference,
            registry,
            registry_token,
            audit: audit::Audit::default(),
            shadows,
            admission: Arc::new(Semaphore::new(settings.limits.max_in_flight)),
            settings,
            models: RwLock::new(None),
            collections: RwLock::new(HashMap::new()),
            documents: doc_locks::DocumentLocks::default(),
            auth,
            own_status: mlmesh_runtime::introspection::Status::new(
                metrics.registry.clone(),
                vec![
                    "mlmesh.gateway.v1.Gateway".into(),
                    "inference.GRPCInferenceService".into(),
                ],
                Arc::new(std::sync::atomic::AtomicBool::new(true)),
            ),
            metrics,
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The pools of the services this gateway is configured to call,
    /// with the settings key naming each one's replicas.
    pub fn pools(&self) -> Vec<(&Arc<Pool>, &[Endpoint])> {
        let d = &self.settings.downstream;
        let mut v = vec![
            (&self.embedding, d.embedding.as_slice()),
            (&self.vector, d.vector_search.as_slice()),
        ];
        if !d.inference.is_empty() {
            v.push((&self.inference, d.inference.as_slice()));
        }
        if !d.registry.is_empty() {
            v.push((&self.registry, d.registry.as_slice()));
        }
        v
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

    /// Whether each replica of each downstream service answers its health
    /// check with SERVING: `(service, replica, status)`.
    pub async fn readiness(&self) -> Vec<(&'static str, String, String)> {
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let checks = self.pools().into_iter().flat_map(|(p, _)| {
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

#[cfg(test)]
mod tests {
    use super::{
        collections::merge_chunking,
        search::{keyword, payload_filter},
        *,
    };

    fn h(doc: &str, idx: u32, score: f32, text: &str) -> gw::Hit {
        gw::Hit {
            chunk_id: chunk_id(doc, 1, idx as usize),
            score,
            document_id: doc.into(),
            chunk_index: idx,
            text: text.into(),
            metadata: None,
            ..Default::default()
        }
    }

    #[test]
    fn chunk_ids_are_stable_and_distinct() {
        assert_eq!(chunk_id("a", 7, 0), chunk_id("a", 7, 0));
        assert_ne!(chunk_id("a", 7, 0), chunk_id("a", 7, 1));
        assert_ne!(chunk_id("a1", 7, 0), chunk_id("a", 7, 10));
        assert_ne!(chunk_id("a", 7, 0), chunk_id("a", 8, 0));
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
