//! Text indexes: BM25 scoring (its IDF following adds and deletes), hybrid
//! search fused by reciprocal rank, client-computed sparse vectors, and the
//! refusals. Expected scores are computed here from the published BM25 and
//! RRF formulas, not by the service's code.

use std::collections::HashMap;

use mlmesh_proto::vector::v1 as pb;
use serde_json::json;
use tonic::Code;

use crate::helpers::*;

const DIM: usize = 8;
/// BM25 parameters the service documents (k1, b, average length).
const K1: f64 = 1.2;
const B: f64 = 0.75;
const AVG_LEN: f64 = 256.0;

fn text_point(id: u64, text: &str) -> pb::Point {
    pb::Point {
        id: num(id),
        vector: unit_vector(id + 100, DIM),
        payload: payload(json!({ "text": text })),
        text: text.into(),
        ..Default::default()
    }
}

/// BM25's term-frequency part for a term seen `n` times in `len` tokens.
pub(super) fn tf(n: f64, len: f64) -> f64 {
    n * (K1 + 1.0) / (n + K1 * (1.0 - B + B * len / AVG_LEN))
}

/// The inverse document frequency Qdrant's IDF modifier applies: `docs`
/// points with a sparse vector, `df` of them holding the term.
pub(super) fn idf(docs: f64, df: f64) -> f64 {
    ((docs - df + 0.5) / (df + 0.5) + 1.0).ln()
}

pub(super) async fn sparse_search(app: &TestApp, name: &str, text: &str) -> Vec<pb::ScoredPoint> {
    app.client()
        .search(pb::SearchRequest {
            collection: name.into(),
            text: text.into(),
            limit: 10,
            with_payload: true,
            ..Default::default()
        })
        .await
        .expect("text search")
        .into_inner()
        .hits
}

fn scores(hits: &[pb::ScoredPoint]) -> Vec<(u64, f64)> {
    hits.iter()
        .map(|h| (id_num(&h.id), f64::from(h.score)))
        .collect()
}

fn assert_scores(got: &[(u64, f64)], want: &[(u64, f64)]) {
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        want.iter().map(|w| w.0).collect::<Vec<_>>(),
        "ranking: got {got:?}, want {want:?}"
    );
    for ((id, g), (_, w)) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 1e-4 * w.abs().max(1.0),
            "point {id}: score {g}, BM25 gives {w} (all: {got:?})"
        );
    }
}

pub(super) async fn bm25_scores_follow_the_collection_as_points_come_and_go(app: &TestApp) {
    let name = app
        .collection("bm25-default", DIM as u32, pb::Distance::Cosine)
        .await;
    // New collections get a BM25 index unless told otherwise.
    let info = app
        .client()
        .get_collection(pb::GetCollectionRequest { name: name.clone() })
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.text_index(), pb::TextIndex::Bm25);

    // No stop words and no words the stemmer merges: token counts are word
    // counts.
    let docs = [
        (0, "kubernetes deploy helm chart"),
        (1, "deploy deploy rollback"),
        (2, "gpu inference server"),
        (3, "helm values override"),
    ];
    app.upsert(&name, docs.iter().map(|(i, t)| text_point(*i, t)).collect())
        .await;
    let before = [
        (0, 2.0 * idf(4.0, 2.0) * tf(1.0, 4.0)),
        (1, idf(4.0, 2.0) * tf(2.0, 3.0)),
        (3, idf(4.0, 2.0) * tf(1.0, 3.0)),
    ];
    let hits = sparse_search(app, &name, "deploy helm").await;
    assert_scores(&scores(&hits), &before);
    assert!(hits.iter().enumerate().all(|(i, h)| {
        h.found_by.len() == 1
            && h.found_by[0].retriever() == pb::Retriever::Sparse
            && h.found_by[0].rank == i as u32 + 1
    }));

    // Four more points holding "deploy": it becomes common, "helm" rare,
    // and the ranking turns round without re-embedding anything.
    app.upsert(
        &name,
        (10..14).map(|i| text_point(i, "deploy pipeline")).collect(),
    )
    .await;
    let (d, h) = (idf(8.0, 6.0), idf(8.0, 2.0));
    let mut grown = vec![
        (0, d * tf(1.0, 4.0) + h * tf(1.0, 4.0)),
        (3, h * tf(1.0, 3.0)),
        (1, d * tf(2.0, 3.0)),
    ];
    grown.extend((10..14).map(|i| (i, d * tf(1.0, 2.0))));
    let got = scores(&sparse_search(app, &name, "deploy helm").await);
    // Points 10..13 tie; compare them as a set.
    assert_scores(&got[..3], &grown[..3]);
    let mut rest: Vec<u64> = got[3..].iter().map(|g| g.0).collect();
    rest.sort_unstable();
    assert_eq!(rest, vec![10, 11, 12, 13]);
    for (_, s) in &got[3..] {
        assert!((s - grown[3].1).abs() < 1e-4, "{got:?}");
    }

    // Deleted again: the scores are the first ones again.
    app.client()
        .delete(pb::DeleteRequest {
            collection: name.clone(),
            selector: Some(pb::delete_request::Selector::Ids(pb::PointIdList {
                ids: (10..14).filter_map(num).collect(),
            })),
        })
        .await
        .expect("delete");
    assert_scores(
        &scores(&sparse_search(app, &name, "deploy helm").await),
        &before,
    );
    // A query of stop words only finds nothing rather than everything.
    assert!(sparse_search(app, &name, "the and of").await.is_empty());
    app.drop_collection(&name).await;
}

