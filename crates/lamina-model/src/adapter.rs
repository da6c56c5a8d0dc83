//! LoRA adapters on a loaded model.
//!
//! An adapter file ([`crate::lora::LoraAdapter`], Hugging Face module names and row order)
//! is resolved once against the model it is applied to: every module becomes a
//! [`LinearLora`] of one projection of one layer, in the model's own row order (Llama's
//! query and key rows are kept in the interleaved rotary order, so `B`'s rows are permuted
//! here exactly as the base weights were at load). The result, a [`ModelLora`], is applied
//! unmerged by the forward pass to the rows of the sequences that ask for it
//! ([`crate::SeqChunk::lora`]): one base, any number of adapters, sequences with different
//! adapters (or none) in one batch. [`Model::merged`] folds one into the weights instead.

use crate::linear::Linear;
use crate::load::permute_rotary_rows;
use crate::lora::LoraAdapter;
use crate::model::Model;
use lamina_core::{Architecture, Error, ModelConfig, Result};
use sha2::{Digest, Sha256};

/// The linear layers of a decoder block an adapter can update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proj {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Proj {
    pub const ALL: [Proj; 7] = [Proj::Q, Proj::K, Proj::V, Proj::O, Proj::Gate, Proj::Up, Proj::Down];

    /// The module's name inside a Hugging Face decoder layer (`model.layers.{i}.` + this).
    pub fn hf_suffix(self) -> &'static str {
        match self {
            Proj::Q => "self_attn.q_proj",
            Proj::K => "self_attn.k_proj",
            Proj::V => "self_attn.v_proj",
            Proj::O => "self_attn.o_proj",
            Proj::Gate => "mlp.gate_proj",
            Proj::Up => "mlp.up_proj",
            Proj::Down => "mlp.down_proj",
        }
    }

    /// The tensor's name inside a GGUF block (`blk.{i}.` + this + `.weight`).
    pub fn gguf_suffix(self) -> &'static str {
        match self {
            Proj::Q => "attn_q",
            Proj::K => "attn_k",
            Proj::V => "attn_v",
            Proj::O => "attn_output",
            Proj::Gate => "ffn_gate",
            Proj::Up => "ffn_up",
            Proj::Down => "ffn_down",
        }
    }

    /// The Hugging Face module name of this projection in layer `layer`.
    pub fn hf_module(self, layer: usize) -> String {
        format!("model.layers.{layer}.{}", self.hf_suffix())
    }

    /// Parses a GGUF tensor name (`blk.3.attn_q.weight`) into its layer and projection.
    pub fn parse_gguf(name: &str) -> Option<(usize, Proj)> {
        let rest = name.strip_prefix("blk.")?.strip_suffix(".weight")?;
        let (layer, suffix) = rest.split_once('.')?;
        let p = Proj::ALL.into_iter().find(|p| p.gguf_suffix() == suffix)?;
        Some((layer.parse().ok()?, p))
    }

    fn index(self) -> usize {
        Proj::ALL.iter().position(|&p| p == self).expect("listed")
    }
}

/// Every linear layer of a model of `cfg` an adapter can update: (Hugging Face module
/// name, in, out).
pub fn lora_modules(cfg: &ModelConfig) -> Result<Vec<(String, usize, usize)>> {
    if cfg.architecture == Architecture::Gpt2 {
        return Err(Error::UnsupportedArchitecture("LoRA adapters on GPT-2 (Conv1D modules); Llama and Gemma 3 models take them".into()));
    }
    let (d, f, qd, kvd) = (cfg.hidden_size, cfg.ffn_dim, cfg.q_dim(), cfg.kv_dim());
    let mut out = Vec::new();
    for i in 0..cfg.num_layers {
        for p in Proj::ALL {
            let (inp, outp) = match p {
                Proj::Q => (d, qd),
                Proj::K | Proj::V => (d, kvd),
                Proj::O => (qd, d),
                Proj::Gate | Proj::Up => (d, f),
                Proj::Down => (f, d),
            };
            out.push((p.hf_module(i), inp, outp));
        }
    }
    Ok(out)
}

/// One layer's low-rank update `y += scale · (x·Aᵀ)·Bᵀ` in the model's row order.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearLora {
    pub r: usize,
    /// Input width (the base layer's columns).
    pub cols: usize,
    /// Output width (the base layer's rows).
    pub rows: usize,
    /// `A`, row-major `r × cols`.
    pub a: Vec<f32>,
    /// `Bᵀ`, row-major `r × rows` (so both products run along contiguous rows).
    pub bt: Vec<f32>,
    pub scale: f32,
}

