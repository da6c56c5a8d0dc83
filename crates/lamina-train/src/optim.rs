//! AdamW (decoupled weight decay, PyTorch's update rule), the learning-rate schedule and
//! global-norm gradient clipping.

use candle_core::{Tensor, Var};
use lamina_core::{Error, Result};
use lamina_model::trainable::candle_err;
use std::collections::HashMap;

/// AdamW hyper-parameters (the learning rate is passed per step).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    /// Weight decay applies to matrices (rank ≥ 2: linear weights, embeddings) only, like
    /// nanoGPT; norm weights and biases are not decayed.
    decay: bool,
}

/// AdamW over a fixed, ordered list of named parameters.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Number of updates done (the bias-correction `t`).
    pub step: u64,
}

impl AdamW {
    pub fn new(params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                let m = var.zeros_like().map_err(candle_err)?;
                let v = var.zeros_like().map_err(candle_err)?;
                let decay = var.rank() >= 2;
                Ok(Slot { name, var, m, v, decay })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(AdamW { cfg, slots, step: 0 })
    }

    /// Names of the parameters that get weight decay.
    pub fn decayed(&self) -> Vec<&str> {
        self.slots.iter().filter(|s| s.decay).map(|s| s.name.as_str()).collect()
    }

    pub fn param_names(&self) -> Vec<&str> {
        self.slots.iter().map(|s| s.name.as_str()).collect()
    }

    /// One update. `grads[i]` belongs to the i-th parameter (`None` = zero gradient).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.slots.len() {
            return Err(Error::Other(format!("{} gradients for {} parameters", grads.len(), self.slots.len())));
        }
        self.step += 1;
        let t = self.step as i32;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let bc1 = 1.0 - b1.powi(t);
        let bc2 = 1.0 - b2.powi(t);
        let step_size = lr / bc1;
        let bc2_sqrt = bc2.sqrt();
        for (slot, g) in self.slots.iter_mut().zip(grads) {
            let g = match g {
                Some(g) => g.clone(),
                None => slot.var.zeros_like().map_err(candle_err)?,
            };
            let upd = (|| -> candle_core::Result<(Tensor, Tensor, Tensor)> {
                // m ← β1 m + (1-β1) g ; v ← β2 v + (1-β2) g²
                let m = (slot.m.affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
                let v = (slot.v.affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
                // p ← p (1 - lr·wd)  (decoupled decay)
                let p = slot.var.as_tensor();
                let p = if slot.decay && self.cfg.weight_decay != 0.0 { p.affine(1.0 - lr * self.cfg.weight_decay, 0.0)? } else { p.clone() };
                // p ← p - lr/bc1 · m / (sqrt(v)/sqrt(bc2) + eps)   (PyTorch's formula)
                let denom = v.sqrt()?.affine(1.0 / bc2_sqrt, self.cfg.eps)?;
                let p = (p - (m.div(&denom)?.affine(step_size, 0.0))?)?;
                Ok((m, v, p))
            })()
            .map_err(candle_err)?;
            slot.m = upd.0;
            slot.v = upd.1;
            slot.var.set(&upd.2).map_err(candle_err)?;
        }
        Ok(())
    }

    /// Moments as `m.NAME` / `v.NAME` tensors (for the checkpoint).
    pub fn state_tensors(&self) -> HashMap<String, Tensor> {
        let mut map = HashMap::new();
        for s in &self.slots {
            map.insert(format!("m.{}", s.name), s.m.clone());
            map.insert(format!("v.{}", s.name), s.v.clone());
        }
        map
    }

    /// Restores moments saved by [`AdamW::state_tensors`] and the step count.
    pub fn load_state(&mut self, map: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            for (prefix, dst) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let t = map.get(&key).ok_or_else(|| Error::MissingTensor(key.clone()))?;
                if t.dims() != s.var.dims() {
                    return Err(Error::ShapeMismatch { name: key, expected: s.var.dims().to_vec(), actual: t.dims().to_vec() });
                }
                *dst = t.to_dtype(s.var.dtype()).map_err(candle_err)?;
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Scales the gradients in place so that their global L2 norm is at most `max_norm`
/// (PyTorch's `clip_grad_norm_`: factor `max / (norm + 1e-6)`). Returns the norm before
/// clipping. `max_norm == 0` only measures.
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let mut total = 0f64;
    for g in grads.iter().flatten() {
        let s = g.sqr().and_then(|x| x.sum_all()).and_then(|x| x.to_dtype(candle_core::DType::F64)).and_then(|x| x.to_scalar::<f64>()).map_err(candle_err)?;
        total += s;
    }
    let norm = total.sqrt();
    if !norm.is_finite() {
        return Err(Error::Other(format!("gradient norm is {norm}: training diverged (lower lr?)")));
    }
    if max_norm > 0.0 && norm > max_norm {
        let f = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = g.affine(f, 0.0).map_err(candle_err)?;
        }
    }
    Ok(norm)
}

