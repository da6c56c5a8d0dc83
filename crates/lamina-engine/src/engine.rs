//! The generation engine: many sequences decoded together, one forward pass per step.
//!
//! The parts, each in its own module: the KV block pool and prefix cache ([`crate::kv`]),
//! the [`crate::scheduler`] that plans each step within a token budget, the per-sequence
//! state ([`crate::sequence`]) and output pipeline ([`crate::pipeline`]). The engine owns
//! them and the model's paged KV memory, runs the planned batch through the model, and
//! feeds each sampled row to its sequence's pipeline (with speculative decoding a decoding
//! sequence's chunk also carries draft tokens, and each of its rows verifies one: see
//! [`crate::speculative`]). Requests can be added and can finish between any two steps
//! (continuous batching); `lamina run`, `chat`, `bench`, `perplexity` and the server all
//! go through it.

use crate::kv::{BlockHash, BlockPool};
use crate::pipeline::{FinishReason, GenerationParams, LogitsProcessor, OutputPipeline};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::sequence::{Finished, SeqId, SeqStats, Sequence, TokenCallback, TokenEvent};
use crate::speculative::{DraftRequest, Drafter, SpeculativeConfig};
use lamina_core::{Error, Result};
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, Model, ModelLora, PagedKv, Scratch, SeqChunk};
use lamina_tokenizer::Tokenizer;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// Settings of an engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences running at once (more wait in the queue).
    pub max_sequences: usize,
    /// Longest sequence (prompt + generation); at most the model's context length.
    pub context_length: usize,
    /// Most tokens in one forward pass: decode tokens plus prompt chunks (chunked prefill
    /// keeps the running sequences decoding while a long prompt is read).
    pub max_batch_tokens: usize,
    /// Positions per KV block.
    pub block_size: usize,
    /// KV blocks in the pool; 0 = enough for `max_sequences` full context windows.
    pub kv_blocks: usize,
    /// Commit the pool's memory when the engine is made (a server's memory use is then
    /// flat from the start); otherwise pages become resident as blocks are first used.
    pub prefault_kv: bool,
    /// The model's content fingerprint ([`model_fingerprint`]): cached blocks are keyed by
    /// it, so a saved prefix cache is only ever reused with the same weights. `None`: the
    /// model's path and shape stand in (nothing can be saved).
    pub model_fingerprint: Option<String>,
    /// Speculative decoding (`None`: off). Sequences with logits processors of their own
    /// (a grammar) decode without it.
    pub speculative: Option<SpeculativeConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_sequences: 8,
            context_length: 4096,
            max_batch_tokens: 512,
            block_size: lamina_model::DEFAULT_BLOCK_SIZE,
            kv_blocks: 0,
            prefault_kv: false,
            model_fingerprint: None,
            speculative: None,
        }
    }
}

/// A request for the engine.
pub struct Request {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub callback: Option<TokenCallback>,
    /// Set to `true` (from any thread) to cancel; seen at the start of the next step.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Extra logits processors (a grammar), after `logit_bias`.
    pub processors: Vec<Box<dyn LogitsProcessor>>,
    /// The LoRA adapter to run with (`None`: the base model); sequences with different
    /// adapters share batches.
    pub lora: Option<Arc<ModelLora>>,
}

impl Request {
    pub fn new(prompt: Vec<u32>, params: GenerationParams) -> Self {
        Request { prompt, params, callback: None, cancel: None, processors: Vec::new(), lora: None }
    }

    pub fn with_callback(mut self, callback: TokenCallback) -> Self {
        self.callback = Some(callback);
        self
    }

