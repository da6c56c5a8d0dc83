//! The per-request output pipeline: from one row of logits to the next token and the text
//! a client may see.
//!
//! In order: log-probabilities of the model's distribution (when asked for: the raw
//! logits' log-softmax, before any bias or penalty, as vLLM reports them), logits
//! processors (`logit_bias`, a grammar's mask), the [`Sampler`] (penalties, filters,
//! temperature, draw), then the end-of-generation check, incremental detokenization and
//! stop strings. Each sequence owns one pipeline, so requests in one batch can ask for
//! entirely different things.

use crate::sampler::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use lamina_core::Result;
use lamina_tokenizer::{DecodeState, Tokenizer};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence / end-of-turn token, a stop string, or a logits processor's end
    /// (a grammar that is complete).
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context window is full.
    ContextFull,
    /// The caller cancelled it (or its client went away).
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContextFull => "context_full",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

/// Per-request generation settings.
#[derive(Debug, Clone)]
pub struct GenerationParams {
    pub sampling: SamplingParams,
    /// Most tokens to generate; 0 generates nothing.
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Added to the logits of these tokens before sampling (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(u32, f32)>,
    /// Report the chosen token's log-probability and this many most likely alternatives
    /// (`None`: no log-probabilities).
    pub logprobs: Option<usize>,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams { sampling: SamplingParams::default(), max_tokens: 256, stop: Vec::new(), ignore_eos: false, logit_bias: Vec::new(), logprobs: None }
    }
}

impl GenerationParams {
    /// Most alternatives a request may ask for (OpenAI allows 20).
    pub const MAX_TOP_LOGPROBS: usize = 20;

    /// Checks every setting against a vocabulary of `vocab` tokens.
    pub fn validate(&self, vocab: usize) -> std::result::Result<(), String> {
        self.sampling.validate()?;
        if let Some(&(t, b)) = self.logit_bias.iter().find(|(t, b)| *t as usize >= vocab || !b.is_finite()) {
            return Err(format!("logit_bias for token {t} ({b}): the token must be below the vocabulary size {vocab} and the bias finite"));
        }
        if self.logprobs.is_some_and(|k| k > Self::MAX_TOP_LOGPROBS) {
            return Err(format!("at most {} top log-probabilities per token", Self::MAX_TOP_LOGPROBS));
        }
        Ok(())
    }
}

/// Something that adjusts the next token's logits for one sequence: a grammar's mask,
/// a bias. Called once per generated token, before sampling.
pub trait LogitsProcessor: Send {
    /// Adjusts `logits` (one per vocabulary entry) for the token after `generated`.
    fn process(&mut self, generated: &[u32], logits: &mut [f32]);
    /// The token that was chosen (a grammar advances its state).
    fn accept(&mut self, _token: u32) {}
    /// Whether the output is complete and generation must stop (a grammar that accepts
    /// nothing more).
    fn is_done(&self) -> bool {
        false
    }
}

/// OpenAI's `logit_bias`: a fixed amount added to some tokens' logits.
struct LogitBias(Vec<(u32, f32)>);

impl LogitsProcessor for LogitBias {
    fn process(&mut self, _generated: &[u32], logits: &mut [f32]) {
        for &(t, b) in &self.0 {
            if let Some(l) = logits.get_mut(t as usize) {
                *l += b;
            }
        }
    }
}

/// The log-probability of a chosen token, and the most likely alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub token: u32,
    pub logprob: f32,
    /// Most likely tokens first.
    pub top: Vec<(u32, f32)>,
}

/// What one sampled token gives.
#[derive(Debug, Clone)]
pub struct TokenOutput {
    pub token: u32,
    /// Text that became printable with this token (may be empty: an incomplete UTF-8
    /// character, or text held back because it may start a stop string).
    pub text: String,
    pub logprob: Option<TokenLogprob>,
    pub finish: Option<FinishReason>,
}

/// One sequence's pipeline.
pub struct OutputPipeline {
    params: GenerationParams,
    sampler: Sampler,
    processors: Vec<Box<dyn LogitsProcessor>>,
    decode: DecodeState,
    stop: StopMatcher,
    generated: usize,
    /// Processors other than `logit_bias` (a grammar), whose state follows every token.
    extra_processors: bool,
}

impl OutputPipeline {
    pub fn new(params: GenerationParams, mut processors: Vec<Box<dyn LogitsProcessor>>) -> Self {
        let extra_processors = !processors.is_empty();
        if !params.logit_bias.is_empty() {
            processors.insert(0, Box::new(LogitBias(params.logit_bias.clone())));
        }
        OutputPipeline {
            sampler: Sampler::new(params.sampling.clone()),
            stop: StopMatcher::new(params.stop.clone()),
            decode: DecodeState::new(true),
            processors,
            params,
            generated: 0,
            extra_processors,
        }
    }

    /// Whether this sequence may take draft tokens (speculative decoding): not when it
    /// has logits processors of its own (a grammar), whose state would have to follow
    /// tokens that may be rejected.
    pub fn can_speculate(&self) -> bool {
        !self.extra_processors
    }

    pub fn params(&self) -> &GenerationParams {
        &self.params
    }

