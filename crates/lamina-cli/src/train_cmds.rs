//! CLI glue for training: `lamina tokenizer train`, `lamina pretrain`, `lamina plot` and
//! `lamina export`. Argument structs (clap) and one `run_*` function per command; the
//! work is done by `lamina-train` / `lamina-tokenizer`.
//!
//! Wiring in main.rs:
//! ```ignore
//! mod train_cmds;
//! // enum Command { …
//! Tokenizer(train_cmds::TokenizerArgs),   // lamina tokenizer train …
//! Pretrain(train_cmds::PretrainArgs),     // lamina pretrain --config run.toml …
//! Plot(train_cmds::PlotArgs),             // lamina plot out/metrics.jsonl
//! Export(train_cmds::ExportArgs),         // lamina export out --format gguf --quant q8_0 --out m.gguf
//! // match …
//! Command::Tokenizer(a) => train_cmds::run_tokenizer(a),
//! Command::Pretrain(a) => train_cmds::run_pretrain(a),
//! Command::Plot(a) => train_cmds::run_plot(a),
//! Command::Export(a) => train_cmds::run_export(a),
//! ```

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use lamina_train::{ExportFormat, ProgressCallbacks, Quant, TrainConfig};
use std::path::PathBuf;

/// `lamina tokenizer …`
#[derive(Args, Debug)]
pub struct TokenizerArgs {
    #[command(subcommand)]
    pub command: TokenizerCommand,
}

#[derive(Subcommand, Debug)]
pub enum TokenizerCommand {
    /// Train a byte-level BPE tokenizer (or a character vocabulary with --char) on text files.
    Train(TokenizerTrainArgs),
}

#[derive(Args, Debug)]
pub struct TokenizerTrainArgs {
    /// Vocabulary size (BPE; at least 256 + the special tokens).
    #[arg(long, default_value_t = 8192)]
    pub vocab_size: usize,
    /// Where to write tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Special tokens (repeatable); they get the first ids.
    #[arg(long = "special", default_values_t = vec!["<|endoftext|>".to_string()])]
    pub special_tokens: Vec<String>,
    /// Build a character-level vocabulary instead of BPE.
    #[arg(long)]
    pub char: bool,
    /// Training text files.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

pub fn run_tokenizer(args: TokenizerArgs) -> Result<()> {
    match args.command {
        TokenizerCommand::Train(a) => run_tokenizer_train(a),
    }
}

pub fn run_tokenizer_train(a: TokenizerTrainArgs) -> Result<()> {
    let tok = if a.char {
        let mut text = String::new();
        for f in &a.files {
            text.push_str(&std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?);
        }
        lamina_tokenizer::char_tokenizer(&text)?
    } else {
        let specials: Vec<&str> = a.special_tokens.iter().map(String::as_str).collect();
        lamina_tokenizer::train_bpe(&a.files, a.vocab_size, &specials, a.min_frequency)?
    };
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    tok.save(&a.out)?;
    eprintln!("wrote {} ({} tokens)", a.out.display(), tok.vocab_size());
    Ok(())
}

macro_rules! config_overrides {
    ($($key:ident),* $(,)?) => {
        /// One `--KEY VALUE` flag per training-config key (values read as TOML, else text).
        #[derive(Args, Debug, Default, Clone)]
        pub struct ConfigOverrides {
            $(
                #[arg(long, value_name = "VALUE", help = concat!("Override `", stringify!($key), "` of the config"))]
                pub $key: Option<String>,
            )*
            /// Any key as KEY=VALUE (repeatable).
            #[arg(long = "set", value_name = "KEY=VALUE")]
            pub set: Vec<String>,
        }

        impl ConfigOverrides {
            /// The keys that have a flag (equal to `TrainConfig::KEYS`).
            #[allow(dead_code)]
            pub const KEYS: &'static [&'static str] = &[$(stringify!($key)),*];

            pub fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
                $(
                    if let Some(v) = &self.$key {
                        cfg.set(stringify!($key), v)?;
                    }
                )*
                for kv in &self.set {
                    let Some((k, v)) = kv.split_once('=') else { bail!("--set expects KEY=VALUE, got `{kv}`") };
                    cfg.set(k.trim(), v.trim())?;
                }
                Ok(())
            }
        }
    };
}

