//! The scheduler: which sequences run in the next forward pass, and how many of their
//! tokens.
//!
//! Each step has a token budget. Running sequences that decode (one pending token) go
//! first, oldest first, so a long prompt never stalls the streams already flowing, then
//! their draft tokens (speculative decoding) as far as the budget and the free blocks go
//! — drafts never pre-empt anyone; then
//! running sequences still reading their prompt get chunks of it (chunked prefill); then
//! waiting requests are admitted, first come first served, while the budget, the
//! concurrency limit and free KV blocks last (vLLM's v1 scheduler has the same shape).
//!
//! Admission looks the prompt's full blocks up in the prefix cache: hits are shared, not
//! computed; a block another sequence is computing right now makes the request wait a
//! step instead of computing a second copy. A request is admitted only when all of its
//! prompt's blocks fit (with a small reserve for the running sequences' growth), so
//! admitted prompts are not immediately pre-empted.
//!
//! When a decoding sequence needs a new block and none is free, the newest running
//! sequence is pre-empted: its blocks are released (the full ones stay in the prefix
//! cache, so it usually recomputes little) and it goes back to the front of the queue
//! with everything it has generated; its output stream just pauses. Requests wait for
//! memory; they are never failed for lack of it.

use crate::kv::{extend_chain, BlockHash, BlockPool, Lookup};
use crate::sequence::{SeqId, Sequence};
use std::collections::{HashMap, VecDeque};

/// Limits of one engine's steps.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Sequences running at once.
    pub max_running: usize,
    /// Tokens in one forward pass (decode tokens and prompt chunks together).
    pub max_batch_tokens: usize,
    pub block_size: usize,
}

/// One sequence's share of a step: tokens `start..start + len`, then `draft` draft tokens
/// (a decode that verifies drafts), and whether the last of them produces logits to
/// sample from (with drafts: all `1 + draft` rows do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    pub seq: SeqId,
    pub start: usize,
    pub len: usize,
    pub draft: usize,
    pub sample: bool,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SchedulerCounters {
    pub preemptions: u64,
    /// Prompt tokens looked up in the prefix cache at first admission, and those found.
    pub prefix_query_tokens: u64,
    pub prefix_hit_tokens: u64,
}

