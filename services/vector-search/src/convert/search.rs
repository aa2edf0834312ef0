//! Searches and pages: filters, search options, limits, hits.

use mlmesh_proto::json::json_to_struct;
use mlmesh_proto::vector::v1 as pb;

use super::{Result, point_id_out, point_ids, sparse_vector, text_within, vector};
use crate::{
    error::VectorError,
    fusion::{DEFAULT_CANDIDATES, DEFAULT_RRF_K, MAX_RRF_K, Plan},
    model::{
        CollectionConfig, Condition, Filter, Hit, Query, Range, Retriever, SearchQuery, TextIndex,
    },
    settings::VectorSettings,
    text::Bm25,
};

/// Deepest nesting of filters inside filters.
pub const MAX_FILTER_DEPTH: usize = 8;
/// Largest HNSW `ef` a search may ask for.
pub const MAX_EF: usize = 4096;
/// Most candidates per hit a search on a quantized collection may ask for.
pub const MAX_OVERSAMPLING: f32 = 16.0;
/// Page size and hit count when a request leaves them 0.
pub const DEFAULT_LIMIT: usize = 10;

pub fn hit_out(h: Hit) -> pb::ScoredPoint {
    pb::ScoredPoint {
        id: Some(point_id_out(h.id)),
        score: h.score,
        payload: h.payload.map(json_to_struct),
        vector: h.vector.unwrap_or_default(),
        found_by: h
            .found_by
            .into_iter()
            .map(|f| pb::RetrieverRank {
                retriever: match f.retriever {
                    Retriever::Dense => pb::Retriever::Dense,
                    Retriever::Sparse => pb::Retriever::Sparse,
                }
                .into(),
                rank: f.rank,
                score: f.score,
            })
            .collect(),
    }
}

/// Bytes of query text in a search (the API layer embeds long ones off the
/// reactor).
pub fn text_bytes(r: &pb::SearchRequest) -> usize {
    r.text.len()
}

/// Converts and bounds a filter (`max_conditions` in total, nested at most
/// [`MAX_FILTER_DEPTH`] deep).
pub fn filter(field: &str, f: pb::Filter, max_conditions: usize) -> Result<Filter> {
    let mut budget = max_conditions;
    filter_at(field, f, 1, &mut budget, max_conditions)
}

fn filter_at(
    field: &str,
    f: pb::Filter,
    depth: usize,
    budget: &mut usize,
    max: usize,
) -> Result<Filter> {
    if depth > MAX_FILTER_DEPTH {
        return Err(VectorError::OverLimit {
            field: format!("{field} nesting depth"),
            got: depth,
            max: MAX_FILTER_DEPTH,
            setting: "fixed",
        });
    }
    let mut list = |name: &str, cs: Vec<pb::Condition>| -> Result<Vec<Condition>> {
        cs.into_iter()
            .enumerate()
            .map(|(i, c)| condition(&format!("{field}.{name}[{i}]"), c, depth, budget, max))
            .collect()
    };
    Ok(Filter {
        must: list("must", f.must)?,
        should: list("should", f.should)?,
        must_not: list("must_not", f.must_not)?,
    })
}

fn condition(
    field: &str,
    c: pb::Condition,
    depth: usize,
    budget: &mut usize,
    max: usize,
) -> Result<Condition> {
    if *budget == 0 {
        return Err(VectorError::OverLimit {
            field: "filter conditions".into(),
            got: max + 1,
            max,
            setting: "vector.max_filter_conditions",
        });
    }
    *budget -= 1;
    use pb::condition::Condition as C;
    match c.condition {
        None => Err(VectorError::Empty {
            field: field.into(),
            hint: "set one of field, has_id, filter",
        }),
        Some(C::HasId(h)) => Ok(Condition::HasId(point_ids(
            &format!("{field}.has_id.ids"),
            &h.ids,
            usize::MAX,
            "",
        )?)),
        Some(C::Filter(f)) => Ok(Condition::Filter(filter_at(
            &format!("{field}.filter"),
            f,
            depth + 1,
            budget,
            max,
        )?)),
        Some(C::Field(fc)) => field_condition(&format!("{field}.field"), fc),
    }
}

