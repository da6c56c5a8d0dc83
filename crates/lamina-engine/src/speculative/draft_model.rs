//! A draft model: a second, cheaper model with the target's vocabulary proposes the next
//! tokens by decoding greedily.
//!
//! The drafter keeps its own paged KV memory and, per sequence, the tokens whose keys and
//! values it holds. Each proposal first catches up on what the sequence has that the
//! draft cache lacks — the prompt the first time; afterwards the tokens the target kept
//! and its replacement for a rejected draft (the cache's rejected drafts are dropped by
//! comparing it with the sequence) — then decodes `k` tokens, all sequences batched in
//! each of those forward passes. Its proposals are its greedy choices, so verification
//! keeps each with the target's probability of it (the point-mass case of the
//! `min(1, p/q)` rule) and the target's distribution is unchanged.

use super::{DraftRequest, Drafter};
use crate::sampler::argmax;
use crate::sequence::SeqId;
use lamina_core::Result;
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, Model, PagedKv, Scratch, SeqChunk};
use std::collections::HashMap;
use std::sync::Arc;

/// One sequence's state in the draft cache.
#[derive(Default)]
struct DraftSeq {
    /// Tokens whose keys and values are in `blocks`, position by position.
    cached: Vec<u32>,
    blocks: Vec<u32>,
}

pub struct DraftModelDrafter {
    model: Arc<Model>,
    workers: Arc<ThreadPool>,
    kv: PagedKv,
    /// Unused blocks of `kv`.
    free: Vec<u32>,
    seqs: HashMap<SeqId, DraftSeq>,
    scratch: Scratch,
    logits: Vec<f32>,
}

impl DraftModelDrafter {
    /// A drafter running `model` with KV memory for `positions` positions in all. Fails
    /// when that memory is not available.
    pub fn new(model: Arc<Model>, workers: Arc<ThreadPool>, positions: usize) -> Result<Self> {
        let shape = model.kv_shape(lamina_model::DEFAULT_BLOCK_SIZE);
        let blocks = shape.blocks_for(positions.max(1));
        let what = format!("the draft model's KV cache ({positions} positions)");
        lamina_core::memory::check_fits(&what, (blocks as u64).saturating_mul(shape.block_bytes() as u64))?;
        Ok(DraftModelDrafter {
            kv: PagedKv::new(shape, blocks),
            free: (0..blocks as u32).rev().collect(),
            seqs: HashMap::new(),
            scratch: Scratch::default(),
            logits: Vec::new(),
            model,
            workers,
        })
    }

    /// Gives a sequence blocks for `positions` positions (releasing any beyond them);
    /// false when the pool cannot.
    fn fit(&mut self, seq: SeqId, positions: usize) -> bool {
        let bs = self.kv.shape.block_size;
        let s = self.seqs.get_mut(&seq).expect("known sequence");
        let need = positions.div_ceil(bs);
        while s.blocks.len() > need {
            self.free.push(s.blocks.pop().expect("non-empty"));
        }
        if need - s.blocks.len() > self.free.len() {
            return false;
        }
        while s.blocks.len() < need {
            s.blocks.push(self.free.pop().expect("checked free blocks"));
        }
        true
    }

    /// One forward pass of the draft model over `chunks` (sequence, tokens from position
    /// `cached.len()`), appending those tokens to each sequence's cache; the greedy next
    /// token after each chunk.
    fn forward(&mut self, chunks: &[(SeqId, Vec<u32>)]) -> Result<Vec<u32>> {
        let mut tokens = Vec::new();
        let mut rows = Vec::with_capacity(chunks.len());
        let mut seqs = Vec::with_capacity(chunks.len());
        for (id, t) in chunks {
            let s = &self.seqs[id];
            seqs.push(SeqChunk { len: t.len(), start: s.cached.len(), blocks: &s.blocks, lora: None });
            tokens.extend_from_slice(t);
            rows.push(tokens.len() - 1);
        }
        self.model.forward(
            BatchInput { tokens: &tokens, seqs: &seqs, logits_rows: &rows },
            &mut self.kv,
            &mut self.scratch,
            &self.workers,
            &mut self.logits,
        )?;
        for (id, t) in chunks {
            self.seqs.get_mut(id).expect("known sequence").cached.extend_from_slice(t);
        }
        let vocab = self.model.config.vocab_size;
        Ok(self.logits.chunks_exact(vocab).map(argmax).collect())
    }
}

impl Drafter for DraftModelDrafter {
    fn propose(&mut self, reqs: &[DraftRequest<'_>], out: &mut [Vec<u32>]) -> Result<()> {
        let ctx = self.model.config.context_length;
        // Catch up: each sequence's tokens from the first one the cache lacks or holds
        // differently (at least the last, whose logits give the first draft).
        let mut chunks = Vec::new();
        let mut which = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            let len = r.tokens.len();
            // The cache will hold the tokens and all drafts but the last.
            let k = r.k.min((ctx + 1).saturating_sub(len));
            if k == 0 || len == 0 {
                continue;
            }
            let s = self.seqs.entry(r.seq).or_default();
            let common = s.cached.iter().zip(r.tokens).take_while(|(a, b)| a == b).count().min(len - 1);
            s.cached.truncate(common);
            if !self.fit(r.seq, len + k - 1) {
                // No room for this one now: it decodes without drafts.
                self.fit(r.seq, common);
                continue;
            }
            chunks.push((r.seq, r.tokens[common..].to_vec()));
            which.push((i, k));
        }
        if chunks.is_empty() {
            return Ok(());
        }
        let mut next = self.forward(&chunks)?;
        for (&(i, _), &t) in which.iter().zip(&next) {
            out[i].push(t);
        }
        // Decode the rest, one token per sequence per pass.
        for step in 1.. {
            let live: Vec<usize> = (0..which.len()).filter(|&j| which[j].1 > step).collect();
            if live.is_empty() {
                break;
            }
            let chunks: Vec<(SeqId, Vec<u32>)> = live.iter().map(|&j| (reqs[which[j].0].seq, vec![next[j]])).collect();
            let got = self.forward(&chunks)?;
            for (&j, t) in live.iter().zip(got) {
                next[j] = t;
                out[which[j].0].push(t);
            }
        }
        Ok(())
    }

    fn forget(&mut self, seq: SeqId) {
        if let Some(s) = self.seqs.remove(&seq) {
            self.free.extend(s.blocks);
        }
    }
}
