//! Gateway collections: created, read, listed and deleted as vector
//! collections whose metadata records the model and chunking (cached for
//! `COLLECTION_TTL`).

use super::*;

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
    pub text_index: vec::TextIndex,
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
            text_index: info.text_index(),
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
            text_index: self.text_index.into(),
        }
    }
}

/// Refuses an empty collection name, naming `field`.
fn required_name(field: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(GatewayError::invalid(
            field,
            "a collection name is required",
        ));
    }
    Ok(())
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
pub(super) fn merge_chunking(
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

impl Core {
    pub(super) fn forget(&self, name: &str) {
        if let Ok(mut c) = self.collections.write() {
            c.remove(name);
        }
    }

    pub(super) async fn fetch_collection(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<CollectionView> {
        let info = self
            .vector
            .unary(
                &rpc::GET_COLLECTION,
                deadline,
                vec::GetCollectionRequest {
                    name: name.to_owned(),
                },
            )
            .await?;
        let view = CollectionView::from_info(info, self.settings.chunking)?;
        if let Ok(mut c) = self.collections.write() {
            c.insert(name.to_owned(), (Instant::now(), view.clone()));
        }
        Ok(view)
    }

    /// The collection's model and chunking, from a short-lived cache.
    pub(super) async fn collection(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<CollectionView> {
        required_name("collection", name)?;
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
    pub(super) fn max_chunk_tokens(model: &emb::ModelInfo, specials: usize) -> u32 {
        model.max_input_tokens.saturating_sub(specials as u32)
    }

    pub(super) fn check_chunk_size(
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
        let (name, model) = (r.name.clone(), r.model.clone());
        let out = self.create_collection_unaudited(r, deadline).await;
        self.audit.outcome(
            "collection.create",
            name,
            if model.is_empty() {
                "the default model".to_owned()
            } else {
                format!("model {model}")
            },
            &out,
        );
        out
    }

    async fn create_collection_unaudited(
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
            // Checked by the vector-search service (INVALID_ARGUMENT naming
            // `text_index`).
            text_index: r.text_index,
            ..Default::default()
        };
        // Not retried (see rpc::CREATE_COLLECTION).
        self.vector
            .unary(&rpc::CREATE_COLLECTION, deadline, create)
            .await?;
        tracing::info!(collection = %r.name, model = %model.name, ?chunking, "collection created");
        Ok(self.fetch_collection(&r.name, deadline).await?.to_pb())
    }

    pub async fn delete_collection(&self, name: &str, deadline: Deadline) -> Result<()> {
        self.forget(name);
        let out = self
            .vector
            .unary(
                &rpc::DELETE_COLLECTION,
                deadline,
                vec::DeleteCollectionRequest {
                    name: name.to_owned(),
                },
            )
            .await;
        self.forget(name);
        self.audit.outcome("collection.delete", name, "", &out);
        out?;
        Ok(())
    }

    /// See the gateway proto's AddTextIndex.
    pub async fn add_text_index(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<gw::AddTextIndexResponse> {
        let out = self.add_text_index_unaudited(name, deadline).await;
        let detail = match &out {
            Ok(r) => format!("{} chunks indexed", r.chunks_indexed),
            Err(_) => String::new(),
        };
        self.audit
            .outcome("collection.text_index", name, detail, &out);
        out
    }

    async fn add_text_index_unaudited(
        &self,
        name: &str,
        deadline: Deadline,
    ) -> Result<gw::AddTextIndexResponse> {
        required_name("name", name)?;
        // Only collections the gateway made: their chunks' text is stored
        // under the payload key it fills from.
        self.fetch_collection(name, deadline).await?;
        let filled = self
            .vector
            .unary(
                &rpc::ADD_TEXT_INDEX,
                deadline,
                vec::AddTextIndexRequest {
                    collection: name.to_owned(),
                    text_index: vec::TextIndex::Bm25.into(),
                    text_from_payload: P_TEXT.to_owned(),
                },
            )
            .await?;
        tracing::info!(collection = %name, chunks = filled.points_indexed, "text index added");
        Ok(gw::AddTextIndexResponse {
            collection: Some(self.fetch_collection(name, deadline).await?.to_pb()),
            chunks_indexed: filled.points_indexed,
            chunks_without_text: filled.points_without_text,
        })
    }

    pub async fn get_collection(&self, name: &str, deadline: Deadline) -> Result<gw::Collection> {
        required_name("name", name)?;
        Ok(self.fetch_collection(name, deadline).await?.to_pb())
    }

    pub async fn list_collections(&self, deadline: Deadline) -> Result<Vec<gw::Collection>> {
        let names = self
            .vector
            .unary(
                &rpc::LIST_COLLECTIONS,
                deadline,
                vec::ListCollectionsRequest {},
            )
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
}
