//! Perplexity the way llama.cpp's `llama-perplexity` computes it, so figures compare:
//! the token stream is cut into non-overlapping windows of `ctx` tokens, each window is
//! evaluated from an empty cache, and only the second half of each window is scored
//! (every scored token sees at least `ctx/2` tokens of context). A trailing partial
//! window is dropped.

use crate::Engine;
use lamina_core::{Error, Result};

#[derive(Debug, Clone)]
pub struct PerplexityReport {
    pub windows: usize,
    pub scored_tokens: usize,
    /// Mean negative log-likelihood (nats per token).
    pub nll: f64,
    pub ppl: f64,
    /// Running perplexity after each window (llama.cpp prints these as `[1]…[2]…`).
    pub running: Vec<f64>,
}

/// Scores `tokens` in windows of `ctx`. `bos`, when given, replaces each window's first
/// token, as llama.cpp does for models that add a BOS token. The engine must be idle
/// (each window takes `ctx` positions of its KV cache).
pub fn perplexity(engine: &mut Engine, tokens: &[u32], ctx: usize, bos: Option<u32>, mut on_window: impl FnMut(usize, usize, f64)) -> Result<PerplexityReport> {
    if ctx < 4 {
        return Err(Error::InvalidInput(format!("context {ctx} is too small for perplexity")));
    }
    let model_ctx = engine.model.config.context_length;
    if ctx > model_ctx {
        return Err(Error::InvalidInput(format!("--ctx {ctx} exceeds the model's context length {model_ctx}")));
    }
    let windows = tokens.len() / ctx;
    if windows == 0 {
        return Err(Error::InvalidInput(format!("the text has {} tokens, fewer than one window of {ctx}", tokens.len())));
    }
    let first = ctx / 2;
    let mut logits = Vec::new();
    // Rows first..ctx-1 predict tokens first+1..ctx.
    let rows: Vec<usize> = (first..ctx - 1).collect();
    let vocab = engine.model.config.vocab_size;
    let (mut nll, mut count) = (0.0f64, 0usize);
    let mut running = Vec::with_capacity(windows);
    for w in 0..windows {
        let mut window = tokens[w * ctx..(w + 1) * ctx].to_vec();
        if let Some(b) = bos {
            window[0] = b;
        }
        engine.logits_of(&window, &rows, &mut logits)?;
        for (j, &r) in rows.iter().enumerate() {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = window[r + 1] as usize;
            nll -= crate::loglikelihood::log_softmax_at(row, target).0;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_window(w + 1, windows, ppl);
    }
    let mean = nll / count as f64;
    Ok(PerplexityReport { windows, scored_tokens: count, nll: mean, ppl: mean.exp(), running })
}
