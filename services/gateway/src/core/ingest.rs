//! Ingest: documents checked against the limits, chunked, embedded in
//! batches and upserted as points, then the document's other chunks
//! deleted.
//!
//! Replacing a document is atomic in outcome across gateway replicas, with
//! no lock between them: each ingest has a revision (milliseconds ×1000
//! plus a random part, rising within a replica) that is in its chunks' ids
//! and payloads, so no ingest overwrites another's chunks. After its
//! upsert an ingest deletes the document's chunks of older revisions
//! (and chunks from before revisions existed); then, if a newer revision
//! of the document exists, it deletes its own. Whatever the interleaving,
//! once both are done only the newest revision's chunks remain, whole.
//! (While they run, a search may see both versions.)

use std::sync::atomic::{AtomicU64, Ordering};

use super::{collections::merge_chunking, search::keyword, *};

/// A new ingest revision: rising within this process, unique across
/// replicas (random low digits), below 2^53 so payload numbers keep it
/// exact.
fn next_revision() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let candidate = now_ms * 1000 + u64::from(uuid::Uuid::new_v4().as_u128() as u16 % 1000);
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = candidate.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}

fn revision_range(key: &str, range: vec::Range) -> vec::Condition {
    vec::Condition {
        condition: Some(vec::condition::Condition::Field(vec::FieldCondition {
            key: key.into(),
            test: Some(vec::field_condition::Test::Range(range)),
        })),
    }
}

fn nested(filter: vec::Filter) -> vec::Condition {
    vec::Condition {
        condition: Some(vec::condition::Condition::Filter(filter)),
    }
}

impl Core {
    /// The request's documents against the limits: count, sizes, ids
    /// unique. A streamed ingest checks the whole request with it before
    /// storing any document.
    pub fn check_documents(&self, docs: &[gw::Document]) -> Result<()> {
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
        let (collection, n) = (r.collection.clone(), r.documents.len());
        let out = self.ingest_within(r, deadline, None).await;
        self.audit.outcome(
            "documents.ingest",
            collection,
            format!("{n} documents"),
            &out,
        );
        out
    }

    /// Ingest, drawing its chunks from `budget` when the request is one
    /// document of a larger (streamed) one: `limits.max_chunks` then holds
    /// for the whole request, not per document.
    pub async fn ingest_within(
        &self,
        r: gw::IngestRequest,
        deadline: Deadline,
        budget: Option<&std::sync::atomic::AtomicUsize>,
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
        let within_budget = budget.is_none_or(|b| {
            b.fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |left| left.checked_sub(total),
            )
            .is_ok()
        });
        if total > self.settings.limits.max_chunks || !within_budget {
            return Err(GatewayError::invalid(
                "documents",
                format!(
                    "would make more than {} chunks (limits.max_chunks), counting every document of the request: send fewer or larger chunks",
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
        let revision = next_revision();
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
                p.insert(P_REVISION.into(), Json::from(revision));
                texts.push(text.to_owned());
                payloads.push(p);
                chunk_ids.push(chunk_id(&ids[i], revision, j));
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

        // Store: deterministic ids make the upsert safe to retry. One
        // document at a time is replaced on this replica: two ingests of
        // the same id never interleave their upserts and deletes.
        let _held = self.documents.lock(&coll.name, &ids).await;
        let points: Vec<vec::Point> = out_docs
            .iter()
            .flat_map(|d| d.chunk_ids.iter())
            .zip(vectors)
            .zip(payloads)
            .zip(&texts)
            .map(|(((id, vector), payload), text)| vec::Point {
                id: Some(vec::PointId {
                    kind: Some(vec::point_id::Kind::Uuid(id.clone())),
                }),
                vector,
                payload: Some(json::json_to_struct(payload)),
                // Indexed by its words too (BM25), where the collection has
                // a text index.
                text: if coll.text_index == vec::TextIndex::Bm25 {
                    text.clone()
                } else {
                    String::new()
                },
                ..Default::default()
            })
            .collect();
        for group in points.chunks(UPSERT_BATCH) {
            let m = vec::UpsertRequest {
                collection: coll.name.clone(),
                points: group.to_vec(),
            };
            self.vector
                .unary(&rpc::UPSERT, deadline, m)
                .await
                .inspect_err(|_| self.forget(&coll.name))?;
        }

        // The documents' older chunks (after the upsert, so a document is
        // never absent), then our own where a newer ingest has finished
        // its upsert meanwhile.
        let rev = revision as f64;
        for group in out_docs.chunks(DELETE_BATCH) {
            let older = group
                .iter()
                .map(|d| {
                    nested(vec::Filter {
                        must: vec![keyword(P_DOCUMENT_ID, &d.id)],
                        // Chunks without a revision predate revisions.
                        must_not: vec![revision_range(
                            P_REVISION,
                            vec::Range {
                                gte: Some(rev),
                                ..Default::default()
                            },
                        )],
                        ..Default::default()
                    })
                })
                .collect();
            self.delete_points(&coll.name, older, deadline).await?;
            let newer = |d: &gw::IngestedDocument| vec::Filter {
                must: vec![
                    keyword(P_DOCUMENT_ID, &d.id),
                    revision_range(
                        P_REVISION,
                        vec::Range {
                            gt: Some(rev),
                            ..Default::default()
                        },
                    ),
                ],
                ..Default::default()
            };
            let superseded = self
                .count_points(
                    &coll.name,
                    vec::Filter {
                        should: group.iter().map(|d| nested(newer(d))).collect(),
                        ..Default::default()
                    },
                    deadline,
                )
                .await?;
            if superseded == 0 {
                continue;
            }
            let mut own = Vec::new();
            for d in group {
                if self.count_points(&coll.name, newer(d), deadline).await? > 0 {
                    own.push(nested(vec::Filter {
                        must: vec![
                            keyword(P_DOCUMENT_ID, &d.id),
                            revision_range(
                                P_REVISION,
                                vec::Range {
                                    gte: Some(rev),
                                    lte: Some(rev),
                                    ..Default::default()
                                },
                            ),
                        ],
                        ..Default::default()
                    }));
                }
            }
            self.delete_points(&coll.name, own, deadline).await?;
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

    /// Deletes the points matching any of `should` (nothing when empty).
    async fn delete_points(
        &self,
        collection: &str,
        should: Vec<vec::Condition>,
        deadline: Deadline,
    ) -> Result<()> {
        if should.is_empty() {
            return Ok(());
        }
        let m = vec::DeleteRequest {
            collection: collection.to_owned(),
            selector: Some(vec::delete_request::Selector::Filter(vec::Filter {
                should,
                ..Default::default()
            })),
        };
        self.vector.unary(&rpc::DELETE_POINTS, deadline, m).await?;
        Ok(())
    }

    /// How many points match `filter`.
    async fn count_points(
        &self,
        collection: &str,
        filter: vec::Filter,
        deadline: Deadline,
    ) -> Result<u64> {
        let m = vec::CountRequest {
            collection: collection.to_owned(),
            filter: Some(filter),
        };
        let r = self.vector.unary(&rpc::COUNT, deadline, m).await?;
        Ok(r.count)
    }
}