impl LinearLora {
    /// From `A` (r × cols) and `B` (rows × r), both row-major.
    pub fn new(r: usize, cols: usize, rows: usize, a: Vec<f32>, b: &[f32], scale: f32) -> Result<LinearLora> {
        if r == 0 || a.len() != r * cols || b.len() != rows * r {
            return Err(Error::InvalidInput(format!("a rank-{r} LoRA update of {} + {} values does not fit a {rows}×{cols} layer", a.len(), b.len())));
        }
        let mut bt = vec![0f32; r * rows];
        for (o, brow) in b.chunks_exact(r).enumerate() {
            for (k, &v) in brow.iter().enumerate() {
                bt[k * rows + o] = v;
            }
        }
        Ok(LinearLora { r, cols, rows, a, bt, scale })
    }

    /// `out += scale · x·Aᵀ·Bᵀ` for the rows of `x` (`n × cols`) and `out` (`n × rows`).
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        let mut u = [0f32; 64];
        let mut big = Vec::new();
        let u: &mut [f32] = if self.r <= u.len() {
            &mut u[..self.r]
        } else {
            big.resize(self.r, 0.0);
            &mut big
        };
        for (xr, or) in x.chunks_exact(self.cols).zip(out.chunks_exact_mut(self.rows)) {
            for (k, uk) in u.iter_mut().enumerate() {
                *uk = self.scale * dot(&self.a[k * self.cols..(k + 1) * self.cols], xr);
            }
            for (&uk, btk) in u.iter().zip(self.bt.chunks_exact(self.rows)) {
                for (o, &b) in or.iter_mut().zip(btk) {
                    *o += uk * b;
                }
            }
        }
    }

    /// `scale · B·A`, row-major `rows × cols`: what merging adds to the base weights.
    pub fn delta(&self) -> Vec<f32> {
        let mut d = vec![0f32; self.rows * self.cols];
        for (k, btk) in self.bt.chunks_exact(self.rows).enumerate() {
            let ak = &self.a[k * self.cols..(k + 1) * self.cols];
            for (row, &b) in d.chunks_exact_mut(self.cols).zip(btk) {
                let s = self.scale * b;
                for (x, &a) in row.iter_mut().zip(ak) {
                    *x += s * a;
                }
            }
        }
        d
    }

    /// `base` with this update merged into dense f32 weights (bias kept).
    pub fn merge_into(&self, base: &Linear) -> Result<Linear> {
        if (base.rows, base.cols) != (self.rows, self.cols) {
            return Err(Error::ShapeMismatch { name: "LoRA merge".into(), expected: vec![base.rows, base.cols], actual: vec![self.rows, self.cols] });
        }
        let mut w = base.to_f32();
        for (x, d) in w.iter_mut().zip(self.delta()) {
            *x += d;
        }
        Linear::from_f32(base.rows, base.cols, w, base.bias.clone())
    }
}

/// Eight partial sums, the order the kernels' scalar twin uses.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// An adapter resolved against one model: per layer, the update of each projection it has.
#[derive(Debug, Clone)]
pub struct ModelLora {
    /// The name requests select it by.
    pub name: String,
    /// SHA-256 of the scaled weights: the prefix cache keeps the KV blocks of different
    /// adapters apart with it (the same adapter loaded twice shares them).
    pub identity: [u8; 32],
    layers: Vec<[Option<LinearLora>; 7]>,
}

impl ModelLora {
    /// The update of `proj` in layer `layer`, if the adapter has one.
    pub fn get(&self, layer: usize, proj: Proj) -> Option<&LinearLora> {
        self.layers.get(layer).and_then(|l| l[proj.index()].as_ref())
    }

    /// Number of adapted linear layers.
    pub fn modules(&self) -> usize {
        self.layers.iter().map(|l| l.iter().flatten().count()).sum()
    }

    /// Bytes of adapter weights held.
    pub fn weight_bytes(&self) -> usize {
        self.layers.iter().flat_map(|l| l.iter().flatten()).map(|m| 4 * (m.a.len() + m.bt.len())).sum()
    }
}

impl Model {
    /// The base layer of `proj` in layer `layer`.
    pub fn projection(&self, layer: usize, proj: Proj) -> Option<&Linear> {
        let l = self.layers.get(layer)?;
        match proj {
            Proj::Q => Some(&l.q),
            Proj::K => Some(&l.k),
            Proj::V => Some(&l.v),
            Proj::O => Some(&l.o),
            Proj::Gate => l.gate.as_ref(),
            Proj::Up => Some(&l.up),
            Proj::Down => Some(&l.down),
        }
    }

    /// Every linear layer an adapter can update: see [`lora_modules`].
    pub fn lora_modules(&self) -> Result<Vec<(String, usize, usize)>> {
        lora_modules(&self.config)
    }

