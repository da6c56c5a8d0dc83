//! The inference forward pass of the decoder-only transformer (Llama, GPT-2 and Gemma 3
//! families).
//!
//! A forward call takes a *batch of tokens from any number of sequences*: each sequence
//! contributes a run of consecutive positions and the block table through which its keys
//! and values are written to and read from the paged KV cache ([`PagedKv`]). Prefill of
//! one prompt, decode of one token for eight sequences, or a mix of both, are the same
//! call, which is what continuous batching needs. Logits are computed only for the rows
//! asked for. The model keeps no per-sequence state: which positions are cached, and in
//! which blocks, is the caller's (the engine's) to track.
//!
//! Shapes in comments: `n` tokens in the batch, `d` hidden size, `f` MLP width,
//! `hq`/`hkv` query/key-value heads of `hd` dims, `v` vocabulary.

use crate::adapter::{ModelLora, Proj};
use crate::gguf::GgufFile;
use crate::linear::Linear;
use crate::paged_kv::{HeadRows, KvDtype, KvShape, PagedKv};
use lamina_core::{Architecture, Error, ModelConfig, Result};
use lamina_kernels::matmul::{matmul, matmul_many, ActFormat, Activations, Kernels, MatmulJob};
use lamina_kernels::{attention, ops, ThreadPool};
use std::path::PathBuf;
use std::sync::Arc;

/// The arithmetic of the matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// Quantized weights used as stored, against activations quantized to 8 bits per
    /// block of 32 — llama.cpp's arithmetic, and the fast path.
    Native,
    /// Weights dequantized to f32 at load, f32 activations — the arithmetic of a
    /// Hugging Face `transformers` run on the same weights; slower, for reference checks.
    F32,
}

/// RMSNorm (weight only) or LayerNorm (weight and bias).
#[derive(Debug, Clone)]
pub struct Norm {
    pub weight: Vec<f32>,
    pub bias: Option<Vec<f32>>,
}

impl Norm {
    pub(crate) fn apply(&self, x: &[f32], eps: f32, out: &mut [f32]) {
        match &self.bias {
            None => ops::rms_norm(x, &self.weight, eps, out),
            Some(b) => ops::layer_norm(x, &self.weight, b, eps, out),
        }
    }
}

/// One transformer block.
#[derive(Debug, Clone)]
pub struct Layer {
    pub attn_norm: Norm,
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    pub ffn_norm: Norm,
    /// SwiGLU gate (Llama) or GeGLU gate (Gemma 3); `None` for GPT-2's GELU MLP.
    pub gate: Option<Linear>,
    pub up: Linear,
    pub down: Linear,
    /// Gemma 3's QK-norm: RMSNorm of every query and key head (`head_dim` weights).
    pub q_norm: Option<Norm>,
    pub k_norm: Option<Norm>,
    /// Gemma 3's RMSNorm of the attention and MLP outputs before they join the residual.
    pub post_attn_norm: Option<Norm>,
    pub post_ffn_norm: Option<Norm>,
}

/// A loaded model, ready for inference.
pub struct Model {
    pub config: ModelConfig,
    pub precision: Precision,
    /// Token embeddings `(v, d)`.
    pub embed: Linear,
    /// Learned positions `(context, d)` for GPT-2.
    pub pos_embed: Option<Linear>,
    pub layers: Vec<Layer>,
    pub final_norm: Norm,
    /// Output projection `(v, d)`; shares storage with `embed` when tied.
    pub output: Linear,
    pub inv_freq: Vec<f32>,
    /// The sliding-window layers' own rotary frequencies (Gemma 3), when they differ.
    pub inv_freq_local: Option<Vec<f32>>,
    pub kernels: Kernels,
    /// The file or folder the model came from.
    pub source: PathBuf,
    /// The GGUF file when loaded from one (metadata for `info` and the tokenizer).
    pub gguf: Option<Arc<GgufFile>>,
}

