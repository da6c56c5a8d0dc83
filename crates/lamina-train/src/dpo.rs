//! Direct preference optimisation (Rafailov et al., 2023) with LoRA adapters.
//!
//! For a pair, with `π` the policy (base + adapters) and `ρ` the reference (the same base
//! with the adapters switched off: no second copy of the weights), the implicit rewards are
//! `r_c = β (log π(chosen) − log ρ(chosen))` and `r_r` likewise, and the loss is
//! `−log σ(r_c − r_r)`, averaged over the pairs of a step. Log-probabilities are sums over
//! each answer's tokens after the shared prompt. Logged per step: the loss, the mean reward
//! margin, the share of pairs with `r_c > r_r` (preference accuracy of the implicit reward),
//! and the policy's mean chosen and rejected log-probabilities; on the held-out pairs, the
//! same plus the share whose chosen answer the policy itself finds likelier (what
//! `lamina eval` reports).

use crate::instruct::PairExample;
use crate::optim::{clip_grad_norm, lr_at, AdamW, AdamWConfig};
use crate::sft::{batch_tensors, next_batch, scalar};
use candle_core::Tensor;
use lamina_core::{Error, Result};
use lamina_model::trainable::{candle_err, SplitMix64, TrainableModel};
use std::time::Instant;

#[derive(Debug, Clone)]
pub struct DpoConfig {
    pub steps: usize,
    /// Pairs per step.
    pub pairs: usize,
    pub beta: f64,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: usize,
    pub grad_clip: f64,
    pub eval_every: usize,
    pub seed: u64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig { steps: 100, pairs: 4, beta: 0.1, lr: 5e-5, min_lr: 5e-6, warmup: 10, grad_clip: 1.0, eval_every: 0, seed: 1 }
    }
}

/// Means over a set of pairs.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DpoStats {
    pub loss: f64,
    pub margin: f64,
    /// Share of pairs with a larger implicit reward for the chosen answer (ties count half).
    pub reward_accuracy: f64,
    /// Share of pairs whose chosen answer the policy finds likelier (ties count half).
    pub policy_accuracy: f64,
    pub chosen_logp: f64,
    pub rejected_logp: f64,
}

