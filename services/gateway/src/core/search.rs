//! Retrieval: search over a collection and RAG context assembly.

use super::*;

/// Rewrites a search filter over document metadata into one over chunk
/// payloads: `lang` → `metadata.lang`; `document_id` stays.
pub(super) fn payload_filter(f: vec::Filter) -> vec::Filter {
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

pub(super) fn keyword(key: &str, value: &str) -> vec::Condition {
    vec::Condition {
        condition: Some(vec::condition::Condition::Field(vec::FieldCondition {
            key: key.into(),
            test: Some(vec::field_condition::Test::Keyword(value.into())),
        })),
    }
}

/// A search mode by name, as the JSON and MCP faces take it (`dense`,
/// `sparse`, `hybrid`; absent or empty: unspecified).
pub fn search_mode(field: &str, name: Option<&str>) -> Result<i32> {
    let mode = match name.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") => vec::SearchMode::Unspecified,
        Some("dense") => vec::SearchMode::Dense,
        Some("sparse") => vec::SearchMode::Sparse,
        Some("hybrid") => vec::SearchMode::Hybrid,
        Some(other) => {
            return Err(GatewayError::invalid(
                field,
                format!("{other:?} is not dense, sparse or hybrid"),
            ));
        }
    };
    Ok(mode.into())
}

/// Which retrievers found a hit, for the JSON and MCP faces:
/// `[{"retriever": "dense", "rank": 1, "score": 0.83}, …]`.
pub fn found_by_json(found: &[vec::RetrieverRank]) -> Json {
    Json::Array(
        found
            .iter()
            .map(|f| {
                serde_json::json!({
                    "retriever": f.retriever().as_str_name().trim_start_matches("RETRIEVER_").to_ascii_lowercase(),
                    "rank": f.rank,
                    "score": f.score,
                })
            })
            .collect(),
    )
}

impl Core {
    pub(super) fn check_query(&self, q: &str) -> Result<()> {
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

    pub(super) fn check_top_k(&self, field: &str, k: u32, default: u32) -> Result<u32> {
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
        // Which retrievers: dense alone on collections without a text
        // index, and when a threshold asks for a cosine similarity; the
        // mode asked for otherwise (UNSPECIFIED: hybrid).
        let asked = vec::SearchMode::try_from(r.mode).map_err(|_| {
            GatewayError::invalid(
                "mode",
                format!(
                    "{} is not one of SEARCH_MODE_UNSPECIFIED, _DENSE, _SPARSE, _HYBRID",
                    r.mode
                ),
            )
        })?;
        let text_index = coll.text_index != vec::TextIndex::None;
        let mode = match asked {
            vec::SearchMode::Unspecified if !text_index || r.score_threshold.is_some() => {
                vec::SearchMode::Dense
            }
            vec::SearchMode::Unspecified => vec::SearchMode::Hybrid,
            m => m,
        };
        if mode != vec::SearchMode::Dense && !text_index {
            return Err(GatewayError::invalid(
                "mode",
                format!(
                    "collection {:?} has no text index (made before text search, or with TEXT_INDEX_NONE): search it DENSE, or delete it and ingest again",
                    coll.name
                ),
            ));
        }
        let t0 = Instant::now();
        let vector = if mode == vec::SearchMode::Sparse {
            Vec::new()
        } else {
            let (mut vectors, _) = self
                .embed_texts(&coll.model, vec![r.query.clone()], deadline)
                .await?;
            vectors.pop().unwrap_or_default()
        };
        let embed_us = t0.elapsed().as_micros() as u64;
        let t1 = Instant::now();
        let m = vec::SearchRequest {
            collection: coll.name.clone(),
            vector,
            text: if mode == vec::SearchMode::Dense {
                String::new()
            } else {
                r.query
            },
            mode: mode.into(),
            limit,
            filter: r.filter.map(payload_filter),
            score_threshold: r.score_threshold,
            with_payload: true,
            ..Default::default()
        };
        let resp = self
            .vector
            .unary(&rpc::SEARCH, deadline, m)
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
                    mode: r.mode,
                },
                deadline,
            )
            .await?;
        Ok(assemble(found.hits, max_chars))
    }
}

/// A vector hit as a gateway hit.
/// The largest page of chunks one browse returns.
pub const MAX_BROWSE: u32 = 200;

impl Core {
    /// A page of a collection's chunks in id order (the console's points
    /// browser): `limit` after `offset` (a chunk id from the previous
    /// page's `next`), matching `filter` on document metadata.
    pub async fn browse(
        &self,
        collection: &str,
        filter: Option<vec::Filter>,
        limit: u32,
        offset: Option<String>,
        deadline: Deadline,
    ) -> Result<(Vec<gw::Hit>, Option<String>)> {
        if !(1..=MAX_BROWSE).contains(&limit) {
            return Err(GatewayError::invalid(
                "limit",
                format!("{limit} is not between 1 and {MAX_BROWSE}"),
            ));
        }
        let offset = match offset.filter(|o| !o.is_empty()) {
            None => None,
            Some(o) if o.len() > 64 => {
                return Err(GatewayError::invalid("offset", "at most 64 bytes"));
            }
            Some(o) => Some(vec::PointId {
                kind: Some(match o.parse::<u64>() {
                    Ok(n) => vec::point_id::Kind::Num(n),
                    Err(_) => vec::point_id::Kind::Uuid(o),
                }),
            }),
        };
        let coll = self.collection(collection, deadline).await?;
        let r = self
            .vector
            .unary(
                &rpc::SCROLL,
                deadline,
                vec::ScrollRequest {
                    collection: coll.name.clone(),
                    filter: filter.map(payload_filter),
                    limit,
                    offset,
                    with_payload: true,
                    with_vectors: false,
                },
            )
            .await
            .inspect_err(|_| self.forget(&coll.name))?;
        let next = r.next_offset.and_then(|i| i.kind).map(|k| match k {
            vec::point_id::Kind::Num(n) => n.to_string(),
            vec::point_id::Kind::Uuid(u) => u,
        });
        let hits = r
            .points
            .into_iter()
            .map(|p| {
                hit(vec::ScoredPoint {
                    id: p.id,
                    score: 0.0,
                    payload: p.payload,
                    vector: Vec::new(),
                    ..Default::default()
                })
            })
            .collect();
        Ok((hits, next))
    }
}

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
        found_by: h.found_by,
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
