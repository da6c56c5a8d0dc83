//! The BERT-family encoder (all-MiniLM-L6-v2 and kin) on the inference kernels: the same
//! [`Linear`], matrix products and worker pool as the decoder, returning one hidden state
//! per token instead of logits.
//!
//! BERT differs from the decoders in four places: attention is bidirectional (every token
//! sees its whole sequence), positions are a learned table added to the token embedding
//! together with a token-type row, the LayerNorm comes *after* each residual sum
//! (`x = LN(x + f(x))`), and the MLP uses the exact (erf) GELU.
//!
//! A forward call takes any number of sequences packed back to back, with no padding:
//! every matrix product runs over all their tokens at once, and attention is
//! block-diagonal — a token attends over the rows of its own sequence only — so a batch
//! of one long and many short texts costs the sum of their lengths, not the longest
//! length times the count.
//!
//! Two arithmetics, as for decoders ([`Precision`]): `F32` keeps the checkpoint's f32
//! weights (the reference path, matching sentence-transformers to cosine 0.9999);
//! `Native` quantizes the matrices to Q8_0 at load and multiplies them against 8-bit
//! activations, smoothed per channel ([`smooth`]), except the value projection, which
//! stays f32 (the fast path: cosine 0.9994 or more on the reference texts; see the tests).

use crate::linear::Linear;
use crate::load::HfTensors;
use crate::model::{add_bias, for_rows, grow, Norm, Precision, SyncPtr};
use lamina_core::{EncoderConfig, Error, Result};
use lamina_kernels::attention::{attend, KvRows};
use lamina_kernels::matmul::{matmul, matmul_many, ActFormat, Activations, Kernels, MatmulJob};
use lamina_kernels::{ops, ThreadPool};
use std::path::{Path, PathBuf};

/// Takes a named tensor of the given shape out of the checkpoint.
type TensorFn<'a> = dyn FnMut(&str, &[usize]) -> Result<Vec<f32>> + 'a;

/// One encoder block.
#[derive(Debug, Clone)]
pub struct EncoderLayer {
    pub q: Linear,
    pub k: Linear,
    pub v: Linear,
    pub o: Linear,
    /// LayerNorm after the attention residual.
    pub attn_norm: Norm,
    pub up: Linear,
    pub down: Linear,
    /// LayerNorm after the MLP residual.
    pub out_norm: Norm,
    /// Fast path only: per-channel divisors of the inputs of Q/K/V and of `up` (see
    /// [`smooth`]); their columns of the weights were multiplied by the same factors.
    pub qkv_smooth: Option<Vec<f32>>,
    pub up_smooth: Option<Vec<f32>>,
}

/// A loaded encoder, ready for inference.
pub struct Encoder {
    pub config: EncoderConfig,
    pub precision: Precision,
    /// Token embeddings `(v, d)`.
    pub word: Vec<f32>,
    /// Position embeddings `(max_positions, d)`.
    pub pos: Vec<f32>,
    /// Token-type row 0 (single-segment inputs are all type 0).
    pub token_type: Vec<f32>,
    pub embed_norm: Norm,
    pub layers: Vec<EncoderLayer>,
    pub kernels: Kernels,
    /// The folder it came from.
    pub source: PathBuf,
}

/// Reusable buffers of the forward pass (grow on demand, never shrink).
#[derive(Default)]
pub struct EncoderScratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    att: Vec<f32>,
    tmp: Vec<f32>,
    up: Vec<f32>,
    smoothed: Vec<f32>,
    scores: Vec<f32>,
    /// Per token: (first row of its sequence, its sequence's length).
    rows: Vec<(usize, usize)>,
    acts: Activations,
}

