//! `lamina perplexity`: llama-perplexity's method, same figures.

use crate::common::{self, ModelArgs};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct PerplexityArgs {
    pub model: String,
    /// Text file to score.
    pub file: PathBuf,
    /// Only the first N bytes of the file.
    #[arg(long)]
    pub bytes: Option<usize>,
    #[command(flatten)]
    pub model_args: ModelArgs,
}

pub fn run(args: PerplexityArgs) -> Result<()> {
    let bytes = std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let bytes = match args.bytes {
        Some(n) if n < bytes.len() => &bytes[..n],
        _ => &bytes[..],
    };
    let text = std::str::from_utf8(bytes).map_err(|e| anyhow::anyhow!("{} is not valid UTF-8 at byte {}", args.file.display(), e.valid_up_to()))?;
    let ctx = args.model_args.ctx.unwrap_or(512);
    let (model, tok) = common::load(Some(&args.model), &args.model_args)?;
    let tokens = tok.encode(text, false)?;
    let model_args = ModelArgs { ctx: Some(ctx), ..args.model_args.clone() };
    let mut engine = common::engine(model, tok.clone(), &model_args, 1, None)?;
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    eprintln!("{} tokens, {} windows of {ctx}", tokens.len(), tokens.len() / ctx);
    let t0 = std::time::Instant::now();
    let report = lamina_engine::perplexity::perplexity(&mut engine, &tokens, ctx, bos, |i, n, ppl| {
        eprint!("[{i}/{n}] {ppl:.4} ");
    })?;
    eprintln!();
    eprintln!(
        "{} tokens scored in {:.1} s ({:.1} tok/s evaluated)",
        report.scored_tokens,
        t0.elapsed().as_secs_f64(),
        (report.windows * ctx) as f64 / t0.elapsed().as_secs_f64()
    );
    println!("PPL = {:.4}", report.ppl);
    Ok(())
}
