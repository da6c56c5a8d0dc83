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
    /// Gemma 3: RMSNorm before *and after* each sub-layer, RMSNorm of every query and key
    /// head (QK-norm), rotary positions on half-split dimensions, a GeGLU MLP, embeddings
    /// scaled by √d, and sliding-window layers interleaved with global ones
    /// ([`LocalLayers`]).
    Gemma3,
}

impl Architecture {
    /// Maps an architecture name as written in GGUF (`general.architecture`) or HF
    /// (`model_type`) onto a family.
    pub fn from_name(name: &str) -> Result<Self> {
        match name.to_ascii_lowercase().as_str() {
            "llama" | "mistral" | "qwen2" | "smollm" | "smollm2" => Ok(Architecture::Llama),
            "gpt2" => Ok(Architecture::Gpt2),
            "gemma3" | "gemma3_text" => Ok(Architecture::Gemma3),
            other => Err(Error::UnsupportedArchitecture(other.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Gpt2 => "gpt2",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

/// Layers that attend through the sliding window, interleaved with global ones (Gemma 3):
/// every `global_every`-th layer (layers `global_every - 1`, `2·global_every - 1`, …) sees
/// the whole context with the model's `rope_theta` and scaling; the others see the last
/// `sliding_window` positions and rotate with `rope_theta` here, unscaled.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LocalLayers {
    pub global_every: usize,
    pub rope_theta: f32,
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
    /// Attention sees at most this many previous tokens (Mistral; Gemma 3's local layers).
    pub sliding_window: Option<usize>,
    /// When set, only these layers use `sliding_window` (Gemma 3); when not, all do.
    #[serde(default)]
    pub local_layers: Option<LocalLayers>,
}

impl ModelConfig {
    /// Checks the relations between sizes that the model code relies on.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 || self.num_heads == 0 {
            return bad("vocab_size, hidden_size, num_layers and num_heads must be positive".into());
        }
        if self.num_kv_heads == 0 || !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return bad(format!("num_heads ({}) must be a positive multiple of num_kv_heads ({})", self.num_heads, self.num_kv_heads));
        }
        if self.architecture == Architecture::Gpt2 && !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!("hidden_size ({}) is not divisible by num_heads ({})", self.hidden_size, self.num_heads));
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
        let positive = |x: f32| x.is_finite() && x > 0.0;
        if !positive(self.norm_eps) {
            return bad(format!(
                "norm_eps (config.json `rms_norm_eps` / `layer_norm_epsilon`, GGUF `*.attention.layer_norm_rms_epsilon` / \
                 `*.attention.layer_norm_epsilon`) must be a positive finite number, got {}",
                self.norm_eps
            ));
        }
        if self.rope_dim > 0 && !positive(self.rope_theta) {
            return bad(format!("rope_theta (config.json `rope_theta`, GGUF `*.rope.freq_base`) must be a positive finite number, got {}", self.rope_theta));
        }
        match &self.rope_scaling {
            None => {}
            Some(RopeScaling::Linear { factor }) if !positive(*factor) => {
                return bad(format!("rope_scaling.factor (GGUF `*.rope.scaling.factor`) must be a positive finite number, got {factor}"));
            }
            Some(RopeScaling::Linear { .. }) => {}
            Some(RopeScaling::Llama3 { factor, low_freq_factor, high_freq_factor, original_max_position_embeddings }) => {
                for (k, x) in [("factor", factor), ("low_freq_factor", low_freq_factor), ("high_freq_factor", high_freq_factor)] {
                    if !positive(*x) {
                        return bad(format!("rope_scaling.{k} must be a positive finite number, got {x}"));
                    }
                }
                if high_freq_factor <= low_freq_factor {
                    return bad(format!("rope_scaling.high_freq_factor ({high_freq_factor}) must be larger than low_freq_factor ({low_freq_factor})"));
                }
                if *original_max_position_embeddings == 0 {
                    return bad("rope_scaling.original_max_position_embeddings must be positive".into());
                }
            }
        }
        if let Some(l) = &self.local_layers {
            if self.sliding_window.is_none() || l.global_every == 0 || !positive(l.rope_theta) {
                return bad(format!(
                    "interleaved local layers need a sliding_window, a positive global_every and a positive finite rope_theta \
                     (got window {:?}, global_every {}, rope_theta {})",
                    self.sliding_window, l.global_every, l.rope_theta
                ));
            }
        }
        if self.sliding_window == Some(0) {
            return bad("sliding_window (GGUF `*.attention.sliding_window`) is 0, which would let attention see no token; \
                 leave it out (or null) for no window"
                .into());
        }
        Ok(())
    }