impl Encoder {
    /// Loads a Hugging Face BERT folder: `config.json`, `*.safetensors`, and
    /// `sentence_bert_config.json` when present (it sets the longest input).
    pub fn load(dir: &Path, precision: Precision) -> Result<Encoder> {
        if !dir.is_dir() {
            return Err(Error::ModelNotFound(dir.to_path_buf()));
        }
        let text = lamina_core::fs::read_regular_to_string(&dir.join("config.json"))?;
        let sentence = dir.join("sentence_bert_config.json");
        let sentence = if sentence.exists() { Some(lamina_core::fs::read_regular_to_string(&sentence)?) } else { None };
        let cfg = EncoderConfig::from_hf_json(&text, sentence.as_deref())?;
        let mut t = HfTensors::read(dir)?;
        // Some exports prefix every name with "bert.".
        let pre = if t.contains("bert.embeddings.word_embeddings.weight") { "bert." } else { "" };
        let (d, f, v) = (cfg.hidden_size, cfg.ffn_dim, cfg.vocab_size);
        let mut g = |s: &str, shape: &[usize]| t.take(&format!("{pre}{s}"), shape);
        let norm = |g: &mut TensorFn<'_>, p: &str| -> Result<Norm> {
            Ok(Norm { weight: g(&format!("{p}.weight"), &[d])?, bias: Some(g(&format!("{p}.bias"), &[d])?) })
        };
        let weights = |g: &mut TensorFn<'_>, p: &str, rows: usize, cols: usize| -> Result<(Vec<f32>, Vec<f32>)> {
            Ok((g(&format!("{p}.weight"), &[rows, cols])?, g(&format!("{p}.bias"), &[rows])?))
        };
        let linear = |(w, b): (Vec<f32>, Vec<f32>), rows: usize| -> Result<Linear> {
            let cols = w.len() / rows;
            match precision {
                Precision::F32 => Linear::from_f32(rows, cols, w, Some(b)),
                Precision::Native => Linear::quantized_q8_0(rows, cols, &w, Some(b)),
            }
        };
        let word = g("embeddings.word_embeddings.weight", &[v, d])?;
        let pos = g("embeddings.position_embeddings.weight", &[cfg.max_positions, d])?;
        let mut token_type = g("embeddings.token_type_embeddings.weight", &[cfg.type_vocab_size, d])?;
        token_type.truncate(d);
        let embed_norm = norm(&mut g, "embeddings.LayerNorm")?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        let native = precision == Precision::Native;
        for i in 0..cfg.num_layers {
            let p = |s: &str| format!("encoder.layer.{i}.{s}");
            let (mut q, mut k, mut v) = (
                weights(&mut g, &p("attention.self.query"), d, d)?,
                weights(&mut g, &p("attention.self.key"), d, d)?,
                weights(&mut g, &p("attention.self.value"), d, d)?,
            );
            let o = weights(&mut g, &p("attention.output.dense"), d, d)?;
            let attn_norm = norm(&mut g, &p("attention.output.LayerNorm"))?;
            let mut up = weights(&mut g, &p("intermediate.dense"), f, d)?;
            let down = weights(&mut g, &p("output.dense"), d, f)?;
            let out_norm = norm(&mut g, &p("output.LayerNorm"))?;
            // Q/K/V read the previous block's output (the embeddings' for the first).
            let before = layers.last().map_or(&embed_norm, |l: &EncoderLayer| &l.out_norm);
            let qkv_smooth = native.then(|| smooth(before, &mut [&mut q.0, &mut k.0, &mut v.0], d));
            let up_smooth = native.then(|| smooth(&attn_norm, &mut [&mut up.0], d));
            layers.push(EncoderLayer {
                q: linear(q, d)?,
                k: linear(k, d)?,
                // The value projection stays f32 on both paths: its errors reach the
                // output unsoftened by the softmax, and quantizing it alone cost the
                // shortest reference texts most of the fast path's cosine (0.9988 → 0.9994
                // worst with it in f32), for a twelfth of the arithmetic.
                v: Linear::from_f32(d, d, v.0, Some(v.1))?,
                o: linear(o, d)?,
                attn_norm,
                up: linear(up, f)?,
                down: linear(down, d)?,
                out_norm,
                qkv_smooth,
                up_smooth,
            });
        }
        Ok(Encoder { config: cfg, precision, word, pos, token_type, embed_norm, layers, kernels: Kernels::best(), source: dir.to_path_buf() })
    }

    /// Width of the hidden states.
    pub fn hidden_size(&self) -> usize {
        self.config.hidden_size
    }

    /// Bytes of the weights as loaded.
    pub fn weight_bytes(&self) -> usize {
        let mats: usize = self.layers.iter().map(|l| [&l.q, &l.k, &l.v, &l.o, &l.up, &l.down].iter().map(|m| m.weight_bytes()).sum::<usize>()).sum();
        mats + 4 * (self.word.len() + self.pos.len())
    }

    fn check_input(&self, tokens: &[u32], lens: &[usize]) -> Result<()> {
        let total: usize = lens.iter().sum();
        if total != tokens.len() {
            return Err(Error::InvalidInput(format!("the sequence lengths cover {total} tokens, the batch has {}", tokens.len())));
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= self.config.vocab_size) {
            return Err(Error::InvalidInput(format!("token id {t} is outside the vocabulary ({})", self.config.vocab_size)));
        }
        if let Some(&l) = lens.iter().find(|&&l| l > self.config.max_positions) {
            return Err(Error::PromptTooLong { prompt_tokens: l, context_length: self.config.max_positions });
        }
        if lens.contains(&0) {
            return Err(Error::InvalidInput("an input sequence is empty".into()));
        }
        Ok(())
    }

    /// Runs sequences of `lens` tokens each, packed back to back in `tokens`, through the
    /// encoder and writes `tokens.len() × hidden_size` final hidden states into `hidden`.
    /// Each sequence is computed as if it were alone (attention never crosses sequences).
    pub fn forward(&self, tokens: &[u32], lens: &[usize], scratch: &mut EncoderScratch, pool: &ThreadPool, hidden: &mut Vec<f32>) -> Result<()> {
        self.check_input(tokens, lens)?;
        let cfg = &self.config;
        let (n, d, f, hq) = (tokens.len(), cfg.hidden_size, cfg.ffn_dim, cfg.num_heads);
        let hd = cfg.head_dim();
        let eps = cfg.norm_eps;
        let kern = &self.kernels;
        let EncoderScratch { q, k, v, att, tmp, up, smoothed, scores, rows, acts } = scratch;
        rows.clear();
        let mut start = 0;
        for &l in lens {
            rows.extend(std::iter::repeat_n((start, l), l));
            start += l;
        }
        let rows = &*rows;

        // Embeddings: word + position + token type, then LayerNorm. x (n, d).
        hidden.resize(n * d, 0.0);
        let x = &mut hidden[..];
        let tmp = grow(tmp, n * d);
        for (i, &t) in tokens.iter().enumerate() {
            let p = i - rows[i].0;
            let e = &mut tmp[i * d..(i + 1) * d];
            for (((o, &w), &ps), &ty) in e.iter_mut().zip(&self.word[t as usize * d..]).zip(&self.pos[p * d..]).zip(&self.token_type) {
                *o = w + ps + ty;
            }
            self.embed_norm.apply(e, eps, &mut x[i * d..(i + 1) * d]);
        }
        let q = grow(q, n * d);
        let kb = grow(k, n * d);
        let vb = grow(v, n * d);
        let att = grow(att, n * d);
        let up = grow(up, n * f);
        let longest = lens.iter().copied().max().unwrap_or(0);
        let scores = grow(scores, pool.threads() * longest);
        let scale = 1.0 / (hd as f32).sqrt();

        for layer in &self.layers {
            // --- self-attention, block-diagonal over the packed sequences ---
            let xs = smoothed_input(pool, x, layer.qkv_smooth.as_deref(), smoothed);
            quantize(pool, acts, xs, n, d, layer.q.weights().act_format());
            matmul_many(
                pool,
                kern,
                xs,
                acts,
                &mut [
                    MatmulJob { weights: layer.q.weights(), rows: d, out: q },
                    MatmulJob { weights: layer.k.weights(), rows: d, out: kb },
                    MatmulJob { weights: layer.v.weights(), rows: d, out: vb },
                ],
            );
            add_bias(q, &layer.q.bias, d);
            add_bias(kb, &layer.k.bias, d);
            add_bias(vb, &layer.v.bias, d);
            {
                let (att_ptr, sc_ptr) = (SyncPtr(att.as_mut_ptr()), SyncPtr(scores.as_mut_ptr()));
                let (q, kb, vb) = (&*q, &*kb, &*vb);
                let units = n * hq;
                pool.run_chunks(units, units.div_ceil(pool.threads() * 8), &|t, us| {
                    // SAFETY: each thread uses its own `longest` stretch of the scores buffer.
                    let sc = unsafe { std::slice::from_raw_parts_mut(sc_ptr.get().add(t * longest), longest) };
                    for u in us {
                        let (i, h) = (u / hq, u % hq);
                        let (s0, len) = rows[i];
                        let off = s0 * d + h * hd;
                        let kv = KvRows::contiguous(&kb[off..], &vb[off..], d, len);
                        // SAFETY: unit (i, h) owns att[i*d + h*hd .. + hd].
                        let out = unsafe { std::slice::from_raw_parts_mut(att_ptr.get().add(i * d + h * hd), hd) };
                        attend(kern, &q[i * d + h * hd..i * d + (h + 1) * hd], &kv, scale, sc, out);
                    }
                });
            }
            quantize(pool, acts, att, n, d, layer.o.weights().act_format());
            matmul(pool, kern, att, acts, layer.o.weights(), d, tmp);
            add_bias(tmp, &layer.o.bias, d);
            add_norm(pool, n, d, x, tmp, &layer.attn_norm, eps);

            // --- MLP ---
            let xs = smoothed_input(pool, x, layer.up_smooth.as_deref(), smoothed);
            quantize(pool, acts, xs, n, d, layer.up.weights().act_format());
            matmul(pool, kern, xs, acts, layer.up.weights(), f, up);
            let (up_ptr, bias) = (SyncPtr(up.as_mut_ptr()), &layer.up.bias);
            for_rows(pool, n, &|r| {
                // SAFETY: each call owns rows `r` of `up`.
                let u = unsafe { std::slice::from_raw_parts_mut(up_ptr.get().add(r.start * f), r.len() * f) };
                add_bias(u, bias, f);
                ops::gelu_erf(u);
            });
            quantize(pool, acts, up, n, f, layer.down.weights().act_format());
            matmul(pool, kern, up, acts, layer.down.weights(), d, tmp);
            add_bias(tmp, &layer.down.bias, d);
            add_norm(pool, n, d, x, tmp, &layer.out_norm, eps);
        }
        Ok(())
    }
}