fn field_condition(field: &str, fc: pb::FieldCondition) -> Result<Condition> {
    use pb::field_condition::Test;
    let key = fc.key;
    if key.is_empty() {
        return Err(VectorError::Empty {
            field: format!("{field}.key"),
            hint: "a payload key is required",
        });
    }
    if key.parse::<qdrant_edge::JsonPath>().is_err() {
        return Err(VectorError::invalid(
            format!("{field}.key"),
            format!("{key:?} is not a payload path like `a`, `a.b` or `a[].b`"),
        ));
    }
    match fc.test {
        None => Err(VectorError::Empty {
            field: field.into(),
            hint: "set one of keyword, integer, boolean, range",
        }),
        Some(Test::Keyword(value)) => Ok(Condition::Keyword { key, value }),
        Some(Test::Integer(value)) => Ok(Condition::Integer { key, value }),
        Some(Test::Boolean(value)) => Ok(Condition::Bool { key, value }),
        Some(Test::Range(r)) => {
            let range = Range {
                gt: r.gt,
                gte: r.gte,
                lt: r.lt,
                lte: r.lte,
            };
            let bounds = [range.gt, range.gte, range.lt, range.lte];
            if bounds.iter().all(Option::is_none) {
                return Err(VectorError::Empty {
                    field: format!("{field}.range"),
                    hint: "set at least one of gt, gte, lt, lte",
                });
            }
            if bounds.iter().flatten().any(|b| !b.is_finite()) {
                return Err(VectorError::invalid(
                    format!("{field}.range"),
                    "bounds must be finite numbers",
                ));
            }
            Ok(Condition::Range { key, range })
        }
    }
}

/// A filter with no conditions at all.
pub fn filter_is_empty(f: &Filter) -> bool {
    f.must.is_empty() && f.should.is_empty() && f.must_not.is_empty()
}

/// One search, validated, as a plan: one query per retriever it runs.
/// `prefix` is `""` for Search, `searches[i].` in a batch.
pub fn search_plan(
    prefix: &str,
    r: pb::SearchRequest,
    collection: &str,
    config: &CollectionConfig,
    limits: &VectorSettings,
    bm25: &Bm25,
) -> Result<Plan> {
    let field = |name: &str| format!("{prefix}{name}");
    let limit = match r.limit as usize {
        0 => DEFAULT_LIMIT,
        l if l > limits.max_search_limit => {
            return Err(VectorError::OverLimit {
                field: field("limit"),
                got: l,
                max: limits.max_search_limit,
                setting: "vector.max_search_limit",
            });
        }
        l => l,
    };
    let ef = match r.ef as usize {
        0 => None,
        e if e > MAX_EF => {
            return Err(VectorError::OverLimit {
                field: field("ef"),
                got: e,
                max: MAX_EF,
                setting: "fixed",
            });
        }
        e => Some(e),
    };
    if let Some(t) = r.score_threshold
        && !t.is_finite()
    {
        return Err(VectorError::invalid(
            field("score_threshold"),
            format!("{t} is not a finite number"),
        ));
    }
    let o = r.oversampling;
    let oversampling = if o == 0.0 {
        None
    } else if (1.0..=MAX_OVERSAMPLING).contains(&o) {
        Some(f64::from(o))
    } else {
        return Err(VectorError::invalid(
            field("oversampling"),
            format!("{o} is outside 1..={MAX_OVERSAMPLING} (0 means 1)"),
        ));
    };
    let rrf_k = match r.rrf_k {
        0 => DEFAULT_RRF_K,
        k if k > MAX_RRF_K => {
            return Err(VectorError::OverLimit {
                field: field("rrf_k"),
                got: k as usize,
                max: MAX_RRF_K as usize,
                setting: "fixed",
            });
        }
        k => k,
    };
    let filter = r
        .filter
        .map(|f| filter(&field("filter"), f, limits.max_filter_conditions))
        .transpose()?;

    // Which retrievers: the mode asked for, or what the request carries.
    let has_dense = !r.vector.is_empty();
    let has_text = !r.text.is_empty() || r.sparse.is_some();
    if !r.text.is_empty() && r.sparse.is_some() {
        return Err(VectorError::invalid(
            field("sparse"),
            "give `text` or `sparse`, not both",
        ));
    }
    let mode = pb::SearchMode::try_from(r.mode).map_err(|_| {
        VectorError::invalid(
            field("mode"),
            format!(
                "{} is not one of SEARCH_MODE_UNSPECIFIED, SEARCH_MODE_DENSE, SEARCH_MODE_SPARSE, SEARCH_MODE_HYBRID",
                r.mode
            ),
        )
    })?;
    let (dense, sparse) = match mode {
        pb::SearchMode::Unspecified => {
            if !has_dense && !has_text {
                return Err(VectorError::Empty {
                    field: field("vector"),
                    hint: "a search needs a `vector`, a `text` (or `sparse`) query, or both",
                });
            }
            (has_dense, has_text)
        }
        pb::SearchMode::Dense => (true, false),
        pb::SearchMode::Sparse => (false, true),
        pb::SearchMode::Hybrid => (true, true),
    };
    if sparse && !has_text {
        return Err(VectorError::Empty {
            field: field("text"),
            hint: "SPARSE and HYBRID searches need a `text` (or `sparse`) query",
        });
    }
    let no_index = |name: &str, reason| VectorError::NoTextIndex {
        field: field(name),
        collection: collection.into(),
        reason,
    };
    let sparse_query = if sparse {
        Some(match (config.text_index, r.sparse) {
            (TextIndex::None, _) => {
                return Err(no_index(
                    if r.text.is_empty() { "sparse" } else { "text" },
                    "has no text index (created with TEXT_INDEX_NONE): search it with `vector` only",
                ));
            }
            (TextIndex::Sparse, None) => {
                return Err(no_index(
                    "text",
                    "takes client-computed sparse vectors (TEXT_INDEX_SPARSE): give `sparse`, not `text`",
                ));
            }
            (_, Some(v)) => sparse_vector(&field("sparse"), v, limits)?,
            (TextIndex::Bm25, None) => {
                text_within(&field("text"), &r.text, limits)?;
                bm25.query(&r.text)
            }
        })
    } else {
        None
    };
    if dense {
        vector(&field("vector"), &r.vector, collection, config)?;
    }
    let hybrid = dense && sparse;
    let candidates = if hybrid {
        match r.candidates as usize {
            0 => limit.max(DEFAULT_CANDIDATES).min(limits.max_search_limit),
            c if c < limit || c > limits.max_search_limit => {
                return Err(VectorError::invalid(
                    field("candidates"),
                    format!(
                        "{c} is outside limit..=vector.max_search_limit ({limit}..={})",
                        limits.max_search_limit
                    ),
                ));
            }
            c => c,
        }
    } else {
        limit
    };
    // Single retrievers filter by score in the engine; fused lists filter
    // by the fused score.
    let engine_threshold = if hybrid { None } else { r.score_threshold };
    let base = |query| SearchQuery {
        query,
        limit: candidates,
        filter: filter.clone(),
        score_threshold: engine_threshold,
        ef,
        exact: r.exact,
        with_payload: r.with_payload && !hybrid,
        with_vectors: r.with_vectors && !hybrid,
        oversampling,
        rescore: !r.skip_rescore,
    };
    let mut parts = Vec::with_capacity(2);
    if dense {
        parts.push((Retriever::Dense, base(Query::Dense(r.vector.clone()))));
    }
    if let Some(q) = sparse_query {
        parts.push((Retriever::Sparse, base(Query::Sparse(q))));
    }
    Ok(Plan {
        parts,
        limit,
        rrf_k,
        fused_threshold: if hybrid { r.score_threshold } else { None },
        read_after_fusion: (hybrid && (r.with_payload || r.with_vectors))
            .then_some((r.with_payload, r.with_vectors)),
    })
}

