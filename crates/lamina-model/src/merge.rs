//! `lamina merge`: a base model with a LoRA adapter folded into its weights, `W + s·B·A`,
//! written as a model any tool loads without knowing about adapters.
//!
//! - A GGUF base gives a GGUF file (llama.cpp loads it): the adapted matrices are
//!   dequantized, updated in the file's own row order and quantized again in their own
//!   type, or every matrix goes to the type asked for; everything else is copied block for
//!   block.
//! - A Hugging Face folder gives a Hugging Face folder: each safetensors file is rewritten
//!   with the adapted tensors updated in their own dtype (f32, f16 or bf16), the other files
//!   (config, tokenizer) copied.
//!
//! Every file is written atomically.

use crate::adapter::{lora_modules, LinearLora, Proj};
use crate::load::load_gguf;
use crate::lora::LoraAdapter;
use crate::model::Precision;
use crate::quantize::{rewrite_gguf, QuantizeReport};
use lamina_core::{Error, ModelConfig, Result};
use std::path::Path;

/// Merges `adapter` (its update times `scale`) into the GGUF model `base`, writing `out`;
/// with `quant`, every matrix is written in that type (as `lamina quantize`).
pub fn merge_gguf(base: &Path, adapter: &LoraAdapter, scale: f32, out: &Path, quant: Option<&str>) -> Result<QuantizeReport> {
    let model = load_gguf(base, Precision::Native)?;
    let lora = model.prepare_lora(adapter, "merge", scale)?;
    let report = rewrite_gguf(base, out, quant, &|name| Proj::parse_gguf(name).and_then(|(l, p)| lora.get(l, p)).map(|l| l.delta()))?;
    if report.changed != lora.modules() {
        return Err(Error::Other(format!("merged {} of the adapter's {} modules (tensor names the merge did not find)", report.changed, lora.modules())));
    }
    Ok(report)
}

/// What a Hugging Face folder merge wrote.
#[derive(Debug, Clone, Default)]
pub struct FolderMergeReport {
    pub tensors: usize,
    pub changed: usize,
    pub files_copied: usize,
}

/// Merges `adapter` (times `scale`) into the Hugging Face folder `base`, writing the folder
/// `out` (created; files already there with the same names are replaced).
pub fn merge_hf_folder(base: &Path, adapter: &LoraAdapter, scale: f32, out: &Path) -> Result<FolderMergeReport> {
    let cfg = ModelConfig::from_hf_json(&lamina_core::fs::read_regular_to_string(&base.join("config.json"))?)?;
    adapter.check_against(&lora_modules(&cfg)?)?;
    if !scale.is_finite() {
        return Err(Error::InvalidInput(format!("LoRA scale {scale} is not a finite number")));
    }
    if base.canonicalize().ok() == out.canonicalize().ok() {
        return Err(Error::InvalidInput("the merged folder must not be the base folder".into()));
    }
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let s = adapter.scale() * scale;
    let mut report = FolderMergeReport::default();
    let mut entries: Vec<_> = std::fs::read_dir(base).map_err(|e| Error::io(base, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
    entries.sort();
    for path in entries.iter().filter(|p| p.is_file()) {
        let dest = out.join(path.file_name().expect("a file has a name"));
        let bytes = lamina_core::fs::read_regular(path)?;
        if path.extension().is_none_or(|x| x != "safetensors") {
            lamina_core::fs::write_bytes_atomic(&dest, &bytes)?;
            report.files_copied += 1;
            continue;
        }
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::invalid_file(path, e))?;
        let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, view) in st.tensors() {
            let module = name.strip_suffix(".weight").and_then(|m| adapter.modules.get(m));
            let data = match module {
                None => view.data().to_vec(),
                Some(m) => {
                    if view.shape() != [m.out_dim, m.in_dim] {
                        return Err(Error::ShapeMismatch { name: name.clone(), expected: vec![m.out_dim, m.in_dim], actual: view.shape().to_vec() });
                    }
                    report.changed += 1;
                    // In Hugging Face row order: the file's own.
                    let delta = LinearLora::new(m.r, m.in_dim, m.out_dim, m.a.clone(), &m.b, s)?.delta();
                    add_in_dtype(view.dtype(), view.data(), &delta)
                        .ok_or_else(|| Error::UnsupportedTensorType { tensor: name.clone(), dtype: format!("{:?}", view.dtype()) })?
                }
            };
            owned.push((name, view.dtype(), view.shape().to_vec(), data));
            report.tensors += 1;
        }
        let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
            .iter()
            .map(|(n, dt, shape, data)| {
                safetensors::tensor::TensorView::new(*dt, shape.clone(), data).map(|v| (n.clone(), v)).map_err(|e| Error::Other(format!("tensor {n}: {e}")))
            })
            .collect::<Result<_>>()?;
        let mut meta = std::collections::HashMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        let out_bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::Other(format!("writing {}: {e}", dest.display())))?;
        lamina_core::fs::write_bytes_atomic(&dest, &out_bytes)?;
    }
    if report.changed != adapter.modules.len() {
        return Err(Error::invalid_file(
            base,
            format!("found {} of the adapter's {} modules among the folder's tensors", report.changed, adapter.modules.len()),
        ));
    }
    Ok(report)
}

/// `data + delta` for little-endian `data` of a float dtype, in that dtype.
fn add_in_dtype(dtype: safetensors::Dtype, data: &[u8], delta: &[f32]) -> Option<Vec<u8>> {
    use safetensors::Dtype;
    Some(match dtype {
        Dtype::F32 => data.chunks_exact(4).zip(delta).flat_map(|(c, d)| (f32::from_le_bytes(c.try_into().unwrap()) + d).to_le_bytes()).collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .zip(delta)
            .flat_map(|(c, d)| half::f16::from_f32(half::f16::from_le_bytes(c.try_into().unwrap()).to_f32() + d).to_le_bytes())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .zip(delta)
            .flat_map(|(c, d)| half::bf16::from_f32(half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32() + d).to_le_bytes())
            .collect(),
        _ => return None,
    })
}
