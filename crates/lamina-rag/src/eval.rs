//! Retrieval quality: an evaluation set (questions, a corpus, the one passage that answers
//! each question), run over any [`Store`] through [`crate::search()`], scored by hit@1,
//! hit@10 and MRR@10.
//!
//! The set the issue asks for comes from the Alpaca instruction data ([`alpaca_set`]): the
//! question is a record's instruction (plus its input), the passage that answers it is the
//! record's output, and the corpus holds other records' outputs and Shakespeare passages as
//! distractors. Identical outputs ("Yes", "No") are one passage, relevant to every record
//! that has it.

use crate::embed::{EmbedKind, TextEmbedder};
use crate::search::{search, SearchRequest};
use crate::store::{Change, MemoryState, Store};
use crate::types::{CollectionSpec, NewChunk, SearchMode, SourceRecord};
use crate::{RagError, Result};
use std::collections::HashMap;
use std::ops::Range;

/// A passage of the corpus.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalDoc {
    /// Its source key in the store: `alpaca:<record>` or `shakespeare:<passage>`.
    pub key: String,
    pub text: String,
}

/// A question and the index in the corpus of the passage that answers it (`None`: nothing
/// in the corpus does).
#[derive(Debug, Clone, PartialEq)]
pub struct EvalQuery {
    pub record: usize,
    pub text: String,
    pub relevant: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct EvalSet {
    pub corpus: Vec<EvalDoc>,
    pub queries: Vec<EvalQuery>,
    /// Questions whose answer is not in the corpus (for choosing a relevance threshold).
    pub unanswerable: Vec<EvalQuery>,
}

/// Which Alpaca records play which part.
#[derive(Debug, Clone, PartialEq)]
pub struct AlpacaSplit {
    /// Records whose outputs are in the corpus and whose instructions are asked.
    pub answered: Range<usize>,
    /// Of those, the ones asked (a part of `answered`, to tune on one half and test on the other).
    pub asked: Range<usize>,
    /// Records whose outputs are in the corpus as distractors (not asked).
    pub distractors: Range<usize>,
    /// Records whose instructions are asked with their outputs left out of the corpus.
    pub unanswerable: Range<usize>,
    /// Tinyshakespeare passages added as distractors (consecutive speeches, ~600 bytes each).
    pub shakespeare_passages: usize,
}

impl AlpacaSplit {
    /// The issue's set: records 0–3999 answered and asked, 4000–4499's outputs and 500
    /// Shakespeare passages as distractors, 4500–4999 unanswerable.
    pub fn full() -> AlpacaSplit {
        AlpacaSplit { answered: 0..4000, asked: 0..4000, distractors: 4000..4500, unanswerable: 4500..5000, shakespeare_passages: 500 }
    }
}

#[derive(serde::Deserialize)]
struct AlpacaRecord {
    instruction: String,
    #[serde(default)]
    input: String,
    output: String,
}

fn question(r: &AlpacaRecord) -> String {
    if r.input.trim().is_empty() {
        r.instruction.clone()
    } else {
        format!("{}\n{}", r.instruction, r.input)
    }
}

/// Splits text into passages of whole blank-line-separated paragraphs, each about
/// `target_bytes` long.
pub fn passages(text: &str, target_bytes: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for para in text.split("\n\n").map(str::trim).filter(|p| !p.is_empty()) {
        if !cur.is_empty() {
            cur.push_str("\n\n");
        }
        cur.push_str(para);
        if cur.len() >= target_bytes {
            out.push(std::mem::take(&mut cur));
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Builds the Alpaca set from `alpaca_json` (`alpaca_5000.json`'s text) and `shakespeare`
/// (`tinyshakespeare.txt`'s). Records with an empty output are left out.
pub fn alpaca_set(alpaca_json: &str, shakespeare: &str, split: &AlpacaSplit) -> Result<EvalSet> {
    let records: Vec<AlpacaRecord> =
        serde_json::from_str(alpaca_json).map_err(|e| RagError::InvalidInput(format!("the Alpaca data is not a JSON list of records: {e}")))?;
    for (name, r) in [("answered", &split.answered), ("distractors", &split.distractors), ("unanswerable", &split.unanswerable)] {
        if r.end > records.len() {
            return Err(RagError::InvalidInput(format!("{name} records {r:?}: the data has {}", records.len())));
        }
    }
    let overlaps = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
    if overlaps(&split.unanswerable, &split.answered) || overlaps(&split.unanswerable, &split.distractors) {
        return Err(RagError::InvalidInput("unanswerable records must not have their outputs in the corpus".into()));
    }
    if split.asked.start < split.answered.start || split.asked.end > split.answered.end {
        return Err(RagError::InvalidInput(format!("asked records {:?} are not all answered ({:?})", split.asked, split.answered)));
    }
    let mut set = EvalSet::default();
    let mut by_text: HashMap<String, usize> = HashMap::new();
    let mut add = |set: &mut EvalSet, key: String, text: &str| -> usize {
        *by_text.entry(text.to_string()).or_insert_with(|| {
            set.corpus.push(EvalDoc { key, text: text.to_string() });
            set.corpus.len() - 1
        })
    };
    let mut answer_of = HashMap::new();
    for i in split.answered.clone().chain(split.distractors.clone()) {
        let out = records[i].output.trim();
        if !out.is_empty() {
            answer_of.insert(i, add(&mut set, format!("alpaca:{i}"), out));
        }
    }
    for (p, text) in passages(shakespeare, 600).into_iter().take(split.shakespeare_passages).enumerate() {
        add(&mut set, format!("shakespeare:{p}"), &text);
    }
    for i in split.asked.clone() {
        if let Some(&doc) = answer_of.get(&i) {
            set.queries.push(EvalQuery { record: i, text: question(&records[i]), relevant: Some(doc) });
        }
    }
    for i in split.unanswerable.clone() {
        let q = question(&records[i]);
        if !q.trim().is_empty() {
            set.unanswerable.push(EvalQuery { record: i, text: q, relevant: None });
        }
    }
    Ok(set)
}

/// An in-memory collection holding `set`'s corpus, one source of one chunk per passage, with
/// `vectors[i]` for passage `i`.
pub fn build_store(set: &EvalSet, spec: CollectionSpec, vectors: &[Vec<f32>]) -> Result<MemoryState> {
    if vectors.len() != set.corpus.len() {
        return Err(RagError::InvalidInput(format!("{} vectors for {} passages", vectors.len(), set.corpus.len())));
    }
    let mut store = MemoryState::new(spec);
    let changes = set
        .corpus
        .iter()
        .zip(vectors)
        .map(|(d, v)| Change::Put {
            source: SourceRecord {
                source: d.key.clone(),
                content_hash: String::new(),
                bytes: d.text.len() as u64,
                chunks: 1,
                added_at: 0,
                metadata: Default::default(),
            },
            chunks: vec![NewChunk { text: d.text.clone(), byte_range: 0..d.text.len() as u64, heading: None, vector: v.clone() }],
        })
        .collect();
    Store::apply(&mut store, changes)?;
    Ok(store)
}

/// hit@1, hit@10 and MRR@10 over a set of questions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub queries: usize,
    /// Share of questions whose answer is ranked first.
    pub hit_at_1: f64,
    /// Share of questions whose answer is in the first ten.
    pub hit_at_10: f64,
    /// Mean of 1/rank of the answer, 0 when it is not in the first ten.
    pub mrr_at_10: f64,
}

/// Metrics from the 1-based rank of each question's answer (`None`: not retrieved).
pub fn metrics(ranks: &[Option<usize>]) -> Metrics {
    let n = ranks.len();
    if n == 0 {
        return Metrics { queries: 0, hit_at_1: 0.0, hit_at_10: 0.0, mrr_at_10: 0.0 };
    }
    let within = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n as f64;
    let mrr = ranks.iter().map(|r| r.filter(|&r| r <= 10).map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>() / n as f64;
    Metrics { queries: n, hit_at_1: within(1), hit_at_10: within(10), mrr_at_10: mrr }
}

/// What one run of a set gives: per question, the answer's rank and the best hit's
/// similarity (vector and hybrid modes).
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub ranks: Vec<Option<usize>>,
    pub best_similarity: Vec<Option<f32>>,
}

impl Run {
    pub fn metrics(&self) -> Metrics {
        metrics(&self.ranks)
    }
}

/// The 1-based rank of `q`'s answer in `hits` (passages are told apart by source key).
fn answer_rank(set: &EvalSet, q: &EvalQuery, hits: &[crate::types::Hit]) -> Option<usize> {
    let key = set.corpus[q.relevant?].key.as_str();
    hits.iter().position(|h| h.chunk.source == key).map(|p| p + 1)
}

/// Asks each of `queries` of `set` with `template`'s settings (its query is replaced), the
/// ten best, and finds where the answer ranks. Passages are told apart by source key.
pub fn run(store: &dyn Store, embedder: &dyn TextEmbedder, set: &EvalSet, queries: &[EvalQuery], template: &SearchRequest) -> Result<Run> {
    let mut out = Run { ranks: Vec::with_capacity(queries.len()), best_similarity: Vec::with_capacity(queries.len()) };
    for q in queries {
        let req = SearchRequest { query: q.text.clone(), k: template.k.max(10), ..template.clone() };
        let hits = search(store, embedder, &req)?;
        out.ranks.push(answer_rank(set, q, &hits));
        out.best_similarity.push(hits.iter().filter_map(|h| h.similarity).reduce(f32::max));
    }
    Ok(out)
}

/// One question's first-stage candidates scored by both stages, so that combination weights
/// can be compared without running the reranker again.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rescored {
    pub record: usize,
    /// The answer's 1-based rank among the first stage's hits (the ten best, or more when more are candidates).
    pub first_rank: Option<usize>,
    /// The first stage's scores of its first candidates, best first.
    pub first: Vec<f32>,
    /// The reranker's scores of the same candidates.
    pub second: Vec<f32>,
}

impl Rescored {
    /// The answer's rank once the first `candidates` are reordered with `weight`
    /// ([`crate::rerank::combine`]); an answer past them keeps its rank.
    pub fn rank(&self, candidates: usize, weight: f32) -> Option<usize> {
        let n = candidates.min(self.first.len());
        match self.first_rank {
            Some(r) if r <= n => {
                let order = crate::rerank::combine(&self.first[..n], &self.second[..n], weight);
                order.iter().position(|&i| i == r - 1).map(|p| p + 1)
            }
            other => other,
        }
    }
}

/// Searches each of `queries` as [`run`] does and scores its first `candidates` hits with
/// `reranker`; `progress` gets the count done.
#[allow(clippy::too_many_arguments)]
pub fn rescore(
    store: &dyn Store,
    embedder: &dyn TextEmbedder,
    set: &EvalSet,
    queries: &[EvalQuery],
    template: &SearchRequest,
    reranker: &dyn crate::rerank::Reranker,
    candidates: usize,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<Vec<Rescored>> {
    let mut out = Vec::with_capacity(queries.len());
    for (i, q) in queries.iter().enumerate() {
        let req = SearchRequest { query: q.text.clone(), k: template.k.max(10).max(candidates), ..template.clone() };
        let hits = search(store, embedder, &req)?;
        let first_rank = answer_rank(set, q, &hits);
        let top = &hits[..candidates.min(hits.len())];
        let texts: Vec<&str> = top.iter().map(|h| h.chunk.text.as_str()).collect();
        let second = reranker.score(&q.text, &texts)?;
        out.push(Rescored { record: q.record, first_rank, first: top.iter().map(|h| h.score).collect(), second });
        progress(i + 1, queries.len());
    }
    Ok(out)
}

/// The modes in the order tables list them.
pub const MODES: [SearchMode; 3] = [SearchMode::Vector, SearchMode::Keyword, SearchMode::Hybrid];

/// An embedder that remembers every vector it made, and can save and load them: an
/// evaluation embeds its corpus and questions once, then searches them many times.
pub struct CachedEmbedder<'a> {
    inner: &'a dyn TextEmbedder,
    cache: std::sync::Mutex<HashMap<(bool, String), Vec<f32>>>,
}

impl<'a> CachedEmbedder<'a> {
    pub fn new(inner: &'a dyn TextEmbedder) -> CachedEmbedder<'a> {
        CachedEmbedder { inner, cache: Default::default() }
    }

    fn key(kind: EmbedKind, text: &str) -> (bool, String) {
        (kind == EmbedKind::Query, text.to_string())
    }

    /// Vectors of `texts`, embedding `batch` at a time those not seen yet; `progress` gets
    /// the count done after each batch.
    pub fn embed_all(&self, texts: &[&str], kind: EmbedKind, batch: usize, progress: &mut dyn FnMut(usize, usize)) -> Result<Vec<Vec<f32>>> {
        let missing: Vec<&str> = {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            let mut seen = std::collections::HashSet::new();
            texts.iter().copied().filter(|t| !cache.contains_key(&Self::key(kind, t)) && seen.insert(*t)).collect()
        };
        for (i, part) in missing.chunks(batch.max(1)).enumerate() {
            let vs = self.inner.embed(part, kind)?;
            let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            for (t, v) in part.iter().zip(vs) {
                cache.insert(Self::key(kind, t), v);
            }
            progress((i * batch.max(1) + part.len()).min(missing.len()), missing.len());
        }
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        Ok(texts.iter().map(|t| cache[&Self::key(kind, t)].clone()).collect())
    }

    /// A file name for the vectors of `texts` by this model: a hash of both.
    pub fn cache_name(&self, texts: &[&str], kind: EmbedKind) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(self.inner.model_id().as_bytes());
        h.update([0, (kind == EmbedKind::Query) as u8]);
        for t in texts {
            h.update((t.len() as u64).to_le_bytes());
            h.update(t.as_bytes());
        }
        let d = h.finalize();
        format!("{}-{}.f32", self.inner.model_id().replace(['/', '\\'], "_"), d.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
    }

    /// Like [`CachedEmbedder::embed_all`], reading the vectors from `dir` where an earlier
    /// run saved them, and saving them as it goes: texts are taken [`CACHE_PART`] at a time,
    /// each part in a file named by [`CachedEmbedder::cache_name`], so an interrupted run
    /// resumes where it stopped.
    pub fn embed_all_cached(
        &self,
        dir: &std::path::Path,
        texts: &[&str],
        kind: EmbedKind,
        batch: usize,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Vec<Vec<f32>>> {
        let dims = self.inner.dimensions().max(1);
        std::fs::create_dir_all(dir).map_err(|e| RagError::io(format!("creating {}", dir.display()), e))?;
        let mut out = Vec::with_capacity(texts.len());
        for part in texts.chunks(CACHE_PART) {
            let path = dir.join(self.cache_name(part, kind));
            let saved = std::fs::read(&path).ok().filter(|b| b.len() == part.len() * dims * 4);
            let vectors: Vec<Vec<f32>> = match saved {
                Some(bytes) => {
                    let flat: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
                    let vectors: Vec<Vec<f32>> = flat.chunks_exact(dims).map(<[f32]>::to_vec).collect();
                    let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    for (t, v) in part.iter().zip(&vectors) {
                        cache.insert(Self::key(kind, t), v.clone());
                    }
                    vectors
                }
                None => {
                    let done = out.len();
                    let vectors = self.embed_all(part, kind, batch, &mut |n, _| progress(done + n, texts.len()))?;
                    let bytes: Vec<u8> = vectors.iter().flatten().flat_map(|x| x.to_le_bytes()).collect();
                    lamina_core::fs::write_bytes_atomic(&path, &bytes)?;
                    vectors
                }
            };
            out.extend(vectors);
        }
        progress(out.len(), texts.len());
        Ok(out)
    }
}

/// Texts per cache file of [`CachedEmbedder::embed_all_cached`].
pub const CACHE_PART: usize = 256;

impl TextEmbedder for CachedEmbedder<'_> {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
        self.embed_all(texts, kind, 32, &mut |_, _| {})
    }
}

/// A markdown table of `rows` (a label and its metrics).
pub fn table(rows: &[(String, Metrics)]) -> String {
    let mut s = String::from("| run | queries | hit@1 | hit@10 | MRR@10 |\n| --- | ---: | ---: | ---: | ---: |\n");
    for (label, m) in rows {
        s.push_str(&format!("| {label} | {} | {:.3} | {:.3} | {:.3} |\n", m.queries, m.hit_at_1, m.hit_at_10, m.mrr_at_10));
    }
    s
}

/// The share of `values` at or above `threshold`.
pub fn share_at_least(values: &[Option<f32>], threshold: f32) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().filter(|v| v.is_some_and(|v| v >= threshold)).count() as f64 / values.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_hand_made_rankings() {
        // Ranks 1, 3, 10, 11 (past the cut-off) and not found.
        let m = metrics(&[Some(1), Some(3), Some(10), Some(11), None]);
        assert_eq!(m.queries, 5);
        assert!((m.hit_at_1 - 0.2).abs() < 1e-12);
        assert!((m.hit_at_10 - 0.6).abs() < 1e-12);
        assert!((m.mrr_at_10 - (1.0 + 1.0 / 3.0 + 0.1) / 5.0).abs() < 1e-12);
        let perfect = metrics(&[Some(1); 4]);
        assert_eq!((perfect.hit_at_1, perfect.hit_at_10, perfect.mrr_at_10), (1.0, 1.0, 1.0));
        let none = metrics(&[None, None]);
        assert_eq!((none.hit_at_1, none.hit_at_10, none.mrr_at_10), (0.0, 0.0, 0.0));
        assert_eq!(metrics(&[]).queries, 0);
    }

    #[test]
    fn shares_at_a_threshold() {
        let v = [Some(0.2), Some(0.5), None, Some(0.9)];
        assert_eq!(share_at_least(&v, 0.5), 0.5);
        assert_eq!(share_at_least(&v, 0.95), 0.0);
    }

    const DATA: &str = r#"[
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {"instruction": "Is it true?", "input": "The sky is green.", "output": "No"},
        {"instruction": "Is this correct?", "input": "2 + 2 = 5", "output": "No"},
        {"instruction": "Say nothing.", "input": "", "output": ""},
        {"instruction": "Name a fruit.", "input": "", "output": "Apple."},
        {"instruction": "Name a tree.", "input": "", "output": "Oak."}
    ]"#;

    #[test]
    fn the_alpaca_set_shares_identical_outputs_and_skips_empty_ones() {
        let split = AlpacaSplit { answered: 0..4, asked: 0..4, distractors: 4..5, unanswerable: 5..6, shakespeare_passages: 2 };
        let set = alpaca_set(DATA, "A:\nOne.\n\nB:\nTwo.\n\nC:\nThree.", &split).unwrap();
        let texts: Vec<&str> = set.corpus.iter().map(|d| d.text.as_str()).collect();
        // "No" once; no empty passage; the distractor; the tiny speeches gathered into one
        // passage (together they are under 600 bytes).
        assert_eq!(texts, vec!["Blue.", "No", "Apple.", "A:\nOne.\n\nB:\nTwo.\n\nC:\nThree."]);
        assert_eq!(set.corpus[1].key, "alpaca:1");
        assert_eq!(set.queries.len(), 3, "the record with an empty output is not asked");
        assert_eq!(set.queries[1].text, "Is it true?\nThe sky is green.");
        assert_eq!(set.queries[1].relevant, Some(1));
        assert_eq!(set.queries[2].relevant, Some(1), "an identical output is the same passage");
        assert_eq!(set.unanswerable.len(), 1);
        assert_eq!(set.unanswerable[0].text, "Name a tree.");

        let bad = AlpacaSplit { unanswerable: 4..5, ..split.clone() };
        assert!(alpaca_set(DATA, "", &bad).is_err(), "an unanswerable record's output is in the corpus");
        let past = AlpacaSplit { distractors: 4..9, ..split };
        assert!(alpaca_set(DATA, "", &past).is_err());
        assert!(alpaca_set("{}", "", &AlpacaSplit::full()).is_err());
    }

    #[test]
    fn passages_gather_whole_paragraphs() {
        let text = format!("{}\n\n{}\n\n{}", "a".repeat(5), "b".repeat(5), "c".repeat(3));
        assert_eq!(passages(&text, 8), vec![format!("{}\n\n{}", "a".repeat(5), "b".repeat(5)), "ccc".to_string()]);
    }
}