/// A page size: 0 means [`DEFAULT_LIMIT`], at most `vector.max_page_size`.
pub fn page_size(field: &str, limit: u32, limits: &VectorSettings) -> Result<usize> {
    match limit as usize {
        0 => Ok(DEFAULT_LIMIT),
        l if l > limits.max_page_size => Err(VectorError::OverLimit {
            field: field.into(),
            got: l,
            max: limits.max_page_size,
            setting: "vector.max_page_size",
        }),
        l => Ok(l),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_bounded_in_size_and_depth() {
        let leaf = || pb::Condition {
            condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                key: "k".into(),
                test: Some(pb::field_condition::Test::Boolean(true)),
            })),
        };
        let wide = pb::Filter {
            must: (0..5).map(|_| leaf()).collect(),
            ..Default::default()
        };
        let e = filter("filter", wide.clone(), 4).expect_err("too many");
        assert!(
            e.to_string().contains("vector.max_filter_conditions"),
            "{e}"
        );
        assert!(filter("filter", wide, 5).is_ok());

        let mut deep = pb::Filter::default();
        for _ in 0..MAX_FILTER_DEPTH {
            deep = pb::Filter {
                must: vec![pb::Condition {
                    condition: Some(pb::condition::Condition::Filter(deep)),
                }],
                ..Default::default()
            };
        }
        let e = filter("filter", deep, 1000).expect_err("too deep");
        assert!(e.to_string().contains("depth"), "{e}");
    }

    #[test]
    fn a_range_needs_a_finite_bound() {
        let f = |r: pb::Range| pb::Filter {
            must: vec![pb::Condition {
                condition: Some(pb::condition::Condition::Field(pb::FieldCondition {
                    key: "price".into(),
                    test: Some(pb::field_condition::Test::Range(r)),
                })),
            }],
            ..Default::default()
        };
        let e = filter("filter", f(pb::Range::default()), 10).expect_err("no bound");
        assert!(e.to_string().contains("filter.must[0].field.range"), "{e}");
        let e = filter(
            "filter",
            f(pb::Range {
                lt: Some(f64::INFINITY),
                ..Default::default()
            }),
            10,
        )
        .expect_err("infinite");
        assert!(e.to_string().contains("finite"), "{e}");
    }
}
