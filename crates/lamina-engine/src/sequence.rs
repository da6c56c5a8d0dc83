//! One request's state inside the engine: its tokens, where their keys and values are
//! (the block table), how far they are computed, and its output pipeline.

use crate::kv::{BlockHash, BlockId};
use crate::pipeline::{FinishReason, OutputPipeline, TokenLogprob};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type SeqId = u64;

/// What the per-token callback sees.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    pub seq: SeqId,
    /// The sampled token (`None` for a sequence that ends without one: cancelled).
    pub token: Option<u32>,
    /// Text that became printable with this token (may be empty: incomplete UTF-8, or held
    /// back because it may start a stop string).
    pub text: &'a str,
    pub logprob: Option<&'a TokenLogprob>,
    /// Set on the sequence's last event.
    pub finished: Option<FinishReason>,
}

/// Return `false` to stop the sequence (the client went away).
pub type TokenCallback = Box<dyn FnMut(&TokenEvent<'_>) -> bool + Send>;

/// Counters for one finished or running sequence.
#[derive(Debug, Clone, Default)]
pub struct SeqStats {
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache (not computed) when first admitted.
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    /// Times the sequence was pre-empted (its blocks freed and recomputed later).
    pub preemptions: usize,
    /// Forward-pass time of steps in which it read its prompt, and of the others.
    pub prefill_time: Duration,
    pub decode_time: Duration,
    /// Speculative decoding: draft tokens verified, and those kept.
    pub draft_tokens: usize,
    pub accepted_tokens: usize,
}

impl SeqStats {
    pub fn new(prompt_tokens: usize) -> Self {
        SeqStats { prompt_tokens, ..Default::default() }
    }

    /// Prompt tokens computed per second of prefill, when there were some.
    pub fn prefill_tok_s(&self) -> Option<f64> {
        rate(self.prompt_tokens - self.cached_tokens, self.prefill_time)
    }

    /// The share of draft tokens kept, when there were some.
    pub fn acceptance(&self) -> Option<f64> {
        (self.draft_tokens > 0).then(|| self.accepted_tokens as f64 / self.draft_tokens as f64)
    }

    /// Tokens decoded per second (the first comes from the prefill step).
    pub fn decode_tok_s(&self) -> Option<f64> {
        rate(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn rate(n: usize, t: Duration) -> Option<f64> {
    (n > 0 && !t.is_zero()).then(|| n as f64 / t.as_secs_f64())
}

/// The result of a sequence, returned by [`crate::Engine::take_finished`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub seq: SeqId,
    /// The generated tokens.
    pub tokens: Vec<u32>,
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub reason: FinishReason,
    pub stats: SeqStats,
}

pub(crate) struct Sequence {
    pub id: SeqId,
    /// Prompt then generated tokens. The last one is not computed yet while running
    /// (it is the next forward pass's input).
    pub tokens: Vec<u32>,
    pub n_prompt: usize,
    /// Tokens whose keys and values are in `blocks`.
    pub n_computed: usize,
    /// The block table: position `p` is in `blocks[p / block_size]`.
    pub blocks: Vec<BlockId>,
    /// Hashes of the full blocks of `tokens` computed so far (a cache of the chain).
    pub hashes: Vec<BlockHash>,
    /// Blocks of `blocks` known to the prefix cache as computed.
    pub n_ready: usize,
    /// Admitted (and so counted in the cache statistics) at least once.
    pub admitted: bool,
    pub pipeline: OutputPipeline,
    pub callback: Option<TokenCallback>,
    pub cancel: Option<Arc<AtomicBool>>,
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub stats: SeqStats,
    pub finished: Option<FinishReason>,
    /// Draft tokens to follow `tokens` in the next forward pass (speculative decoding);
    /// never part of `tokens` until verified.
    pub draft: Vec<u32>,
    /// How many drafts to ask for next (shrinks while drafts are rejected).
    pub draft_len: usize,
    /// The LoRA adapter the sequence runs with.
    pub lora: Option<Arc<lamina_model::ModelLora>>,
}

impl Sequence {
    /// The parent of this sequence's first KV block: the engine's `root`, or for a sequence
    /// with an adapter, `root` salted with the adapter's identity (its blocks hold other
    /// keys and values than the base model's for the same tokens).
    pub fn cache_root(&self, root: BlockHash) -> BlockHash {
        match &self.lora {
            Some(l) => BlockHash::salted(root, &l.identity),
            None => root,
        }
    }

    pub fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Tokens waiting for a forward pass.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.n_computed
    }
}
