//! `lamina quantize IN OUT --type T`: requantize a GGUF model.

use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Input GGUF (a path or a built-in model name).
    pub input: String,
    /// Output GGUF path.
    pub output: PathBuf,
    /// Target type: f32, f16, q8_0, q5_0, q5_1, q4_0, q4_1, q4_k, q5_k, q6_k.
    #[arg(long = "type", short = 'q')]
    pub qtype: String,
}

pub fn run(args: QuantizeArgs) -> Result<()> {
    let input = lamina_engine::resolve::resolve_model_path(Some(&args.input), &mut |m| eprintln!("{m}"))?;
    let t0 = std::time::Instant::now();
    let r = lamina_model::quantize::quantize_gguf(&input, &args.output, &args.qtype)?;
    println!(
        "{} tensors: {} matrices in {}, {} in a fallback type (rows not a multiple of the block); {:.1} MB → {:.1} MB in {:.1} s",
        r.tensors,
        r.quantized,
        args.qtype,
        r.fallback,
        r.bytes_in as f64 / 1e6,
        r.bytes_out as f64 / 1e6,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