    pub fn with_cancel(mut self, cancel: Arc<AtomicBool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Runs the request with a LoRA adapter prepared for the engine's model
    /// ([`lamina_model::Model::prepare_lora`]).
    pub fn with_lora(mut self, lora: Option<Arc<ModelLora>>) -> Self {
        self.lora = lora;
        self
    }

    /// Adds a logits processor (a grammar's [`lamina_grammar::Lookahead`]).
    pub fn with_processor(mut self, processor: Box<dyn LogitsProcessor>) -> Self {
        self.processors.push(processor);
        self
    }
}

/// A snapshot of the engine's load and cache, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineStats {
    pub waiting: usize,
    pub running: usize,
    pub kv_blocks: usize,
    pub kv_blocks_used: usize,
    pub kv_blocks_free: usize,
    /// Blocks holding reusable prefixes (used or not).
    pub kv_blocks_cached: usize,
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
    pub preemptions: u64,
    pub evictions: u64,
    /// Speculative decoding: draft tokens verified, and those kept.
    pub spec_draft_tokens: u64,
    pub spec_accepted_tokens: u64,
}

pub struct Engine {
    pub model: Arc<Model>,
    pub tokenizer: Arc<Tokenizer>,
    workers: Arc<ThreadPool>,
    kv: PagedKv,
    blocks: BlockPool,
    sched: Scheduler,
    seqs: HashMap<SeqId, Sequence>,
    scratch: Scratch,
    logits: Vec<f32>,
    done: Vec<Finished>,
    next_id: SeqId,
    config: EngineConfig,
    drafter: Option<Box<dyn Drafter>>,
    spec_draft_tokens: u64,
    spec_accepted_tokens: u64,
}

impl Engine {
    /// An engine for `model` on the shared worker pool `workers`. Fails when the KV pool
    /// the configuration asks for is larger than the memory available, or when a draft
    /// model's vocabulary is not the model's ([`Error::DraftVocabulary`]).
    pub fn new(model: Arc<Model>, tokenizer: Arc<Tokenizer>, workers: Arc<ThreadPool>, config: EngineConfig) -> Result<Self> {
        let ctx = config.context_length.min(model.config.context_length);
        if ctx == 0 {
            return Err(Error::InvalidInput("the context length must be at least 1 token".into()));
        }
        let bs = config.block_size.max(1);
        let shape = model.kv_shape(bs);
        let max_sequences = config.max_sequences.max(1);
        let kv_blocks = if config.kv_blocks > 0 { config.kv_blocks } else { max_sequences.saturating_mul(shape.blocks_for(ctx)) };
        let what = format!("the KV cache for {max_sequences} sequence(s) × {ctx} tokens ({kv_blocks} blocks of {bs} positions)");
        lamina_core::memory::check_fits(&what, (kv_blocks as u64).saturating_mul(shape.block_bytes() as u64))?;
        let mut kv = PagedKv::new(shape, kv_blocks);
        if config.prefault_kv {
            kv.prefault();
        }
        let identity = match &config.model_fingerprint {
            Some(f) => format!("{f}|{:?}", model.precision).into_bytes(),
            None => model_identity(&model),
        };
        let root = BlockHash::root(&identity, bs);
        let sched = Scheduler::new(SchedulerConfig { max_running: max_sequences, max_batch_tokens: config.max_batch_tokens.max(1), block_size: bs }, root);
        let drafter = match &config.speculative {
            Some(spec) if spec.k > 0 => Some(crate::speculative::drafter(spec, &model, &tokenizer, workers.clone(), kv_blocks * bs, max_sequences)?),
            _ => None,
        };
        Ok(Engine {
            drafter,
            spec_draft_tokens: 0,
            spec_accepted_tokens: 0,
            kv,
            blocks: BlockPool::new(kv_blocks),
            sched,
            seqs: HashMap::new(),
            scratch: Scratch::default(),
            logits: Vec::new(),
            done: Vec::new(),
            next_id: 1,
            config: EngineConfig { context_length: ctx, max_sequences, block_size: bs, kv_blocks, ..config },
            workers,
            model,
            tokenizer,
        })
    }

    pub fn context_length(&self) -> usize {
        self.config.context_length
    }

    pub fn threads(&self) -> usize {
        self.workers.threads()
    }

    /// Sequences waiting or running.
    pub fn active(&self) -> usize {
        self.seqs.len()
    }

