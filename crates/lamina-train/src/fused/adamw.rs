//! AdamW over the fused model's flat buffers, with global-norm clipping folded into the
//! update (one pass over parameters, gradients and both moments).
//!
//! Same rule and the same checkpoint tensors (`m.NAME`, `v.NAME`) as
//! [`crate::optim::AdamW`], so runs resume across the two paths.

use super::{kernels, FusedModel, Shared};
use crate::optim::AdamWConfig;
use candle_core::{Device, Tensor};
use lamina_core::{Error, Result};
use lamina_kernels::pool::ThreadPool;
use lamina_model::trainable::candle_err;
use std::collections::HashMap;

/// AdamW moments for every parameter of a [`FusedModel`].
pub struct FusedAdamW {
    cfg: AdamWConfig,
    m: Vec<f32>,
    v: Vec<f32>,
    /// `(offset, len, decayed)` per parameter: weight decay on matrices and embeddings
    /// (rank ≥ 2) only, like nanoGPT.
    segments: Vec<(usize, usize, bool)>,
    /// Updates done (bias-correction `t`).
    pub step: u64,
}

impl FusedAdamW {
    pub fn new(model: &FusedModel, cfg: AdamWConfig) -> Self {
        let n = model.params.len();
        let segments = model.params_info().iter().map(|p| (p.offset, p.len, p.shape.len() >= 2)).collect();
        FusedAdamW { cfg, m: vec![0.0; n], v: vec![0.0; n], segments, step: 0 }
    }

    /// Global L2 norm of the model's gradients (f64 accumulation).
    pub fn grad_norm(model: &FusedModel) -> f64 {
        let pool = model.pool();
        let threads = pool.threads();
        let mut partial = vec![0f64; threads];
        let pp = partial.as_mut_ptr() as usize;
        let (g, isa) = (&model.grads, model.isa());
        pool.run(&|i, n| {
            let r = ThreadPool::split(g.len(), i, n, 1024);
            // SAFETY: each thread writes its own slot.
            unsafe { *(pp as *mut f64).add(i) = kernels::sum_squares(isa, &g[r]) };
        });
        partial.iter().sum::<f64>().sqrt()
    }

    /// Clips the gradients to `max_norm` (PyTorch's `clip_grad_norm_`, 0 = off) and
    /// applies one update with learning rate `lr`. Returns the norm before clipping.
    pub fn step(&mut self, model: &mut FusedModel, lr: f64, max_norm: f64) -> Result<f64> {
        let norm = Self::grad_norm(model);
        if !norm.is_finite() {
            return Err(Error::Other(format!("gradient norm is {norm}: training diverged (lower lr?)")));
        }
        let gscale = if max_norm > 0.0 && norm > max_norm { (max_norm / (norm + 1e-6)) as f32 } else { 1.0 };
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let step_size = (lr / bc1) as f32;
        let inv_bc2_sqrt = (1.0 / bc2.sqrt()) as f32;
        let decay = (1.0 - lr * self.cfg.weight_decay) as f32;
        let (eps, b1, b2) = (self.cfg.eps as f32, b1 as f32, b2 as f32);
        let isa = model.isa();
        let (pp, mp, vp) = (Shared(model.params.as_mut_ptr()), Shared(self.m.as_mut_ptr()), Shared(self.v.as_mut_ptr()));
        let g = &model.grads;
        let segments = &self.segments;
        model.pool().run(&|i, n| {
            for &(off, len, decayed) in segments {
                let r = ThreadPool::split(len, i, n, 64);
                if r.is_empty() {
                    continue;
                }
                let (s, l) = (off + r.start, r.len());
                // SAFETY: each thread updates its own range of every parameter.
                let (p, m, v) = unsafe { (pp.slice(s, l), mp.slice(s, l), vp.slice(s, l)) };
                let d = if decayed { decay } else { 1.0 };
                kernels::adamw(isa, p, &g[s..s + l], m, v, gscale, b1, b2, eps, d, step_size, inv_bc2_sqrt);
            }
        });
        Ok(norm)
    }

    /// Moments as `m.NAME` / `v.NAME` tensors (the checkpoint format of [`crate::optim::AdamW`]).
    pub fn state_tensors(&self, model: &FusedModel) -> Result<HashMap<String, Tensor>> {
        let mut map = HashMap::new();
        for p in model.params_info() {
            for (prefix, buf) in [("m", &self.m), ("v", &self.v)] {
                let t = Tensor::from_slice(&buf[p.offset..p.offset + p.len], p.shape.as_slice(), &Device::Cpu).map_err(candle_err)?;
                map.insert(format!("{prefix}.{}", p.name), t);
            }
        }
        Ok(map)
    }

    /// Restores moments saved by [`FusedAdamW::state_tensors`] (or the candle AdamW).
    pub fn load_state(&mut self, model: &FusedModel, map: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for p in model.params_info() {
            for (prefix, buf) in [("m", &mut self.m), ("v", &mut self.v)] {
                let key = format!("{prefix}.{}", p.name);
                let t = map.get(&key).ok_or_else(|| Error::MissingTensor(key.clone()))?;
                if t.dims() != p.shape.as_slice() {
                    return Err(Error::ShapeMismatch { name: key, expected: p.shape.clone(), actual: t.dims().to_vec() });
                }
                let vals = t.to_dtype(candle_core::DType::F32).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f32>()).map_err(candle_err)?;
                buf[p.offset..p.offset + p.len].copy_from_slice(&vals);
            }
        }
        self.step = step;
        Ok(())
    }
}
