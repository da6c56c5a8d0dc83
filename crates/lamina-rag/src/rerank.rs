//! A second stage over a search's first hits: a model reads the query with each candidate
//! and scores how well they go together, which a bi-encoder's one vector per text cannot.
//! The crate needs no model for it: scores come in through [`Reranker`] (the `engine`
//! feature implements it with a chat model's log-likelihoods: `EngineReranker`).

use crate::index::fusion::min_max;
use crate::types::Hit;
use crate::Result;

/// Relevance of passages to a query, by a model that reads both together.
pub trait Reranker: Send + Sync {
    /// The model's name (reported with the results).
    fn model_id(&self) -> &str;
    /// One score per passage, higher is more relevant; comparable within one call only.
    fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>>;
}

/// How the reranker's score and the first stage's score are combined.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RerankOptions {
    /// The first hits rescored (the rest keep their order, after them).
    pub candidates: usize,
    /// `weight`·(reranker score, min-max normalised over the candidates) + (1 − `weight`)·(first
    /// stage score, min-max normalised): 1 ranks by the reranker alone.
    pub weight: f32,
}

/// The weight chosen on the tuning half of the Alpaca evaluation (docs/retrieval.md).
pub const DEFAULT_RERANK_WEIGHT: f32 = 0.6;
/// Candidates rescored by default.
pub const DEFAULT_RERANK_CANDIDATES: usize = 5;
/// Passages are cut to this many of the reranking model's tokens (the start of a passage
/// says what it is about; the rest costs prefill time).
pub const DEFAULT_PASSAGE_TOKENS: usize = 128;

impl Default for RerankOptions {
    fn default() -> RerankOptions {
        RerankOptions { candidates: DEFAULT_RERANK_CANDIDATES, weight: DEFAULT_RERANK_WEIGHT }
    }
}

/// Combines first-stage scores and reranker scores as [`RerankOptions`] says: the order of
/// the candidates, best first (indexes into the inputs; ties keep the first stage's order).
pub fn combine(first_stage: &[f32], reranker: &[f32], weight: f32) -> Vec<usize> {
    assert_eq!(first_stage.len(), reranker.len());
    let (a, b) = (min_max(first_stage), min_max(reranker));
    let combined: Vec<f32> = a.iter().zip(&b).map(|(a, b)| (1.0 - weight) * a + weight * b).collect();
    let mut order: Vec<usize> = (0..combined.len()).collect();
    order.sort_by(|&i, &j| combined[j].total_cmp(&combined[i]).then(i.cmp(&j)));
    order
}

/// Reorders the first `options.candidates` of `hits` (best first, as [`crate::search()`] returns
/// them) for `query`; each rescored hit gets its `rerank_score`.
pub fn rerank(mut hits: Vec<Hit>, query: &str, reranker: &dyn Reranker, options: RerankOptions) -> Result<Vec<Hit>> {
    let n = options.candidates.min(hits.len());
    if n < 2 {
        return Ok(hits);
    }
    let rest = hits.split_off(n);
    let texts: Vec<&str> = hits.iter().map(|h| h.chunk.text.as_str()).collect();
    let scores = reranker.score(query, &texts)?;
    if scores.len() != n {
        return Err(crate::RagError::InvalidInput(format!("the reranker returned {} scores for {n} passages", scores.len())));
    }
    let first: Vec<f32> = hits.iter().map(|h| h.score).collect();
    let order = combine(&first, &scores, options.weight);
    let mut slots: Vec<Option<Hit>> = hits.into_iter().map(Some).collect();
    let mut out: Vec<Hit> = order
        .into_iter()
        .map(|i| {
            let mut h = slots[i].take().expect("each index once");
            h.rerank_score = Some(scores[i]);
            h
        })
        .collect();
    out.extend(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ChunkId, ChunkRecord, Metadata};

    fn hit(id: u64, text: &str, score: f32) -> Hit {
        let chunk = ChunkRecord { id: ChunkId(id), source: "s".into(), text: text.into(), byte_range: 0..1, heading: None, metadata: Metadata::default() };
        Hit { chunk, score, similarity: Some(score), vector_rank: Some(id as usize), keyword_rank: None, rerank_score: None }
    }

    /// Scores a passage by how many of the query's words it holds.
    struct Overlap;
    impl Reranker for Overlap {
        fn model_id(&self) -> &str {
            "overlap"
        }
        fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
            Ok(passages.iter().map(|p| query.split_whitespace().filter(|w| p.contains(w)).count() as f32).collect())
        }
    }

    #[test]
    fn combine_weighs_the_two_normalised_scores() {
        // First stage: 0 > 1 > 2; reranker: 2 > 1 > 0.
        let first = [0.9, 0.8, 0.5];
        let second = [-30.0, -20.0, -10.0];
        assert_eq!(combine(&first, &second, 0.0), vec![0, 1, 2]);
        assert_eq!(combine(&first, &second, 1.0), vec![2, 1, 0]);
        // Normalised: first 1, 0.75, 0; second 0, 0.5, 1. At 0.5: 0.5, 0.625, 0.5 → 1 first, ties by first stage.
        assert_eq!(combine(&first, &second, 0.5), vec![1, 0, 2]);
        // Constant scores carry no information and change nothing.
        assert_eq!(combine(&first, &[3.0, 3.0, 3.0], 0.9), vec![0, 1, 2]);
    }

    #[test]
    fn rerank_reorders_only_the_candidates_and_records_scores() {
        let hits = vec![hit(1, "alpha", 0.9), hit(2, "beta gamma", 0.8), hit(3, "gamma", 0.7), hit(4, "beta gamma delta", 0.6)];
        let out = rerank(hits, "beta gamma", &Overlap, RerankOptions { candidates: 3, weight: 1.0 }).unwrap();
        let ids: Vec<u64> = out.iter().map(|h| h.chunk.id.0).collect();
        assert_eq!(ids, vec![2, 3, 1, 4], "hit 4 is past the candidates and stays last");
        assert_eq!(out[0].rerank_score, Some(2.0));
        assert_eq!(out[2].rerank_score, Some(0.0));
        assert_eq!(out[3].rerank_score, None);
    }
}

