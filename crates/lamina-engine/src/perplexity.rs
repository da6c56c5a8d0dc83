//! Perplexity the way llama.cpp's `llama-perplexity` computes it, so figures compare:
//! the token stream is cut into non-overlapping windows of `ctx` tokens, each window is
//! evaluated from an empty cache, and only the second half of each window is scored
//! (every scored token sees at least `ctx/2` tokens of context). A trailing partial
//! window is dropped.

use lamina_core::{Error, Result};
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, Model, Scratch};

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
/// token, as llama.cpp does for models that add a BOS token.
pub fn perplexity(
    model: &Model,
    pool: &ThreadPool,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    mut on_window: impl FnMut(usize, usize, f64),
) -> Result<PerplexityReport> {
    if ctx < 4 {
        return Err(Error::InvalidInput(format!("context {ctx} is too small for perplexity")));
    }
    if ctx > model.config.context_length {
        return Err(Error::InvalidInput(format!("--ctx {ctx} exceeds the model's context length {}", model.config.context_length)));
    }
    let windows = tokens.len() / ctx;
    if windows == 0 {
        return Err(Error::InvalidInput(format!("the text has {} tokens, fewer than one window of {ctx}", tokens.len())));
    }
    let first = ctx / 2;
    let mut kv = model.new_kv_cache(1, ctx);
    let mut scratch = Scratch::default();
    let mut logits = Vec::new();
    let positions: Vec<usize> = (0..ctx).collect();
    let slots = vec![0usize; ctx];
    // Rows first..ctx-1 predict tokens first+1..ctx.
    let rows: Vec<usize> = (first..ctx - 1).collect();
    let vocab = model.config.vocab_size;
    let (mut nll, mut count) = (0.0f64, 0usize);
    let mut running = Vec::with_capacity(windows);
    for w in 0..windows {
        let mut window = tokens[w * ctx..(w + 1) * ctx].to_vec();
        if let Some(b) = bos {
            window[0] = b;
        }
        kv.truncate(0, 0);
        model.forward(BatchInput { tokens: &window, positions: &positions, slots: &slots, logits_rows: &rows }, &mut kv, &mut scratch, pool, &mut logits)?;
        for (j, &r) in rows.iter().enumerate() {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = window[r + 1] as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
            nll += max + sum.ln() - row[target] as f64;
            count += 1;
        }
        let ppl = (nll / count as f64).exp();
        running.push(ppl);
        on_window(w + 1, windows, ppl);
    }
    let mean = nll / count as f64;
    Ok(PerplexityReport { windows, scored_tokens: count, nll: mean, ppl: mean.exp(), running })
}