    /// Number of weight values of a model of this shape (the tensors the loaders and the
    /// trainable model create), computed without allocating anything.
    pub fn num_parameters(&self) -> u64 {
        let (v, c, f) = (self.vocab_size as u64, self.hidden_size as u64, self.ffn_dim as u64);
        let (qd, kvd) = ((self.num_heads as u64).saturating_mul(self.head_dim as u64), (self.num_kv_heads as u64).saturating_mul(self.head_dim as u64));
        let m = |a: u64, b: u64| a.saturating_mul(b);
        let per_layer = match self.architecture {
            Architecture::Llama => {
                let bias = if self.qkv_bias { qd + 2 * kvd } else { 0 };
                // norms, q/k/v/o, gate/up/down
                (2 * c).saturating_add(m(c, qd)).saturating_add(m(2 * c, kvd)).saturating_add(bias).saturating_add(m(qd, c)).saturating_add(m(3 * c, f))
            }
            // four norms, q/k norms, q/k/v/o, gate/up/down
            Architecture::Gemma3 => {
                (4 * c + 2 * self.head_dim as u64).saturating_add(m(c, qd)).saturating_add(m(2 * c, kvd)).saturating_add(m(qd, c)).saturating_add(m(3 * c, f))
            }
            // ln_1, ln_2 (weight + bias), c_attn, c_proj, c_fc, mlp c_proj (+ biases)
            Architecture::Gpt2 => (4 * c).saturating_add(m(c, 3 * c) + 3 * c).saturating_add(m(c, c) + c).saturating_add(m(2 * c, f)).saturating_add(f + c),
        };
        let layers = m(self.num_layers as u64, per_layer);
        let embed = m(v, c);
        let rest = match self.architecture {
            Architecture::Llama | Architecture::Gemma3 => c.saturating_add(if self.tied_embeddings { 0 } else { embed }),
            Architecture::Gpt2 => (2 * c).saturating_add(m(self.context_length as u64, c)),
        };
        layers.saturating_add(embed).saturating_add(rest)
    }

    /// Whether layer `layer` attends through the sliding window.
    pub fn is_local_layer(&self, layer: usize) -> bool {
        match &self.local_layers {
            None => self.sliding_window.is_some(),
            Some(l) => !(layer + 1).is_multiple_of(l.global_every),
        }
    }