pub(super) async fn hybrid_search_fuses_both_rankings_by_reciprocal_rank(app: &TestApp) {
    let name = app
        .text_collection("hybrid", DIM as u32, pb::TextIndex::Bm25)
        .await;
    let texts = [
        "install the helm chart",
        "helm chart values",
        "gpu drivers",
        "inference server metrics",
        "run the tests with make test",
        "chart of accounts",
        "release notes",
        "helm rollback",
    ];
    app.upsert(
        &name,
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| text_point(i as u64, t))
            .collect(),
    )
    .await;
    let query = unit_vector(7, DIM);
    let search = |mode: pb::SearchMode, limit: u32| {
        let mut c = app.client();
        let (name, query) = (name.clone(), query.clone());
        async move {
            c.search(pb::SearchRequest {
                collection: name,
                vector: query,
                text: "helm chart".into(),
                mode: mode.into(),
                limit,
                with_payload: true,
                ..Default::default()
            })
            .await
            .expect("search")
            .into_inner()
            .hits
        }
    };
    let dense = search(pb::SearchMode::Dense, 8).await;
    let sparse = search(pb::SearchMode::Sparse, 8).await;
    assert_eq!(dense.len(), 8, "every point has a dense vector");
    assert_eq!(sparse.len(), 4, "four texts hold `helm` or `chart`");
    let rank_in = |hits: &[pb::ScoredPoint], id: u64| {
        hits.iter()
            .position(|h| id_num(&h.id) == id)
            .map(|p| p as u32 + 1)
    };
    // Default mode with both queries: hybrid.
    for hits in [
        search(pb::SearchMode::Hybrid, 8).await,
        search(pb::SearchMode::Unspecified, 8).await,
    ] {
        assert_eq!(hits.len(), 8);
        let mut last = f64::INFINITY;
        for h in &hits {
            let id = id_num(&h.id);
            let (rd, rs) = (rank_in(&dense, id), rank_in(&sparse, id));
            let want: f64 = [rd, rs]
                .iter()
                .flatten()
                .map(|r| 1.0 / (60.0 + f64::from(*r)))
                .sum();
            assert!(
                (f64::from(h.score) - want).abs() < 1e-6,
                "point {id}: fused {} vs 1/(60+rank) sum {want}",
                h.score
            );
            assert!(f64::from(h.score) <= last + 1e-9, "best first");
            last = f64::from(h.score);
            let mut found: Vec<(pb::Retriever, u32)> =
                h.found_by.iter().map(|f| (f.retriever(), f.rank)).collect();
            found.sort_by_key(|f| f.0 as i32);
            let mut expected = Vec::new();
            if let Some(r) = rd {
                expected.push((pb::Retriever::Dense, r));
            }
            if let Some(r) = rs {
                expected.push((pb::Retriever::Sparse, r));
            }
            assert_eq!(found, expected, "point {id}");
            // Payloads are read after fusion: each hit carries its own.
            assert_eq!(
                h.payload,
                payload(json!({ "text": texts[id as usize] })),
                "point {id}: its payload"
            );
        }
        // Found by both beats found by one at the same best rank.
        let top = id_num(&hits[0].id);
        assert!(
            rank_in(&sparse, top).is_some() && rank_in(&dense, top).is_some() || sparse.is_empty()
        );
    }
    // The limit applies after fusion; a fused threshold cuts the tail.
    let two = search(pb::SearchMode::Hybrid, 2).await;
    assert_eq!(two.len(), 2);
    let mut c = app.client();
    let both_only = c
        .search(pb::SearchRequest {
            collection: name.clone(),
            vector: query.clone(),
            text: "helm chart".into(),
            limit: 8,
            score_threshold: Some(1.0 / 61.0 + 1.0 / 1000.0),
            ..Default::default()
        })
        .await
        .expect("search")
        .into_inner()
        .hits;
    assert!(
        both_only.iter().all(|h| h.found_by.len() == 2),
        "a score above 1/61 needs both retrievers: {both_only:?}"
    );
    app.drop_collection(&name).await;
}

