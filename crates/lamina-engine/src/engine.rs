//! The generation engine: many sequences decoded together, one forward pass per step.
//!
//! Each step gathers, for every active sequence, either the next chunk of its prompt
//! (prefill) or its last sampled token (decode) into one batch, runs the model once, and
//! samples one token for each sequence whose batch rows reached the end of its input.
//! Sequences can be added and can finish between any two steps (continuous batching).
//!
//! Prompt (prefix) caching: a finished sequence's KV slot keeps its tokens. A new request
//! takes the free slot whose cached tokens share the longest prefix with its prompt and
//! only computes the rest — so each chat turn only processes its new tokens.

use crate::sampler::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use lamina_core::{Error, Result};
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, KvCache, Model, Scratch};
use lamina_tokenizer::{DecodeState, Tokenizer};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-sequence / end-of-turn token, or a stop string.
    Stop,
    /// `max_tokens` reached.
    Length,
    /// The context window is full.
    ContextFull,
    /// The callback asked to stop.
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
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Keep going past end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams { sampling: SamplingParams::default(), max_tokens: 256, stop: Vec::new(), ignore_eos: false }
    }
}

pub type SeqId = u64;

/// What the per-token callback sees.
#[derive(Debug)]
pub struct TokenEvent<'a> {
    pub seq: SeqId,
    /// The sampled token (`None` for the final event of a sequence that produced text only at flush).
    pub token: Option<u32>,
    /// Text that became printable with this token (may be empty: incomplete UTF-8, or held
    /// back because it may start a stop string).
    pub text: &'a str,
    /// Set on the sequence's last event.
    pub finished: Option<FinishReason>,
}

