//! The hyper-parameters of one decoder-only transformer, independent of the file format
//! it came from. GGUF metadata (`llama.block_count`, …) and Hugging Face `config.json`
//! (`num_hidden_layers`, …) are both mapped onto [`ModelConfig`], so the model code never
//! looks at a format-specific key.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// The model families Lamina runs. Mistral and Qwen2 checkpoints are Llama-family models
/// that differ only by configuration (sliding window, QKV bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// RMSNorm, rotary positions, grouped-query attention, SwiGLU MLP.
    Llama,
    /// LayerNorm with bias, learned absolute positions, fused QKV, GELU MLP.
    Gpt2,
}

impl Architecture {
    /// Maps an architecture name as written in GGUF (`general.architecture`) or HF
    /// (`model_type`) onto a family.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "mistral" | "qwen2" | "smollm" | "smollm2" => Ok(Architecture::Llama),
            "gpt2" => Ok(Architecture::Gpt2),
            other => Err(Error::UnsupportedArchitecture(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Gpt2 => "gpt2",
        }
    }
}

/// RoPE frequency scaling for long-context checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RopeScaling {
    /// Positions divided by `factor` (linear interpolation).
    Linear { factor: f32 },
    /// Llama 3 style: low frequencies divided by `factor`, high kept, smooth in between.
    Llama3 { factor: f32, low_freq_factor: f32, high_freq_factor: f32, original_max_position_embeddings: usize },
}

/// Everything needed to build (or train) a model of a given shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    /// Width of the residual stream (`n_embd`).
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Key/value heads; smaller than `num_heads` for grouped-query attention.
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// Inner width of the MLP.
    pub ffn_dim: usize,
    /// Longest sequence the positional scheme was trained for.
    pub context_length: usize,
    /// Epsilon of RMSNorm / LayerNorm.
    pub norm_eps: f32,
    pub rope_theta: f32,
    /// Number of leading dimensions of each head that are rotated (usually `head_dim`).
    pub rope_dim: usize,
    pub rope_scaling: Option<RopeScaling>,
    /// Output projection shares the token-embedding matrix.
    pub tied_embeddings: bool,
    /// Q, K and V projections carry a bias (Qwen2, GPT-2).
    pub qkv_bias: bool,
    /// Attention sees at most this many previous tokens (Mistral).
    pub sliding_window: Option<usize>,
}