impl DpoStats {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({"loss": self.loss, "margin": self.margin, "reward_accuracy": self.reward_accuracy,
            "policy_accuracy": self.policy_accuracy, "chosen_logp": self.chosen_logp, "rejected_logp": self.rejected_logp})
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum DpoEvent {
    Step { step: usize, lr: f64, pairs_per_s: f64, stats: DpoStats },
    Eval { step: usize, stats: DpoStats },
}

impl DpoEvent {
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            DpoEvent::Step { step, lr, pairs_per_s, stats } => {
                serde_json::json!({"step": step, "lr": lr, "pairs_per_s": pairs_per_s, "train": stats.to_json()})
            }
            DpoEvent::Eval { step, stats } => serde_json::json!({"step": step, "held_out": stats.to_json()}),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DpoSummary {
    pub steps: usize,
    pub held_out_before: DpoStats,
    pub held_out_after: DpoStats,
    pub pairs_per_s: f64,
}

/// Policy (with graph) and reference (detached) log-probabilities of the pairs' answers:
/// `(π chosen, π rejected, ρ chosen, ρ rejected)`, each (n).
fn logps(model: &TrainableModel, pairs: &[&PairExample]) -> Result<[Tensor; 4]> {
    let n = pairs.len();
    let rows: Vec<&crate::instruct::Example> = pairs.iter().map(|p| &p.chosen).chain(pairs.iter().map(|p| &p.rejected)).collect();
    let (x, y) = batch_tensors(model, &rows)?;
    let pi = model.sequence_logprobs(&x, &y)?; // (2n)
    let rho = model.with_adapters_disabled(|| model.sequence_logprobs(&x, &y))?.detach();
    let part = |t: &Tensor, i: usize| t.narrow(0, i * n, n).map_err(candle_err);
    Ok([part(&pi, 0)?, part(&pi, 1)?, part(&rho, 0)?, part(&rho, 1)?])
}

/// The mean DPO loss (with graph) and the stats of `pairs`.
fn loss_and_stats(model: &TrainableModel, pairs: &[&PairExample], beta: f64) -> Result<(Tensor, DpoStats)> {
    let [pc, pr, rc, rr] = logps(model, pairs)?;
    let (loss, z) = (|| -> candle_core::Result<(Tensor, Tensor)> {
        // z = β((π_c − ρ_c) − (π_r − ρ_r)); −log σ(z) = log(1 + e^{−z}), written stably as
        // max(−z, 0) + log(1 + e^{−|z|}).
        let z = (((&pc - &rc)? - (&pr - &rr)?)? * beta)?;
        let neg = z.neg()?;
        let softplus = (neg.relu()? + (z.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        Ok((softplus.mean_all()?, z))
    })()
    .map_err(candle_err)?;
    let v = |t: &Tensor| t.to_dtype(candle_core::DType::F64).and_then(|t| t.to_vec1::<f64>()).map_err(candle_err);
    let (z, pc, pr) = (v(&z)?, v(&pc)?, v(&pr)?);
    let n = z.len() as f64;
    let share = |xs: &mut dyn Iterator<Item = f64>| {
        xs.map(|d| {
            if d > 0.0 {
                1.0
            } else if d == 0.0 {
                0.5
            } else {
                0.0
            }
        })
        .sum::<f64>()
            / n
    };
    let stats = DpoStats {
        loss: scalar(&loss)?,
        margin: z.iter().sum::<f64>() / n,
        reward_accuracy: share(&mut z.iter().copied()),
        policy_accuracy: share(&mut pc.iter().zip(&pr).map(|(c, r)| c - r)),
        chosen_logp: pc.iter().sum::<f64>() / n,
        rejected_logp: pr.iter().sum::<f64>() / n,
    };
    Ok((loss, stats))
}

/// Stats over all of `pairs`, `batch` pairs at a time, without training.
pub fn evaluate_pairs(model: &TrainableModel, pairs: &[PairExample], batch: usize, beta: f64) -> Result<DpoStats> {
    let mut sum = DpoStats::default();
    for chunk in pairs.chunks(batch.max(1)) {
        let rows: Vec<&PairExample> = chunk.iter().collect();
        let (_, s) = loss_and_stats(model, &rows, beta)?;
        let w = chunk.len() as f64;
        sum.loss += s.loss * w;
        sum.margin += s.margin * w;
        sum.reward_accuracy += s.reward_accuracy * w;
        sum.policy_accuracy += s.policy_accuracy * w;
        sum.chosen_logp += s.chosen_logp * w;
        sum.rejected_logp += s.rejected_logp * w;
    }
    let n = pairs.len().max(1) as f64;
    Ok(DpoStats {
        loss: sum.loss / n,
        margin: sum.margin / n,
        reward_accuracy: sum.reward_accuracy / n,
        policy_accuracy: sum.policy_accuracy / n,
        chosen_logp: sum.chosen_logp / n,
        rejected_logp: sum.rejected_logp / n,
    })
}

/// Trains `model`'s LoRA adapters by DPO on `train`, evaluating on `held_out`.
pub fn dpo(model: &TrainableModel, train: &[PairExample], held_out: &[PairExample], cfg: &DpoConfig, log: &mut dyn FnMut(&DpoEvent)) -> Result<DpoSummary> {
    if model.lora_adapter()?.is_none() {
        return Err(Error::InvalidConfig("DPO here trains LoRA adapters (the reference is the base with them switched off)".into()));
    }
    if train.is_empty() || held_out.is_empty() || cfg.pairs == 0 || cfg.steps == 0 {
        return Err(Error::InvalidInput(format!(
            "DPO needs training and held-out pairs ({} and {}), and steps and pairs per step",
            train.len(),
            held_out.len()
        )));
    }
    if !(cfg.beta.is_finite() && cfg.beta > 0.0) {
        return Err(Error::InvalidConfig(format!("--beta must be positive, not {}", cfg.beta)));
    }
    let params = model.trainable_params();
    let mut opt = AdamW::new(params.clone(), AdamWConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 })?;
    let held_out_before = evaluate_pairs(model, held_out, cfg.pairs, cfg.beta)?;
    log(&DpoEvent::Eval { step: 0, stats: held_out_before });
    let (mut rng, mut order) = (SplitMix64::new(cfg.seed), Vec::new());
    let (mut done_pairs, mut secs) = (0usize, 0f64);
    let mut last = held_out_before;
    for step in 1..=cfg.steps {
        let idx = next_batch(&mut order, &mut rng, train.len(), cfg.pairs);
        let rows: Vec<&PairExample> = idx.iter().map(|&i| &train[i]).collect();
        let t0 = Instant::now();
        let (loss, stats) = loss_and_stats(model, &rows, cfg.beta)?;
        if !stats.loss.is_finite() {
            return Err(Error::Other(format!("step {step}: the DPO loss is {} (lower the learning rate?)", stats.loss)));
        }
        let grads = loss.backward().map_err(candle_err)?;
        let mut g: Vec<Option<Tensor>> = params.iter().map(|(_, v)| grads.get(v.as_tensor()).cloned()).collect();
        clip_grad_norm(&mut g, cfg.grad_clip)?;
        let lr = lr_at(step - 1, cfg.lr, cfg.min_lr, cfg.warmup, cfg.steps);
        opt.step(&g, lr)?;
        let s = t0.elapsed().as_secs_f64();
        (done_pairs, secs) = (done_pairs + rows.len(), secs + s);
        log(&DpoEvent::Step { step, lr, pairs_per_s: rows.len() as f64 / s, stats });
        if (cfg.eval_every > 0 && step % cfg.eval_every == 0) || step == cfg.steps {
            last = evaluate_pairs(model, held_out, cfg.pairs, cfg.beta)?;
            log(&DpoEvent::Eval { step, stats: last });
        }
    }
    Ok(DpoSummary { steps: cfg.steps, held_out_before, held_out_after: last, pairs_per_s: done_pairs as f64 / secs })
}