/// Return `false` to stop the sequence.
pub type TokenCallback = Box<dyn FnMut(&TokenEvent<'_>) -> bool + Send>;

/// Counters for one finished or running sequence.
#[derive(Debug, Clone, Default)]
pub struct SeqStats {
    pub prompt_tokens: usize,
    /// Prompt tokens served from the prefix cache (not recomputed).
    pub cached_tokens: usize,
    pub generated_tokens: usize,
    pub prefill_time: Duration,
    pub decode_time: Duration,
}

impl SeqStats {
    /// Prompt tokens per second of prefill; `None` when no prefill time was measured
    /// (a one-token prompt is read by a decode step).
    pub fn prefill_tok_s(&self) -> Option<f64> {
        rate(self.prompt_tokens - self.cached_tokens, self.prefill_time)
    }
    /// Generated tokens per second of decode; `None` when nothing was decoded.
    pub fn decode_tok_s(&self) -> Option<f64> {
        // The first generated token comes from the prefill step.
        rate(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn rate(tokens: usize, time: Duration) -> Option<f64> {
    (tokens > 0 && !time.is_zero()).then(|| tokens as f64 / time.as_secs_f64())
}

/// The result of a sequence, returned by [`Engine::take_finished`].
#[derive(Debug, Clone)]
pub struct Finished {
    pub seq: SeqId,
    pub tokens: Vec<u32>,
    pub text: String,
    pub reason: FinishReason,
    pub stats: SeqStats,
}

struct Sequence {
    id: SeqId,
    slot: usize,
    /// Prompt then generated tokens.
    tokens: Vec<u32>,
    n_prompt: usize,
    /// Tokens already in the KV cache.
    n_cached: usize,
    params: GenerationParams,
    sampler: Sampler,
    decode: DecodeState,
    stop: StopMatcher,
    text: String,
    callback: Option<TokenCallback>,
    stats: SeqStats,
    finished: Option<FinishReason>,
}

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub threads: usize,
    /// Concurrent sequences (KV slots).
    pub max_sequences: usize,
    /// Longest sequence (prompt + generation); at most the model's context length.
    pub context_length: usize,
    /// Most prompt tokens processed in one step (chunked prefill keeps decode of the other
    /// sequences flowing while a long prompt is read).
    pub max_batch_tokens: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig { threads: lamina_core::Settings::detect().threads, max_sequences: 8, context_length: 4096, max_batch_tokens: 512 }
    }
}

pub struct Engine {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    pool: ThreadPool,
    kv: KvCache,
    /// Tokens held in each KV slot (for prefix reuse).
    slot_tokens: Vec<Vec<u32>>,
    slot_busy: Vec<bool>,
    /// Slot use order, to evict the least recently used cached prefix first.
    slot_last_use: Vec<u64>,
    scratch: Scratch,
    logits: Vec<f32>,
    seqs: Vec<Sequence>,
    done: Vec<Finished>,
    next_id: SeqId,
    clock: u64,
    config: EngineConfig,
}

impl Engine {
    pub fn new(model: Arc<Model>, tokenizer: Arc<Tokenizer>, config: EngineConfig) -> Self {
        let ctx = config.context_length.min(model.config.context_length).max(1);
        let slots = config.max_sequences.max(1);
        let kv = model.new_kv_cache(slots, ctx);
        Engine {
            pool: ThreadPool::new(config.threads),
            kv,
            slot_tokens: vec![Vec::new(); slots],
            slot_busy: vec![false; slots],
            slot_last_use: vec![0; slots],
            scratch: Scratch::default(),
            logits: Vec::new(),
            seqs: Vec::new(),
            done: Vec::new(),
            next_id: 1,
            clock: 0,
            config: EngineConfig { context_length: ctx, max_sequences: slots, ..config },
            model,
            tokenizer,
        }
    }

    pub fn context_length(&self) -> usize {
        self.config.context_length
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Sequences still running.
    pub fn active(&self) -> usize {
        self.seqs.len()
    }

    /// Whether another sequence can be added now.
    pub fn has_free_slot(&self) -> bool {
        self.slot_busy.iter().any(|b| !b)
    }

    /// Queues a prompt for generation. Fails if the prompt is empty, does not fit the
    /// context window, or no slot is free.
    pub fn add(&mut self, prompt: Vec<u32>, params: GenerationParams, callback: Option<TokenCallback>) -> Result<SeqId> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if prompt.len() >= self.config.context_length {
            return Err(Error::PromptTooLong { prompt_tokens: prompt.len(), context_length: self.config.context_length });
        }
        params.sampling.validate().map_err(Error::InvalidInput)?;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.model.config.vocab_size) {
            return Err(Error::InvalidInput(format!("token id {bad} is outside the vocabulary")));
        }
        // Pick the free slot sharing the longest prefix; among ties, the least recently used.
        let slot = (0..self.slot_busy.len())
            .filter(|&s| !self.slot_busy[s])
            .max_by_key(|&s| (common_prefix(&self.slot_tokens[s], &prompt), std::cmp::Reverse(self.slot_last_use[s])))
            .ok_or_else(|| Error::InvalidInput("no free sequence slot".into()))?;
        // Reuse the cached prefix, but always recompute at least the last prompt token
        // (its logits are needed to sample the first new token).
        let reuse = common_prefix(&self.slot_tokens[slot], &prompt).min(prompt.len() - 1);
        self.kv.truncate(slot, reuse);
        self.slot_tokens[slot].truncate(reuse);
        self.slot_busy[slot] = true;
        self.clock += 1;
        self.slot_last_use[slot] = self.clock;
        let id = self.next_id;
        self.next_id += 1;
        let n_prompt = prompt.len();
        self.seqs.push(Sequence {
            id,
            slot,
            tokens: prompt,
            n_prompt,
            n_cached: reuse,
            sampler: Sampler::new(params.sampling.clone()),
            stop: StopMatcher::new(params.stop.clone()),
            params,
            decode: DecodeState::new(true),
            text: String::new(),
            callback,
            stats: SeqStats { prompt_tokens: n_prompt, cached_tokens: reuse, ..Default::default() },
            finished: None,
        });
        Ok(id)
    }

    /// Stops a running sequence.
    pub fn cancel(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.iter_mut().find(|s| s.id == id) {
            s.finished = Some(FinishReason::Cancelled);
        }
        self.retire();
    }

    /// Runs one forward pass over all active sequences and samples their next tokens.
    /// Returns the number of sequences still active.
    pub fn step(&mut self) -> Result<usize> {
        if self.seqs.is_empty() {
            return Ok(0);
        }
        let mut tokens = Vec::new();
        let mut positions = Vec::new();
        let mut slots = Vec::new();
        let mut logit_rows = Vec::new();
        // (sequence index, logits row index) for sequences that sample this step.
        let mut samplers = Vec::new();
        let mut prefill_seqs = Vec::new();
        let mut budget = self.config.max_batch_tokens.max(1);
        // Decode tokens first (one each), so a long prompt never starves running sequences.
        let order: Vec<usize> = {
            let mut o: Vec<usize> = (0..self.seqs.len()).collect();
            o.sort_by_key(|&i| self.seqs[i].tokens.len() - self.seqs[i].n_cached > 1);
            o
        };
        for i in order {
            let s = &self.seqs[i];
            let pending = s.tokens.len() - s.n_cached;
            if pending == 0 {
                continue;
            }
            let take = if pending == 1 { 1 } else { pending.min(budget) };
            if take == 0 {
                continue;
            }
            if pending > 1 {
                budget -= take;
                prefill_seqs.push(i);
            }
            for j in 0..take {
                let p = s.n_cached + j;
                tokens.push(s.tokens[p]);
                positions.push(p);
                slots.push(s.slot);
            }
            if take == pending {
                samplers.push((i, logit_rows.len()));
                logit_rows.push(tokens.len() - 1);
            }
        }
        if tokens.is_empty() {
            return Ok(self.seqs.len());
        }
        let t0 = Instant::now();
        self.model.forward(
            BatchInput { tokens: &tokens, positions: &positions, slots: &slots, logits_rows: &logit_rows },
            &mut self.kv,
            &mut self.scratch,
            &self.pool,
            &mut self.logits,
        )?;
        let elapsed = t0.elapsed();
        // Account the step's time: prefill for sequences reading their prompt, decode otherwise.
        for (i, s) in self.seqs.iter_mut().enumerate() {
            let took: usize = slots.iter().filter(|&&x| x == s.slot).count();
            if took == 0 {
                continue;
            }
            if prefill_seqs.contains(&i) {
                s.stats.prefill_time += elapsed;
            } else {
                s.stats.decode_time += elapsed;
            }
            let from = s.n_cached;
            s.n_cached += took;
            let slot_toks = &mut self.slot_tokens[s.slot];
            slot_toks.truncate(from);
            slot_toks.extend_from_slice(&s.tokens[from..s.n_cached]);
        }
        let vocab = self.model.config.vocab_size;
        let ctx = self.config.context_length;
        let tokenizer = self.tokenizer.clone();
        for (i, row) in samplers {
            let s = &mut self.seqs[i];
            let logits = &mut self.logits[row * vocab..(row + 1) * vocab];
            let token = s.sampler.sample(logits, &s.tokens);
            s.tokens.push(token);
            s.stats.generated_tokens += 1;
            let eog = !s.params.ignore_eos && tokenizer.is_end_of_generation(token);
            let mut finish = None;
            let mut text = String::new();
            if eog {
                finish = Some(FinishReason::Stop);
            } else {
                if let Some(piece) = s.decode.step(&tokenizer, token)? {
                    let (out, hit) = s.stop.push(&piece);
                    text = out;
                    if hit {
                        finish = Some(FinishReason::Stop);
                    }
                }
                if finish.is_none() {
                    if s.stats.generated_tokens >= s.params.max_tokens {
                        finish = Some(FinishReason::Length);
                    } else if s.tokens.len() >= ctx {
                        finish = Some(FinishReason::ContextFull);
                    }
                }
            }
            if finish.is_some() && !s.stop.is_stopped() {
                // Release text held back for a possible stop string or an incomplete character.
                if let Some(rest) = s.decode.flush(&tokenizer)? {
                    let (out, _) = s.stop.push(&rest);
                    text.push_str(&out);
                }
                text.push_str(&s.stop.flush());
            }
            s.text.push_str(&text);
            if s.finished.is_none() {
                s.finished = finish;
            }
            let event = TokenEvent { seq: s.id, token: Some(token), text: &text, finished: s.finished };
            if let Some(cb) = s.callback.as_mut() {
                if !cb(&event) && s.finished.is_none() {
                    s.finished = Some(FinishReason::Cancelled);
                }
            }
        }
        self.retire();
        Ok(self.seqs.len())
    }

    /// Moves finished sequences out, freeing their slots (their KV stays cached).
    fn retire(&mut self) {
        let mut i = 0;
        while i < self.seqs.len() {
            if let Some(reason) = self.seqs[i].finished {
                let s = self.seqs.swap_remove(i);
                self.slot_busy[s.slot] = false;
                self.done.push(Finished { seq: s.id, tokens: s.tokens[s.n_prompt..].to_vec(), text: s.text, reason, stats: s.stats });
            } else {
                i += 1;
            }
        }
    }

    /// Runs steps until every sequence has finished.
    pub fn run_to_completion(&mut self) -> Result<()> {
        while self.step()? > 0 {}
        Ok(())
    }

    /// Results of sequences that finished since the last call.
    pub fn take_finished(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.done)
    }

    /// One prompt, generated to completion, with a per-token callback. Convenience for
    /// `lamina run` and `lamina chat` (reuses the cached prefix of earlier calls).
    pub fn generate(&mut self, prompt: Vec<u32>, params: GenerationParams, callback: Option<TokenCallback>) -> Result<Finished> {
        let id = self.add(prompt, params, callback)?;
        loop {
            let still = self.step()?;
            if let Some(pos) = self.done.iter().position(|f| f.seq == id) {
                return Ok(self.done.remove(pos));
            }
            if still == 0 {
                return Err(Error::Other("sequence vanished".into()));
            }
        }
    }

    /// Bytes of KV cache currently allocated.
    pub fn kv_bytes(&self) -> usize {
        self.kv.bytes()
    }

    /// Drops every cached prefix (e.g. `/reset` in chat).
    pub fn clear_cache(&mut self) {
        for s in 0..self.slot_tokens.len() {
            if !self.slot_busy[s] {
                self.slot_tokens[s].clear();
                self.kv.truncate(s, 0);
            }
        }
    }
}

fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