pub struct Scheduler {
    config: SchedulerConfig,
    root: BlockHash,
    /// Waiting requests, oldest (or pre-empted) first.
    waiting: VecDeque<SeqId>,
    /// Running sequences, oldest first.
    running: Vec<SeqId>,
    pub counters: SchedulerCounters,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig, root: BlockHash) -> Self {
        Scheduler { config, root, waiting: VecDeque::new(), running: Vec::new(), counters: SchedulerCounters::default() }
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// The running sequences, oldest first.
    pub(crate) fn running_ids(&self) -> &[SeqId] {
        &self.running
    }

    pub fn enqueue(&mut self, id: SeqId) {
        self.waiting.push_back(id);
    }

    /// Takes a sequence out of the scheduler (finished or cancelled); the caller releases
    /// its blocks.
    pub fn remove(&mut self, id: SeqId) {
        self.waiting.retain(|&x| x != id);
        self.running.retain(|&x| x != id);
    }

    /// Plans the next step, allocating the blocks it needs and pre-empting sequences when
    /// memory runs out.
    pub(crate) fn schedule(&mut self, seqs: &mut HashMap<SeqId, Sequence>, pool: &mut BlockPool) -> Vec<Planned> {
        let bs = self.config.block_size;
        let mut plan = Vec::new();
        let mut budget = self.config.max_batch_tokens.max(1);

        // Decodes, oldest first, each with room for its next position.
        let mut i = 0;
        'decode: while i < self.running.len() {
            let id = self.running[i];
            let s = &seqs[&id];
            if s.pending() != 1 {
                i += 1;
                continue;
            }
            let need = (s.n_computed + 1).div_ceil(bs).saturating_sub(s.blocks.len());
            while pool.free() < need {
                let victim = *self.running.last().expect("this sequence is running");
                self.preempt(victim, seqs, pool);
                if victim == id {
                    continue 'decode;
                }
            }
            let s = seqs.get_mut(&id).expect("running");
            for _ in 0..need {
                s.blocks.push(pool.allocate().expect("checked free blocks"));
            }
            plan.push(Planned { seq: id, start: s.n_computed, len: 1, draft: 0, sample: true });
            budget = budget.saturating_sub(1);
            i += 1;
        }
        // Their drafts, once every decode has its position.
        for p in &mut plan {
            let s = seqs.get_mut(&p.seq).expect("running");
            let mut draft = s.draft.len().min(budget);
            while draft > 0 && s.blocks.len() * bs < s.n_computed + 1 + draft {
                match pool.allocate() {
                    Some(b) => s.blocks.push(b),
                    None => draft = s.blocks.len() * bs - s.n_computed - 1,
                }
            }
            s.draft.truncate(draft);
            p.draft = draft;
            budget -= draft;
        }
        // Prompt chunks of running sequences (their blocks were allocated at admission).
        for &id in &self.running {
            let s = &seqs[&id];
            let pending = s.pending();
            if pending <= 1 || budget == 0 {
                continue;
            }
            let len = pending.min(budget);
            plan.push(Planned { seq: id, start: s.n_computed, len, draft: 0, sample: len == pending });
            budget -= len;
        }
        // Admissions.
        let reserve = if self.running.is_empty() { 0 } else { (pool.num_blocks() / 100).max(1) };
        let mut w = 0;
        while w < self.waiting.len() && budget > 0 && self.running.len() < self.config.max_running {
            let id = self.waiting[w];
            let s = seqs.get_mut(&id).expect("waiting sequence");
            extend_chain(s.cache_root(self.root), bs, &s.tokens, &mut s.hashes);
            let mut hits = Vec::new();
            let mut deferred = false;
            for h in &s.hashes {
                match pool.lookup(h) {
                    Lookup::Ready(b) => hits.push(b),
                    Lookup::Pending => {
                        deferred = true;
                        break;
                    }
                    Lookup::Miss => break,
                }
            }
            if deferred {
                w += 1;
                continue;
            }
            // The last token is always computed: its logits give the next token.
            if hits.len() * bs >= s.tokens.len() {
                hits.pop();
            }
            let new_blocks = s.tokens.len().div_ceil(bs) - hits.len();
            let hits_free = hits.iter().filter(|&&b| pool.is_free(b)).count();
            if pool.free() < new_blocks + hits_free + reserve {
                break;
            }
            for &b in &hits {
                pool.acquire(b);
            }
            s.blocks = hits;
            for _ in 0..new_blocks {
                s.blocks.push(pool.allocate().expect("checked free blocks"));
            }
            s.n_ready = s.blocks.len() - new_blocks;
            s.n_computed = s.n_ready * bs;
            for j in s.n_ready..s.hashes.len() {
                pool.reserve(s.blocks[j], s.hashes[j]);
            }
            if !s.admitted {
                s.admitted = true;
                s.stats.cached_tokens = s.n_computed;
                self.counters.prefix_query_tokens += s.tokens.len() as u64;
                self.counters.prefix_hit_tokens += s.n_computed as u64;
            }
            self.waiting.remove(w);
            let at = self.running.partition_point(|&r| r < id);
            self.running.insert(at, id);
            let pending = s.pending();
            let len = pending.min(budget);
            plan.push(Planned { seq: id, start: s.n_computed, len, draft: 0, sample: len == pending });
            budget -= len;
        }
        plan
    }

    /// Frees a running sequence's blocks and puts it back at the front of the queue.
    fn preempt(&mut self, id: SeqId, seqs: &mut HashMap<SeqId, Sequence>, pool: &mut BlockPool) {
        let s = seqs.get_mut(&id).expect("running sequence");
        pool.release_all(&s.blocks);
        s.blocks.clear();
        s.draft.clear();
        (s.n_computed, s.n_ready) = (0, 0);
        s.stats.preemptions += 1;
        self.counters.preemptions += 1;
        self.running.retain(|&r| r != id);
        self.waiting.push_front(id);
    }

    /// Called after a forward pass computed `len` more tokens of `s` (with drafts: the
    /// pending token and the drafts that were kept, once verified — a block is hashed
    /// only when every position in it is verified): the blocks that became full go into
    /// the prefix cache. Blocks beyond what the sequence's tokens need (taken for drafts
    /// that were rejected) are released.
    pub(crate) fn computed(&self, s: &mut Sequence, len: usize, pool: &mut BlockPool) {
        s.n_computed += len;
        let bs = self.config.block_size;
        let full = s.n_computed / bs;
        if full > s.n_ready {
            extend_chain(s.cache_root(self.root), bs, &s.tokens[..s.n_computed], &mut s.hashes);
            for j in s.n_ready..full {
                pool.mark_ready(s.blocks[j], s.hashes[j]);
            }
            s.n_ready = full;
        }
        let keep = s.tokens.len().max(s.n_computed).div_ceil(bs);
        if s.blocks.len() > keep {
            pool.release_all(&s.blocks[keep..]);
            s.blocks.truncate(keep);
        }
    }
}
