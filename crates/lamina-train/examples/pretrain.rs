//! Runs `pretrain` from a TOML config with `KEY=VALUE` overrides, and prints a one-line
//! JSON summary (used by bench/train/run.sh; the `lamina pretrain` command does the same
//! through the CLI glue).
//!
//!     cargo run --release -p lamina-train --example pretrain -- CONFIG.toml [KEY=VALUE ...]

use lamina_train::{pretrain, ProgressCallbacks, TrainConfig};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = (|| -> lamina_core::Result<()> {
        let path = args.first().ok_or_else(|| lamina_core::Error::InvalidInput("usage: pretrain CONFIG.toml [KEY=VALUE ...]".into()))?;
        let mut cfg = TrainConfig::from_toml_file(std::path::Path::new(path))?;
        for kv in &args[1..] {
            let (k, v) = kv.split_once('=').ok_or_else(|| lamina_core::Error::InvalidInput(format!("expected KEY=VALUE, got {kv}")))?;
            cfg.set(k, v)?;
        }
        let mut cb = if cfg.progress { ProgressCallbacks::new() } else { ProgressCallbacks::plain() };
        let s = pretrain(&cfg, None, &mut cb)?;
        let last = s.evals.last();
        println!(
            "{}",
            serde_json::json!({
                "impl": "lamina", "steps": s.final_step - s.start_step, "elapsed_s": s.elapsed_sec,
                "train_s": s.train_sec, "train_it_per_s": s.train_iters_per_sec, "it_per_s": s.iters_per_sec,
                "final_train_loss": last.map(|e| e.train_loss), "final_val_loss": last.map(|e| e.val_loss),
                "params": s.num_params,
            })
        );
        Ok(())
    })();
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
