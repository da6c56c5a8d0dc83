//! The grounded prompt of a retrieval-augmented answer: the retrieved chunks as numbered
//! sources, an instruction to answer from them only and cite them as `[n]`, inside the chat
//! model's context window. Written once for `lamina ask` and the server's RAG chat.
//!
//! Two rules decide which hits become sources:
//! - Relevance. A hit whose cosine similarity to the question is below the threshold is not
//!   used. When no hit reaches it the question is off the collection's topic:
//!   [`RagPrompt::nothing_relevant`] is set and the caller answers "I don't know" without
//!   calling the model. A hybrid hit that the keyword side found counts as relevant once the
//!   question itself passed (BM25 scores have no absolute scale to hold against a threshold);
//!   keyword-only search has no similarities, so there only "no hit at all" is nothing relevant.
//! - Room. Sources go in best first while they fit the window less the tokens reserved for
//!   the answer; one that does not fit is dropped whole and reported, never cut short.

use crate::embed::TokenCounter;
use crate::types::{ChunkId, Hit};
use serde::{Deserialize, Serialize};
use std::ops::Range;

/// The default relevance threshold on the best hit's cosine similarity (all-MiniLM-L6-v2).
/// Chosen on the alpaca evaluation (docs/retrieval.md): the cosine of the best hit of
/// questions whose answer is in the collection, against that of questions whose answer is not.
pub const DEFAULT_THRESHOLD: f32 = 0.30;

/// The instruction the model answers under.
pub const SYSTEM_PROMPT: &str = "Answer the question in a full sentence, using only the numbered sources in the user's message. \
After each fact, put the number of the source it comes from in square brackets, for example: The bridge is 40 metres long [2]. \
If the sources do not contain the answer, say that you don't know.";

/// Tokens a chat template adds around each message (role markers, separators); counted
/// against the window on top of the message texts. SmolLM2's ChatML adds 5 per message.
pub const TEMPLATE_TOKENS_PER_MESSAGE: usize = 8;

/// How much of the chat model's window the prompt may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The chat model's context window, in its tokens.
    pub context_window: usize,
    /// Tokens kept free for the answer.
    pub reserved_for_answer: usize,
}

/// A numbered source in the prompt, mapped back to where its text came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    /// Its number in the prompt: `[n]`, from 1.
    pub n: usize,
    pub chunk_id: ChunkId,
    pub source: String,
    /// Bytes of the source's extracted text the chunk holds.
    pub byte_range: Range<u64>,
    pub heading: Option<String>,
    /// The search mode's score (cosine, BM25 or fused RRF).
    pub score: f32,
    /// Cosine similarity to the question, when the vector side found the chunk.
    pub similarity: Option<f32>,
}

/// Why a retrieved chunk is not in the prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum DropReason {
    /// Its cosine similarity to the question is below the threshold.
    BelowThreshold { similarity: f32, threshold: f32 },
    /// It does not fit the room left in the context window.
    DoesNotFit { tokens: usize, room: usize },
}

impl std::fmt::Display for DropReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DropReason::BelowThreshold { similarity, threshold } => write!(f, "similarity {similarity:.3} is below the threshold {threshold:.3}"),
            DropReason::DoesNotFit { tokens, room } => write!(f, "its {tokens} tokens do not fit the {room} left in the context window"),
        }
    }
}

/// A chunk left out, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dropped {
    pub chunk_id: ChunkId,
    pub source: String,
    #[serde(flatten)]
    pub reason: DropReason,
}

/// The prompt to send: a system message and a user message holding the sources and the question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RagPrompt {
    pub system: String,
    pub user: String,
    /// The sources in the prompt, `[1]` first.
    pub citations: Vec<Citation>,
    /// Retrieved chunks left out, in retrieval order.
    pub dropped: Vec<Dropped>,
    /// No retrieved chunk is relevant: answer "I don't know" without calling the model.
    pub nothing_relevant: bool,
    /// Tokens of `system` + `user` with the template allowance: at most the window less the reserve.
    pub prompt_tokens: usize,
}