impl ModelConfig {
    /// Checks the relations between sizes that the model code relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 || self.num_heads == 0 {
            return bad("vocab_size, hidden_size, num_layers and num_heads must be positive".into());
        }
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!(
                "num_heads ({}) must be a positive multiple of num_kv_heads ({})",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.architecture == Architecture::Gpt2 && !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!(
                "hidden_size ({}) is not divisible by num_heads ({})",
                self.hidden_size, self.num_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!("head_dim ({}) must be a positive even number", self.head_dim));
        }
        if self.rope_dim > self.head_dim || !self.rope_dim.is_multiple_of(2) {
            return bad(format!("rope_dim ({}) must be even and at most head_dim ({})", self.rope_dim, self.head_dim));
        }
        if self.vocab_size > u32::MAX as usize {
            return bad(format!("vocab_size {} does not fit a 32-bit token id", self.vocab_size));
        }
        if self.context_length == 0 {
            return bad("context_length must be positive".into());
        }
        Ok(())
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of each of the key and value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Reads a Hugging Face `config.json` (Llama, Mistral, Qwen2 or GPT-2).
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::InvalidConfig(format!("config.json: {e}")))?;
        let model_type = v.get("model_type").and_then(|x| x.as_str()).unwrap_or("llama");
        let arch = Architecture::from_name(model_type)?;
        let get = |k: &str| v.get(k).and_then(|x| x.as_u64()).map(|x| x as usize);
        let getf = |k: &str| v.get(k).and_then(|x| x.as_f64()).map(|x| x as f32);
        let need = |k: &str| get(k).ok_or_else(|| Error::InvalidConfig(format!("config.json has no `{k}`")));
        let cfg = match arch {
            Architecture::Llama => {
                let hidden = need("hidden_size")?;
                let heads = need("num_attention_heads")?;
                let head_dim = get("head_dim").unwrap_or(hidden.checked_div(heads).unwrap_or(0));
                let rope_scaling = match v.get("rope_scaling") {
                    Some(s) if !s.is_null() => {
                        let kind = s.get("rope_type").or_else(|| s.get("type")).and_then(|x| x.as_str()).unwrap_or("");
                        let f = |k: &str| s.get(k).and_then(|x| x.as_f64()).map(|x| x as f32);
                        match kind {
                            "linear" => Some(RopeScaling::Linear { factor: f("factor").unwrap_or(1.0) }),
                            "llama3" => Some(RopeScaling::Llama3 {
                                factor: f("factor").unwrap_or(1.0),
                                low_freq_factor: f("low_freq_factor").unwrap_or(1.0),
                                high_freq_factor: f("high_freq_factor").unwrap_or(4.0),
                                original_max_position_embeddings: s
                                    .get("original_max_position_embeddings")
                                    .and_then(|x| x.as_u64())
                                    .unwrap_or(8192) as usize,
                            }),
                            "" | "default" => None,
                            other => return Err(Error::InvalidConfig(format!("unsupported rope_scaling type `{other}`"))),
                        }
                    }
                    _ => None,
                };
                ModelConfig {
                    architecture: arch,
                    vocab_size: need("vocab_size")?,
                    hidden_size: hidden,
                    num_layers: need("num_hidden_layers")?,
                    num_heads: heads,
                    num_kv_heads: get("num_key_value_heads").unwrap_or(heads),
                    head_dim,
                    ffn_dim: need("intermediate_size")?,
                    context_length: get("max_position_embeddings").unwrap_or(2048),
                    norm_eps: getf("rms_norm_eps").unwrap_or(1e-5),
                    rope_theta: getf("rope_theta").unwrap_or(10000.0),
                    rope_dim: head_dim,
                    rope_scaling,
                    tied_embeddings: v.get("tie_word_embeddings").and_then(|x| x.as_bool()).unwrap_or(false),
                    qkv_bias: model_type == "qwen2" || v.get("attention_bias").and_then(|x| x.as_bool()).unwrap_or(false),
                    sliding_window: if model_type == "mistral" { get("sliding_window") } else { None },
                }
            }
            Architecture::Gpt2 => {
                let hidden = need("n_embd")?;
                let heads = need("n_head")?;
                ModelConfig {
                    architecture: arch,
                    vocab_size: need("vocab_size")?,
                    hidden_size: hidden,
                    num_layers: need("n_layer")?,
                    num_heads: heads,
                    num_kv_heads: heads,
                    head_dim: hidden.checked_div(heads).unwrap_or(0),
                    ffn_dim: get("n_inner").unwrap_or(4 * hidden),
                    context_length: get("n_positions").or_else(|| get("n_ctx")).unwrap_or(1024),
                    norm_eps: getf("layer_norm_epsilon").unwrap_or(1e-5),
                    rope_theta: 0.0,
                    rope_dim: 0,
                    rope_scaling: None,
                    tied_embeddings: true,
                    qkv_bias: true,
                    sliding_window: None,
                }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes a Hugging Face `config.json` that [`ModelConfig::from_hf_json`] reads back
    /// unchanged (used by export).
    pub fn to_hf_json(&self) -> serde_json::Value {
        match self.architecture {
            Architecture::Llama => {
                let mut v = serde_json::json!({
                    "architectures": ["LlamaForCausalLM"],
                    "model_type": "llama",
                    "vocab_size": self.vocab_size,
                    "hidden_size": self.hidden_size,
                    "num_hidden_layers": self.num_layers,
                    "num_attention_heads": self.num_heads,
                    "num_key_value_heads": self.num_kv_heads,
                    "head_dim": self.head_dim,
                    "intermediate_size": self.ffn_dim,
                    "max_position_embeddings": self.context_length,
                    "rms_norm_eps": self.norm_eps,
                    "rope_theta": self.rope_theta,
                    "tie_word_embeddings": self.tied_embeddings,
                    "attention_bias": self.qkv_bias,
                    "hidden_act": "silu",
                    "torch_dtype": "float32",
                });
                match &self.rope_scaling {
                    Some(RopeScaling::Linear { factor }) => {
                        v["rope_scaling"] = serde_json::json!({"rope_type": "linear", "factor": factor});
                    }
                    Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
                        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": factor,
                            "low_freq_factor": low_freq_factor, "high_freq_factor": high_freq_factor,
                            "original_max_position_embeddings": original_max_position_embeddings});
                    }
                    None => {}
                }
                v
            }
            Architecture::Gpt2 => serde_json::json!({
                "architectures": ["GPT2LMHeadModel"],
                "model_type": "gpt2",
                "vocab_size": self.vocab_size,
                "n_embd": self.hidden_size,
                "n_layer": self.num_layers,
                "n_head": self.num_heads,
                "n_inner": self.ffn_dim,
                "n_positions": self.context_length,
                "layer_norm_epsilon": self.norm_eps,
                "activation_function": "gelu_new",
            }),
        }
    }

    /// Rotary inverse frequencies for the rotated part of a head, with scaling applied.
    /// Returns `rope_dim / 2` values.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        let half = self.rope_dim / 2;
        let mut out = Vec::with_capacity(half);
        for i in 0..half {
            let base = 1.0f64 / (self.rope_theta as f64).powf((2 * i) as f64 / self.rope_dim as f64);
            let f = match &self.rope_scaling {
                None => base,
                Some(RopeScaling::Linear { factor }) => base / *factor as f64,
                Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
                    let old = *original_max_position_embeddings as f64;
                    let low_wavelen = old / *low_freq_factor as f64;
                    let high_wavelen = old / *high_freq_factor as f64;
                    let wavelen = 2.0 * std::f64::consts::PI / base;
                    if wavelen < high_wavelen {
                        base
                    } else if wavelen > low_wavelen {
                        base / *factor as f64
                    } else {
                        let smooth = (old / wavelen - *low_freq_factor as f64)
                            / (*high_freq_factor as f64 - *low_freq_factor as f64);
                        (1.0 - smooth) * base / *factor as f64 + smooth * base
                    }
                }
            };
            out.push(f as f32);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_json_round_trip() {
        let text = r#"{"model_type":"llama","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,
            "max_position_embeddings":256,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true}"#;
        let cfg = ModelConfig::from_hf_json(text).unwrap();
        assert_eq!(cfg.head_dim, 16);
        assert_eq!(cfg.kv_dim(), 32);
        let back = ModelConfig::from_hf_json(&cfg.to_hf_json().to_string()).unwrap();
        assert_eq!(cfg, back);
    }

    #[test]
    fn heads_must_divide() {
        let text = r#"{"model_type":"gpt2","vocab_size":100,"n_embd":65,"n_layer":2,"n_head":4}"#;
        let err = ModelConfig::from_hf_json(text).unwrap_err();
        assert!(err.to_string().contains("not divisible"), "{err}");
    }

    #[test]
    fn unknown_architecture_is_an_error() {
        let err = ModelConfig::from_hf_json(r#"{"model_type":"mamba"}"#).unwrap_err();
        assert!(matches!(err, Error::UnsupportedArchitecture(_)));
    }
}
