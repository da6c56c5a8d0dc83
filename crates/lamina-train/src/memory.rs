//! What a training run will allocate, estimated from its config before anything is
//! allocated, and checked against the available memory with the same check every large
//! allocation uses ([`lamina_core::memory::check_fits`]). A config whose model or batch
//! cannot fit (`batch_size = 100000000`, `n_embd = 1048576`, `n_layer = 1000000`) is
//! refused in milliseconds with the sizes named, instead of aborting in the allocator or
//! growing towards hundreds of GB first.

use crate::config::TrainConfig;
use crate::fused::workspace_floats;
use lamina_core::memory::{check_fits, human_bytes};
use lamina_core::{ModelConfig, Result};

/// The bytes a run holds at its peak, by kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainingMemory {
    pub parameters: u64,
    /// Weights, in every copy the engine keeps (the candle model, the fused engine's flat
    /// buffer).
    pub weights: u64,
    /// Gradients (one set per data-parallel shard for the fused engine) and the two AdamW
    /// moments.
    pub gradients_and_optimizer: u64,
    /// Saved activations and scratch of one step.
    pub activations: u64,
    /// The token ids of one batch (inputs and targets).
    pub batch: u64,
}

impl TrainingMemory {
    /// Estimates a run of `cfg` (resolved to `threads` threads, 0 = all CPUs) on a model
    /// shaped `model`. The activations of the autograd engine are counted as the tensors
    /// the fused engine saves, which candle keeps too: a lower bound, so a refusal is
    /// never a false alarm.
    pub fn estimate(cfg: &TrainConfig, model: &ModelConfig, threads: usize) -> Self {
        let threads = if threads == 0 { lamina_core::settings::cpus() } else { threads };
        let m = |a: u64, b: u64| a.saturating_mul(b);
        let p = model.num_parameters();
        let (b, t) = (cfg.batch_size, cfg.block_size);
        let batch = m(m(2, m(b as u64, t as u64)), 4);
        if cfg.fused() {
            // Data-parallel shards (one per thread, each with its own gradients and its share
            // of the batch) when the batch has a sequence for every thread.
            let sharded = threads > 1 && b >= threads;
            let (grad_sets, activations) = if sharded {
                let per = b.div_ceil(threads);
                (1 + threads as u64, m(m(threads as u64, workspace_floats(model, per, t, 1)), 4))
            } else {
                (1, m(workspace_floats(model, b, t, threads), 4))
            };
            TrainingMemory { parameters: p, weights: m(m(2, p), 4), gradients_and_optimizer: m(m(grad_sets + 2, p), 4), activations, batch }
        } else {
            let d = if cfg.dtype == "f64" { 8 } else { 4 };
            TrainingMemory {
                parameters: p,
                weights: m(p, d),
                gradients_and_optimizer: m(m(3, p), d),
                activations: m(workspace_floats(model, b, t, 1), d),
                batch,
            }
        }
    }

    pub fn total(&self) -> u64 {
        self.weights.saturating_add(self.gradients_and_optimizer).saturating_add(self.activations).saturating_add(self.batch)
    }

    /// Refuses the run when it cannot fit. `already_held` is memory the run already holds
    /// and counts in the estimate (a checkpoint loaded for resuming).
    pub fn check(&self, cfg: &TrainConfig, already_held: u64) -> Result<()> {
        let what = format!(
            "training this model ({} parameters: weights {}, gradients and AdamW moments {}; activations {} and \
             token ids {} for batch_size {} × block_size {}; lower n_layer / n_embd or batch_size / block_size)",
            human_count(self.parameters),
            human_bytes(self.weights),
            human_bytes(self.gradients_and_optimizer),
            human_bytes(self.activations),
            human_bytes(self.batch),
            cfg.batch_size,
            cfg.block_size
        );
        check_fits(&what, self.total().saturating_sub(already_held))
    }
}

/// `0.81 M`, `198.27 B`, `52776.74 B`.
fn human_count(n: u64) -> String {
    if n >= 1_000_000_000 {
        format!("{:.2} B", n as f64 / 1e9)
    } else {
        format!("{:.2} M", n as f64 / 1e6)
    }
}