/// The answer given, without calling the model, when nothing relevant was retrieved.
pub fn nothing_relevant_answer(collection: &str) -> String {
    format!("I don't know — nothing in `{collection}` matches the question.")
}

/// Whether no hit is relevant at `threshold` — the "I don't know" case of [`build_prompt`],
/// decided before any model is loaded: no hits, or hits with similarities none of which
/// reaches the threshold.
pub fn nothing_relevant(hits: &[Hit], threshold: f32) -> bool {
    hits.is_empty() || (hits.iter().any(|h| h.similarity.is_some()) && !hits.iter().any(|h| h.similarity.is_some_and(|s| s >= threshold)))
}

/// One source as the model sees it: `[n] (source, heading)` and the text below.
fn source_block(n: usize, hit: &Hit) -> String {
    let c = &hit.chunk;
    let label = match &c.heading {
        Some(h) if !h.is_empty() => format!("{}, {h}", c.source),
        _ => c.source.clone(),
    };
    format!("[{n}] ({label})\n{}\n\n", c.text.trim())
}

fn question_block(question: &str) -> String {
    format!("Question: {}", question.trim())
}

/// Builds the grounded prompt for `question` from `hits` (best first), for a chat model whose
/// tokens `counter` counts, within `budget`, using hits whose similarity reaches `threshold`.
/// Fails when the question alone leaves no room in the window.
pub fn build_prompt(question: &str, hits: &[Hit], counter: &dyn TokenCounter, budget: Budget, threshold: f32) -> crate::Result<RagPrompt> {
    if question.trim().is_empty() {
        return Err(crate::RagError::InvalidInput("the question is empty".into()));
    }
    let system = SYSTEM_PROMPT.to_string();
    let question_text = question_block(question);
    let limit = budget.context_window.saturating_sub(budget.reserved_for_answer);
    let base = counter.count_tokens(&system) + counter.count_tokens("Sources:\n\n") + counter.count_tokens(&question_text) + 2 * TEMPLATE_TOKENS_PER_MESSAGE;
    if base > limit {
        return Err(crate::RagError::InvalidInput(format!(
            "the question and instructions take {base} tokens; the chat model's {}-token window less {} reserved for the answer leaves {limit}",
            budget.context_window, budget.reserved_for_answer
        )));
    }

    let on_topic = !nothing_relevant(hits, threshold);
    let mut dropped = Vec::new();
    let mut citations = Vec::new();
    let mut blocks = String::new();
    let mut used = base;
    for hit in hits {
        let drop = |reason| Dropped { chunk_id: hit.chunk.id, source: hit.chunk.source.clone(), reason };
        let relevant = match hit.similarity {
            Some(s) => s >= threshold || (on_topic && hit.keyword_rank.is_some()),
            None => on_topic,
        };
        if !relevant {
            let similarity = hit.similarity.unwrap_or(f32::NEG_INFINITY);
            dropped.push(drop(DropReason::BelowThreshold { similarity, threshold }));
            continue;
        }
        let block = source_block(citations.len() + 1, hit);
        // One token of slack per block: token counts are not quite additive across joins.
        let tokens = counter.count_tokens(&block) + 1;
        if used + tokens > limit {
            dropped.push(drop(DropReason::DoesNotFit { tokens, room: limit - used }));
            continue;
        }
        used += tokens;
        blocks.push_str(&block);
        let c = &hit.chunk;
        citations.push(Citation {
            n: citations.len() + 1,
            chunk_id: c.id,
            source: c.source.clone(),
            byte_range: c.byte_range.clone(),
            heading: c.heading.clone(),
            score: hit.score,
            similarity: hit.similarity,
        });
    }
    // Empty when every hit fell below the threshold (or none came back); not when relevant
    // chunks were retrieved but none fitted, which the caller reports as it sees fit.
    let nothing_relevant = citations.is_empty() && dropped.iter().all(|d| matches!(d.reason, DropReason::BelowThreshold { .. }));
    let user = format!("Sources:\n\n{blocks}{question_text}");
    let prompt_tokens = counter.count_tokens(&system) + counter.count_tokens(&user) + 2 * TEMPLATE_TOKENS_PER_MESSAGE;
    Ok(RagPrompt { system, user, citations, dropped, nothing_relevant, prompt_tokens })
}