/// One sequence's part of a forward batch: the next `len` tokens of the batch are
/// positions `start..start + len` of a sequence whose KV blocks are `blocks`. Positions
/// before `start` must already be in those blocks (the caller computed them earlier, or
/// they are shared prefix blocks); the call writes `start..start + len`.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    pub len: usize,
    pub start: usize,
    pub blocks: &'a [u32],
    /// The LoRA adapter this sequence runs with (`None`: the base model). Its KV blocks
    /// hold that adapter's keys and values, so they are only shared with sequences of the
    /// same adapter.
    pub lora: Option<&'a ModelLora>,
}

/// One forward call's input: the sequences' chunks, their tokens back to back in the same
/// order.
#[derive(Debug, Clone, Copy)]
pub struct BatchInput<'a> {
    pub tokens: &'a [u32],
    pub seqs: &'a [SeqChunk<'a>],
    /// Batch rows whose next-token logits are wanted, in output order.
    pub logits_rows: &'a [usize],
}

/// Reusable buffers of the forward pass; grow on demand, never shrink, so steady-state
/// decoding allocates nothing.
#[derive(Default)]
pub struct Scratch {
    x: Vec<f32>,
    xn: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    cos_local: Vec<f32>,
    sin_local: Vec<f32>,
    scores: Vec<f32>,
    /// Per batch row: (index of its sequence chunk, position).
    rows: Vec<(usize, usize)>,
    acts: Activations,
}

pub(crate) fn grow(v: &mut Vec<f32>, n: usize) -> &mut [f32] {
    if v.len() < n {
        v.resize(n, 0.0);
    }
    &mut v[..n]
}

#[derive(Clone, Copy)]
pub(crate) struct SyncPtr(pub(crate) *mut f32);
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}
impl SyncPtr {
    /// Method access makes closures capture the whole wrapper (which is `Sync`), not the raw field.
    pub(crate) fn get(self) -> *mut f32 {
        self.0
    }
}

/// The activation formats a group of layers needs (a fixed array: no allocation per op).
fn formats<const N: usize>(ls: [&Linear; N]) -> [ActFormat; N] {
    ls.map(|l| l.weights().act_format())
}

impl Model {
    /// Bytes of weights one decoded token reads (all layers plus the output projection).
    pub fn weight_bytes_per_token(&self) -> usize {
        let mut b = self.output.weight_bytes();
        for l in &self.layers {
            for lin in [&l.q, &l.k, &l.v, &l.o, &l.up, &l.down] {
                b += lin.weight_bytes();
            }
            if let Some(g) = &l.gate {
                b += g.weight_bytes();
            }
        }
        b
    }

    /// Bytes of all weights as loaded (what the model adds to the process's memory, up to
    /// norms and biases).
    pub fn weight_bytes(&self) -> usize {
        let embed = if self.config.tied_embeddings { 0 } else { self.embed.weight_bytes() };
        self.weight_bytes_per_token() + embed + self.pos_embed.as_ref().map_or(0, |p| p.weight_bytes())
    }

    /// The shape of this model's KV blocks of `block_size` positions: f16 on the native
    /// path (as llama.cpp), f32 on the f32 path.
    pub fn kv_shape(&self, block_size: usize) -> KvShape {
        let dtype = match self.precision {
            Precision::Native => KvDtype::F16,
            Precision::F32 => KvDtype::F32,
        };
        KvShape { num_layers: self.config.num_layers, kv_heads: self.config.num_kv_heads, head_dim: self.config.head_dim, block_size, dtype }
    }

    /// A KV pool of `num_blocks` blocks of `block_size` positions for this model.
    pub fn new_kv(&self, block_size: usize, num_blocks: usize) -> PagedKv {
        PagedKv::new(self.kv_shape(block_size), num_blocks)
    }

    /// A KV pool for one sequence of up to `positions` positions, and its block table
    /// (blocks `0, 1, …`): for callers that run a single sequence without an engine.
    pub fn single_sequence_kv(&self, positions: usize) -> (PagedKv, Vec<u32>) {
        let shape = self.kv_shape(crate::paged_kv::DEFAULT_BLOCK_SIZE);
        let n = shape.blocks_for(positions.min(self.config.context_length).max(1));
        (PagedKv::new(shape, n), (0..n as u32).collect())
    }