    /// Resolves `adapter` against this model, its update scaled by `scale` on top of the
    /// adapter's own α/r. Fails, naming the module, when the adapter was made for another
    /// base (a module this model lacks, or of another shape).
    pub fn prepare_lora(&self, adapter: &LoraAdapter, name: &str, scale: f32) -> Result<ModelLora> {
        adapter.check_against(&self.lora_modules()?)?;
        if !scale.is_finite() {
            return Err(Error::InvalidInput(format!("LoRA scale {scale} is not a finite number")));
        }
        let s = adapter.scale() * scale;
        let cfg = &self.config;
        let mut layers: Vec<[Option<LinearLora>; 7]> = (0..self.layers.len()).map(|_| Default::default()).collect();
        let mut h = Sha256::new();
        h.update(b"lamina-lora\0");
        h.update(s.to_le_bytes());
        for (i, layer) in layers.iter_mut().enumerate() {
            for p in Proj::ALL {
                let module = p.hf_module(i);
                let Some(m) = adapter.modules.get(&module) else { continue };
                // Llama's q/k rows are in the interleaved rotary order inside the model.
                let b = match (cfg.architecture, p) {
                    (Architecture::Llama, Proj::Q) => permute_rotary_rows(&m.b, cfg.num_heads, cfg.head_dim, m.r),
                    (Architecture::Llama, Proj::K) => permute_rotary_rows(&m.b, cfg.num_kv_heads, cfg.head_dim, m.r),
                    _ => m.b.clone(),
                };
                h.update(module.as_bytes());
                for v in m.a.iter().chain(&b) {
                    h.update(v.to_le_bytes());
                }
                layer[p.index()] = Some(LinearLora::new(m.r, m.in_dim, m.out_dim, m.a.clone(), &b, s)?);
            }
        }
        Ok(ModelLora { name: name.to_string(), identity: h.finalize().into(), layers })
    }

    /// A copy of this model with `lora` merged into its weights (the adapted layers become
    /// dense f32; the others are shared with this model).
    pub fn merged(&self, lora: &ModelLora) -> Result<Model> {
        let mut layers = self.layers.clone();
        for (i, layer) in layers.iter_mut().enumerate() {
            let merge = |lin: &mut Linear, p: Proj| -> Result<()> {
                if let Some(l) = lora.get(i, p) {
                    *lin = l.merge_into(lin)?;
                }
                Ok(())
            };
            merge(&mut layer.q, Proj::Q)?;
            merge(&mut layer.k, Proj::K)?;
            merge(&mut layer.v, Proj::V)?;
            merge(&mut layer.o, Proj::O)?;
            if let Some(g) = layer.gate.as_mut() {
                merge(g, Proj::Gate)?;
            }
            merge(&mut layer.up, Proj::Up)?;
            merge(&mut layer.down, Proj::Down)?;
        }
        Ok(Model {
            config: self.config.clone(),
            precision: self.precision,
            embed: self.embed.clone(),
            pos_embed: self.pos_embed.clone(),
            layers,
            final_norm: self.final_norm.clone(),
            output: self.output.clone(),
            inv_freq: self.inv_freq.clone(),
            inv_freq_local: self.inv_freq_local.clone(),
            kernels: self.kernels,
            source: self.source.clone(),
            gguf: self.gguf.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_is_scaled_b_a_x_and_matches_delta() {
        // A = [[1, 2, 3], [0, -1, 1]], B = [[1, 0], [2, 1], [0, 3], [-1, 1]], s = 0.5.
        let a = vec![1.0, 2.0, 3.0, 0.0, -1.0, 1.0];
        let b = [1.0, 0.0, 2.0, 1.0, 0.0, 3.0, -1.0, 1.0];
        let l = LinearLora::new(2, 3, 4, a, &b, 0.5).unwrap();
        let x = [1.0, 1.0, 2.0];
        // A·x = [9, 1]; B·(A·x) = [9, 19, 3, -8]; times 0.5, added to ones.
        let mut out = [1.0f32; 4];
        l.apply(&x, &mut out);
        assert_eq!(out, [5.5, 10.5, 2.5, -3.0]);
        let d = l.delta();
        let via_delta: Vec<f32> = d.chunks_exact(3).map(|row| 1.0 + row.iter().zip(&x).map(|(w, v)| w * v).sum::<f32>()).collect();
        assert_eq!(via_delta, out);
        assert!(LinearLora::new(2, 3, 4, vec![0.0; 5], &b, 1.0).is_err());
    }

    #[test]
    fn gguf_names_parse_to_projections() {
        assert_eq!(Proj::parse_gguf("blk.12.ffn_gate.weight"), Some((12, Proj::Gate)));
        assert_eq!(Proj::parse_gguf("blk.0.attn_output.weight"), Some((0, Proj::O)));
        assert_eq!(Proj::parse_gguf("blk.0.attn_norm.weight"), None);
        assert_eq!(Proj::parse_gguf("token_embd.weight"), None);
    }
}