    /// How many previous positions layer `layer` sees (itself included), `None` for all.
    pub fn layer_window(&self, layer: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.is_local_layer(layer))
    }

    /// The factor by which token embeddings are multiplied (Gemma scales them by √d).
    pub fn embedding_scale(&self) -> Option<f32> {
        (self.architecture == Architecture::Gemma3).then(|| (self.hidden_size as f32).sqrt())
    }

    /// Width of the query projection output.
    pub fn q_dim(&self) -> usize {
        self.num_heads * self.head_dim
    }

    /// Width of each of the key and value projection outputs.
    pub fn kv_dim(&self) -> usize {
        self.num_kv_heads * self.head_dim
    }

    /// Reads a Hugging Face `config.json` (Llama, Mistral, Qwen2 or GPT-2). A key that is
    /// present with the wrong type (a string where a count belongs, a negative head
    /// count, `rope_scaling` that is not an object) is an error naming the key and what
    /// it holds, never silently replaced by a default.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::InvalidConfig(format!("config.json: {e}")))?;
        if !v.is_object() {
            return Err(Error::InvalidConfig(format!("config.json must be a JSON object, not {}", json_kind(&v))));
        }
        let j = JsonKeys { v: &v, prefix: "" };
        let model_type = j.string("model_type")?.unwrap_or("llama");
        let arch = Architecture::from_name(model_type)?;
        let need = |k: &str| j.uint(k)?.ok_or_else(|| Error::InvalidConfig(format!("config.json has no `{k}`")));
        let cfg = match arch {
            Architecture::Gemma3 => {
                return Err(Error::InvalidConfig("Gemma 3 loads from GGUF files; a Hugging Face Gemma 3 folder is not supported yet".into()))
            }
            Architecture::Llama => {
                let hidden = need("hidden_size")?;
                let heads = need("num_attention_heads")?;
                let head_dim = j.uint("head_dim")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
                let rope_scaling = match v.get("rope_scaling") {
                    None | Some(serde_json::Value::Null) => None,
                    Some(s) if s.is_object() => {
                        let r = JsonKeys { v: s, prefix: "rope_scaling." };
                        let kind = match r.string("rope_type")? {
                            Some(k) => Some(k),
                            None => r.string("type")?,
                        };
                        let f = |k: &str, default: f32| -> Result<f32> { Ok(r.float(k)?.map_or(default, |x| x as f32)) };
                        match kind.unwrap_or("") {
                            "linear" => Some(RopeScaling::Linear { factor: f("factor", 1.0)? }),
                            "llama3" => Some(RopeScaling::Llama3 {
                                factor: f("factor", 1.0)?,
                                low_freq_factor: f("low_freq_factor", 1.0)?,
                                high_freq_factor: f("high_freq_factor", 4.0)?,
                                original_max_position_embeddings: r.uint("original_max_position_embeddings")?.unwrap_or(8192),
                            }),
                            "" | "default" => None,
                            other => return Err(Error::InvalidConfig(format!("unsupported rope_scaling type `{other}`"))),
                        }
                    }
                    Some(other) => {
                        return Err(Error::InvalidConfig(format!("config.json: `rope_scaling` must be an object or null, got {}", json_kind(other))))
                    }
                };
                ModelConfig {
                    architecture: arch,
                    vocab_size: need("vocab_size")?,
                    hidden_size: hidden,
                    num_layers: need("num_hidden_layers")?,
                    num_heads: heads,
                    num_kv_heads: j.uint("num_key_value_heads")?.unwrap_or(heads),
                    head_dim,
                    ffn_dim: need("intermediate_size")?,
                    context_length: j.uint("max_position_embeddings")?.unwrap_or(2048),
                    norm_eps: j.float("rms_norm_eps")?.map_or(1e-5, |x| x as f32),
                    rope_theta: j.float("rope_theta")?.map_or(10000.0, |x| x as f32),
                    rope_dim: head_dim,
                    rope_scaling,
                    tied_embeddings: j.boolean("tie_word_embeddings")?.unwrap_or(false),
                    qkv_bias: model_type == "qwen2" || j.boolean("attention_bias")?.unwrap_or(false),
                    sliding_window: if model_type == "mistral" { j.uint("sliding_window")? } else { None },
                    local_layers: None,
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
                    ffn_dim: j.uint("n_inner")?.unwrap_or(4 * hidden),
                    context_length: match j.uint("n_positions")? {
                        Some(n) => n,
                        None => j.uint("n_ctx")?.unwrap_or(1024),
                    },
                    norm_eps: j.float("layer_norm_epsilon")?.map_or(1e-5, |x| x as f32),
                    rope_theta: 0.0,
                    rope_dim: 0,
                    rope_scaling: None,
                    tied_embeddings: true,
                    qkv_bias: true,
                    sliding_window: None,
                    local_layers: None,
                }
            }
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Writes a Hugging Face `config.json`: for Llama and GPT-2 one that
    /// [`ModelConfig::from_hf_json`] reads back unchanged (used by export); for Gemma 3 the
    /// names of transformers' `Gemma3TextConfig`.
    pub fn to_hf_json(&self) -> serde_json::Value {
        match self.architecture {
            Architecture::Llama => {
                let mut v = self.rotary_hf_json("LlamaForCausalLM", "llama");
                v["attention_bias"] = self.qkv_bias.into();
                v["hidden_act"] = "silu".into();
                v["torch_dtype"] = "float32".into();
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
            Architecture::Gemma3 => {
                let mut v = self.rotary_hf_json("Gemma3ForCausalLM", "gemma3_text");
                v["query_pre_attn_scalar"] = self.head_dim.into();
                v["rope_local_base_freq"] = self.local_layers.map(|l| l.rope_theta).into();
                v["sliding_window"] = self.sliding_window.into();
                v["sliding_window_pattern"] = self.local_layers.map(|l| l.global_every).into();
                v["hidden_activation"] = "gelu_pytorch_tanh".into();
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

    /// The `config.json` keys rotary decoders share (Llama's and Gemma's names).
    fn rotary_hf_json(&self, class: &str, model_type: &str) -> serde_json::Value {
        serde_json::json!({
            "architectures": [class],
            "model_type": model_type,
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
        })
    }

    /// Rotary inverse frequencies for the rotated part of a head, with scaling applied.
    /// Returns `rope_dim / 2` values.
    pub fn rope_inv_freq(&self) -> Vec<f32> {
        inv_freq(self.rope_theta, self.rope_dim, self.rope_scaling.as_ref())
    }

    /// The inverse frequencies of the sliding-window layers when they have a base of
    /// their own ([`LocalLayers`]; unscaled, as llama.cpp and transformers do).
    pub fn rope_inv_freq_local(&self) -> Option<Vec<f32>> {
        self.local_layers.map(|l| inv_freq(l.rope_theta, self.rope_dim, None))
    }
}

/// `rope_dim / 2` rotary inverse frequencies of base `theta`, with `scaling` applied.
fn inv_freq(theta: f32, rope_dim: usize, scaling: Option<&RopeScaling>) -> Vec<f32> {
    let half = rope_dim / 2;
    let mut out = Vec::with_capacity(half);
    for i in 0..half {
        let base = 1.0f64 / (theta as f64).powf((2 * i) as f64 / rope_dim as f64);
        let f = match scaling {
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
                    let smooth = (old / wavelen - *low_freq_factor as f64) / (*high_freq_factor as f64 - *low_freq_factor as f64);
                    (1.0 - smooth) * base / *factor as f64 + smooth * base
                }
            }
        };
        out.push(f as f32);
    }
    out
}

/// What a JSON value is, for error messages: `string "64"`, `number -4`, `an array`.
fn json_kind(x: &serde_json::Value) -> String {
    use serde_json::Value as V;
    match x {
        V::Null => "null".into(),
        V::Bool(b) => format!("boolean {b}"),
        V::Number(n) => format!("number {n}"),
        V::String(s) => format!("string {s:?}"),
        V::Array(_) => "an array".into(),
        V::Object(_) => "an object".into(),
    }
}

/// Typed, optional keys of one JSON object: absent or `null` is `None`, present with
/// another type is an error naming the key (with `prefix`, e.g. `rope_scaling.`).
struct JsonKeys<'a> {
    v: &'a serde_json::Value,
    prefix: &'a str,
}

impl<'a> JsonKeys<'a> {
    fn get(&self, k: &str) -> Option<&'a serde_json::Value> {
        self.v.get(k).filter(|x| !x.is_null())
    }

    fn wrong(&self, k: &str, want: &str, got: &serde_json::Value) -> Error {
        Error::InvalidConfig(format!("config.json: `{}{k}` must be {want}, got {}", self.prefix, json_kind(got)))
    }

    fn uint(&self, k: &str) -> Result<Option<usize>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x.as_u64().map(|n| Some(n as usize)).ok_or_else(|| self.wrong(k, "a non-negative integer", x)),
        }
    }

    fn float(&self, k: &str) -> Result<Option<f64>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x.as_f64().map(Some).ok_or_else(|| self.wrong(k, "a number", x)),
        }
    }

    fn boolean(&self, k: &str) -> Result<Option<bool>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x.as_bool().map(Some).ok_or_else(|| self.wrong(k, "true or false", x)),
        }
    }

    fn string(&self, k: &str) -> Result<Option<&'a str>> {
        match self.get(k) {
            None => Ok(None),
            Some(x) => x.as_str().map(Some).ok_or_else(|| self.wrong(k, "a string", x)),
        }
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

    /// A valid Llama config.json with `key` set to the JSON `value` (`None` removes it).
    fn llama_with(key: &str, value: Option<&str>) -> Result<ModelConfig> {
        let mut v: serde_json::Value = serde_json::from_str(
            r#"{"model_type":"mistral","vocab_size":100,"hidden_size":64,"num_hidden_layers":2,
            "num_attention_heads":4,"num_key_value_heads":2,"intermediate_size":128,
            "max_position_embeddings":256,"rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true}"#,
        )
        .unwrap();
        match value {
            Some(x) => v[key] = serde_json::from_str(x).unwrap(),
            None => {
                v.as_object_mut().unwrap().remove(key);
            }
        }
        ModelConfig::from_hf_json(&v.to_string())
    }

    fn err_of(r: Result<ModelConfig>) -> String {
        r.expect_err("accepted a config that cannot be right").to_string()
    }

    #[test]
    fn hf_values_that_cannot_be_right_are_refused_naming_the_key() {
        assert!(llama_with("head_dim", None).is_ok());
        for (key, value, want) in [
            ("rope_theta", "0", "rope_theta"),
            ("rope_theta", "-10000.0", "rope_theta"),
            ("rms_norm_eps", "0", "norm_eps"),
            ("rms_norm_eps", "-1e-5", "norm_eps"),
            ("sliding_window", "0", "sliding_window"),
            ("head_dim", "-16", "`head_dim` must be a non-negative integer, got number -16"),
            ("head_dim", "\"16\"", "`head_dim` must be a non-negative integer, got string \"16\""),
            ("num_key_value_heads", "\"2\"", "`num_key_value_heads` must be a non-negative integer, got string"),
            ("num_key_value_heads", "-2", "`num_key_value_heads` must be a non-negative integer, got number -2"),
            ("num_attention_heads", "4.5", "`num_attention_heads` must be a non-negative integer, got number 4.5"),
            ("rope_scaling", "\"linear\"", "`rope_scaling` must be an object or null, got string \"linear\""),
            ("rope_scaling", "[2.0]", "`rope_scaling` must be an object or null, got an array"),
            ("rope_scaling", r#"{"rope_type":"linear","factor":"2"}"#, "`rope_scaling.factor` must be a number, got string"),
            ("rope_scaling", r#"{"rope_type":"linear","factor":0}"#, "rope_scaling.factor"),
            ("rope_scaling", r#"{"rope_type":7}"#, "`rope_scaling.rope_type` must be a string"),
            ("rms_norm_eps", "\"small\"", "`rms_norm_eps` must be a number, got string"),
            ("tie_word_embeddings", "1", "`tie_word_embeddings` must be true or false, got number 1"),
            ("model_type", "3", "`model_type` must be a string, got number 3"),
        ] {
            let e = err_of(llama_with(key, Some(value)));
            assert!(e.contains(want), "{key} = {value}: {e}");
        }
        // null means "not set", as in transformers.
        assert_eq!(llama_with("sliding_window", Some("null")).unwrap().sliding_window, None);
        assert_eq!(llama_with("sliding_window", Some("4096")).unwrap().sliding_window, Some(4096));
        assert_eq!(llama_with("rope_scaling", Some("null")).unwrap().rope_scaling, None);
    }

    #[test]
    fn non_finite_values_from_any_source_are_refused() {
        let good = ModelConfig::from_hf_json(&llama_with("head_dim", None).unwrap().to_hf_json().to_string()).unwrap();
        let cases: Vec<(ModelConfig, &str)> = vec![
            (ModelConfig { rope_theta: f32::NAN, ..good.clone() }, "rope_theta"),
            (ModelConfig { rope_theta: f32::INFINITY, ..good.clone() }, "rope_theta"),
            (ModelConfig { norm_eps: f32::NAN, ..good.clone() }, "norm_eps"),
            (ModelConfig { rope_scaling: Some(RopeScaling::Linear { factor: f32::NAN }), ..good.clone() }, "rope_scaling.factor"),
            (
                ModelConfig {
                    rope_scaling: Some(RopeScaling::Llama3 {
                        factor: 8.0,
                        low_freq_factor: 4.0,
                        high_freq_factor: 4.0,
                        original_max_position_embeddings: 8192,
                    }),
                    ..good.clone()
                },
                "high_freq_factor",
            ),
        ];
        for (cfg, want) in cases {
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(want), "{e}");
        }
        // GPT-2 has no rotary embedding: its rope_theta of 0 is not checked.
        let gpt2 = ModelConfig::from_hf_json(r#"{"model_type":"gpt2","vocab_size":100,"n_embd":64,"n_layer":2,"n_head":4}"#).unwrap();
        assert_eq!(gpt2.rope_theta, 0.0);
    }

    #[test]
    fn gemma3_interleaves_five_local_layers_with_one_global() {
        let base = ModelConfig::from_hf_json(&llama_with("head_dim", None).unwrap().to_hf_json().to_string()).unwrap();
        let cfg = ModelConfig {
            architecture: Architecture::Gemma3,
            num_layers: 18,
            sliding_window: Some(512),
            local_layers: Some(LocalLayers { global_every: 6, rope_theta: 10_000.0 }),
            rope_theta: 1_000_000.0,
            ..base.clone()
        };
        cfg.validate().unwrap();
        let global: Vec<usize> = (0..18).filter(|&l| cfg.layer_window(l).is_none()).collect();
        assert_eq!(global, [5, 11, 17]);
        assert_eq!(cfg.layer_window(0), Some(512));
        // The local layers rotate with their own base: 10 000^(-2/16) for the second pair.
        assert!((cfg.rope_inv_freq_local().unwrap()[1] - 10_000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
        assert!((cfg.rope_inv_freq()[1] - 1_000_000f32.powf(-2.0 / 16.0)).abs() < 1e-7);
        assert_eq!(cfg.embedding_scale(), Some((cfg.hidden_size as f32).sqrt()));
        let hf = cfg.to_hf_json();
        assert_eq!(
            (hf["model_type"].as_str(), hf["sliding_window_pattern"].as_u64(), hf["rope_local_base_freq"].as_f64()),
            (Some("gemma3_text"), Some(6), Some(10_000.0))
        );
        // Without local layers (Mistral) the window applies everywhere.
        let mistral = ModelConfig { sliding_window: Some(4096), ..base.clone() };
        assert!((0..2).all(|l| mistral.layer_window(l) == Some(4096)));
        let e = ModelConfig { sliding_window: None, ..cfg.clone() }.validate().unwrap_err().to_string();
        assert!(e.contains("need a sliding_window"), "{e}");
        let e = ModelConfig { local_layers: Some(LocalLayers { global_every: 0, rope_theta: 1.0 }), ..cfg }.validate().unwrap_err().to_string();
        assert!(e.contains("global_every 0"), "{e}");
    }

    #[test]
    fn unknown_architecture_is_an_error() {
        let err = ModelConfig::from_hf_json(r#"{"model_type":"mamba"}"#).unwrap_err();
        assert!(matches!(err, Error::UnsupportedArchitecture(_)));
    }
}