    /// Picks the token after `tokens` (prompt and generated so far; the last `generated`
    /// of them were generated) from its `logits` (modified in place), and says what it
    /// adds to the text and whether the sequence ends. `room` is how many more tokens
    /// the context window holds after this one. With a `draft` token (speculative
    /// decoding) the choice verifies it ([`Sampler::sample_draft`]): the draft is
    /// accepted when it is the token returned, and the distribution is the same.
    pub fn next(&mut self, logits: &mut [f32], tokens: &[u32], room: usize, tokenizer: &Tokenizer, draft: Option<u32>) -> Result<TokenOutput> {
        let generated = &tokens[tokens.len() - self.generated..];
        mask_past_vocabulary(logits, tokenizer.vocab_size());
        let lse = self.params.logprobs.map(|_| log_sum_exp(logits));
        let top = match self.params.logprobs {
            Some(k) if k > 0 => top_k(logits, k, lse.unwrap_or(0.0)),
            _ => Vec::new(),
        };
        let raw = lse.map(|_| logits.to_vec());
        for p in &mut self.processors {
            p.process(generated, logits);
        }
        let token = match draft {
            Some(d) => self.sampler.sample_draft(logits, tokens, d),
            None => self.sampler.sample(logits, tokens),
        };
        for p in &mut self.processors {
            p.accept(token);
        }
        self.generated += 1;
        let logprob = match (lse, raw) {
            (Some(lse), Some(raw)) => Some(TokenLogprob { token, logprob: raw[token as usize] - lse, top }),
            _ => None,
        };
        let mut finish = None;
        let mut text = String::new();
        if !self.params.ignore_eos && tokenizer.is_end_of_generation(token) {
            finish = Some(FinishReason::Stop);
        } else {
            if let Some(piece) = self.decode.step(tokenizer, token)? {
                let (out, hit) = self.stop.push(&piece);
                text = out;
                if hit {
                    finish = Some(FinishReason::Stop);
                }
            }
            if finish.is_none() {
                finish = if self.processors.iter().any(|p| p.is_done()) {
                    Some(FinishReason::Stop)
                } else if self.generated >= self.params.max_tokens {
                    Some(FinishReason::Length)
                } else if room == 0 {
                    Some(FinishReason::ContextFull)
                } else {
                    None
                };
            }
        }
        if finish.is_some() {
            text.push_str(&self.flush(tokenizer)?);
        }
        Ok(TokenOutput { token, text, logprob, finish })
    }

    /// Text still held back (an incomplete character, a possible stop string's start),
    /// released because the sequence ends.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<String> {
        let mut text = String::new();
        if self.stop.is_stopped() {
            return Ok(text);
        }
        if let Some(rest) = self.decode.flush(tokenizer)? {
            text = self.stop.push(&rest).0;
        }
        text.push_str(&self.stop.flush());
        Ok(text)
    }
}

/// Rules out ids the tokenizer cannot decode: a model's embedding table is often padded
/// past the tokenizer's vocabulary (to a multiple of 64, say), and those rows' logits are
/// not tokens. Their probability is 0 for sampling and log-probabilities alike.
fn mask_past_vocabulary(logits: &mut [f32], vocab: usize) {
    if let Some(extra) = logits.get_mut(vocab..) {
        extra.fill(f32::NEG_INFINITY);
    }
}

/// `log Σ exp(x)`, in f64 for a vocabulary-sized sum (NaN logits count as -inf).
fn log_sum_exp(x: &[f32]) -> f32 {
    let m = x.iter().copied().filter(|v| !v.is_nan()).fold(f32::NEG_INFINITY, f32::max);
    if !m.is_finite() {
        return m;
    }
    let s: f64 = x.iter().filter(|v| !v.is_nan()).map(|&v| ((v - m) as f64).exp()).sum();
    m + s.ln() as f32
}

/// The `k` largest logits as (token, log-probability), largest first, ties by lower id.
fn top_k(logits: &[f32], k: usize, lse: f32) -> Vec<(u32, f32)> {
    let mut idx: Vec<u32> = (0..logits.len() as u32).filter(|&i| !logits[i as usize].is_nan()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    let by = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    idx.select_nth_unstable_by(k - 1, by);
    idx.truncate(k);
    idx.sort_by(by);
    idx.into_iter().map(|i| (i, logits[i as usize] - lse)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_are_the_raw_distributions() {
        let logits = [1.0f32, 3.0, 2.0, f32::NAN, 3.0];
        let lse = log_sum_exp(&logits);
        let want = (1f64.exp() + 2.0 * 3f64.exp() + 2f64.exp()).ln();
        assert!((lse as f64 - want).abs() < 1e-6);
        let top = top_k(&logits, 3, lse);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 4, 2]);
        assert!((top[0].1 as f64 - (3.0 - want)).abs() < 1e-6);
        let p: f64 = [0usize, 1, 2, 4].iter().map(|&i| ((logits[i] - lse) as f64).exp()).sum();
        assert!((p - 1.0).abs() < 1e-6);
        assert_eq!(top_k(&logits, 10, lse).len(), 4);
    }

    #[test]
    fn ids_past_the_tokenizer_are_never_chosen() {
        let mut logits = vec![0.0f32, 1.0, 5.0, 9.0];
        mask_past_vocabulary(&mut logits, 2);
        assert_eq!(logits[..2], [0.0, 1.0]);
        assert!(logits[2..].iter().all(|&l| l == f32::NEG_INFINITY));
        let mut same = vec![0.5f32; 3];
        mask_past_vocabulary(&mut same, 3);
        assert_eq!(same, [0.5; 3]);
    }

    #[test]
    fn bias_is_validated_against_the_vocabulary() {
        let mut p = GenerationParams { logit_bias: vec![(5, 1.0)], ..Default::default() };
        assert!(p.validate(6).is_ok());
        assert!(p.validate(5).unwrap_err().contains("token 5"));
        p.logit_bias = vec![(1, f32::NAN)];
        assert!(p.validate(6).is_err());
        p.logit_bias.clear();
        p.logprobs = Some(21);
        assert!(p.validate(6).is_err());
    }
}
