//! A text index added to an open collection in place, and its sparse
//! vectors filled from the points' payload text.
//!
//! Order of an add: the engine gains the sparse vector and is flushed, then
//! `collection.json` records the new index. A crash between the two leaves
//! an engine with a sparse vector that `collection.json` does not name; the
//! next open adopts it ([`adopt_text_index`]), so the add is never half
//! done.

use super::*;

/// Points read and rewritten per step of a fill. The log lock is held for
/// one step, so a client's write waits for at most one page.
const FILL_PAGE: usize = 256;

impl Collection {
    /// See [`Backend::add_text_index`].
    pub(super) fn add_text_index(&self, index: TextIndex) -> Result<()> {
        let _m = self
            .maintenance
            .lock()
            .map_err(|_| storage("maintenance lock poisoned"))?;
        let mut log = self.log.lock().map_err(|_| storage("log lock poisoned"))?;
        let mut config = self.config();
        match config.text_index {
            has if has == index => return Ok(()),
            TextIndex::None => {}
            has => {
                return Err(VectorError::TextIndexExists {
                    collection: self.name.clone(),
                    has,
                    asked: index,
                });
            }
        }
        let shard = self.shard();
        create_sparse_vector(&shard, index)?;
        // The engine does not read its own log back at load: flush now (a
        // checkpoint, as both locks are held), so the shard on disk has the
        // new vector before collection.json names it.
        std::panic::catch_unwind(AssertUnwindSafe(|| shard.flush()))
            .map_err(|_| storage("engine flush failed"))?;
        log.reset().map_err(storage)?;
        config.text_index = index;
        let folder = shard
            .path()
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .ok_or_else(|| storage("shard folder without a name"))?;
        self.write_meta(config, folder)?;
        match self.config.write() {
            Ok(mut c) => *c = config,
            Err(p) => *p.into_inner() = config,
        }
        Ok(())
    }

    /// See [`Backend::fill_sparse`]. Each page is read and rewritten under
    /// the log lock, so no write can fall between the read and the rewrite;
    /// rewrites are logged upserts like any other (crash-safe, replayed).
    pub(super) fn fill_sparse(&self, key: &str, sparse_of: &SparseOf) -> Result<(Filled, u64)> {
        let mut filled = Filled::default();
        let mut log_len = 0;
        let mut offset = None;
        loop {
            let mut log = self.log.lock().map_err(|_| storage("log lock poisoned"))?;
            let (records, next) = self
                .shard()
                .scroll(ScrollRequest {
                    offset,
                    limit: Some(FILL_PAGE),
                    filter: None,
                    with_payload: Some(WithPayloadInterface::Bool(true)),
                    with_vector: WithVector::Bool(true),
                    order_by: None,
                })
                .map_err(storage)?;
            let mut points = Vec::new();
            for record in records {
                let Some(mut point) = point_of(record) else {
                    continue;
                };
                if point.sparse.as_ref().is_some_and(|s| !s.indices.is_empty()) {
                    continue;
                }
                match point.payload.get(key) {
                    Some(serde_json::Value::String(text)) => {
                        point.sparse = Some(sparse_of(text));
                        points.push(point);
                    }
                    _ => filled.without_text += 1,
                }
            }
            if !points.is_empty() {
                filled.indexed += points.len() as u64;
                log_len = self.write_locked(&mut log, Op::Upsert(points))?;
            }
            drop(log);
            match next {
                Some(n) => offset = Some(n),
                None => return Ok((filled, log_len)),
            }
        }
    }
}

/// Adds the collection's sparse vector to the engine, weighted for `index`.
fn create_sparse_vector(shard: &EdgeShard, index: TextIndex) -> Result<()> {
    let modifier = match index {
        TextIndex::Bm25 => Some(edge::Modifier::Idf),
        TextIndex::Sparse => Some(edge::Modifier::None),
        TextIndex::None => return Err(storage("no text index to create")),
    };
    shard
        .update(UpdateOperation::VectorNameOperation(
            edge::VectorNameOperations::CreateVectorName(edge::CreateVectorName {
                vector_name: SPARSE_NAME.into(),
                config: edge::VectorNameConfig::sparse(edge::SparseVectorConfig {
                    modifier,
                    datatype: None,
                }),
            }),
        ))
        .map_err(storage)
}

/// The configuration to open a collection with: `collection.json`'s, with
/// the text index the engine has when an add was cut short after the
/// engine's part (see the module header).
pub(super) fn adopt_text_index(
    name: &str,
    mut config: CollectionConfig,
    shard: &EdgeShard,
) -> CollectionConfig {
    if config.text_index.exists() {
        return config;
    }
    let Some(params) = shard.config().sparse_vectors.get(SPARSE_NAME).cloned() else {
        return config;
    };
    config.text_index = match params.modifier {
        Some(edge::Modifier::Idf) => TextIndex::Bm25,
        _ => TextIndex::Sparse,
    };
    tracing::info!(collection = %name, text_index = config.text_index.proto_name(), "adopted the text index an interrupted add left in the engine");
    config
}
