//! Text → sparse vectors for BM25 collections, the same for both engines.
//!
//! The tokenizer, stop words, stemmer and term hashing are the embedded
//! engine's own (`qdrant_edge::bm25_embed`, Qdrant's server-side BM25
//! model): words, lowercased, English stop words dropped, Snowball English
//! stemming, each term hashed to a 32-bit id (murmur3). A document's
//! weights are BM25's saturated term frequencies (k1 1.2, b 0.75, average
//! length 256 tokens); a query's are 1 per term. The inverse document
//! frequency is not computed here: the collection's sparse vector carries
//! the IDF modifier, so the engine weights each query term by how many of
//! the collection's points hold it *now* — adds and deletes change scores
//! without re-embedding anything.
//!
//! Chosen over a tokenizer of our own so that a collection filled through
//! the embedded engine and one on a Qdrant server score the same text the
//! same way, and so that a Qdrant user's BM25 vectors are ours.

use qdrant_edge::bm25_embed::{EdgeBm25, EdgeBm25Config};

use crate::model::SparseVector;

/// The BM25 text model; built once per process, shared by every call.
pub struct Bm25 {
    model: EdgeBm25,
}

impl std::fmt::Debug for Bm25 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Bm25")
    }
}

impl Bm25 {
    /// English, the defaults above.
    pub fn english() -> Result<Self, String> {
        EdgeBm25::new(EdgeBm25Config::default())
            .map(|model| Self { model })
            .map_err(|e| format!("building the BM25 model: {e}"))
    }

    /// A stored text's sparse vector (term → saturated frequency).
    pub fn document(&self, text: &str) -> SparseVector {
        let v = self.model.embed_document(text);
        SparseVector {
            indices: v.indices,
            values: v.values,
        }
    }

    /// A query's sparse vector (term → 1; the engine applies the IDF).
    pub fn query(&self, text: &str) -> SparseVector {
        let v = self.model.embed_query(text);
        SparseVector {
            indices: v.indices,
            values: v.values,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stems_drops_stop_words_and_matches_query_terms_to_document_terms() {
        let m = Bm25::english().expect("model");
        let doc = m.document("Running the tests: run `make test` to run every test.");
        let query = m.query("how do I run tests");
        // "how", "do", "i" are stop words; "run" and "tests" stem to terms
        // the document holds.
        assert_eq!(query.indices.len(), 2, "{query:?}");
        assert!(query.values.iter().all(|&v| v == 1.0));
        for t in &query.indices {
            assert!(doc.indices.contains(t), "query term {t} not in {doc:?}");
        }
        // Repeated terms weigh more, saturating.
        let once = m.document("deploy");
        let thrice = m.document("deploy deploy deploy");
        assert!(thrice.values[0] > once.values[0]);
        assert!(thrice.values[0] < 3.0 * once.values[0]);
        // Unique indices, as the engines require.
        let mut sorted = doc.indices.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), doc.indices.len());
    }

    #[test]
    fn text_of_only_stop_words_or_symbols_has_no_terms() {
        let m = Bm25::english().expect("model");
        assert!(m.query("the of and").indices.is_empty());
        assert!(m.query("  ,;:!  ").indices.is_empty());
    }
}
