//! Fused training step speed on nanoGPT's baby GPT (GPT-2, 4 layers, 4 heads, 128 dims,
//! vocabulary 65, batch 12 × 64), comparing thread layouts inside one process:
//! 2 threads as data-parallel shards, 2 threads splitting every operation, and 1 thread.
//!
//!     cargo run --release -p lamina-train --example fused_bench [ROUNDS] [BATCH]
//!
//! BATCH (default the recipe's 12) changes the sequences per step, e.g. to see how the
//! 2-thread scaling depends on the activations' size.
//!
//! The variants take turns in chunks of 10 steps (random tokens, AdamW), so minute-to-
//! minute drift of the machine hits them alike; prints steps/s of each.
use lamina_kernels::cpu::Isa;
use lamina_model::trainable::{SplitMix64, TrainableModel};
use lamina_train::fused::adamw::FusedAdamW;
use lamina_train::fused::FusedModel;
use lamina_train::optim::AdamWConfig;
use lamina_train::TrainConfig;
use std::time::Instant;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    // The model of the recipe itself (65 = tinyshakespeare's character vocabulary).
    let recipe = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shakespeare_char.toml");
    let tc = TrainConfig::from_toml_file(&recipe).expect("recipe");
    let cfg = tc.model_config(65).expect("model config");
    let model = TrainableModel::new(&cfg, tc.seed, candle_core::DType::F32, &candle_core::Device::Cpu).expect("model");
    let adam = AdamWConfig { beta1: tc.beta1, beta2: tc.beta2, eps: tc.eps, weight_decay: tc.weight_decay };
    let mut variants: Vec<(&str, FusedModel)> = vec![
        ("2 threads, data-parallel shards", FusedModel::from_trainable(&model, 2, Isa::best()).expect("fused")),
        ("2 threads, operations split", FusedModel::from_trainable(&model, 2, Isa::best()).expect("fused")),
        ("1 thread", FusedModel::from_trainable(&model, 1, Isa::best()).expect("fused")),
    ];
    variants[1].1.set_data_parallel(false);
    let mut opts: Vec<FusedAdamW> = variants.iter().map(|(_, m)| FusedAdamW::new(m, adam)).collect();
    let b: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(tc.batch_size);
    let t = tc.block_size;
    let mut rng = SplitMix64::new(7);
    let mut secs = vec![0f64; variants.len()];
    let chunk = 10;
    for round in 0..=rounds {
        for (i, (_, m)) in variants.iter_mut().enumerate() {
            let t0 = Instant::now();
            for _ in 0..chunk {
                let x: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
                let y: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
                m.zero_grads();
                m.step(&x, &y, b, t, 1.0).expect("step");
                opts[i].step(m, tc.lr, tc.grad_clip).expect("adamw");
            }
            if round > 0 {
                secs[i] += t0.elapsed().as_secs_f64(); // round 0 warms up
            }
        }
    }
    println!("fused training step, baby GPT, batch {b}×{t}, isa {}, {rounds} rounds of {chunk} steps", Isa::best().name());
    for ((name, _), s) in variants.iter().zip(&secs) {
        let sps = (rounds * chunk) as f64 / s;
        println!("{name:<34} {sps:>7.2} steps/s {:>8.0} tokens/s", sps * (b * t) as f64);
    }
}
