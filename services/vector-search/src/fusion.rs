//! Hybrid search: one query per retriever (dense vector, text index), then
//! reciprocal rank fusion of their hit lists, the same for both engines.
//!
//! A hit's fused score is Σ 1 / (k + rank) over the retrievers that found
//! it (rank 1 = a retriever's best; k = `rrf_k`, 60 by default, the value
//! of the paper that introduced the method and of most engines). Ranks,
//! not scores, are combined, so a cosine similarity and a BM25 score need
//! no common scale. Every hit reports which retrievers found it, at what
//! rank and with what score of their own.

use std::collections::HashMap;

use crate::model::{Found, Hit, PointId, Retriever, SearchQuery};

/// Reciprocal rank fusion's k when a request leaves it 0.
pub const DEFAULT_RRF_K: u32 = 60;
/// Largest k a request may ask for.
pub const MAX_RRF_K: u32 = 1000;
/// Candidates per retriever when a hybrid request leaves it 0, at least the
/// limit.
pub const DEFAULT_CANDIDATES: usize = 50;

/// What one Search does: one query per retriever, then (for two) fusion.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub parts: Vec<(Retriever, SearchQuery)>,
    /// Hits returned.
    pub limit: usize,
    pub rrf_k: u32,
    /// Hybrid only: applied to the fused score (single retrievers pass it to
    /// the engine).
    pub fused_threshold: Option<f32>,
    /// Hybrid only: the payload and vectors asked for, `(payload,
    /// vectors)`. The retrievers' candidates are searched without them and
    /// only the fused hits are read back, so a 10-hit answer reads 10
    /// payloads rather than every candidate's.
    pub read_after_fusion: Option<(bool, bool)>,
}

impl Plan {
    /// The hits of this plan from its parts' results (one list per part,
    /// in order, best first).
    pub fn finish(&self, results: Vec<Vec<Hit>>) -> Vec<Hit> {
        if let ([(retriever, _)], [hits]) = (self.parts.as_slice(), results.as_slice()) {
            return hits
                .iter()
                .cloned()
                .enumerate()
                .map(|(i, mut h)| {
                    h.found_by = vec![Found {
                        retriever: *retriever,
                        rank: i as u32 + 1,
                        score: h.score,
                    }];
                    h
                })
                .collect();
        }
        let lists = self.parts.iter().map(|(r, _)| *r).zip(results);
        fuse(lists, self.rrf_k, self.limit, self.fused_threshold)
    }
}

/// Reciprocal rank fusion of best-first hit lists.
pub fn fuse(
    lists: impl IntoIterator<Item = (Retriever, Vec<Hit>)>,
    k: u32,
    limit: usize,
    threshold: Option<f32>,
) -> Vec<Hit> {
    let mut by_id: HashMap<PointId, (f64, Hit)> = HashMap::new();
    for (retriever, hits) in lists {
        for (i, h) in hits.into_iter().enumerate() {
            let rank = i as u32 + 1;
            let found = Found {
                retriever,
                rank,
                score: h.score,
            };
            let add = 1.0 / (f64::from(k) + f64::from(rank));
            let entry = by_id.entry(h.id).or_insert_with(|| {
                (
                    0.0,
                    Hit {
                        found_by: Vec::new(),
                        ..h.clone()
                    },
                )
            });
            entry.0 += add;
            entry.1.found_by.push(found);
            // Whichever retriever returned them, payload and vector are the
            // point's own; keep the first seen.
            if entry.1.payload.is_none() {
                entry.1.payload = h.payload;
            }
            if entry.1.vector.is_none() {
                entry.1.vector = h.vector;
            }
        }
    }
    let mut fused: Vec<(f64, Hit)> = by_id.into_values().collect();
    // Best fused score first; ties by the best single rank, then by id, so
    // the order never depends on hash order.
    fused.sort_by(|(a, ha), (b, hb)| {
        b.total_cmp(a)
            .then_with(|| best_rank(ha).cmp(&best_rank(hb)))
            .then_with(|| ha.id.cmp(&hb.id))
    });
    fused
        .into_iter()
        .map(|(score, mut h)| {
            h.score = score as f32;
            h
        })
        .filter(|h| threshold.is_none_or(|t| h.score >= t))
        .take(limit)
        .collect()
}

fn best_rank(h: &Hit) -> u32 {
    h.found_by.iter().map(|f| f.rank).min().unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(ids: &[u64]) -> Vec<Hit> {
        ids.iter()
            .enumerate()
            .map(|(i, &id)| Hit {
                id: PointId::Num(id),
                score: 1.0 - i as f32 * 0.1,
                payload: None,
                vector: None,
                found_by: Vec::new(),
            })
            .collect()
    }

    #[test]
    fn hits_found_by_both_retrievers_rise_and_say_where_they_were() {
        let fused = fuse(
            [
                (Retriever::Dense, hits(&[1, 2, 3])),
                (Retriever::Sparse, hits(&[3, 4, 1])),
            ],
            60,
            10,
            None,
        );
        let ids: Vec<_> = fused.iter().map(|h| h.id).collect();
        // 1: 1/61 + 1/63; 3: 1/63 + 1/61 (tie, best rank 1 for both, then
        // id); 2: 1/62; 4: 1/62.
        assert_eq!(ids, [1, 3, 2, 4].map(PointId::Num).to_vec(), "{fused:?}");
        let expected = 1.0 / 61.0 + 1.0 / 63.0;
        assert!((f64::from(fused[0].score) - expected).abs() < 1e-6);
        assert_eq!(fused[0].found_by.len(), 2);
        assert_eq!(fused[0].found_by[1].retriever, Retriever::Sparse);
        assert_eq!(fused[0].found_by[1].rank, 3);
        assert_eq!(fused[2].found_by.len(), 1);
    }

    #[test]
    fn limit_and_threshold_apply_to_the_fused_list() {
        let fused = fuse(
            [
                (Retriever::Dense, hits(&[1, 2, 3])),
                (Retriever::Sparse, hits(&[1])),
            ],
            60,
            2,
            None,
        );
        assert_eq!(fused.len(), 2);
        let only_both = fuse(
            [
                (Retriever::Dense, hits(&[1, 2, 3])),
                (Retriever::Sparse, hits(&[1])),
            ],
            60,
            10,
            Some(0.02),
        );
        assert_eq!(only_both.len(), 1);
        assert_eq!(only_both[0].id, PointId::Num(1));
    }
}