pub(super) async fn client_sparse_vectors_score_by_dot_product(app: &TestApp) {
    let name = app
        .text_collection("sparse", DIM as u32, pb::TextIndex::Sparse)
        .await;
    let vectors: Vec<(u64, Vec<(u32, f32)>)> = vec![
        (1, vec![(3, 0.5), (9, 2.0)]),
        (2, vec![(3, 1.25)]),
        (3, vec![(9, 0.25), (4_000_000_000, 1.0)]),
        (4, vec![(11, 5.0)]),
    ];
    app.upsert(
        &name,
        vectors
            .iter()
            .map(|(id, terms)| pb::Point {
                id: num(*id),
                vector: unit_vector(*id, DIM),
                sparse: Some(pb::SparseVector {
                    indices: terms.iter().map(|t| t.0).collect(),
                    values: terms.iter().map(|t| t.1).collect(),
                }),
                ..Default::default()
            })
            .collect(),
    )
    .await;
    let query = [(9u32, 1.0f32), (3, 2.0), (4_000_000_000, 0.5)];
    let hits = app
        .client()
        .search(pb::SearchRequest {
            collection: name.clone(),
            sparse: Some(pb::SparseVector {
                indices: query.iter().map(|q| q.0).collect(),
                values: query.iter().map(|q| q.1).collect(),
            }),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("sparse search")
        .into_inner()
        .hits;
    let mut want: Vec<(u64, f64)> = vectors
        .iter()
        .map(|(id, terms)| {
            let dot: f64 = terms
                .iter()
                .filter_map(|(i, v)| query.iter().find(|q| q.0 == *i).map(|q| f64::from(q.1 * v)))
                .sum();
            (*id, dot)
        })
        .filter(|(_, d)| *d > 0.0)
        .collect();
    want.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert_scores(&scores(&hits), &want);

    // Read back as given (order of terms aside).
    let got = app
        .client()
        .get(pb::GetRequest {
            collection: name.clone(),
            ids: num(3).into_iter().collect(),
            with_vectors: true,
            ..Default::default()
        })
        .await
        .expect("get")
        .into_inner()
        .points;
    let s = got[0].sparse.clone().expect("sparse vector back");
    let back: HashMap<u32, f32> = s.indices.into_iter().zip(s.values).collect();
    assert_eq!(back, HashMap::from([(9, 0.25), (4_000_000_000, 1.0)]));
    app.drop_collection(&name).await;
}

pub(super) async fn text_search_refusals_name_the_field(app: &TestApp) {
    let bm25 = app
        .text_collection("refuse-bm25", DIM as u32, pb::TextIndex::Bm25)
        .await;
    let dense_only = app
        .text_collection("refuse-none", DIM as u32, pb::TextIndex::None)
        .await;
    let client_sparse = app
        .text_collection("refuse-sparse", DIM as u32, pb::TextIndex::Sparse)
        .await;
    app.upsert(&bm25, vec![text_point(1, "helm chart")]).await;
    let mut c = app.client();
    let search = |collection: &str, f: &dyn Fn(&mut pb::SearchRequest)| {
        let mut r = pb::SearchRequest {
            collection: collection.into(),
            limit: 5,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let sparse = |indices: Vec<u32>, values: Vec<f32>| Some(pb::SparseVector { indices, values });
    let cases: Vec<(&str, pb::SearchRequest, Code, &[&str])> = vec![
        (
            "text on a dense-only collection",
            search(&dense_only, &|r| r.text = "helm".into()),
            Code::FailedPrecondition,
            &["`text`", "TEXT_INDEX_NONE"],
        ),
        (
            "text on a client-sparse collection",
            search(&client_sparse, &|r| r.text = "helm".into()),
            Code::FailedPrecondition,
            &["`text`", "`sparse`"],
        ),
        (
            "text and sparse together",
            search(&bm25, &|r| {
                r.text = "helm".into();
                r.sparse = sparse(vec![1], vec![1.0]);
            }),
            Code::InvalidArgument,
            &["`sparse`", "not both"],
        ),
        (
            "nothing to search by",
            search(&bm25, &|_| {}),
            Code::InvalidArgument,
            &["`vector`", "text"],
        ),
        (
            "sparse mode without a text",
            search(&bm25, &|r| {
                r.vector = unit_vector(1, DIM);
                r.mode = pb::SearchMode::Sparse.into();
            }),
            Code::InvalidArgument,
            &["`text`"],
        ),
        (
            "hybrid without a vector",
            search(&bm25, &|r| {
                r.text = "helm".into();
                r.mode = pb::SearchMode::Hybrid.into();
            }),
            Code::InvalidArgument,
            &["`vector`", "0", "8"],
        ),
        (
            "an unknown mode",
            search(&bm25, &|r| {
                r.text = "helm".into();
                r.mode = 9;
            }),
            Code::InvalidArgument,
            &["`mode`", "9"],
        ),
        (
            "fewer candidates than hits",
            search(&bm25, &|r| {
                r.text = "helm".into();
                r.vector = unit_vector(1, DIM);
                r.candidates = 2;
            }),
            Code::InvalidArgument,
            &["`candidates`", "2"],
        ),
        (
            "rrf_k too large",
            search(&bm25, &|r| {
                r.text = "helm".into();
                r.vector = unit_vector(1, DIM);
                r.rrf_k = 5000;
            }),
            Code::InvalidArgument,
            &["`rrf_k`", "1000"],
        ),
        (
            "a repeated sparse index",
            search(&client_sparse, &|r| {
                r.sparse = sparse(vec![4, 4], vec![1.0, 2.0])
            }),
            Code::InvalidArgument,
            &["`sparse.indices`", "4", "unique"],
        ),
        (
            "indices and values that do not pair",
            search(&client_sparse, &|r| {
                r.sparse = sparse(vec![4, 5], vec![1.0])
            }),
            Code::InvalidArgument,
            &["`sparse`", "2 indices", "1 values"],
        ),
        (
            "a NaN sparse value",
            search(&client_sparse, &|r| {
                r.sparse = sparse(vec![4], vec![f32::NAN])
            }),
            Code::InvalidArgument,
            &["`sparse.values[0]`", "finite"],
        ),
        (
            "too many sparse terms",
            search(&client_sparse, &|r| {
                r.sparse = sparse((0..5000).collect(), vec![1.0; 5000])
            }),
            Code::InvalidArgument,
            &[
                "`sparse.indices count`",
                "5000",
                "4096",
                "vector.max_sparse_terms",
            ],
        ),
        (
            "a text over the limit",
            search(&bm25, &|r| r.text = "helm ".repeat(20_000)),
            Code::InvalidArgument,
            &["`text bytes`", "100000", "65536", "vector.max_text_bytes"],
        ),
    ];
    for (what, request, code, words) in cases {
        let e = c.search(request).await.expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        for w in words {
            assert!(
                e.message().contains(w),
                "{what}: {:?} lacks {w:?}",
                e.message()
            );
        }
    }
    let upserts: Vec<(&str, &str, pb::Point, Code, &[&str])> = vec![
        (
            "a text for a dense-only collection",
            &dense_only,
            text_point(1, "helm"),
            Code::FailedPrecondition,
            &["`points[0].text`", "TEXT_INDEX_NONE"],
        ),
        (
            "a sparse vector for a dense-only collection",
            &dense_only,
            pb::Point {
                sparse: sparse(vec![1], vec![1.0]),
                ..point(1, unit_vector(1, DIM), json!({}))
            },
            Code::FailedPrecondition,
            &["`points[0].sparse`"],
        ),
        (
            "text and sparse in one point",
            &bm25,
            pb::Point {
                sparse: sparse(vec![1], vec![1.0]),
                ..text_point(2, "helm")
            },
            Code::InvalidArgument,
            &["`points[0].sparse`", "not both"],
        ),
        (
            "a long text",
            &bm25,
            text_point(2, &"helm ".repeat(20_000)),
            Code::InvalidArgument,
            &["`points[0].text bytes`", "65536"],
        ),
    ];
    for (what, collection, p, code, words) in upserts {
        let e = c
            .upsert(pb::UpsertRequest {
                collection: collection.into(),
                points: vec![p],
            })
            .await
            .expect_err(what);
        assert_eq!(e.code(), code, "{what}: {e:?}");
        for w in words {
            assert!(
                e.message().contains(w),
                "{what}: {:?} lacks {w:?}",
                e.message()
            );
        }
    }
    // Refused writes changed nothing; dense search still works everywhere.
    assert_eq!(app.count(&bm25).await, 1);
    assert_eq!(app.count(&dense_only).await, 0);
    assert_eq!(app.search(&bm25, unit_vector(1, DIM), 5).await.len(), 1);
    for n in [bm25, dense_only, client_sparse] {
        app.drop_collection(&n).await;
    }
}
