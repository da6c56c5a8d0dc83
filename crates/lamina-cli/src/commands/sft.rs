//! `lamina sft MODEL --data FILE --lora R --out DIR`: supervised fine-tuning with LoRA.

use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_model::lora::LoraConfig;
use lamina_train::instruct::{load_examples, OnBadRecord};
use lamina_train::sft::{finetune, SftConfig, SftEvent};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct SftArgs {
    /// The base model: a .gguf file, a Hugging Face folder, a built-in name or a hub id
    /// (default: smollm2-135m-instruct).
    pub model: Option<String>,
    /// Training records: JSON lines or a JSON array of `{"messages": [...]}`, Alpaca
    /// `{"instruction", "input", "output"}` or `{"prompt", "completion"}`.
    #[arg(long)]
    pub data: PathBuf,
    /// Where the adapter (PEFT's format) and the log go.
    #[arg(long)]
    pub out: PathBuf,
    /// LoRA rank.
    #[arg(long, value_name = "R")]
    pub lora: usize,
    /// LoRA α (the update is scaled by α/r); default 2·r.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Projections to adapt.
    #[arg(long, default_value = "q,k,v,o,gate,up,down", value_delimiter = ',')]
    pub target: Vec<String>,
    #[arg(long, default_value_t = 100)]
    pub steps: usize,
    /// Examples per step.
    #[arg(long, default_value_t = 4)]
    pub batch: usize,
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// Longest example in tokens (longer ones are bad records).
    #[arg(long, default_value_t = 512)]
    pub max_len: usize,
    /// The last N usable records are held out for evaluation (default: 500, at most a
    /// tenth of the data).
    #[arg(long)]
    pub held_out: Option<usize>,
    /// Evaluate on the held-out records every N steps (0: at the start and the end).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    #[arg(long, default_value = "fail")]
    pub on_bad_record: OnBadRecord,
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (default: all CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
}

pub fn run(args: SftArgs) -> Result<()> {
    lamina_train::set_threads(args.threads.unwrap_or(0));
    let targets: Vec<&str> = args.target.iter().map(|s| s.trim()).collect();
    let alpha = args.alpha.unwrap_or(2.0 * args.lora as f64);
    let lora = LoraConfig::new(args.lora, alpha, 0.0, &targets)?;
    let (model, tok) = lamina_engine::resolve::load(args.model.as_deref(), lamina_model::Precision::F32, &mut |m| eprintln!("{m}"))?;
    if tok.chat_template().is_none() {
        bail!("this model has no chat template to format the records with");
    }
    let loaded = load_examples(&args.data, &tok, args.max_len.min(model.config.context_length), args.on_bad_record, &mut |m| eprintln!("{m}"))?;
    if loaded.skipped > 0 {
        eprintln!("skipped {} bad records ({} longer than {} tokens)", loaded.skipped, loaded.too_long, args.max_len);
    }
    let mut examples = loaded.examples;
    let held = args.held_out.unwrap_or(500.min(examples.len() / 10)).max(1);
    if held >= examples.len() {
        bail!("{} usable records: too few to hold {held} out and train on the rest", examples.len());
    }
    let held_out = examples.split_off(examples.len() - held);
    let trainable = lamina_train::sft::with_lora(&model, &lora, args.seed)?;
    drop(model);
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let log_path = args.out.join("log.jsonl");
    let mut log = std::io::BufWriter::new(std::fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?);
    eprintln!(
        "fine-tuning on {} records ({} held out), LoRA r={} α={alpha} on {}, {} steps of {}",
        examples.len(),
        held_out.len(),
        lora.r,
        lora.targets.join(","),
        args.steps,
        args.batch
    );
    let cfg = SftConfig {
        steps: args.steps,
        batch: args.batch,
        lr: args.lr,
        min_lr: args.lr / 10.0,
        warmup: args.warmup.min(args.steps / 2),
        eval_every: args.eval_every,
        seed: args.seed,
        ..SftConfig::default()
    };
    let mut io_err = None;
    let summary = finetune(&trainable, &examples, &held_out, &cfg, &mut |e| {
        match e {
            SftEvent::Step { step, loss, lr, tokens_per_s, .. } if *step % 10 == 0 || *step == cfg.steps => {
                eprintln!("step {step:>5}  loss {loss:.4}  lr {lr:.2e}  {tokens_per_s:.0} tok/s")
            }
            SftEvent::Eval { step, loss, perplexity } => eprintln!("step {step:>5}  held-out loss {loss:.4}  ppl {perplexity:.2}"),
            _ => {}
        }
        if let Err(err) = writeln!(log, "{}", e.to_json()) {
            io_err.get_or_insert(err);
        }
    })?;
    if let Some(e) = io_err {
        return Err(e).with_context(|| format!("writing {}", log_path.display()));
    }
    log.flush()?;
    let mut adapter = trainable.lora_adapter()?.expect("LoRA attached");
    adapter.base_model = Some(args.model.clone().unwrap_or_else(|| lamina_core::registry::DEFAULT_MODEL.to_string()));
    adapter.save(&args.out)?;
    println!(
        "held-out loss {:.4} → {:.4} (ppl {:.2} → {:.2}); {} steps, {} tokens at {:.0} tok/s, {} trainable parameters; adapter in {}",
        summary.held_out_before,
        summary.held_out_after,
        summary.held_out_before.exp(),
        summary.held_out_after.exp(),
        summary.steps,
        summary.tokens,
        summary.tokens_per_s,
        summary.trainable_params,
        args.out.display()
    );
    Ok(())
}
