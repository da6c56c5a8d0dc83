//! `lamina eval MODEL --task FILE...`: log-likelihood evaluation (multiple choice,
//! preference accuracy, held-out loss), one line per task and an optional JSON report.

use crate::common::{self, LoraArgs, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use lamina_train::eval::{evaluate, Select};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A .gguf file, a Hugging Face folder, a built-in name or a hub id (default: smollm2-135m-instruct).
    pub model: Option<String>,
    /// Task files (JSON lines, a JSON array, or either gzip-compressed): multiple choice
    /// `{"question", "choices", "answer"}`, preference pairs `{"chosen", "rejected"}`, or
    /// instruction records (held-out loss).
    #[arg(long, required = true, num_args = 1..)]
    pub task: Vec<PathBuf>,
    /// Use only the last N records of each file (a held-out split).
    #[arg(long)]
    pub last: Option<usize>,
    /// Use at most N records of each file (after --last).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
}

pub fn run(args: EvalArgs) -> Result<()> {
    let (model, tok) = common::load(args.model.as_deref(), &args.model_args)?;
    let lora = args.lora.prepare(&model)?;
    let source = model.source.display().to_string();
    let mut engine = common::engine(model, tok, &args.model_args, 1, None)?;
    let select = Select { last: args.last, limit: args.limit };
    let mut reports = Vec::new();
    for task in &args.task {
        let r = evaluate(&mut engine, lora.as_deref(), task, select).with_context(|| format!("evaluating {}", task.display()))?;
        println!("{}", r.line());
        reports.push(r.to_json());
    }
    if let Some(path) = &args.json {
        let report = serde_json::json!({"model": source, "lora": args.lora.lora, "precision": args.model_args.precision, "tasks": reports});
        lamina_core::fs::write_bytes_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}