    fn check_input(&self, input: &BatchInput<'_>, kv: &PagedKv) -> Result<()> {
        let n = input.tokens.len();
        let total: usize = input.seqs.iter().map(|s| s.len).sum();
        if total != n {
            return Err(Error::InvalidInput(format!("the sequence chunks cover {total} tokens, the batch has {n}")));
        }
        if let Some(&t) = input.tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::InvalidInput(format!("token id {t} is outside the vocabulary ({})", self.config.vocab_size)));
        }
        let ctx = self.config.context_length;
        for (i, c) in input.seqs.iter().enumerate() {
            let end = c.start + c.len;
            if end > ctx {
                return Err(Error::PromptTooLong { prompt_tokens: end, context_length: ctx });
            }
            let room = c.blocks.len() * kv.shape.block_size;
            if end > room {
                return Err(Error::InvalidInput(format!("sequence {i} writes up to position {end} but its {} blocks hold {room}", c.blocks.len())));
            }
            if let Some(&b) = c.blocks.iter().find(|&&b| b as usize >= kv.num_blocks) {
                return Err(Error::InvalidInput(format!("sequence {i} uses KV block {b}; the pool has {}", kv.num_blocks)));
            }
        }
        if let Some(&r) = input.logits_rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidInput(format!("logits row {r} outside batch of {n}")));
        }
        Ok(())
    }

    /// Runs the batch through the model, appending its keys and values to `kv`, and writes
    /// `logits_rows.len() × vocab` logits into `logits`.
    pub fn forward(&self, input: BatchInput<'_>, kv: &mut PagedKv, scratch: &mut Scratch, pool: &ThreadPool, logits: &mut Vec<f32>) -> Result<()> {
        self.check_input(&input, kv)?;
        self.run_layers(&input, kv, scratch, pool);
        // Final norm and output projection for the requested rows only: (m, d) → (m, v).
        let m = input.logits_rows.len();
        if m == 0 {
            logits.clear();
            return Ok(());
        }
        let (d, vocab) = (self.config.hidden_size, self.config.vocab_size);
        let Scratch { x, xn, acts, .. } = scratch;
        for (j, &r) in input.logits_rows.iter().enumerate() {
            self.final_norm.apply(&x[r * d..(r + 1) * d], self.config.norm_eps, &mut xn[j * d..(j + 1) * d]);
        }
        logits.resize(m * vocab, 0.0);
        acts.prepare(&xn[..m * d], m, d, &formats([&self.output]));
        matmul(pool, &self.kernels, &xn[..m * d], acts, self.output.weights(), vocab, &mut logits[..m * vocab]);
        Ok(())
    }

    /// Runs the batch through the model like [`Model::forward`] and writes the final
    /// hidden states (after the last norm, before the output projection) of the rows
    /// `input.logits_rows` names into `hidden`: `logits_rows.len() × hidden_size`. What
    /// embeddings from a chat model are pooled from.
    pub fn hidden_states(&self, input: BatchInput<'_>, kv: &mut PagedKv, scratch: &mut Scratch, pool: &ThreadPool, hidden: &mut Vec<f32>) -> Result<()> {
        self.check_input(&input, kv)?;
        self.run_layers(&input, kv, scratch, pool);
        let d = self.config.hidden_size;
        hidden.resize(input.logits_rows.len() * d, 0.0);
        for (j, &r) in input.logits_rows.iter().enumerate() {
            self.final_norm.apply(&scratch.x[r * d..(r + 1) * d], self.config.norm_eps, &mut hidden[j * d..(j + 1) * d]);
        }
        Ok(())
    }

    /// The transformer blocks over a checked batch: leaves the residual stream of every
    /// row in `scratch.x` (`n × d`, before the final norm).
    fn run_layers(&self, input: &BatchInput<'_>, kv: &mut PagedKv, scratch: &mut Scratch, pool: &ThreadPool) {
        let cfg = &self.config;
        let n = input.tokens.len();
        let (d, hd, hq, hkv, f) = (cfg.hidden_size, cfg.head_dim, cfg.num_heads, cfg.num_kv_heads, cfg.ffn_dim);
        let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
        let eps = cfg.norm_eps;
        let k = &self.kernels;
        if n == 0 {
            return;
        }
        // (chunk, position) of every batch row.
        let Scratch { x, xn, q, k: kb, v: vb, att, tmp, gate, up, cos, sin, cos_local, sin_local, scores, rows, acts } = scratch;
        rows.clear();
        for (si, c) in input.seqs.iter().enumerate() {
            rows.extend((c.start..c.start + c.len).map(|p| (si, p)));
        }
        let rows = &*rows;
        let bs = kv.shape.block_size;

        // Embeddings: x (n, d).
        let x = grow(x, n * d);
        for (i, &t) in input.tokens.iter().enumerate() {
            self.embed.row_f32(t as usize, &mut x[i * d..(i + 1) * d]);
        }
        if let Some(scale) = cfg.embedding_scale() {
            x.iter_mut().for_each(|v| *v *= scale);
        }
        if let Some(pe) = &self.pos_embed {
            let mut row = vec![0.0; d];
            for (i, &(_, p)) in rows.iter().enumerate() {
                pe.row_f32(p, &mut row);
                ops::add_assign(&mut x[i * d..(i + 1) * d], &row);
            }
        }
        // Rotary angles per token: (n, rope_dim/2).
        let half = self.inv_freq.len();
        let cos = grow(cos, n * half);
        let sin = grow(sin, n * half);
        for (i, &(_, p)) in rows.iter().enumerate() {
            ops::rope_angles(p, &self.inv_freq, &mut cos[i * half..(i + 1) * half], &mut sin[i * half..(i + 1) * half]);
        }
        let (cos_local, sin_local) = match &self.inv_freq_local {
            Some(inv) => {
                let (c, s) = (grow(cos_local, n * half), grow(sin_local, n * half));
                for (i, &(_, p)) in rows.iter().enumerate() {
                    ops::rope_angles(p, inv, &mut c[i * half..(i + 1) * half], &mut s[i * half..(i + 1) * half]);
                }
                (&*c, &*s)
            }
            None => (&*cos, &*sin),
        };
        // Per-thread attention scratch: scores (f32 cache) or what `attend_f16` needs.
        let longest = rows.iter().map(|r| r.1).max().unwrap_or(0) + 1;
        let max_len = attention::attend_f16_heads_scratch(hq / hkv, hd, longest).max(longest);
        let nt = pool.threads();
        let scores = grow(scores, nt * max_len);
        // Attention arithmetic: f32 with a plain softmax for every batch size. llama.cpp
        // accumulates in f16 below 64 query tokens; reproducing that (`true` here) costs a
        // conversion pair per 8 values per position and head, 7 % of the throughput at 8
        // decoding sequences, and makes greedy decoding follow llama.cpp's through one or
        // two more near-ties of the ten reference prompts (5/10 identical against 4/10;
        // every difference is at a gap under 0.25 logits either way).
        let f16_accumulate = false;
        let xn = grow(xn, n * d);
        let q = grow(q, n * qd);
        let kb = grow(kb, n * kvd);
        let vb = grow(vb, n * kvd);
        let att = grow(att, n * qd);
        let tmp = grow(tmp, n * d);
        let gate = grow(gate, n * f);
        let up = grow(up, n * f);
        let scale = 1.0 / (hd as f32).sqrt();
        let group = hq / hkv;
        let has_lora = input.seqs.iter().any(|c| c.lora.is_some());

        // The rotary layout and the gated MLP's activation of the architecture.
        type Rope = fn(&mut [f32], usize, usize, &[f32], &[f32]);
        let rope: Option<Rope> = match cfg.architecture {
            Architecture::Llama => Some(ops::rope_interleaved),
            Architecture::Gemma3 => Some(ops::rope_halves),
            Architecture::Gpt2 => None,
        };
        let gated: fn(&mut [f32], &[f32]) = if cfg.architecture == Architecture::Gemma3 { ops::geglu } else { ops::swiglu };

        // The previous sub-layer's output waiting to be added to `x` (added together with
        // the next norm, in the same pass over the rows).
        let mut pending = false;
        for (li, layer) in self.layers.iter().enumerate() {
            // --- attention ---
            let fq = formats([&layer.q, &layer.k, &layer.v]);
            norm_rows(pool, n, d, pending.then_some(&*tmp), x, &layer.attn_norm, eps, xn, acts, &fq); // (n, d)
            matmul_many(
                pool,
                k,
                xn,
                acts,
                &mut [
                    MatmulJob { weights: layer.q.weights(), rows: qd, out: q },   // (n, hq*hd)
                    MatmulJob { weights: layer.k.weights(), rows: kvd, out: kb }, // (n, hkv*hd)
                    MatmulJob { weights: layer.v.weights(), rows: kvd, out: vb }, // (n, hkv*hd)
                ],
            );
            if has_lora {
                add_lora(pool, input.seqs, li, Proj::Q, xn, q);
                add_lora(pool, input.seqs, li, Proj::K, xn, kb);
                add_lora(pool, input.seqs, li, Proj::V, xn, vb);
            }
            add_bias(q, &layer.q.bias, qd);
            add_bias(kb, &layer.k.bias, kvd);
            add_bias(vb, &layer.v.bias, kvd);
            if let Some(qn) = &layer.q_norm {
                ops::rms_norm_in_place(q, &qn.weight, eps);
            }
            if let Some(kn) = &layer.k_norm {
                ops::rms_norm_in_place(kb, &kn.weight, eps);
            }
            let window = cfg.layer_window(li);
            let (cos, sin) = if window.is_some() { (cos_local, sin_local) } else { (&*cos, &*sin) };
            if let Some(rope) = rope {
                for i in 0..n {
                    let (c, s) = (&cos[i * half..(i + 1) * half], &sin[i * half..(i + 1) * half]);
                    rope(&mut q[i * qd..(i + 1) * qd], hq, hd, c, s);
                    rope(&mut kb[i * kvd..(i + 1) * kvd], hkv, hd, c, s);
                }
            }
            // Write this batch's keys and values into each sequence's blocks.
            for (i, &(si, p)) in rows.iter().enumerate() {
                let block = input.seqs[si].blocks[p / bs] as usize;
                kv.write(li, block, p % bs, &kb[i * kvd..(i + 1) * kvd], &vb[i * kvd..(i + 1) * kvd]);
            }
            // Attention: one unit per (token, key/value head), split over threads; a unit
            // computes the query heads that share the key/value head together, so the f16
            // cache rows are read and converted once for all of them.
            {
                let kvr = &*kv;
                let att_ptr = SyncPtr(att.as_mut_ptr());
                let sc_ptr = SyncPtr(scores.as_mut_ptr());
                let q = &*q;
                // Units are taken one at a time: with causal prefill the later tokens' units
                // are longer, and a fixed split left one thread waiting.
                pool.run_chunks(n * hkv, 1, &|t, units| {
                    // SAFETY: each thread uses its own `max_len` stretch of the scores buffer.
                    let sc = unsafe { std::slice::from_raw_parts_mut(sc_ptr.get().add(t * max_len), max_len) };
                    for u in units {
                        let (i, g) = (u / hkv, u % hkv);
                        let (si, p) = rows[i];
                        let start = match window {
                            Some(w) if p + 1 > w => p + 1 - w,
                            _ => 0,
                        };
                        let len = p + 1 - start;
                        let h0 = g * group;
                        // SAFETY: unit (i, g) owns att[i*qd + h0*hd .. + group*hd].
                        let out = unsafe { std::slice::from_raw_parts_mut(att_ptr.get().add(i * qd + h0 * hd), group * hd) };
                        let qg = &q[i * qd + h0 * hd..i * qd + (h0 + group) * hd];
                        match kvr.rows(li, g, input.seqs[si].blocks, start, len) {
                            HeadRows::F32(r) => {
                                for (qh, oh) in qg.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
                                    attention::attend(k, qh, &r, scale, sc, oh)
                                }
                            }
                            HeadRows::F16(r) => attention::attend_f16_heads(qg, hd, &r, scale, f16_accumulate, sc, out),
                        }
                    }
                });
            }
            let w = acts.reserve(n, qd, &formats([&layer.o]));
            let att_r = &*att;
            // SAFETY: each call quantizes its own rows; `acts` is not used until this returns.
            for_rows(pool, n, &|r| unsafe { w.quantize_rows(&att_r[r.start * qd..r.end * qd], r) });
            matmul(pool, k, att, acts, layer.o.weights(), d, tmp); // (n, d)
            if has_lora {
                add_lora(pool, input.seqs, li, Proj::O, att, tmp);
            }
            add_bias(tmp, &layer.o.bias, d);
            post_norm(pool, n, d, tmp, layer.post_attn_norm.as_ref(), eps);

            // --- MLP ---
            let fg = match &layer.gate {
                Some(g) => formats([g, &layer.up]),
                None => formats([&layer.up, &layer.up]),
            };
            norm_rows(pool, n, d, Some(&*tmp), x, &layer.ffn_norm, eps, xn, acts, &fg);
            match &layer.gate {
                Some(g) => {
                    matmul_many(
                        pool,
                        k,
                        xn,
                        acts,
                        &mut [
                            MatmulJob { weights: g.weights(), rows: f, out: gate },      // (n, f)
                            MatmulJob { weights: layer.up.weights(), rows: f, out: up }, // (n, f)
                        ],
                    );
                    if has_lora {
                        add_lora(pool, input.seqs, li, Proj::Gate, xn, gate);
                        add_lora(pool, input.seqs, li, Proj::Up, xn, up);
                    }
                }
                None => {
                    matmul(pool, k, xn, acts, layer.up.weights(), f, gate);
                    add_bias(gate, &layer.up.bias, f);
                }
            }
            // The activation function and the quantization for `down`, row by row.
            let w = acts.reserve(n, f, &formats([&layer.down]));
            let act = if layer.gate.is_some() { gated } else { gelu_mlp };
            let (gp, up_r) = (SyncPtr(gate.as_mut_ptr()), &*up);
            for_rows(pool, n, &|r| {
                // SAFETY: each call owns rows `r` of `gate`, and quantizes only those.
                let g = unsafe { std::slice::from_raw_parts_mut(gp.get().add(r.start * f), r.len() * f) };
                act(g, &up_r[r.start * f..r.end * f]);
                unsafe { w.quantize_rows(g, r) };
            });
            matmul(pool, k, gate, acts, layer.down.weights(), d, tmp); // (n, d)
            if has_lora {
                add_lora(pool, input.seqs, li, Proj::Down, gate, tmp);
            }
            add_bias(tmp, &layer.down.bias, d);
            post_norm(pool, n, d, tmp, layer.post_ffn_norm.as_ref(), eps);
            pending = true;
        }
        if pending {
            ops::add_assign(x, tmp);
        }
    }
}

