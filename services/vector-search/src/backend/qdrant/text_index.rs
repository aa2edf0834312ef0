//! A text index added to an existing Qdrant collection (Qdrant's
//! CreateVectorName), and its sparse vectors filled from payload text.
//!
//! Other replicas of the service see the new index once their cached
//! configuration expires ([`super::CONFIG_TTL`]).

use super::*;

/// Points read and updated per step of a fill.
const FILL_PAGE: u32 = 256;

impl QdrantBackend {
    /// See [`Backend::add_text_index`].
    pub(super) async fn add_sparse_vector(&self, collection: &str, index: TextIndex) -> Result<()> {
        // Fresh from the cluster, not the cache: another replica may have
        // added it.
        let (config, _) = self.fetch_info(collection).await?;
        match config.text_index {
            has if has == index => return Ok(()),
            TextIndex::None => {}
            has => {
                return Err(VectorError::TextIndexExists {
                    collection: collection.to_owned(),
                    has,
                    asked: index,
                });
            }
        }
        let modifier = match index {
            TextIndex::Bm25 => q::Modifier::Idf,
            TextIndex::Sparse => q::Modifier::None,
            TextIndex::None => {
                return Err(VectorError::Backend("no text index to create".into()));
            }
        };
        self.client
            .create_vector_name(q::CreateVectorNameRequest {
                collection_name: collection.to_owned(),
                wait: Some(true),
                vector_name: SPARSE_NAME.to_owned(),
                vector_config: Some(q::create_vector_name_request::VectorConfig::SparseConfig(
                    q::SparseVectorCreationConfig {
                        modifier: Some(modifier as i32),
                        datatype: None,
                    },
                )),
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(collection, e))?;
        self.forget(collection);
        Ok(())
    }

    /// See [`Backend::fill_sparse`]. Each page's update carries the
    /// condition "has no sparse vector yet", checked by Qdrant when it
    /// applies the update, so a point upserted with text meanwhile keeps
    /// the sparse vector that upsert gave it.
    pub(super) async fn fill_from_payload(
        &self,
        collection: &str,
        key: &str,
        sparse_of: SparseOf,
    ) -> Result<Filled> {
        let mut filled = Filled::default();
        let mut offset = None;
        loop {
            let mut page = ScrollPointsBuilder::new(collection)
                .limit(FILL_PAGE)
                .with_payload(q::with_payload_selector::SelectorOptions::Include(
                    q::PayloadIncludeSelector {
                        fields: vec![key.to_owned()],
                    },
                ))
                .with_vectors(q::with_vectors_selector::SelectorOptions::Include(
                    q::VectorsSelector {
                        names: vec![SPARSE_NAME.to_owned()],
                    },
                ));
            if let Some(o) = offset.take() {
                page = page.offset(o);
            }
            let found = self
                .client
                .scroll(page)
                .await
                .map_err(|e| self.error(collection, e))?;
            let mut points = Vec::new();
            for p in found.result {
                let (_, sparse) = vectors_of(p.vectors);
                if sparse.is_some_and(|s| !s.indices.is_empty()) {
                    continue;
                }
                match payload_of(p.payload).remove(key) {
                    Some(serde_json::Value::String(text)) => {
                        let s = sparse_of(&text);
                        points.push(q::PointVectors {
                            id: p.id,
                            vectors: Some(
                                NamedVectors::from(vec![(
                                    SPARSE_NAME.to_owned(),
                                    QInputVector::new_sparse(s.indices, s.values),
                                )])
                                .into(),
                            ),
                        });
                    }
                    _ => filled.without_text += 1,
                }
            }
            if !points.is_empty() {
                filled.indexed += points.len() as u64;
                self.client
                    .update_vectors(q::UpdatePointVectors {
                        collection_name: collection.to_owned(),
                        wait: Some(true),
                        points,
                        update_filter: Some(QFilter::must_not([QCondition::has_vector(
                            SPARSE_NAME,
                        )])),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| self.error(collection, e))?;
            }
            match found.next_page_offset {
                Some(o) => offset = Some(o),
                None => return Ok(filled),
            }
        }
    }
}