#[cfg(feature = "engine")]
mod engine_impl {
    use super::Reranker;
    use crate::{RagError, Result};
    use lamina_engine::{loglikelihoods, Continuation, Engine, EngineConfig};
    use lamina_kernels::ThreadPool;
    use lamina_model::Model;
    use lamina_tokenizer::{ChatMessage, Tokenizer};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};

    /// A [`Reranker`] from a chat model's log-likelihoods (lamina-engine's [`loglikelihoods`]),
    /// so no separate cross-encoder is needed: the score of a passage for a query is
    ///
    /// log P(passage | the query as the user's turn) − log P(passage | an empty user turn),
    ///
    /// the passage read as the assistant's answer: how much more likely the query makes it
    /// (pointwise mutual information; the second term takes out how likely the text is
    /// anyway). The second term depends on the passage alone and is remembered.
    pub struct EngineReranker {
        model_id: String,
        state: Mutex<State>,
        /// Passages are cut to this many tokens before scoring.
        max_passage_tokens: usize,
    }

    struct State {
        engine: Engine,
        /// The chat template's empty user turn, ready for the answer: the second term's context.
        without: Vec<u32>,
        /// log P(passage | an empty turn) by passage text.
        unconditional: HashMap<String, f64>,
    }

    /// Tokens scored in one forward pass.
    const BATCH_TOKENS: usize = 2048;
    /// Passages whose unconditional log-likelihood is remembered (then the memory starts over).
    const REMEMBERED: usize = 100_000;

    impl EngineReranker {
        /// A reranker on `model`, which must have a chat template, on the worker pool `workers`.
        pub fn new(
            model_id: &str,
            model: Arc<Model>,
            tokenizer: Arc<Tokenizer>,
            workers: Arc<ThreadPool>,
            max_passage_tokens: usize,
        ) -> Result<EngineReranker> {
            if tokenizer.chat_template().is_none() {
                return Err(RagError::InvalidInput(format!("`{model_id}` has no chat template; reranking needs a chat model")));
            }
            let bs = lamina_model::DEFAULT_BLOCK_SIZE;
            let config = EngineConfig {
                max_sequences: 1,
                context_length: model.config.context_length.min(4096),
                max_batch_tokens: BATCH_TOKENS,
                kv_blocks: BATCH_TOKENS / bs + 64,
                ..EngineConfig::default()
            };
            let without = user_turn(&tokenizer, "")?;
            let engine = Engine::new(model, tokenizer, workers, config).map_err(err)?;
            Ok(EngineReranker {
                model_id: model_id.to_string(),
                state: Mutex::new(State { engine, without, unconditional: HashMap::new() }),
                max_passage_tokens: max_passage_tokens.max(1),
            })
        }
    }

    fn err(e: lamina_core::Error) -> RagError {
        RagError::Embed(format!("reranking: {e}"))
    }

    /// `user` as the user's turn through the chat template, with the assistant's turn opened.
    fn user_turn(tok: &Tokenizer, user: &str) -> Result<Vec<u32>> {
        tok.encode(&tok.apply_chat_template(&[ChatMessage::user(user)], true).map_err(err)?, true).map_err(err)
    }

    impl Reranker for EngineReranker {
        fn model_id(&self) -> &str {
            &self.model_id
        }

        fn score(&self, query: &str, passages: &[&str]) -> Result<Vec<f32>> {
            let mut state = self.state.lock().map_err(|_| RagError::Embed("the reranker failed earlier".into()))?;
            let State { engine, without, unconditional } = &mut *state;
            let tok = engine.tokenizer.clone();
            let with = user_turn(&tok, query.trim())?;
            // The context window holds the longer turn and the passage.
            let room = engine.context_length().saturating_sub(with.len().max(without.len()));
            let cut: Vec<Vec<u32>> = passages
                .iter()
                .map(|p| {
                    let mut ids = tok.encode(p, false).map_err(err)?;
                    ids.truncate(self.max_passage_tokens.min(room));
                    Ok(ids)
                })
                .collect::<Result<_>>()?;
            if room == 0 {
                return Err(RagError::InvalidInput(format!(
                    "a query of {} tokens leaves no room for a passage in {}'s context window",
                    with.len(),
                    self.model_id
                )));
            }
            if let Some(i) = cut.iter().position(|c| c.is_empty()) {
                return Err(RagError::InvalidInput(format!("passage {i} to rerank is empty")));
            }
            let mut items: Vec<Continuation<'_>> = cut.iter().map(|c| Continuation { context: &with, continuation: c }).collect();
            let missing: Vec<usize> = (0..passages.len()).filter(|&i| !unconditional.contains_key(passages[i])).collect();
            items.extend(missing.iter().map(|&i| Continuation { context: without, continuation: &cut[i] }));
            let ll = loglikelihoods(engine, &items, BATCH_TOKENS).map_err(err)?;
            if unconditional.len() + missing.len() > REMEMBERED {
                unconditional.clear();
            }
            for (j, &i) in missing.iter().enumerate() {
                unconditional.insert(passages[i].to_string(), ll[passages.len() + j].logprob);
            }
            Ok((0..passages.len()).map(|i| (ll[i].logprob - unconditional[passages[i]]) as f32).collect())
        }
    }
}

#[cfg(feature = "engine")]
pub use engine_impl::EngineReranker;
