//! BM25 keyword search (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
//! BM25 and Beyond", 2009), with Lucene's non-negative idf: ln(1 + (N − df + 0.5)/(df + 0.5)).

use super::analyzer::Analyzer;
use super::vector::TopK;
use crate::types::ChunkId;
use std::collections::HashMap;

/// Term saturation and length normalisation, at the usual defaults.
pub const K1: f32 = 1.2;
pub const B: f32 = 0.75;

#[derive(Default)]
pub struct Bm25Index {
    analyzer: Analyzer,
    /// term → (chunk, term frequency)
    postings: HashMap<String, Vec<(ChunkId, u32)>>,
    /// chunk → (length in terms, its distinct terms)
    docs: HashMap<ChunkId, (u32, Vec<String>)>,
    total_len: u64,
}

/// The terms of `text` under the default analysis ([`Analyzer::english`]).
pub fn terms(text: &str) -> impl Iterator<Item = String> + '_ {
    Analyzer::default().terms(text).into_iter()
}

impl Bm25Index {
    pub fn new() -> Bm25Index {
        Bm25Index::default()
    }

    /// An index that analyses texts and queries with `analyzer`.
    pub fn with_analyzer(analyzer: Analyzer) -> Bm25Index {
        Bm25Index { analyzer, ..Bm25Index::default() }
    }

    pub fn len(&self) -> usize {
        self.docs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.docs.is_empty()
    }

    pub fn insert(&mut self, id: ChunkId, text: &str) {
        self.remove(id);
        let mut tf: HashMap<String, u32> = HashMap::new();
        let mut len = 0u32;
        for t in self.analyzer.terms(text) {
            *tf.entry(t).or_default() += 1;
            len += 1;
        }
        let mut distinct = Vec::with_capacity(tf.len());
        for (t, n) in tf {
            self.postings.entry(t.clone()).or_default().push((id, n));
            distinct.push(t);
        }
        self.total_len += len as u64;
        self.docs.insert(id, (len, distinct));
    }

    pub fn remove(&mut self, id: ChunkId) -> bool {
        let Some((len, distinct)) = self.docs.remove(&id) else { return false };
        self.total_len -= len as u64;
        for t in distinct {
            if let Some(p) = self.postings.get_mut(&t) {
                p.retain(|(d, _)| *d != id);
                if p.is_empty() {
                    self.postings.remove(&t);
                }
            }
        }
        true
    }

    /// The `k` best chunks for `query` that `accept` lets through, best first. Chunks that
    /// share no term with the query are not returned.
    pub fn search(&self, query: &str, k: usize, accept: &dyn Fn(ChunkId) -> bool) -> Vec<(ChunkId, f32)> {
        let n = self.docs.len() as f32;
        if n == 0.0 {
            return Vec::new();
        }
        let avg = self.total_len as f32 / n;
        let mut q: Vec<String> = self.analyzer.terms(query);
        q.sort();
        q.dedup();
        let mut scores: HashMap<ChunkId, f32> = HashMap::new();
        for t in &q {
            let Some(p) = self.postings.get(t) else { continue };
            let df = p.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for &(id, tf) in p {
                let len = self.docs[&id].0 as f32;
                let tf = tf as f32;
                *scores.entry(id).or_default() += idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * len / avg));
            }
        }
        let mut top = TopK::new(k);
        for (id, s) in scores {
            if accept(id) {
                top.push(id, s);
            }
        }
        top.into_sorted()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bm25_scores_match_a_hand_computation() {
        let mut ix = Bm25Index::with_analyzer(Analyzer::PLAIN);
        ix.insert(ChunkId(1), "the cat sat on the mat");
        ix.insert(ChunkId(2), "dogs chase cats");
        ix.insert(ChunkId(3), "the cat and the cat");
        let got = ix.search("cat", 10, &|_| true);
        // N = 3, df(cat) = 2: idf = ln(1 + 1.5/2.5); avg len = (6+3+5)/3.
        let idf = (1.0f32 + 1.5 / 2.5).ln();
        let avg = 14.0f32 / 3.0;
        let s = |tf: f32, len: f32| idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * len / avg));
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, ChunkId(3));
        assert!((got[0].1 - s(2.0, 5.0)).abs() < 1e-5);
        assert!((got[1].1 - s(1.0, 6.0)).abs() < 1e-5);
        assert!(ix.remove(ChunkId(3)));
        assert_eq!(ix.search("cat", 10, &|_| true).len(), 1);
        assert!(ix.search("cat", 10, &|id| id != ChunkId(1)).is_empty());
    }
}
