//! Speculative decoding: cheap guesses of a sequence's next tokens, checked by the model
//! in one forward pass.
//!
//! A [`Drafter`] proposes up to `k` tokens to follow a sequence: [`PromptLookup`] finds
//! the sequence's latest n-gram earlier in its own prompt and output and proposes what
//! followed it there (no second model; it pays off when the output copies its input:
//! summaries, edits, code changes), and [`DraftModelDrafter`] runs a smaller model with
//! the same vocabulary. The engine then runs the sequence's pending token and the `k`
//! drafts as one chunk, with logits for all `k + 1` rows, and feeds the rows to the
//! sequence's output pipeline one by one: each row verifies its draft
//! ([`crate::Sampler::sample_draft`]: greedy keeps a draft equal to the argmax, sampling
//! keeps it with its probability and otherwise draws from the rest), the first rejected
//! draft's row supplies the replacement, and when all are kept the last row gives one more
//! token. The output is what decoding without drafts gives (greedy: the same tokens;
//! sampling: the same distribution), with penalties, `logit_bias`, stop strings,
//! `max_tokens`, end-of-sequence and log-probabilities applied token by token as usual.
//!
//! Draft positions hold unverified keys and values: the sequence's computed length counts
//! only the verified ones, so no block holding a rejected draft is ever hashed into the
//! prefix cache, and blocks taken for drafts that were rejected are released.

mod draft_model;
mod ngram;

pub use draft_model::DraftModelDrafter;
pub use ngram::PromptLookup;

use crate::sequence::SeqId;
use lamina_core::{Error, Result};
use lamina_model::Model;
use lamina_tokenizer::Tokenizer;
use std::sync::Arc;

/// How an engine speculates.
#[derive(Debug, Clone)]
pub struct SpeculativeConfig {
    pub method: SpecMethod,
    /// Most draft tokens per sequence and step (the drafter may propose fewer; the
    /// engine lowers it while drafts are being rejected, see [`next_k`]).
    pub k: usize,
}

impl SpeculativeConfig {
    /// Prompt lookup with `k` drafts and n-grams of 2 to 4 tokens.
    pub fn prompt_lookup(k: usize) -> Self {
        SpeculativeConfig { method: SpecMethod::PromptLookup { min_n: 2, max_n: 4 }, k }
    }
}

/// Where draft tokens come from.
#[derive(Debug, Clone)]
pub enum SpecMethod {
    /// The longest suffix n-gram (`max_n` down to `min_n` tokens) found earlier in the
    /// sequence, and the tokens that followed it.
    PromptLookup { min_n: usize, max_n: usize },
    /// A second model with the target's vocabulary (a lower-bit copy, a small model
    /// trained on the target's tokenizer), decoding greedily.
    DraftModel(DraftModel),
}

/// A draft model and its tokenizer (checked against the target's vocabulary).
#[derive(Clone)]
pub struct DraftModel {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
}

impl std::fmt::Debug for DraftModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DraftModel").field("source", &self.model.source).finish_non_exhaustive()
    }
}

/// One sequence asking for drafts: its tokens so far (prompt and output; the last is the
/// one the next forward pass reads) and how many drafts it can use.
#[derive(Debug, Clone, Copy)]
pub struct DraftRequest<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    pub k: usize,
}

/// A source of draft tokens.
pub trait Drafter: Send {
    /// Proposes up to `reqs[i].k` tokens to follow `reqs[i].tokens` into `out[i]` (which
    /// comes empty); proposing nothing is always allowed.
    fn propose(&mut self, reqs: &[DraftRequest<'_>], out: &mut [Vec<u32>]) -> Result<()>;
    /// The sequence is gone: drop what is kept for it.
    fn forget(&mut self, _seq: SeqId) {}
}

/// The drafter `config` describes, for a target `model` with `tokenizer` whose engine
/// holds `positions` KV positions for `max_sequences` sequences. Fails when a draft
/// model's vocabulary is not the target's.
pub fn drafter(
    config: &SpeculativeConfig,
    model: &Model,
    tokenizer: &Tokenizer,
    workers: Arc<lamina_kernels::ThreadPool>,
    positions: usize,
    max_sequences: usize,
) -> Result<Box<dyn Drafter>> {
    match &config.method {
        SpecMethod::PromptLookup { min_n, max_n } => {
            if *min_n == 0 || min_n > max_n {
                return Err(Error::InvalidInput(format!("prompt lookup n-grams of {min_n} to {max_n} tokens: need 1 <= min <= max")));
            }
            Ok(Box::new(PromptLookup { min_n: *min_n, max_n: *max_n }))
        }
        SpecMethod::DraftModel(d) => {
            check_vocabulary(model, tokenizer, &d.model, &d.tokenizer)?;
            let extra = max_sequences.saturating_mul(config.k);
            Ok(Box::new(DraftModelDrafter::new(d.model.clone(), workers, positions.saturating_add(extra))?))
        }
    }
}

/// Checks that a draft model speaks the target's vocabulary: the same number of ids, and
/// every id standing for the same bytes.
pub fn check_vocabulary(target: &Model, target_tok: &Tokenizer, draft: &Model, draft_tok: &Tokenizer) -> Result<()> {
    let (t, d) = (target.config.vocab_size, draft.config.vocab_size);
    if t != d {
        return Err(Error::DraftVocabulary(format!("the draft {} has {d} tokens, the target {} has {t}", draft.source.display(), target.source.display())));
    }
    check_tokenizers(target_tok, draft_tok)
        .map_err(|e| Error::DraftVocabulary(format!("{e} (target {}, draft {})", target.source.display(), draft.source.display())))
}

/// The tokenizers' part of [`check_vocabulary`] (a server checks it before it loads any
/// weights); the message says where they differ.
pub fn check_tokenizers(target: &Tokenizer, draft: &Tokenizer) -> std::result::Result<(), String> {
    if target.vocab_size() != draft.vocab_size() {
        return Err(format!("the draft's tokenizer has {} tokens, the target's {}", draft.vocab_size(), target.vocab_size()));
    }
    match (0..target.vocab_size() as u32).find(|&id| target.token_bytes(id) != draft.token_bytes(id)) {
        Some(id) => Err(format!("token {id} is {:?} for the target but {:?} for the draft", target.token_to_piece(id), draft.token_to_piece(id))),
        None => Ok(()),
    }
}

/// The next step's draft length for a sequence that had `proposed` drafts and kept
/// `accepted` of them, at most `max`: doubled after a step that kept them all, one more
/// than were kept after a rejection. A drafter that keeps missing then costs about one
/// extra token per step, and one that hits regains its full length in a few steps.
pub fn next_k(proposed: usize, accepted: usize, max: usize) -> usize {
    let k = if accepted == proposed { proposed * 2 } else { accepted + 1 };
    k.clamp(1, max.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draft_length_shrinks_on_rejection_and_grows_back() {
        assert_eq!(next_k(8, 0, 8), 1);
        assert_eq!(next_k(8, 3, 8), 4);
        assert_eq!(next_k(1, 1, 8), 2);
        assert_eq!(next_k(4, 4, 8), 8);
        assert_eq!(next_k(8, 8, 8), 8);
        assert_eq!(next_k(3, 3, 5), 5);
    }
}
