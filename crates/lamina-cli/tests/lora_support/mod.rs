//! A LoRA adapter for the default model, made up for tests that need one.

use std::path::{Path, PathBuf};

/// A random rank-8 adapter on SmolLM2's q/v/down projections in PEFT's format, large enough
/// to change a greedy continuation (`B` is not zero, unlike a fresh adapter's).
pub fn random_smollm2_adapter(dir: &Path, name: &str, seed: u64) -> PathBuf {
    use lamina_model::lora::{LoraAdapter, LoraConfig, LoraModule};
    let model = lamina_model::load_model(&lamina_core::registry::default_model_path().unwrap(), lamina_model::Precision::Native).unwrap();
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    };
    let mut modules = std::collections::BTreeMap::new();
    for (module, inp, out) in model.lora_modules().unwrap() {
        if module.ends_with("q_proj") || module.ends_with("v_proj") || module.ends_with("down_proj") {
            let a = (0..8 * inp).map(|_| next() / (inp as f32).sqrt()).collect();
            let b = (0..out * 8).map(|_| next() * 0.4).collect();
            modules.insert(module, LoraModule { r: 8, in_dim: inp, out_dim: out, a, b });
        }
    }
    let adapter = LoraAdapter { config: LoraConfig::new(8, 16.0, 0.0, &["q", "v", "down"]).unwrap(), modules, base_model: None };
    let path = dir.join(name);
    std::fs::create_dir_all(&path).unwrap();
    adapter.save(&path).unwrap();
    path
}