/// The source numbers an answer cites — `[1]`, `[1, 2]`, `[1][3]` — that name one of
/// `citations`, each once, in increasing order.
pub fn cited(answer: &str, citations: &[Citation]) -> Vec<usize> {
    let valid = |n: usize| citations.iter().any(|c| c.n == n);
    let mut out = Vec::new();
    let mut rest = answer;
    while let Some(open) = rest.find('[') {
        rest = &rest[open + 1..];
        let Some(close) = rest.find(']') else { break };
        let inside = &rest[..close];
        let numbers: Option<Vec<usize>> = inside.split(',').map(|p| p.trim().parse::<usize>().ok()).collect();
        if let Some(numbers) = numbers {
            out.extend(numbers.into_iter().filter(|&n| valid(n)));
            rest = &rest[close + 1..];
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChunkRecord;

    use crate::embed::WordCounter as Words;

    fn hit(id: u64, text: &str, similarity: Option<f32>, keyword_rank: Option<usize>) -> Hit {
        let chunk = ChunkRecord {
            id: ChunkId(id),
            source: format!("doc{id}.md"),
            text: text.into(),
            byte_range: 10 * id..10 * id + text.len() as u64,
            heading: (id == 2).then(|| "Setup > Install".to_string()),
            metadata: Default::default(),
        };
        Hit { chunk, score: similarity.unwrap_or(1.0), similarity, vector_rank: similarity.map(|_| id as usize), keyword_rank, rerank_score: None }
    }

    const ROOMY: Budget = Budget { context_window: 4096, reserved_for_answer: 256 };

    #[test]
    fn sources_are_numbered_in_order_with_their_labels() {
        let hits = [hit(1, "The tower is 330 m tall.", Some(0.8), None), hit(2, "Run make install.", Some(0.6), Some(1))];
        let p = build_prompt("How tall is the tower?", &hits, &Words, ROOMY, 0.3).unwrap();
        assert!(!p.nothing_relevant);
        assert!(p.dropped.is_empty());
        assert_eq!(p.citations.iter().map(|c| (c.n, c.chunk_id)).collect::<Vec<_>>(), vec![(1, ChunkId(1)), (2, ChunkId(2))]);
        assert_eq!(p.citations[1].byte_range, 20..37);
        assert_eq!(
            p.user,
            "Sources:\n\n[1] (doc1.md)\nThe tower is 330 m tall.\n\n[2] (doc2.md, Setup > Install)\nRun make install.\n\nQuestion: How tall is the tower?"
        );
        assert!(p.system.contains("[2]") && p.system.contains("don't know"));
        assert_eq!(p.prompt_tokens, Words.count_tokens(&p.system) + Words.count_tokens(&p.user) + 2 * TEMPLATE_TOKENS_PER_MESSAGE);
    }

    #[test]
    fn hits_below_the_threshold_are_dropped_and_none_left_means_nothing_relevant() {
        let hits = [hit(1, "a", Some(0.5), None), hit(2, "b", Some(0.1), None)];
        let p = build_prompt("q", &hits, &Words, ROOMY, 0.3).unwrap();
        assert_eq!(p.citations.len(), 1);
        assert_eq!(
            p.dropped,
            vec![Dropped { chunk_id: ChunkId(2), source: "doc2.md".into(), reason: DropReason::BelowThreshold { similarity: 0.1, threshold: 0.3 } }]
        );

        let p = build_prompt("q", &hits, &Words, ROOMY, 0.9).unwrap();
        assert!(p.nothing_relevant);
        assert!(nothing_relevant(&hits, 0.9) && !nothing_relevant(&hits, 0.5));
        assert!(p.citations.is_empty());
        assert_eq!(p.dropped.len(), 2);
        assert!(build_prompt("q", &[], &Words, ROOMY, 0.3).unwrap().nothing_relevant);
    }

    #[test]
    fn keyword_hits_count_once_the_question_is_on_topic() {
        // A keyword-only hit (no similarity) and a keyword-ranked one below the threshold are
        // kept when another hit passes; when none passes, they go too.
        let hits = [hit(1, "a", Some(0.5), None), hit(2, "b", None, Some(1)), hit(3, "c", Some(0.2), Some(2))];
        let p = build_prompt("q", &hits, &Words, ROOMY, 0.3).unwrap();
        assert_eq!(p.citations.len(), 3);
        let p = build_prompt("q", &hits, &Words, ROOMY, 0.6).unwrap();
        assert!(p.nothing_relevant);
        // Keyword search alone: no similarities, so no threshold.
        let kw = [hit(4, "d", None, Some(1))];
        let p = build_prompt("q", &kw, &Words, ROOMY, 0.99).unwrap();
        assert_eq!(p.citations.len(), 1);
        assert!(!p.nothing_relevant);
    }

    #[test]
    fn chunks_that_do_not_fit_are_dropped_whole_and_reported() {
        let long = "word ".repeat(40);
        let hits = [hit(1, "short one", Some(0.9), None), hit(2, &long, Some(0.8), None), hit(3, "short three", Some(0.7), None)];
        let base = build_prompt("q", &[], &Words, ROOMY, 0.3).unwrap().prompt_tokens;
        // Room for the two short blocks ("[n] (docN.md) short x" = 4 words + 1 slack each), not the long one.
        let budget = Budget { context_window: base + 10 + 20, reserved_for_answer: 20 };
        let p = build_prompt("q", &hits, &Words, budget, 0.3).unwrap();
        assert_eq!(p.citations.iter().map(|c| c.chunk_id).collect::<Vec<_>>(), vec![ChunkId(1), ChunkId(3)]);
        assert_eq!(p.citations[1].n, 2, "numbers follow what is in the prompt");
        assert!(p.user.contains("[2] (doc3.md)\nshort three"));
        assert!(!p.user.contains("word word"), "nothing of the long chunk is in the prompt");
        assert_eq!(p.dropped.len(), 1);
        assert_eq!(p.dropped[0].reason, DropReason::DoesNotFit { tokens: 46, room: 5 });
        assert!(!p.nothing_relevant, "chunks that did not fit are not 'nothing relevant'");
        assert!(p.prompt_tokens <= budget.context_window - budget.reserved_for_answer);

        // No room for the question itself: an error, not an empty prompt.
        let tiny = Budget { context_window: 30, reserved_for_answer: 20 };
        assert!(build_prompt("q", &hits, &Words, tiny, 0.3).is_err());
        assert!(build_prompt("  ", &hits, &Words, ROOMY, 0.3).is_err());
    }

    #[test]
    fn cited_markers_are_parsed() {
        let hits: Vec<Hit> = (1..=4).map(|i| hit(i, "t", Some(0.9), None)).collect();
        let p = build_prompt("q", &hits, &Words, ROOMY, 0.3).unwrap();
        let c = &p.citations;
        assert_eq!(cited("Paris [2].", c), vec![2]);
        assert_eq!(cited("See [3, 1] and [1][4].", c), vec![1, 3, 4]);
        assert_eq!(cited("[1,2]", c), vec![1, 2]);
        // Out of range, not numbers, unclosed: ignored.
        assert_eq!(cited("[9] [a] [2 [x] [", c), Vec::<usize>::new());
        assert_eq!(cited("[[2]]", c), vec![2]);
        assert!(cited("no markers", c).is_empty());
    }
}
