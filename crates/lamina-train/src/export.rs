//! Export a checkpoint as a Hugging Face folder (safetensors) or a single GGUF file.
//!
//! GGUF follows llama.cpp's `llama` layout: tensor names `token_embd.weight`,
//! `blk.N.attn_q.weight`, …, and the rows of `attn_q` / `attn_k` permuted per head from the
//! HF "rotate_half" order to llama.cpp's interleaved pairs:
//! GGUF row `h*hd + 2*j + k` = HF row `h*hd + k*(hd/2) + j`.
//! GPT-2 follows llama.cpp's `gpt2` layout (`token_embd`, `position_embd`, `blk.N.attn_qkv`,
//! `attn_output`, `ffn_up`, `ffn_down`, LayerNorm weights and biases); its Conv1D weights
//! (`[in, out]`) are transposed to the `[out, in]` rows llama.cpp expects, and the tied
//! output head is left out (llama.cpp reuses `token_embd`).

use crate::checkpoint::load_weights;
use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};
use lamina_core::{Architecture, Error, ModelConfig, Result};
use lamina_model::trainable::candle_err;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    Safetensors,
    Gguf,
}

impl std::str::FromStr for ExportFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "safetensors" | "hf" => Ok(ExportFormat::Safetensors),
            "gguf" => Ok(ExportFormat::Gguf),
            o => Err(Error::InvalidInput(format!("unknown export format `{o}` (safetensors, gguf)"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quant {
    F32,
    F16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl std::str::FromStr for Quant {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" => Ok(Quant::F32),
            "f16" => Ok(Quant::F16),
            "q8_0" => Ok(Quant::Q8_0),
            "q4_0" => Ok(Quant::Q4_0),
            "q4_1" => Ok(Quant::Q4_1),
            o => Err(Error::InvalidInput(format!("unknown quantization `{o}` (f32, f16, q8_0, q4_0, q4_1)"))),
        }
    }
}

impl Quant {
    fn ggml(self) -> GgmlDType {
        match self {
            Quant::F32 => GgmlDType::F32,
            Quant::F16 => GgmlDType::F16,
            Quant::Q8_0 => GgmlDType::Q8_0,
            Quant::Q4_0 => GgmlDType::Q4_0,
            Quant::Q4_1 => GgmlDType::Q4_1,
        }
    }

    /// llama.cpp's `general.file_type` (LLAMA_FTYPE_*).
    fn file_type(self) -> u32 {
        match self {
            Quant::F32 => 0,
            Quant::F16 => 1,
            Quant::Q4_0 => 2,
            Quant::Q4_1 => 3,
            Quant::Q8_0 => 7,
        }
    }
}

/// Exports the checkpoint (step folder, run folder or HF folder) `ckpt` to `out`: a folder
/// for safetensors, a file for GGUF. Returns what was written. Checkpoints skipped while
/// resolving a run folder are reported through `warn`.
pub fn export(ckpt: &Path, out: &Path, format: ExportFormat, quant: Quant, warn: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let (dir, cfg, tensors) = load_weights(ckpt, warn)?;
    let tok_path = dir.join("tokenizer.json");
    match format {
        ExportFormat::Safetensors => {
            let dtype = match quant {
                Quant::F32 => DType::F32,
                Quant::F16 => DType::F16,
                q => return Err(Error::InvalidInput(format!("{q:?} quantization needs --format gguf"))),
            };
            std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
            let conv = tensors.iter().map(|(k, v)| Ok((k.clone(), v.to_dtype(dtype).map_err(candle_err)?))).collect::<Result<HashMap<_, _>>>()?;
            let mut hf = cfg.to_hf_json();
            if dtype == DType::F16 {
                hf["torch_dtype"] = "float16".into();
            }
            let cp = out.join("config.json");
            std::fs::write(&cp, serde_json::to_string_pretty(&hf).unwrap_or_default()).map_err(|e| Error::io(&cp, e))?;
            let mp = out.join("model.safetensors");
            candle_core::safetensors::save(&conv, &mp).map_err(|e| Error::io(&mp, std::io::Error::other(e.to_string())))?;
            let tp = out.join("tokenizer.json");
            std::fs::copy(&tok_path, &tp).map_err(|e| Error::io(&tok_path, e))?;
            Ok(out.to_path_buf())
        }
        ExportFormat::Gguf => {
            write_gguf(&cfg, &tensors, &tok_path, out, quant)?;
            Ok(out.to_path_buf())
        }
    }
}

/// Permutes the rows of a q or k projection `[heads*hd, in]` from HF rotate_half order to
/// llama.cpp's interleaved order.
pub fn permute_for_gguf(w: &Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2().map_err(candle_err)?;
    if rows != heads * hd {
        return Err(Error::ShapeMismatch { name: "q/k projection".into(), expected: vec![heads * hd, cols], actual: vec![rows, cols] });
    }
    // (heads, 2, hd/2, in) → (heads, hd/2, 2, in): row h*hd + k*hd/2 + j goes to h*hd + 2j + k.
    w.reshape((heads, 2, hd / 2, cols)).and_then(|x| x.transpose(1, 2)).and_then(|x| x.reshape((rows, cols))).map_err(candle_err)
}

/// Inverse of [`permute_for_gguf`].
pub fn unpermute_from_gguf(w: &Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2().map_err(candle_err)?;
    w.reshape((heads, hd / 2, 2, cols)).and_then(|x| x.transpose(1, 2)).and_then(|x| x.reshape((rows, cols))).map_err(candle_err)
}

/// GGUF name of an HF Llama tensor name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (n, tail) = rest.split_once('.')?;
    let mapped = match tail {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.q_proj.bias" => "attn_q.bias",
        "self_attn.k_proj.bias" => "attn_k.bias",
        "self_attn.v_proj.bias" => "attn_v.bias",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{n}.{mapped}"))
}

/// GGUF name of an HF GPT-2 tensor name, and whether the tensor is a Conv1D weight
/// (`[in, out]`, to be transposed).
pub fn gguf_name_gpt2(hf: &str) -> Option<(String, bool)> {
    let hf = hf.strip_prefix("transformer.").unwrap_or(hf);
    let fixed = match hf {
        "wte.weight" => Some("token_embd.weight"),
        "wpe.weight" => Some("position_embd.weight"),
        "ln_f.weight" => Some("output_norm.weight"),
        "ln_f.bias" => Some("output_norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some((f.to_string(), false));
    }
    let rest = hf.strip_prefix("h.")?;
    let (n, tail) = rest.split_once('.')?;
    let (mapped, conv) = match tail {
        "ln_1.weight" => ("attn_norm.weight", false),
        "ln_1.bias" => ("attn_norm.bias", false),
        "attn.c_attn.weight" => ("attn_qkv.weight", true),
        "attn.c_attn.bias" => ("attn_qkv.bias", false),
        "attn.c_proj.weight" => ("attn_output.weight", true),
        "attn.c_proj.bias" => ("attn_output.bias", false),
        "ln_2.weight" => ("ffn_norm.weight", false),
        "ln_2.bias" => ("ffn_norm.bias", false),
        "mlp.c_fc.weight" => ("ffn_up.weight", true),
        "mlp.c_fc.bias" => ("ffn_up.bias", false),
        "mlp.c_proj.weight" => ("ffn_down.weight", true),
        "mlp.c_proj.bias" => ("ffn_down.bias", false),
        _ => return None,
    };
    Some((format!("blk.{n}.{mapped}"), conv))
}

/// GPT-2's byte → printable-character map (used by byte-level BPE vocabularies).
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('?')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('?');
            n += 1;
            c
        };
    }
    table
}