/// Runs `f` on ranges of the batch's `n` token rows split over the pool's threads, or on
/// all rows on this thread when there is a single row (a dispatch costs more than one
/// row's element-wise work). With several sequences decoding, these per-row steps (norms,
/// activation functions, quantization) were a serial stretch of every layer during which
/// the other threads waited.
pub(crate) fn for_rows(pool: &ThreadPool, n: usize, f: &(dyn Fn(std::ops::Range<usize>) + Sync)) {
    if n < 2 || pool.threads() == 1 {
        f(0..n);
        return;
    }
    pool.run(&|t, nt| {
        let r = ThreadPool::split(n, t, nt, 1);
        if !r.is_empty() {
            f(r);
        }
    });
}

/// `x += add` (when given), `xn = norm(x)` and `xn` quantized into `acts` for `formats`,
/// row by row over the pool. `x`, `xn`: `n × d`.
#[allow(clippy::too_many_arguments)]
fn norm_rows(
    pool: &ThreadPool,
    n: usize,
    d: usize,
    add: Option<&[f32]>,
    x: &mut [f32],
    norm: &Norm,
    eps: f32,
    xn: &mut [f32],
    acts: &mut Activations,
    formats: &[ActFormat],
) {
    let w = acts.reserve(n, d, formats);
    let (xp, xnp) = (SyncPtr(x.as_mut_ptr()), SyncPtr(xn.as_mut_ptr()));
    assert!(x.len() >= n * d && xn.len() >= n * d && add.is_none_or(|a| a.len() >= n * d));
    for_rows(pool, n, &|r| {
        // SAFETY: each call owns rows `r` of `x` and `xn` (lengths checked above).
        let xs = unsafe { std::slice::from_raw_parts_mut(xp.get().add(r.start * d), r.len() * d) };
        let xns = unsafe { std::slice::from_raw_parts_mut(xnp.get().add(r.start * d), r.len() * d) };
        if let Some(a) = add {
            ops::add_assign(xs, &a[r.start * d..r.end * d]);
        }
        norm.apply(xs, eps, xns);
        // SAFETY: rows `r` only; `acts` is not used until `for_rows` returns.
        unsafe { w.quantize_rows(xns, r) };
    });
}