/// Per-channel smoothing of a LayerNorm's output before 8-bit quantization (SmoothQuant,
/// Xiao et al. 2023, with α = ½ and no calibration data). BERT's LayerNorm outputs have a
/// few channels far larger than the rest, and one such value in a block of 32 leaves the
/// other 31 with a coarse step. Channel `j` of the input is divided by
/// `s_j = sqrt(a_j / w_j)` — `a_j = |γ_j| + |β_j|` bounds the norm's output there, `w_j` is
/// the largest weight of column `j` over `consumers` — and column `j` of every consumer is
/// multiplied by `s_j`, which leaves the product unchanged and evens out both sides'
/// ranges. Returns the divisors' inverses `1 / s_j`. On the reference texts this lifts
/// the fast path's worst cosine from 0.9983 to 0.9988 (and, with the value projection in
/// f32, from 0.9992 to 0.9994).
fn smooth(norm: &Norm, consumers: &mut [&mut Vec<f32>], d: usize) -> Vec<f32> {
    let bias = norm.bias.as_deref().unwrap_or(&[]);
    (0..d)
        .map(|j| {
            let a = norm.weight[j].abs() + bias.get(j).map_or(0.0, |b| b.abs());
            let w = consumers.iter().flat_map(|m| m.chunks_exact(d).map(move |row| row[j].abs())).fold(0.0f32, f32::max);
            let s = if a > 0.0 && w > 0.0 { (a / w).sqrt().clamp(1e-3, 1e3) } else { 1.0 };
            for m in consumers.iter_mut() {
                for row in m.chunks_exact_mut(d) {
                    row[j] *= s;
                }
            }
            1.0 / s
        })
        .collect()
}

