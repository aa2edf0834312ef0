//! The collection's sparse vector on Qdrant: added to an existing
//! collection (Qdrant's CreateVectorName), filled from payload text, and
//! emptied before points are deleted.
//!
//! Other replicas of the service see the new index once their cached
//! configuration expires ([`super::CONFIG_TTL`]).

use super::*;

/// Points read and updated per step of a fill.
const FILL_PAGE: u32 = 256;
/// Points whose terms are cleared per call before a delete.
const CLEAR_PAGE: u32 = 1000;

/// An update of one point's sparse vector.
fn sparse_update(id: Option<q::PointId>, indices: Vec<u32>, values: Vec<f32>) -> q::PointVectors {
    q::PointVectors {
        id,
        vectors: Some(
            NamedVectors::from(vec![(
                SPARSE_NAME.to_owned(),
                QInputVector::new_sparse(indices, values),
            )])
            .into(),
        ),
    }
}

impl QdrantBackend {
    /// Replaces the sparse vectors of the points `selector` names with
    /// empty ones before they are deleted: Qdrant keeps a deleted point's
    /// terms in its posting lists, and so in every term's document
    /// frequency, until the segment is rebuilt (a plain delete only marks
    /// the point), which would skew BM25 scores after deletes.
    pub(super) async fn clear_terms(
        &self,
        collection: &str,
        selector: &PointSelector,
    ) -> Result<()> {
        let mut offset = None;
        loop {
            // The points that exist (an update of a missing one fails).
            let mut page = ScrollPointsBuilder::new(collection)
                .limit(CLEAR_PAGE)
                .with_payload(false)
                .with_vectors(false);
            page = match selector {
                PointSelector::Ids(ids) => page.filter(QFilter::must([QCondition::has_id(
                    ids.iter().copied().map(to_q_id),
                )])),
                PointSelector::Filter(f) => page.filter(to_q_filter(f)),
            };
            if let Some(o) = offset.take() {
                page = page.offset(o);
            }
            let found = self
                .client
                .scroll(page)
                .await
                .map_err(|e| self.error(collection, e))?;
            let points: Vec<q::PointVectors> = found
                .result
                .into_iter()
                .map(|p| sparse_update(p.id, Vec::new(), Vec::new()))
                .collect();
            self.update_sparse(collection, points, None).await?;
            match found.next_page_offset {
                Some(o) => offset = Some(o),
                None => return Ok(()),
            }
        }
    }

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
                        points.push(sparse_update(p.id, s.indices, s.values));
                    }
                    _ => filled.without_text += 1,
                }
            }
            filled.indexed += points.len() as u64;
            self.update_sparse(
                collection,
                points,
                Some(QFilter::must_not([QCondition::has_vector(SPARSE_NAME)])),
            )
            .await?;
            match found.next_page_offset {
                Some(o) => offset = Some(o),
                None => return Ok(filled),
            }
        }
    }

    /// Sets the sparse vectors of `points` (nothing when empty), only on
    /// points matching `condition` when given; waits until applied.
    async fn update_sparse(
        &self,
        collection: &str,
        points: Vec<q::PointVectors>,
        condition: Option<QFilter>,
    ) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.client
            .update_vectors(q::UpdatePointVectors {
                collection_name: collection.to_owned(),
                wait: Some(true),
                points,
                update_filter: condition,
                ..Default::default()
            })
            .await
            .map_err(|e| self.error(collection, e))?;
        Ok(())
    }
}
