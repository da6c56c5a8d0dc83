//! Log-likelihood of continuations, as lm-evaluation-harness's `loglikelihood` requests
//! ask: for a context and a continuation, Σ log P(continuation token | everything before
//! it), and whether greedy decoding would have produced the continuation. Many requests are
//! packed into each forward pass (fresh sequences side by side in the KV pool), so a
//! ranking over dozens of candidates costs a few batched prefills.

use crate::engine::Engine;
use lamina_core::{Error, Result};
use lamina_model::ModelLora;

/// A context and the continuation to score after it. The context must not be empty (start
/// it with the model's BOS token, or a chat template's opening, when there is nothing else).
#[derive(Debug, Clone, Copy)]
pub struct Continuation<'a> {
    pub context: &'a [u32],
    pub continuation: &'a [u32],
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogLikelihood {
    /// Σ log P over the continuation's tokens (natural log).
    pub logprob: f64,
    /// The continuation's length.
    pub tokens: usize,
    /// Every continuation token was the most likely one (or tied with it).
    pub greedy: bool,
}

/// log P(`target`) under the softmax of `row`, in f64 (a vocabulary of 50,000 logits sums
/// without visible rounding), and whether `target` has the largest logit (ties included).
pub fn log_softmax_at(row: &[f32], target: usize) -> (f64, bool) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = row.iter().map(|&v| (v as f64 - max as f64).exp()).sum();
    (row[target] as f64 - max as f64 - sum.ln(), row[target] >= max)
}

/// Most logit rows one forward pass returns (rows × vocabulary f32 values are held at once:
/// 512 × 49,152 is 100 MB).
const MAX_ROWS: usize = 512;

/// Scores `items` in order. Each forward pass takes as many whole items as fit in the
/// engine's free KV blocks, `max_batch_tokens` tokens and [`MAX_ROWS`] scored tokens (an
/// item bigger than the last two runs alone). The engine must be idle.
pub fn loglikelihoods(engine: &mut Engine, items: &[Continuation<'_>], max_batch_tokens: usize) -> Result<Vec<LogLikelihood>> {
    loglikelihoods_with(engine, items, max_batch_tokens, None)
}

/// [`loglikelihoods`] under the LoRA adapter `lora` (prepared for the engine's model).
pub fn loglikelihoods_with(engine: &mut Engine, items: &[Continuation<'_>], max_batch_tokens: usize, lora: Option<&ModelLora>) -> Result<Vec<LogLikelihood>> {
    let ctx = engine.context_length();
    for (i, it) in items.iter().enumerate() {
        if it.context.is_empty() {
            return Err(Error::InvalidInput(format!("log-likelihood request {i}: the context is empty")));
        }
        let len = it.context.len() + it.continuation.len();
        if len > ctx {
            return Err(Error::InvalidInput(format!("log-likelihood request {i}: {len} tokens exceed the context window of {ctx}")));
        }
    }
    let vocab = engine.model.config.vocab_size;
    let bs = engine.block_size();
    let mut out = Vec::with_capacity(items.len());
    let mut logits = Vec::new();
    let mut next = 0;
    while next < items.len() {
        // The next batch: items next..end.
        let (mut end, mut tokens, mut rows, mut blocks) = (next, 0, 0, 0);
        while end < items.len() {
            let it = &items[end];
            let len = it.context.len() + it.continuation.len();
            let b = len.div_ceil(bs);
            let fits = tokens + len <= max_batch_tokens && rows + it.continuation.len() <= MAX_ROWS && blocks + b <= engine.free_blocks();
            if end > next && !fits {
                break;
            }
            tokens += len;
            rows += it.continuation.len();
            blocks += b;
            end += 1;
        }
        let batch = &items[next..end];
        let seqs: Vec<Vec<u32>> = batch.iter().map(|it| [it.context, it.continuation].concat()).collect();
        // The row before each continuation token predicts it.
        let mut row_ids = Vec::with_capacity(rows);
        let mut offset = 0;
        for (s, it) in seqs.iter().zip(batch) {
            row_ids.extend((0..it.continuation.len()).map(|j| offset + it.context.len() - 1 + j));
            offset += s.len();
        }
        let views: Vec<&[u32]> = seqs.iter().map(|s| s.as_slice()).collect();
        engine.logits_of_batch_with(&views, &row_ids, lora, &mut logits)?;
        let mut r = 0;
        for it in batch {
            let (mut logprob, mut greedy) = (0.0, true);
            for &t in it.continuation {
                let row = &logits[r * vocab..(r + 1) * vocab];
                let (lp, most_likely) = log_softmax_at(row, t as usize);
                logprob += lp;
                greedy &= most_likely;
                r += 1;
            }
            out.push(LogLikelihood { logprob, tokens: it.continuation.len(), greedy });
        }
        next = end;
    }
    Ok(out)
}