/// `x` with each channel multiplied by `inv` (into `buf`), or `x` itself without smoothing.
fn smoothed_input<'a>(pool: &ThreadPool, x: &'a [f32], inv: Option<&[f32]>, buf: &'a mut Vec<f32>) -> &'a [f32] {
    let Some(inv) = inv else { return x };
    let d = inv.len();
    let n = x.len() / d;
    let out = grow(buf, x.len());
    let op = SyncPtr(out.as_mut_ptr());
    for_rows(pool, n, &|r| {
        // SAFETY: each call owns rows `r` of `out`.
        let o = unsafe { std::slice::from_raw_parts_mut(op.get().add(r.start * d), r.len() * d) };
        for (orow, xrow) in o.chunks_exact_mut(d).zip(x[r.start * d..r.end * d].chunks_exact(d)) {
            for ((o, &x), &s) in orow.iter_mut().zip(xrow).zip(inv) {
                *o = x * s;
            }
        }
    });
    out
}

/// Records `x` (`n × cols`) in `acts`, quantized row range by row range over the pool when
/// the weights take 8-bit activations.
fn quantize(pool: &ThreadPool, acts: &mut Activations, x: &[f32], n: usize, cols: usize, format: ActFormat) {
    let w = acts.reserve(n, cols, &[format]);
    if format == ActFormat::F32 {
        return;
    }
    // SAFETY: each call quantizes its own rows; `acts` is not used until `for_rows` returns.
    for_rows(pool, n, &|r| unsafe { w.quantize_rows(&x[r.start * cols..r.end * cols], r) });
}

/// Post-LayerNorm residual: `x = LN(x + y)` row by row over the pool (`y` is overwritten).
fn add_norm(pool: &ThreadPool, n: usize, d: usize, x: &mut [f32], y: &mut [f32], norm: &Norm, eps: f32) {
    assert!(x.len() >= n * d && y.len() >= n * d);
    let (xp, yp) = (SyncPtr(x.as_mut_ptr()), SyncPtr(y.as_mut_ptr()));
    for_rows(pool, n, &|r| {
        // SAFETY: each call owns rows `r` of `x` and `y` (lengths checked above).
        let xs = unsafe { std::slice::from_raw_parts_mut(xp.get().add(r.start * d), r.len() * d) };
        let ys = unsafe { std::slice::from_raw_parts_mut(yp.get().add(r.start * d), r.len() * d) };
        ops::add_assign(ys, xs);
        norm.apply(ys, eps, xs);
    });
}
