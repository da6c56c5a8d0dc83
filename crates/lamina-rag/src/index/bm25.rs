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

    pub fn analyzer(&self) -> Analyzer {
        self.analyzer
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

const BM25_MAGIC: &[u8; 8] = b"LMBM25IX";
/// Version 2 names the text analysis after the header; version 1 (before it was named) was
/// the plain analysis.
const BM25_VERSION: u32 = 2;

/// Saving and loading, in the checksummed envelope of [`super::persist`]: the analysis
/// ([`Analyzer::id`]), the vocabulary (sorted), then each chunk (by id) with its length and
/// its (term, frequency) pairs. The postings are rebuilt from these on load, and queries are
/// analysed as the saved texts were.
impl Bm25Index {
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut vocab: Vec<&String> = self.postings.keys().collect();
        vocab.sort();
        let index: HashMap<&str, u32> = vocab.iter().enumerate().map(|(i, t)| (t.as_str(), i as u32)).collect();
        let mut tf: HashMap<(ChunkId, u32), u32> = HashMap::new();
        for (t, p) in &self.postings {
            for &(id, n) in p {
                tf.insert((id, index[t.as_str()]), n);
            }
        }
        let mut out = super::persist::Writer::new(w, BM25_MAGIC, BM25_VERSION)?;
        out.str(&self.analyzer.id())?;
        out.len(vocab.len())?;
        for t in &vocab {
            out.str(t)?;
        }
        let mut ids: Vec<&ChunkId> = self.docs.keys().collect();
        ids.sort();
        out.len(ids.len())?;
        for id in ids {
            let (len, distinct) = &self.docs[id];
            let mut terms: Vec<u32> = distinct.iter().map(|t| index[t.as_str()]).collect();
            terms.sort_unstable();
            out.u64(id.0)?;
            out.u32(*len)?;
            out.len(terms.len())?;
            for t in terms {
                out.u32(t)?;
                out.u32(tf[&(*id, t)])?;
            }
        }
        out.finish()
    }

    /// Reads what [`Self::write_to`] wrote; damaged or truncated input is a
    /// [`crate::RagError::CorruptIndex`], never a panic.
    pub fn read_from(r: &mut dyn std::io::Read) -> crate::Result<Bm25Index> {
        let (mut rd, version) = super::persist::Reader::new(r, "keyword", BM25_MAGIC)?;
        let analyzer = match version {
            1 => Analyzer::PLAIN,
            BM25_VERSION => {
                let id = rd.string(256)?;
                Analyzer::from_id(&id).ok_or_else(|| rd.corrupt(format!("its text analysis `{id}` is unknown to this build")))?
            }
            _ => return Err(rd.corrupt(format!("it is format version {version}; this build reads versions 1 to {BM25_VERSION}"))),
        };
        let n = rd.len(u32::MAX as usize, "term")?;
        let mut vocab = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            vocab.push(rd.string(1 << 20)?);
        }
        let docs = rd.len(usize::MAX, "chunk")?;
        let mut ix = Bm25Index::with_analyzer(analyzer);
        for _ in 0..docs {
            let id = ChunkId(rd.u64()?);
            let len = rd.u32()?;
            let count = rd.len(vocab.len(), "chunk term")?;
            let mut distinct = Vec::with_capacity(count.min(1 << 16));
            let mut sum = 0u64;
            for _ in 0..count {
                let t = rd.u32()? as usize;
                let f = rd.u32()?;
                let Some(term) = vocab.get(t) else { return Err(rd.corrupt(format!("chunk {} names term {t} of {}", id.0, vocab.len()))) };
                if f == 0 {
                    return Err(rd.corrupt(format!("chunk {} has a zero term frequency", id.0)));
                }
                sum += f as u64;
                ix.postings.entry(term.clone()).or_default().push((id, f));
                distinct.push(term.clone());
            }
            if sum != len as u64 {
                return Err(rd.corrupt(format!("chunk {}'s length {len} is not the sum of its term frequencies", id.0)));
            }
            if ix.docs.insert(id, (len, distinct)).is_some() {
                return Err(rd.corrupt(format!("chunk {} appears twice", id.0)));
            }
            ix.total_len += len as u64;
        }
        rd.finish()?;
        Ok(ix)
    }
}

#[cfg(test)]
mod persist_tests {
    use super::*;

    #[test]
    fn the_text_analysis_is_saved_with_the_index() {
        let mut ix = Bm25Index::with_analyzer(Analyzer::PLAIN);
        ix.insert(ChunkId(1), "the running dogs");
        let mut bytes = Vec::new();
        ix.write_to(&mut bytes).unwrap();
        let back = Bm25Index::read_from(&mut &bytes[..]).unwrap();
        assert_eq!(back.analyzer(), Analyzer::PLAIN);
        // Plain analysis: "the" is a term and "run" is not (no stems).
        assert_eq!(back.search("the", 5, &|_| true).len(), 1);
        assert!(back.search("run", 5, &|_| true).is_empty());
        assert_eq!(Bm25Index::new().analyzer(), Analyzer::english());
    }

    #[test]
    fn bm25_round_trips_with_identical_scores() {
        let mut ix = Bm25Index::new();
        let texts = ["the cat sat on the mat", "dogs chase cats", "the cat and the cat", "Ünïcode wörds too", "mat mat mat dogs"];
        for (i, t) in texts.iter().enumerate() {
            ix.insert(ChunkId(i as u64 * 10), t);
        }
        ix.remove(ChunkId(10));
        let mut bytes = Vec::new();
        ix.write_to(&mut bytes).unwrap();
        let back = Bm25Index::read_from(&mut &bytes[..]).unwrap();
        assert_eq!(back.len(), ix.len());
        for q in ["cat", "the mat", "dogs", "wörds", "nothing"] {
            assert_eq!(back.search(q, 10, &|_| true), ix.search(q, 10, &|_| true), "{q}");
        }
        let mut again = Vec::new();
        back.write_to(&mut again).unwrap();
        assert_eq!(again, bytes);
        for cut in [0, 9, 20, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(Bm25Index::read_from(&mut &bytes[..cut]), Err(crate::RagError::CorruptIndex { .. })), "cut {cut}");
        }
        let mut bad = bytes.clone();
        bad[30] ^= 4;
        assert!(Bm25Index::read_from(&mut &bad[..]).is_err());
        assert!(Bm25Index::read_from(&mut &b"not an index at all"[..]).is_err());
    }
}