    pub fn stats(&self) -> EngineStats {
        let c = self.sched.counters;
        EngineStats {
            waiting: self.sched.waiting(),
            running: self.sched.running(),
            kv_blocks: self.blocks.num_blocks(),
            kv_blocks_used: self.blocks.used(),
            kv_blocks_free: self.blocks.free(),
            kv_blocks_cached: self.blocks.cached(),
            prefix_query_tokens: c.prefix_query_tokens,
            prefix_hit_tokens: c.prefix_hit_tokens,
            preemptions: c.preemptions,
            evictions: self.blocks.evictions(),
            spec_draft_tokens: self.spec_draft_tokens,
            spec_accepted_tokens: self.spec_accepted_tokens,
        }
    }

    /// Checks a request against the model and this engine's limits: the same checks
    /// [`add`](Self::add) makes, for callers that want to refuse before queueing.
    pub fn check(&self, prompt: &[u32], params: &GenerationParams) -> Result<()> {
        if prompt.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        let ctx = self.config.context_length;
        if prompt.len() >= ctx {
            return Err(Error::PromptTooLong { prompt_tokens: prompt.len(), context_length: ctx });
        }
        params.validate(self.model.config.vocab_size).map_err(Error::InvalidInput)?;
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.model.config.vocab_size) {
            return Err(Error::InvalidInput(format!("token id {bad} is outside the vocabulary")));
        }
        // Alone in the pool, the sequence must be able to reach its end.
        let longest = (prompt.len() + params.max_tokens).min(ctx);
        let need = longest.div_ceil(self.config.block_size);
        if need > self.blocks.num_blocks() {
            return Err(Error::InvalidInput(format!(
                "{longest} tokens need {need} KV blocks of {} positions, and the cache has {} (raise the memory for the KV cache, or ask for fewer tokens)",
                self.config.block_size,
                self.blocks.num_blocks()
            )));
        }
        Ok(())
    }

    /// Queues a request. Fails if the request is invalid or can never fit; otherwise it
    /// waits for memory and a turn, however long the queue.
    pub fn add(&mut self, request: Request) -> Result<SeqId> {
        let Request { prompt, params, callback, cancel, processors, lora } = request;
        self.check(&prompt, &params)?;
        let id = self.next_id;
        self.next_id += 1;
        let n_prompt = prompt.len();
        let mut seq = Sequence {
            id,
            tokens: prompt,
            n_prompt,
            n_computed: 0,
            blocks: Vec::new(),
            hashes: Vec::new(),
            n_ready: 0,
            admitted: false,
            pipeline: OutputPipeline::new(params.clone(), processors),
            callback,
            cancel,
            text: String::new(),
            logprobs: Vec::new(),
            stats: SeqStats::new(n_prompt),
            finished: None,
            draft: Vec::new(),
            draft_len: self.config.speculative.as_ref().map_or(0, |s| s.k),
            lora,
        };
        if params.max_tokens == 0 {
            // Nothing to generate: done without touching the model.
            seq.finished = Some(FinishReason::Length);
            self.seqs.insert(id, seq);
            self.finish(id);
            return Ok(id);
        }
        self.seqs.insert(id, seq);
        self.sched.enqueue(id);
        Ok(id)
    }

    /// Stops a sequence (running or waiting) now.
    pub fn cancel(&mut self, id: SeqId) {
        if let Some(s) = self.seqs.get_mut(&id) {
            s.finished.get_or_insert(FinishReason::Cancelled);
            self.finish(id);
        }
    }

    /// Runs one step: retires cancelled sequences, plans the batch, runs it through the
    /// model and samples a token for each sequence whose input was complete. Returns the
    /// number of sequences still waiting or running.
    pub fn step(&mut self) -> Result<usize> {
        let cancelled: Vec<SeqId> = self.seqs.values().filter(|s| s.cancelled()).map(|s| s.id).collect();
        for id in cancelled {
            self.cancel(id);
        }
        self.propose()?;
        let plan = self.sched.schedule(&mut self.seqs, &mut self.blocks);
        if plan.is_empty() {
            return Ok(self.seqs.len());
        }
        let mut tokens = Vec::new();
        let mut rows = Vec::new();
        let t0 = Instant::now();
        {
            let mut chunks = Vec::with_capacity(plan.len());
            for p in &plan {
                let s = &self.seqs[&p.seq];
                tokens.extend_from_slice(&s.tokens[p.start..p.start + p.len]);
                tokens.extend_from_slice(&s.draft[..p.draft]);
                chunks.push(SeqChunk { len: p.len + p.draft, start: p.start, blocks: &s.blocks, lora: s.lora.as_deref() });
                if p.sample {
                    rows.extend(tokens.len() - 1 - p.draft..tokens.len());
                }
            }
            self.model.forward(
                BatchInput { tokens: &tokens, seqs: &chunks, logits_rows: &rows },
                &mut self.kv,
                &mut self.scratch,
                &self.workers,
                &mut self.logits,
            )?;
        }
        let elapsed = t0.elapsed();
        for p in &plan {
            let s = self.seqs.get_mut(&p.seq).expect("planned");
            if p.start < s.n_prompt {
                s.stats.prefill_time += elapsed;
            } else {
                s.stats.decode_time += elapsed;
            }
            if p.draft == 0 {
                self.sched.computed(s, p.len, &mut self.blocks);
            }
        }
        let vocab = self.model.config.vocab_size;
        let ctx = self.config.context_length;
        let mut row = 0;
        for p in plan.iter().filter(|p| p.sample) {
            let s = self.seqs.get_mut(&p.seq).expect("planned");
            // Row j verifies draft j; the row after the last draft adds one more token.
            let mut kept = 0;
            for j in 0..=p.draft {
                let logits = &mut self.logits[(row + j) * vocab..(row + j + 1) * vocab];
                let room = ctx.saturating_sub(s.tokens.len() + 1);
                let draft = (j < p.draft).then(|| s.draft[j]);
                let out = s.pipeline.next(logits, &s.tokens, room, &self.tokenizer, draft)?;
                s.tokens.push(out.token);
                s.stats.generated_tokens += 1;
                s.text.push_str(&out.text);
                s.finished = s.finished.or(out.finish);
                let event = TokenEvent { seq: s.id, token: Some(out.token), text: &out.text, logprob: out.logprob.as_ref(), finished: s.finished };
                if let Some(cb) = s.callback.as_mut() {
                    if !cb(&event) && s.finished.is_none() {
                        s.finished = Some(FinishReason::Cancelled);
                    }
                }
                if let Some(lp) = out.logprob {
                    s.logprobs.push(lp);
                }
                if draft == Some(out.token) {
                    kept += 1;
                }
                if s.finished.is_some() || draft != Some(out.token) {
                    break;
                }
            }
            row += 1 + p.draft;
            if p.draft > 0 {
                // The pending token and the kept drafts are computed; the rest of the
                // chunk's positions held rejected drafts and are free for what comes next.
                s.stats.draft_tokens += p.draft;
                s.stats.accepted_tokens += kept;
                self.spec_draft_tokens += p.draft as u64;
                self.spec_accepted_tokens += kept as u64;
                s.draft_len = crate::speculative::next_k(p.draft, kept, self.config.speculative.as_ref().map_or(0, |c| c.k));
                self.sched.computed(s, 1 + kept, &mut self.blocks);
            }
            s.draft.clear();
            if s.finished.is_some() {
                self.finish(p.seq);
            }
        }
        Ok(self.seqs.len())
    }

    /// Asks the drafter for drafts for every running sequence that decodes next and may
    /// speculate, as many as its output and the context window have room for.
    fn propose(&mut self) -> Result<()> {
        let Some(drafter) = self.drafter.as_mut() else { return Ok(()) };
        let ctx = self.config.context_length;
        let mut reqs = Vec::new();
        for id in self.sched.running_ids() {
            let s = &self.seqs[id];
            if s.pending() != 1 || !s.pipeline.can_speculate() {
                continue;
            }
            // The step's last row gives a token after the drafts: drafts past the
            // output's or the window's last token would be wasted.
            let left = s.pipeline.params().max_tokens.saturating_sub(s.tokens.len() - s.n_prompt);
            let k = s.draft_len.min(left.saturating_sub(1)).min(ctx.saturating_sub(s.tokens.len()));
            if k > 0 {
                reqs.push(DraftRequest { seq: s.id, tokens: &s.tokens, k });
            }
        }
        if reqs.is_empty() {
            return Ok(());
        }
        let mut out = vec![Vec::new(); reqs.len()];
        drafter.propose(&reqs, &mut out)?;
        let asked: Vec<(SeqId, usize)> = reqs.iter().map(|r| (r.seq, r.k)).collect();
        for ((id, k), mut d) in asked.into_iter().zip(out) {
            d.truncate(k);
            self.seqs.get_mut(&id).expect("running").draft = d;
        }
        Ok(())
    }

    /// Moves a finished (or cancelled) sequence out, releasing its blocks (their full
    /// ones stay in the prefix cache).
    fn finish(&mut self, id: SeqId) {
        let Some(mut s) = self.seqs.remove(&id) else { return };
        let reason = s.finished.unwrap_or(FinishReason::Cancelled);
        self.sched.remove(id);
        self.blocks.release_all(&s.blocks);
        if let Some(d) = self.drafter.as_mut() {
            d.forget(id);
        }
        if reason == FinishReason::Cancelled {
            // The client is told, once, that nothing more comes.
            if let Some(cb) = s.callback.as_mut() {
                cb(&TokenEvent { seq: id, token: None, text: "", logprob: None, finished: Some(reason) });
            }
        }
        let generated = s.tokens[s.n_prompt..].to_vec();
        self.done.push(Finished { seq: id, tokens: generated, text: s.text, logprobs: s.logprobs, reason, stats: s.stats });
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
        let mut request = Request::new(prompt, params);
        request.callback = callback;
        self.complete(request)
    }

    /// One request, generated to completion (the general form of [`generate`](Self::generate)).
    pub fn complete(&mut self, request: Request) -> Result<Finished> {
        let id = self.add(request)?;
        loop {
            if let Some(pos) = self.done.iter().position(|f| f.seq == id) {
                return Ok(self.done.remove(pos));
            }
            if self.step()? == 0 && !self.done.iter().any(|f| f.seq == id) {
                return Err(Error::Other("sequence vanished".into()));
            }
        }
    }

    /// Logits after each of `rows` of `tokens`, evaluated as a fresh sequence from an
    /// empty cache (`rows.len() × vocab` values into `out`). Nothing is cached. Needs the
    /// blocks for `tokens` free (perplexity runs this on an otherwise idle engine).
    pub fn logits_of(&mut self, tokens: &[u32], rows: &[usize], out: &mut Vec<f32>) -> Result<()> {
        self.logits_of_batch(&[tokens], rows, out)
    }

    /// [`logits_of`](Self::logits_of) for several fresh sequences in one forward pass:
    /// `rows` index their tokens laid back to back (the second sequence's first token is
    /// row `seqs[0].len()`). Needs the blocks for all of them free.
    pub fn logits_of_batch(&mut self, seqs: &[&[u32]], rows: &[usize], out: &mut Vec<f32>) -> Result<()> {
        self.logits_of_batch_with(seqs, rows, None, out)
    }

    /// [`logits_of_batch`](Self::logits_of_batch) with every sequence run through `lora`.
    pub fn logits_of_batch_with(&mut self, seqs: &[&[u32]], rows: &[usize], lora: Option<&ModelLora>, out: &mut Vec<f32>) -> Result<()> {
        let bs = self.config.block_size;
        let need: usize = seqs.iter().map(|s| s.len().div_ceil(bs)).sum();
        if let Some(long) = seqs.iter().find(|s| s.len() > self.config.context_length) {
            return Err(Error::InvalidInput(format!("a sequence of {} tokens exceeds the context length {}", long.len(), self.config.context_length)));
        }
        if need > self.blocks.free() {
            let total: usize = seqs.iter().map(|s| s.len()).sum();
            return Err(Error::InvalidInput(format!("{total} tokens need {need} free KV blocks; {} are free", self.blocks.free())));
        }
        let tables: Vec<Vec<u32>> =
            seqs.iter().map(|s| (0..s.len().div_ceil(bs)).map(|_| self.blocks.allocate().expect("checked free blocks")).collect()).collect();
        let chunks: Vec<SeqChunk<'_>> = seqs.iter().zip(&tables).map(|(s, t)| SeqChunk { len: s.len(), start: 0, blocks: t, lora }).collect();
        let tokens: Vec<u32> = seqs.concat();
        let result = self.model.forward(BatchInput { tokens: &tokens, seqs: &chunks, logits_rows: rows }, &mut self.kv, &mut self.scratch, &self.workers, out);
        for t in &tables {
            self.blocks.release_all(t);
        }
        result
    }

    /// KV blocks free now.
    pub fn free_blocks(&self) -> usize {
        self.blocks.free()
    }

    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    /// Saves the prefix cache to `path` (atomically). Returns the blocks written.
    pub fn save_prefix_cache(&self, path: &std::path::Path) -> Result<usize> {
        let fp = self.config.model_fingerprint.as_deref().ok_or_else(|| Error::InvalidInput("saving a prefix cache needs the model's fingerprint".into()))?;
        crate::kv::persist::save(path, fp, &self.kv, &self.blocks)
    }

    /// Loads a prefix cache saved by [`save_prefix_cache`](Self::save_prefix_cache) for
    /// the same model and block shape into this (idle, fresh) engine. Returns the blocks
    /// placed; a file for other weights or a damaged one is refused.
    pub fn load_prefix_cache(&mut self, path: &std::path::Path) -> Result<usize> {
        let fp = self.config.model_fingerprint.clone().ok_or_else(|| Error::InvalidInput("loading a prefix cache needs the model's fingerprint".into()))?;
        crate::kv::persist::load(path, &fp, &mut self.kv, &mut self.blocks)
    }

    /// Drops every cached prefix not in use (e.g. `/reset` in chat).
    pub fn clear_cache(&mut self) {
        self.blocks.clear_cache();
    }

    /// Checks the block pool's invariants and that the blocks in use are exactly those
    /// the live sequences hold (tests).
    pub fn check_invariants(&self) {
        self.blocks.check_invariants();
        let mut refs: HashMap<u32, u32> = HashMap::new();
        for s in self.seqs.values() {
            for &b in &s.blocks {
                *refs.entry(b).or_default() += 1;
            }
        }
        for b in 0..self.blocks.num_blocks() as u32 {
            assert_eq!(self.blocks.refs(b), refs.get(&b).copied().unwrap_or(0), "references of KV block {b}");
        }
    }
}

/// A content hash of a model's weights and configuration: SHA-256 of the GGUF file, or of
/// a Hugging Face folder's `config.json` and safetensors files (name and hash of each).
pub fn model_fingerprint(path: &std::path::Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    if !path.is_dir() {
        return lamina_core::registry::sha256_file(path);
    }
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n == "config.json") || p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default().as_bytes());
        h.update(lamina_core::registry::sha256_file(&f)?.as_bytes());
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// What distinguishes this model's KV contents from another's: the weights' file and
/// size, the arithmetic and the shape.
fn model_identity(model: &Model) -> Vec<u8> {
    let c = &model.config;
    let mut id =
        format!("{}|{:?}|{}|{}|{}|{}|{}", model.source.display(), model.precision, c.num_layers, c.hidden_size, c.num_kv_heads, c.head_dim, c.vocab_size);
    if let Ok(meta) = std::fs::metadata(&model.source) {
        id.push_str(&format!("|{}", meta.len()));
    }
    id.into_bytes()
}
