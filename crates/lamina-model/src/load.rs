//! Building a [`Model`] from files: GGUF (quantized or not) and Hugging Face folders
//! (`config.json` + `*.safetensors`, F32/F16/BF16).
//!
//! Inside the model every tensor uses GGUF names and layouts. Hugging Face checkpoints
//! are converted on load: their query/key rows are permuted from the "rotate_half" rotary
//! layout to adjacent pairs (the same permutation llama.cpp's converter applies), and
//! GPT-2's `Conv1D` weights, stored `(in, out)`, are transposed.

use crate::gguf::GgufFile;
use crate::linear::Linear;
use crate::model::{Layer, Model, Norm, Precision};
use lamina_core::{Architecture, Error, ModelConfig, Result};
use lamina_kernels::Kernels;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Loads a model from a `.gguf` file or a Hugging Face model folder.
pub fn load_model(path: &Path, precision: Precision) -> Result<Model> {
    if !path.exists() {
        return Err(Error::ModelNotFound(path.to_path_buf()));
    }
    if path.is_dir() {
        if path.join("config.json").exists() {
            return load_safetensors_dir(path, precision);
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| Error::io(path, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
            .collect();
        return match ggufs.as_slice() {
            [one] => load_gguf(one, precision),
            [] => Err(Error::invalid_file(path, "folder has neither config.json nor a .gguf file")),
            _ => Err(Error::invalid_file(path, "folder has several .gguf files; name one")),
        };
    }
    load_gguf(path, precision)
}

fn f32_vec(file: &GgufFile, name: &str, len: usize) -> Result<Vec<f32>> {
    let info = file.tensor(name)?;
    if info.elements() != len {
        return Err(Error::ShapeMismatch { name: name.into(), expected: vec![len], actual: info.dims.clone() });
    }
    crate::linear::dequantize_any(info.dtype, file.data(info), len).map_err(|e| Error::invalid_file(&file.path, format!("{name}: {e}")))
}

fn gguf_norm(file: &GgufFile, prefix: &str, d: usize, with_bias: bool) -> Result<Norm> {
    Ok(Norm { weight: f32_vec(file, &format!("{prefix}.weight"), d)?, bias: if with_bias { Some(f32_vec(file, &format!("{prefix}.bias"), d)?) } else { None } })
}

fn check_shape(l: &Linear, name: &str, rows: usize, cols: usize) -> Result<()> {
    if l.rows != rows || l.cols != cols {
        return Err(Error::ShapeMismatch { name: name.into(), expected: vec![cols, rows], actual: vec![l.cols, l.rows] });
    }
    Ok(())
}

/// Loads a GGUF model. Quantized tensors with an integer kernel are used in place from
/// the memory map; other types (and all types under [`Precision::F32`]) are dequantized.
pub fn load_gguf(path: &Path, precision: Precision) -> Result<Model> {
    let file = Arc::new(GgufFile::open(path)?);
    let cfg = file.model_config()?;
    let dense = precision == Precision::F32;
    let (d, f, qd, kvd) = (cfg.hidden_size, cfg.ffn_dim, cfg.q_dim(), cfg.kv_dim());
    let lin = |name: &str, rows: usize, cols: usize| -> Result<Linear> {
        let l = Linear::from_gguf(&file, name, 0, rows, dense)?;
        check_shape(&l, name, rows, cols)?;
        let info = file.tensor(name)?;
        if info.dims[1] != rows {
            return Err(Error::ShapeMismatch { name: name.into(), expected: vec![cols, rows], actual: info.dims.clone() });
        }
        Ok(l)
    };
    let bias = |name: &str, len: usize| -> Result<Option<Vec<f32>>> {
        if file.tensors.contains_key(name) {
            Ok(Some(f32_vec(&file, name, len)?))
        } else {
            Ok(None)
        }
    };
    let is_gpt2 = cfg.architecture == Architecture::Gpt2;
    let embed = lin("token_embd.weight", cfg.vocab_size, d)?;
    let pos_embed = if is_gpt2 {
        let pos = Linear::from_gguf(&file, "position_embd.weight", 0, cfg.context_length, true)?;
        check_shape(&pos, "position_embd.weight", cfg.context_length, d)?;
        Some(pos)
    } else {
        None
    };
    // The layer count comes from metadata: check the file really has that many blocks
    // before trusting it with an allocation.
    let last = if is_gpt2 { "attn_qkv" } else { "attn_q" };
    file.tensor(&format!("blk.{}.{last}.weight", cfg.num_layers - 1))?;
    if file.tensors.contains_key(&format!("blk.{}.{last}.weight", cfg.num_layers)) {
        return Err(Error::invalid_file(path, format!("the file has more blocks than block_count = {}", cfg.num_layers)));
    }
    let mut layers = Vec::new();
    for i in 0..cfg.num_layers {
        let p = |s: &str| format!("blk.{i}.{s}");
        let (q, k, v) = if is_gpt2 {
            // Fused QKV: rows [0, d) are Q, [d, 2d) K, [2d, 3d) V.
            let name = p("attn_qkv.weight");
            let info = file.tensor(&name)?;
            if info.dims.len() != 2 || info.dims[0] != d || info.dims[1] != qd + 2 * kvd {
                return Err(Error::ShapeMismatch { name: name.clone(), expected: vec![d, qd + 2 * kvd], actual: info.dims.clone() });
            }
            let mut q = Linear::from_gguf(&file, &name, 0, qd, dense)?;
            let mut k = Linear::from_gguf(&file, &name, qd, kvd, dense)?;
            let mut v = Linear::from_gguf(&file, &name, qd + kvd, kvd, dense)?;
            check_shape(&q, &name, qd, d)?;
            if let Some(b) = bias(&p("attn_qkv.bias"), qd + 2 * kvd)? {
                q.bias = Some(b[..qd].to_vec());
                k.bias = Some(b[qd..qd + kvd].to_vec());
                v.bias = Some(b[qd + kvd..].to_vec());
            }
            (q, k, v)
        } else {
            let mut q = lin(&p("attn_q.weight"), qd, d)?;
            let mut k = lin(&p("attn_k.weight"), kvd, d)?;
            let mut v = lin(&p("attn_v.weight"), kvd, d)?;
            q.bias = bias(&p("attn_q.bias"), qd)?;
            k.bias = bias(&p("attn_k.bias"), kvd)?;
            v.bias = bias(&p("attn_v.bias"), kvd)?;
            (q, k, v)
        };
        let mut o = lin(&p("attn_output.weight"), d, qd)?;
        o.bias = bias(&p("attn_output.bias"), d)?;
        let mut up = lin(&p("ffn_up.weight"), f, d)?;
        up.bias = bias(&p("ffn_up.bias"), f)?;
        let mut down = lin(&p("ffn_down.weight"), d, f)?;
        down.bias = bias(&p("ffn_down.bias"), d)?;
        let gate = if is_gpt2 { None } else { Some(lin(&p("ffn_gate.weight"), f, d)?) };
        let gemma = cfg.architecture == Architecture::Gemma3;
        let gemma_norm = |name: &str, len: usize| -> Result<Option<Norm>> {
            if gemma {
                Ok(Some(gguf_norm(&file, &p(name), len, false)?))
            } else {
                Ok(None)
            }
        };
        layers.push(Layer {
            q_norm: gemma_norm("attn_q_norm", cfg.head_dim)?,
            k_norm: gemma_norm("attn_k_norm", cfg.head_dim)?,
            post_attn_norm: gemma_norm("post_attention_norm", d)?,
            post_ffn_norm: gemma_norm("post_ffw_norm", d)?,
            attn_norm: gguf_norm(&file, &p("attn_norm"), d, is_gpt2)?,
            q,
            k,
            v,
            o,
            ffn_norm: gguf_norm(&file, &p("ffn_norm"), d, is_gpt2)?,
            gate,
            up,
            down,
        });
    }
    let output = if file.tensors.contains_key("output.weight") { lin("output.weight", cfg.vocab_size, d)? } else { embed.clone() };
    let final_norm = gguf_norm(&file, "output_norm", d, is_gpt2)?;
    Ok(Model {
        inv_freq: cfg.rope_inv_freq(),
        inv_freq_local: cfg.rope_inv_freq_local(),
        config: cfg,
        precision,
        embed,
        pos_embed,
        layers,
        final_norm,
        output,
        kernels: Kernels::best(),
        source: path.to_path_buf(),
        gguf: Some(file),
    })
}

/// Tensors of a Hugging Face checkpoint, converted to f32.
pub(crate) struct HfTensors {
    map: HashMap<String, (Vec<usize>, Vec<f32>)>,
    dir: PathBuf,
}

impl HfTensors {
    pub(crate) fn read(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(Error::invalid_file(dir, "no *.safetensors file in the model folder"));
        }
        let mut map = HashMap::new();
        for f in &files {
            let bytes = lamina_core::fs::read_regular(f)?;
            let st = safetensors_parse(&bytes, f)?;
            for (name, dims, data) in st {
                map.insert(name, (dims, data));
            }
        }
        Ok(HfTensors { map, dir: dir.to_path_buf() })
    }

    pub(crate) fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let (dims, data) = self.map.remove(name).ok_or_else(|| Error::MissingTensor(name.to_string()))?;
        if dims != shape {
            return Err(Error::ShapeMismatch { name: name.into(), expected: shape.to_vec(), actual: dims });
        }
        Ok(data)
    }

    pub(crate) fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(crate) fn maybe(&mut self, name: &str, shape: &[usize]) -> Result<Option<Vec<f32>>> {
        if self.map.contains_key(name) {
            self.take(name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A tensor read from a safetensors file: name, shape, values as f32.
type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Parses a safetensors file (header + data) into f32 tensors, with every offset checked.
pub(crate) fn safetensors_parse(bytes: &[u8], path: &Path) -> Result<Vec<NamedTensor>> {
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(|e| Error::invalid_file(path, e))?;
    let mut out = Vec::new();
    for (name, view) in st.tensors() {
        let dims = view.shape().to_vec();
        let raw = view.data();
        let data: Vec<f32> = match view.dtype() {
            safetensors::Dtype::F32 => raw.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect(),
            safetensors::Dtype::F16 => raw.chunks_exact(2).map(|c| half::f16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
            safetensors::Dtype::BF16 => raw.chunks_exact(2).map(|c| half::bf16::from_le_bytes(c.try_into().unwrap()).to_f32()).collect(),
            // Integer tensors are index buffers (BERT's `position_ids`), never weights; a
            // weight the model needs and does not find is still reported by name.
            safetensors::Dtype::I64 | safetensors::Dtype::I32 | safetensors::Dtype::BOOL => continue,
            other => {
                return Err(Error::UnsupportedTensorType { tensor: name, dtype: format!("{other:?} (supported: F32, F16, BF16)") });
            }
        };
        out.push((name, dims, data));
    }
    Ok(out)
}

/// Hugging Face "rotate_half" rows → adjacent-pair rows, per head (llama.cpp's permute).
pub fn permute_rotary_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    move_rotary_rows(w, heads, head_dim, cols, true)
}

/// The inverse of [`permute_rotary_rows`]: adjacent-pair rows → Hugging Face order.
pub fn unpermute_rotary_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize) -> Vec<f32> {
    move_rotary_rows(w, heads, head_dim, cols, false)
}

/// Row `h·hd + k·hd/2 + j` (rotate-half order) ↔ row `h·hd + 2j + k` (adjacent pairs), in
/// the direction `to_pairs` says.
fn move_rotary_rows(w: &[f32], heads: usize, head_dim: usize, cols: usize, to_pairs: bool) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    let half = head_dim / 2;
    for h in 0..heads {
        for j in 0..half {
            for k in 0..2 {
                let (pair, halves) = (h * head_dim + 2 * j + k, h * head_dim + k * half + j);
                let (dst, src) = if to_pairs { (pair, halves) } else { (halves, pair) };
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

fn transpose(w: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; w.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = w[r * cols + c];
        }
    }
    out
}

/// Loads a Hugging Face folder: `config.json` + `*.safetensors`.
pub fn load_safetensors_dir(dir: &Path, precision: Precision) -> Result<Model> {
    let cfg_path = dir.join("config.json");
    let text = lamina_core::fs::read_regular_to_string(&cfg_path)?;
    let cfg = ModelConfig::from_hf_json(&text)?;
    let mut t = HfTensors::read(dir)?;
    let (d, f, qd, kvd, v) = (cfg.hidden_size, cfg.ffn_dim, cfg.q_dim(), cfg.kv_dim(), cfg.vocab_size);
    let (hd, hq, hkv) = (cfg.head_dim, cfg.num_heads, cfg.num_kv_heads);
    let dense = |rows: usize, cols: usize, w: Vec<f32>, b: Option<Vec<f32>>| Linear::from_f32(rows, cols, w, b);
    let model = match cfg.architecture {
        Architecture::Gemma3 => return Err(Error::UnsupportedArchitecture("gemma3 from a Hugging Face folder (load its GGUF file)".into())),
        Architecture::Llama => {
            let embed_w = t.take("model.embed_tokens.weight", &[v, d])?;
            let embed = dense(v, d, embed_w, None)?;
            let mut layers = Vec::new();
            for i in 0..cfg.num_layers {
                let p = |s: &str| format!("model.layers.{i}.{s}");
                let qw = permute_rotary_rows(&t.take(&p("self_attn.q_proj.weight"), &[qd, d])?, hq, hd, d);
                let kw = permute_rotary_rows(&t.take(&p("self_attn.k_proj.weight"), &[kvd, d])?, hkv, hd, d);
                let qb = t.maybe(&p("self_attn.q_proj.bias"), &[qd])?.map(|b| permute_rotary_rows(&b, hq, hd, 1));
                let kb = t.maybe(&p("self_attn.k_proj.bias"), &[kvd])?.map(|b| permute_rotary_rows(&b, hkv, hd, 1));
                let vb = t.maybe(&p("self_attn.v_proj.bias"), &[kvd])?;
                layers.push(Layer {
                    attn_norm: Norm { weight: t.take(&p("input_layernorm.weight"), &[d])?, bias: None },
                    q: dense(qd, d, qw, qb)?,
                    k: dense(kvd, d, kw, kb)?,
                    v: dense(kvd, d, t.take(&p("self_attn.v_proj.weight"), &[kvd, d])?, vb)?,
                    o: dense(d, qd, t.take(&p("self_attn.o_proj.weight"), &[d, qd])?, t.maybe(&p("self_attn.o_proj.bias"), &[d])?)?,
                    ffn_norm: Norm { weight: t.take(&p("post_attention_layernorm.weight"), &[d])?, bias: None },
                    gate: Some(dense(f, d, t.take(&p("mlp.gate_proj.weight"), &[f, d])?, None)?),
                    up: dense(f, d, t.take(&p("mlp.up_proj.weight"), &[f, d])?, None)?,
                    down: dense(d, f, t.take(&p("mlp.down_proj.weight"), &[d, f])?, None)?,
                    q_norm: None,
                    k_norm: None,
                    post_attn_norm: None,
                    post_ffn_norm: None,
                });
            }
            let final_norm = Norm { weight: t.take("model.norm.weight", &[d])?, bias: None };
            let output = match t.maybe("lm_head.weight", &[v, d])? {
                Some(w) if !cfg.tied_embeddings => dense(v, d, w, None)?,
                _ => embed.clone(),
            };
            (embed, None, layers, final_norm, output)
        }
        Architecture::Gpt2 => {
            // Some exports prefix every name with "transformer.".
            let pre = if t.map.contains_key("transformer.wte.weight") { "transformer." } else { "" };
            let mut g = |s: &str, shape: &[usize]| t.take(&format!("{pre}{s}"), shape);
            let embed = dense(v, d, g("wte.weight", &[v, d])?, None)?;
            let pos = dense(cfg.context_length, d, g("wpe.weight", &[cfg.context_length, d])?, None)?;
            let mut layers = Vec::new();
            for i in 0..cfg.num_layers {
                let p = |s: &str| format!("h.{i}.{s}");
                // Conv1D stores (in, out): transpose to (out, in).
                let qkv = transpose(&g(&p("attn.c_attn.weight"), &[d, 3 * d])?, d, 3 * d);
                let qkv_b = g(&p("attn.c_attn.bias"), &[3 * d])?;
                layers.push(Layer {
                    attn_norm: Norm { weight: g(&p("ln_1.weight"), &[d])?, bias: Some(g(&p("ln_1.bias"), &[d])?) },
                    q: dense(d, d, qkv[..d * d].to_vec(), Some(qkv_b[..d].to_vec()))?,
                    k: dense(d, d, qkv[d * d..2 * d * d].to_vec(), Some(qkv_b[d..2 * d].to_vec()))?,
                    v: dense(d, d, qkv[2 * d * d..].to_vec(), Some(qkv_b[2 * d..].to_vec()))?,
                    o: dense(d, d, transpose(&g(&p("attn.c_proj.weight"), &[d, d])?, d, d), Some(g(&p("attn.c_proj.bias"), &[d])?))?,
                    ffn_norm: Norm { weight: g(&p("ln_2.weight"), &[d])?, bias: Some(g(&p("ln_2.bias"), &[d])?) },
                    gate: None,
                    up: dense(f, d, transpose(&g(&p("mlp.c_fc.weight"), &[d, f])?, d, f), Some(g(&p("mlp.c_fc.bias"), &[f])?))?,
                    down: dense(d, f, transpose(&g(&p("mlp.c_proj.weight"), &[f, d])?, f, d), Some(g(&p("mlp.c_proj.bias"), &[d])?))?,
                    q_norm: None,
                    k_norm: None,
                    post_attn_norm: None,
                    post_ffn_norm: None,
                });
            }
            let final_norm = Norm { weight: g("ln_f.weight", &[d])?, bias: Some(g("ln_f.bias", &[d])?) };
            let output = embed.clone();
            (embed, Some(pos), layers, final_norm, output)
        }
    };
    let (embed, pos_embed, layers, final_norm, output) = model;
    let _ = &t.dir;
    Ok(Model {
        inv_freq: cfg.rope_inv_freq(),
        inv_freq_local: cfg.rope_inv_freq_local(),
        config: cfg,
        precision,
        embed,
        pos_embed,
        layers,
        final_norm,
        output,
        kernels: Kernels::best(),
        source: dir.to_path_buf(),
        gguf: None,
    })
}