config_overrides!(
    data,
    tokenizer,
    cache,
    token_dtype,
    out_dir,
    arch,
    n_layer,
    n_head,
    n_kv_head,
    n_embd,
    ffn_dim,
    block_size,
    vocab_size,
    tied_embeddings,
    qkv_bias,
    rope_theta,
    norm_eps,
    dtype,
    engine,
    batch_size,
    grad_accum,
    max_iters,
    stop_at,
    lr,
    min_lr,
    warmup_iters,
    lr_decay_iters,
    beta1,
    beta2,
    eps,
    weight_decay,
    grad_clip,
    seed,
    threads,
    log_interval,
    eval_interval,
    eval_iters,
    checkpoint_interval,
    keep_last,
    sample_tokens,
    temperature,
    sample_prompt,
    progress,
);

/// `lamina pretrain`
#[derive(Args, Debug)]
pub struct PretrainArgs {
    /// Training config (TOML). Optional with --resume (the checkpoint's config is used).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Continue from a checkpoint: a run folder (uses `latest`) or a step-NNNNNN folder.
    /// The run goes on writing into that run folder (or --out-dir).
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Print the final config and exit.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub overrides: ConfigOverrides,
}

/// The effective config of a `pretrain` invocation: file (or checkpoint) + flags, and
/// the checkpoint folder `--resume` resolves to (skipped checkpoints reported on stderr).
///
/// A resumed run writes into the run folder it was resumed from, or where `--out-dir`
/// (`--set out_dir=…`) says — never into the `out_dir` stored in the checkpoint, which
/// names wherever the run was first started (a copied or moved run would otherwise
/// write into the original).
pub fn pretrain_config(args: &PretrainArgs) -> Result<(TrainConfig, Option<PathBuf>)> {
    let resumed = match &args.resume {
        Some(r) => Some(lamina_train::resolve_checkpoint(r, &mut |m| eprintln!("{m}"))?),
        None => None,
    };
    let mut cfg = match (&args.config, &resumed) {
        (Some(p), _) => TrainConfig::from_toml_file(p)?,
        (None, Some(dir)) => lamina_train::checkpoint::read_state(dir)?.config,
        (None, None) => TrainConfig::default(),
    };
    if let Some(dir) = &resumed {
        cfg.out_dir = lamina_train::run_dir_of(dir);
    }
    args.overrides.apply(&mut cfg)?;
    Ok((cfg, resumed))
}

pub fn run_pretrain(args: PretrainArgs) -> Result<()> {
    let (cfg, resumed) = pretrain_config(&args)?;
    if args.dry_run {
        print!("{}", cfg.to_toml_string()?);
        return Ok(());
    }
    let summary = if cfg.progress {
        lamina_train::pretrain(&cfg, resumed.as_deref(), &mut ProgressCallbacks::new())?
    } else {
        lamina_train::pretrain(&cfg, resumed.as_deref(), &mut ProgressCallbacks::plain())?
    };
    let last_val = summary.evals.last().map(|e| format!("{:.4}", e.val_loss)).unwrap_or_else(|| "-".into());
    eprintln!(
        "done: steps {}..{} in {:.1} s ({:.2} it/s, {:.0} tok/s), final val loss {last_val}",
        summary.start_step, summary.final_step, summary.elapsed_sec, summary.iters_per_sec, summary.tokens_per_sec
    );
    if let Some(c) = &summary.last_checkpoint {
        eprintln!("checkpoint: {}", c.display());
    }
    if let Some(p) = &summary.plot {
        eprintln!("loss plot: {}", p.display());
    }
    Ok(())
}

/// `lamina plot`
#[derive(Args, Debug)]
pub struct PlotArgs {
    /// Metrics log (metrics.jsonl written by pretrain).
    pub log: PathBuf,
    /// Output PNG (default: the log's name with .png).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub fn run_plot(args: PlotArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| args.log.with_extension("png"));
    lamina_train::plot_log(&args.log, &out)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}

/// `lamina export`
#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Checkpoint: a run folder, a step-NNNNNN folder or an HF model folder.
    pub ckpt: PathBuf,
    /// safetensors (an HF folder) or gguf (one file; llama architecture).
    #[arg(long, default_value = "safetensors")]
    pub format: String,
    /// f32, f16, q8_0, q4_0 or q4_1 (q* need gguf).
    #[arg(long, default_value = "f32")]
    pub quant: String,
    /// Output folder (safetensors) or file (gguf).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run_export(args: ExportArgs) -> Result<()> {
    let format: ExportFormat = args.format.parse()?;
    let quant: Quant = args.quant.parse()?;
    let out = lamina_train::export(&args.ckpt, &args.out, format, quant, &mut |m| eprintln!("{m}"))?;
    eprintln!("exported {}", out.display());
    Ok(())
}