/// Adds the LoRA update of `proj` in layer `layer` of every sequence that has one: rows
/// of `x` (the projection's input, one row per batch token) into the same rows of `out`
/// (its output), split over the pool.
fn add_lora(pool: &ThreadPool, seqs: &[SeqChunk<'_>], layer: usize, proj: Proj, x: &[f32], out: &mut [f32]) {
    let mut row0 = 0;
    for c in seqs {
        let start = row0;
        row0 += c.len;
        let Some(l) = c.lora.and_then(|a| a.get(layer, proj)) else { continue };
        let (cols, rows) = (l.cols, l.rows);
        let x = &x[start * cols..(start + c.len) * cols];
        let o = SyncPtr(out[start * rows..(start + c.len) * rows].as_mut_ptr());
        for_rows(pool, c.len, &|r| {
            // SAFETY: each call owns rows `r` of this sequence's stretch of `out`.
            let os = unsafe { std::slice::from_raw_parts_mut(o.get().add(r.start * rows), r.len() * rows) };
            l.apply(&x[r.start * cols..r.end * cols], os);
        });
    }
}

/// GPT-2's MLP activation, in the shape of the gated ones (it has no `up` to multiply).
fn gelu_mlp(x: &mut [f32], _up: &[f32]) {
    ops::gelu(x)
}

/// Gemma 3's norm of a sub-layer's output `y` (`n × d`) before it joins the residual,
/// in place, row by row over the pool; nothing without a norm.
fn post_norm(pool: &ThreadPool, n: usize, d: usize, y: &mut [f32], norm: Option<&Norm>, eps: f32) {
    let Some(norm) = norm else { return };
    assert!(y.len() >= n * d);
    let yp = SyncPtr(y.as_mut_ptr());
    for_rows(pool, n, &|r| {
        // SAFETY: each call owns rows `r` of `y` (length checked above).
        let ys = unsafe { std::slice::from_raw_parts_mut(yp.get().add(r.start * d), r.len() * d) };
        ops::rms_norm_in_place(ys, &norm.weight, eps);
    });
}

pub(crate) fn add_bias(y: &mut [f32], bias: &Option<Vec<f32>>, width: usize) {
    if let Some(b) = bias {
        for row in y.chunks_exact_mut(width) {
            ops::add_assign(row, b);
        }
    }
}