/// Tokenizer metadata for GGUF (`tokenizer.ggml.*`) from a tokenizer.json.
fn tokenizer_metadata(tok_path: &Path, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let text = std::fs::read_to_string(tok_path).map_err(|e| Error::io(tok_path, e))?;
    let j: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::invalid_file(tok_path, e))?;
    let model = &j["model"];
    let kind = model["type"].as_str().unwrap_or("");
    let vocab = model["vocab"].as_object().ok_or_else(|| Error::invalid_file(tok_path, "model.vocab is not a map"))?;
    let mut tokens = vec![String::new(); vocab_size];
    let mut types = vec![1i32; vocab_size];
    let b2u = bytes_to_unicode();
    let mut merges: Vec<String> = Vec::new();
    for (t, id) in vocab {
        let id = id.as_u64().unwrap_or(u64::MAX) as usize;
        if id < vocab_size {
            tokens[id] = if kind == "BPE" {
                t.clone()
            } else {
                // A character vocabulary: write each token in byte-level form so llama.cpp's
                // gpt2 tokenizer maps text onto it.
                t.bytes().map(|b| b2u[b as usize]).collect()
            };
        }
    }
    if kind == "BPE" {
        if let Some(ms) = model["merges"].as_array() {
            for m in ms {
                if let Some(s) = m.as_str() {
                    merges.push(s.to_string());
                } else if let Some(pair) = m.as_array() {
                    let a = pair.first().and_then(|x| x.as_str()).unwrap_or("");
                    let b = pair.get(1).and_then(|x| x.as_str()).unwrap_or("");
                    merges.push(format!("{a} {b}"));
                }
            }
        }
    } else {
        // Multi-byte characters need merges of their byte symbols.
        for t in vocab.keys() {
            let syms: Vec<String> = t.bytes().map(|b| b2u[b as usize].to_string()).collect();
            let mut acc = syms.first().cloned().unwrap_or_default();
            for s in syms.iter().skip(1) {
                merges.push(format!("{acc} {s}"));
                acc.push_str(s);
            }
        }
    }
    if let Some(added) = j["added_tokens"].as_array() {
        for a in added {
            let id = a["id"].as_u64().unwrap_or(u64::MAX) as usize;
            if id < vocab_size {
                tokens[id] = a["content"].as_str().unwrap_or("").to_string();
                if a["special"].as_bool().unwrap_or(false) {
                    types[id] = 3;
                }
            }
        }
    }
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{i}]");
            types[i] = 5; // unused
        }
    }
    let tok = lamina_tokenizer::Tokenizer::from_file(tok_path)?;
    if merges.is_empty() {
        // llama.cpp requires `tokenizer.ggml.merges` to be an array of strings, and an
        // empty array cannot carry its element type through candle's GGUF writer (it is
        // written as u32). One merge of two byte symbols that no text pairs up (U+0001
        // followed by U+0002, as byte-level symbols) keeps the type without changing how
        // any real text tokenizes.
        merges.push("\u{0101} \u{0102}".to_string());
    }
    let mut md = vec![
        ("tokenizer.ggml.model".to_string(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".to_string(), Value::String("gpt-2".into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens.into_iter().map(Value::String).collect())),
        ("tokenizer.ggml.token_type".to_string(), Value::Array(types.into_iter().map(Value::I32).collect())),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges.into_iter().map(Value::String).collect())),
    ];
    if let Some(b) = tok.bos_id() {
        md.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(b)));
    }
    if let Some(e) = tok.eos_id() {
        md.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(e)));
    }
    if let Some(u) = tok.unk_id() {
        md.push(("tokenizer.ggml.unknown_token_id".into(), Value::U32(u)));
    }
    if let Some(p) = tok.pad_id() {
        md.push(("tokenizer.ggml.padding_token_id".into(), Value::U32(p)));
    }
    md.push(("tokenizer.ggml.add_bos_token".into(), Value::Bool(tok.add_bos())));
    if let Some(t) = tok.chat_template() {
        md.push(("tokenizer.chat_template".into(), Value::String(t.to_string())));
    }
    Ok(md)
}