/// Linear warm-up over `warmup` steps, cosine decay from `lr` to `min_lr` at `decay_iters`,
/// then `min_lr` (nanoGPT's `get_lr`; `it` counts from 0).
pub fn lr_at(it: usize, lr: f64, min_lr: f64, warmup: usize, decay_iters: usize) -> f64 {
    if it < warmup {
        return lr * (it + 1) as f64 / (warmup + 1) as f64;
    }
    if it > decay_iters || decay_iters <= warmup {
        return min_lr;
    }
    let ratio = (it - warmup) as f64 / (decay_iters - warmup) as f64;
    let coeff = 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos());
    min_lr + coeff * (lr - min_lr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn schedule_shape() {
        assert!((lr_at(0, 1e-3, 1e-4, 100, 2000) - 1e-3 / 101.0).abs() < 1e-12);
        assert!((lr_at(100, 1e-3, 1e-4, 100, 2000) - 1e-3).abs() < 1e-12);
        assert!((lr_at(2000, 1e-3, 1e-4, 100, 2000) - 1e-4).abs() < 1e-12);
        assert_eq!(lr_at(5000, 1e-3, 1e-4, 100, 2000), 1e-4);
        let mid = lr_at(1050, 1e-3, 1e-4, 100, 2000);
        assert!((mid - 5.5e-4).abs() < 1e-9, "{mid}");
    }

    #[test]
    fn adamw_matches_reference_and_skips_decay_on_vectors() {
        // One parameter matrix and one vector, two steps, against a hand-computed AdamW.
        let dev = Device::Cpu;
        let w = Var::from_tensor(&Tensor::new(&[[1.0f64, -2.0]], &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.5f64], &dev).unwrap()).unwrap();
        let cfg = AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
        let mut opt = AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg).unwrap();
        assert_eq!(opt.decayed(), vec!["w"]);
        let gw = Tensor::new(&[[0.3f64, -0.1]], &dev).unwrap();
        let gb = Tensor::new(&[0.2f64], &dev).unwrap();
        let (mut p, mut m, mut v) = ([1.0f64, -2.0, 0.5], [0.0f64; 3], [0.0f64; 3]);
        let g = [0.3, -0.1, 0.2];
        let lr = 0.01;
        for t in 1..=2 {
            opt.step(&[Some(gw.clone()), Some(gb.clone())], lr).unwrap();
            for i in 0..3 {
                if i < 2 {
                    p[i] *= 1.0 - lr * 0.1;
                }
                m[i] = 0.9 * m[i] + 0.1 * g[i];
                v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
                let mh = m[i] / (1.0 - 0.9f64.powi(t));
                let vh = v[i] / (1.0 - 0.99f64.powi(t));
                p[i] -= lr * mh / (vh.sqrt() + 1e-8);
            }
        }
        let got_w = w.as_tensor().flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let got_b = b.as_tensor().to_vec1::<f64>().unwrap();
        for (a, e) in got_w.iter().chain(got_b.iter()).zip(p.iter()) {
            assert!((a - e).abs() < 1e-9, "{a} vs {e}");
        }
        let _ = DType::F64;
    }

    #[test]
    fn clipping_scales_to_max_norm() {
        let dev = Device::Cpu;
        let mut g = vec![Some(Tensor::new(&[3.0f32, 4.0], &dev).unwrap()), None];
        let n = clip_grad_norm(&mut g, 1.0).unwrap();
        assert!((n - 5.0).abs() < 1e-6);
        let v = g[0].as_ref().unwrap().to_vec1::<f32>().unwrap();
        assert!((v[0] - 0.6).abs() < 1e-5 && (v[1] - 0.8).abs() < 1e-5);
    }
}
