//! `lamina merge MODEL ADAPTER --out PATH`: fold a LoRA adapter into its base's weights.

use crate::common::split_scale;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct MergeArgs {
    /// The base model: a .gguf file, a Hugging Face folder, a built-in name or a hub id.
    pub model: String,
    /// The LoRA adapter folder (PEFT's format), optionally `ADAPTER:SCALE` to multiply its α/r.
    pub adapter: String,
    /// Where to write: a `.gguf` file (GGUF base) or a folder (Hugging Face base).
    #[arg(long)]
    pub out: PathBuf,
    /// With a GGUF base, write every matrix in this type (default: each keeps its own):
    /// f32, f16, q8_0, q5_0, q5_1, q4_0, q4_1, q4_k, q5_k, q6_k.
    #[arg(long)]
    pub quant: Option<String>,
}

fn is_gguf(p: &Path) -> bool {
    p.extension().is_some_and(|x| x.eq_ignore_ascii_case("gguf"))
}

pub fn run(args: MergeArgs) -> Result<()> {
    let base = lamina_engine::resolve::resolve_model_path(Some(&args.model), &mut |m| eprintln!("{m}"))?;
    let (path, scale) = split_scale(&args.adapter);
    let adapter = lamina_model::lora::LoraAdapter::load(Path::new(path)).with_context(|| format!("loading the LoRA adapter {path}"))?;
    let t0 = std::time::Instant::now();
    if is_gguf(&base) {
        if !is_gguf(&args.out) {
            bail!("a GGUF base merges into a GGUF file: give --out a path ending in .gguf");
        }
        let r = lamina_model::merge::merge_gguf(&base, &adapter, scale, &args.out, args.quant.as_deref())
            .with_context(|| format!("merging {path} into {}", base.display()))?;
        println!(
            "{}: {} tensors, {} with the adapter merged{}; {:.1} MB in {:.1} s",
            args.out.display(),
            r.tensors,
            r.changed,
            args.quant.as_ref().map_or(String::new(), |q| format!(", {} matrices in {q} ({} in a fallback type)", r.quantized, r.fallback)),
            r.bytes_out as f64 / 1e6,
            t0.elapsed().as_secs_f64()
        );
    } else {
        if args.quant.is_some() || is_gguf(&args.out) {
            bail!("a Hugging Face base merges into a Hugging Face folder; `lamina export` turns that into GGUF");
        }
        let r = lamina_model::merge::merge_hf_folder(&base, &adapter, scale, &args.out).with_context(|| format!("merging {path} into {}", base.display()))?;
        println!(
            "{}: {} tensors, {} with the adapter merged, {} other files copied, in {:.1} s",
            args.out.display(),
            r.tensors,
            r.changed,
            r.files_copied,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