fn write_gguf(cfg: &ModelConfig, tensors: &HashMap<String, Tensor>, tok_path: &Path, out: &Path, quant: Quant) -> Result<()> {
    let u32v = |x: usize| Value::U32(x as u32);
    let gpt2 = cfg.architecture == Architecture::Gpt2;
    let arch = if gpt2 { "gpt2" } else { "llama" };
    let key = |k: &str| format!("{arch}.{k}");
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String("lamina".into())),
        ("general.file_type".into(), Value::U32(quant.file_type())),
        (key("context_length"), u32v(cfg.context_length)),
        (key("embedding_length"), u32v(cfg.hidden_size)),
        (key("block_count"), u32v(cfg.num_layers)),
        (key("feed_forward_length"), u32v(cfg.ffn_dim)),
        (key("attention.head_count"), u32v(cfg.num_heads)),
        (key("vocab_size"), u32v(cfg.vocab_size)),
    ];
    if gpt2 {
        md.push((key("attention.layer_norm_epsilon"), Value::F32(cfg.norm_eps)));
    } else {
        md.extend([
            (key("attention.head_count_kv"), u32v(cfg.num_kv_heads)),
            (key("attention.key_length"), u32v(cfg.head_dim)),
            (key("attention.value_length"), u32v(cfg.head_dim)),
            (key("rope.freq_base"), Value::F32(cfg.rope_theta)),
            (key("rope.dimension_count"), u32v(cfg.rope_dim)),
            (key("attention.layer_norm_rms_epsilon"), Value::F32(cfg.norm_eps)),
        ]);
    }
    md.extend(tokenizer_metadata(tok_path, cfg.vocab_size)?);

    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut qtensors: Vec<(String, QTensor)> = Vec::new();
    for hf in names {
        let no_name = || Error::InvalidInput(format!("no GGUF name for tensor `{hf}`"));
        let (g, conv) = if gpt2 { gguf_name_gpt2(hf).ok_or_else(no_name)? } else { (gguf_name(hf).ok_or_else(no_name)?, false) };
        let mut t = tensors[hf].to_dtype(DType::F32).map_err(candle_err)?;
        if conv {
            t = t.t().and_then(|t| t.contiguous()).map_err(candle_err)?; // [in, out] → [out, in]
        }
        if !gpt2 && (g.contains("attn_q.") || g.contains("attn_k.")) {
            let heads = if g.contains("attn_q.") { cfg.num_heads } else { cfg.num_kv_heads };
            t = if t.rank() == 1 {
                let n = t.dim(0).map_err(candle_err)?;
                permute_for_gguf(&t.reshape((n, 1)).map_err(candle_err)?, heads, cfg.head_dim)?.reshape(n).map_err(candle_err)?
            } else {
                permute_for_gguf(&t, heads, cfg.head_dim)?
            };
        }
        let dtype = tensor_dtype(&t, quant);
        let q = QTensor::quantize(&t, dtype).map_err(candle_err)?;
        qtensors.push((g, q));
    }
    let tmp = out.with_extension("gguf.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = qtensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    candle_core::quantized::gguf_file::write(&mut f, &md_refs, &t_refs).map_err(|e| Error::io(&tmp, std::io::Error::other(e.to_string())))?;
    f.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))
}

/// 1-D tensors (norms, biases) stay f32; matrices whose rows are not a whole number of
/// quantization blocks fall back to f16.
pub fn tensor_dtype(t: &Tensor, quant: Quant) -> GgmlDType {
    if t.rank() < 2 {
        return GgmlDType::F32;
    }
    let q = quant.ggml();
    let row = *t.dims().last().unwrap_or(&0);
    if !row.is_multiple_of(q.block_size()) {
        GgmlDType::F16
    } else {
        q
    }
}
