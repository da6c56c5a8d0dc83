//! [`TrainConfig`]: every knob of a pre-training run, read from TOML. Keys are flat (like
//! nanoGPT's config files) so that each one is also a CLI flag: `--lr 3e-4` sets `lr`.

use lamina_core::{Architecture, Error, ModelConfig, Result};
use serde::{Deserialize, Deserializer, Serialize};
use std::path::{Path, PathBuf};

/// A pre-training run. Unset keys take the defaults of [`TrainConfig::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainConfig {
    // ---- data ----
    /// Text files and/or folders (read recursively; hidden files skipped).
    #[serde(deserialize_with = "one_or_many")]
    pub data: Vec<PathBuf>,
    /// `"char"` (character vocabulary built from the corpus) or a path to a tokenizer.json.
    pub tokenizer: String,
    /// Token cache file; default: beside the data (`FILE.lamina-tokens` or `DIR/.lamina-tokens`).
    pub cache: Option<PathBuf>,
    /// Token id width in the cache: `"auto"` (u16 when the vocabulary fits), `"u16"` or `"u32"`.
    pub token_dtype: String,
    /// Run folder: metrics.jsonl, loss.png and the checkpoints `step-NNNNNN/` + `latest`.
    pub out_dir: PathBuf,

    // ---- model ----
    pub arch: Architecture,
    pub n_layer: usize,
    pub n_head: usize,
    /// Key/value heads (Llama GQA); default `n_head`.
    pub n_kv_head: Option<usize>,
    pub n_embd: usize,
    /// MLP inner width; default 4·n_embd (GPT-2) or 8/3·n_embd rounded up to 32 (Llama).
    pub ffn_dim: Option<usize>,
    /// Context length trained on (`block_size`).
    pub block_size: usize,
    /// Model vocabulary; default the tokenizer's vocabulary size.
    pub vocab_size: Option<usize>,
    /// Llama only: share the embedding with the output head (GPT-2 always does).
    pub tied_embeddings: bool,
    /// Llama only: biases on q/k/v (GPT-2 always has biases).
    pub qkv_bias: bool,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// `"f32"` or `"f64"`.
    pub dtype: String,
    /// How gradients are computed: `"fused"` (hand-written forward/backward kernels, f32,
    /// the fast path), `"autograd"` (candle autograd, the reference; f32 or f64) or
    /// `"auto"` (fused for f32, autograd for f64).
    pub engine: String,

    // ---- optimisation ----
    pub batch_size: usize,
    pub grad_accum: usize,
    pub max_iters: usize,
    /// Stop (with a checkpoint) after this step without changing the schedule.
    pub stop_at: Option<usize>,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup_iters: usize,
    pub lr_decay_iters: usize,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Clip the global gradient norm to this (0 = off).
    pub grad_clip: f64,
    pub seed: u64,
    /// Compute threads (0 = all CPUs).
    pub threads: usize,

    // ---- monitoring ----
    pub log_interval: usize,
    pub eval_interval: usize,
    pub eval_iters: usize,
    /// Checkpoint every N steps (0 = only at the end).
    pub checkpoint_interval: usize,
    /// Keep only the newest N checkpoints of the run folder (0 = keep all). The one
    /// `latest` names is never deleted.
    pub keep_last: usize,
    /// Tokens generated for the sample shown at each evaluation (0 = none).
    pub sample_tokens: usize,
    /// 0 = greedy.
    pub temperature: f64,
    pub sample_prompt: String,
    /// Show an indicatif progress bar (the CLI's callbacks).
    pub progress: bool,
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<PathBuf>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(PathBuf),
        Many(Vec<PathBuf>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            data: Vec::new(),
            tokenizer: "char".into(),
            cache: None,
            token_dtype: "auto".into(),
            out_dir: PathBuf::from("out"),
            arch: Architecture::Gpt2,
            n_layer: 4,
            n_head: 4,
            n_kv_head: None,
            n_embd: 128,
            ffn_dim: None,
            block_size: 64,
            vocab_size: None,
            tied_embeddings: true,
            qkv_bias: false,
            rope_theta: 10000.0,
            norm_eps: 1e-5,
            dtype: "f32".into(),
            engine: "auto".into(),
            batch_size: 12,
            grad_accum: 1,
            max_iters: 2000,
            stop_at: None,
            lr: 1e-3,
            min_lr: 1e-4,
            warmup_iters: 100,
            lr_decay_iters: 2000,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
            grad_clip: 1.0,
            seed: 1337,
            threads: 0,
            log_interval: 10,
            eval_interval: 250,
            eval_iters: 20,
            checkpoint_interval: 0,
            keep_last: 3,
            sample_tokens: 200,
            temperature: 0.8,
            sample_prompt: "\n".into(),
            progress: true,
        }
    }
}

impl TrainConfig {
    /// Every key, in file order (each is also a `--key` CLI flag, `_` written `-`).
    pub const KEYS: &'static [&'static str] = &[
        "data",
        "tokenizer",
        "cache",
        "token_dtype",
        "out_dir",
        "arch",
        "n_layer",
        "n_head",
        "n_kv_head",
        "n_embd",
        "ffn_dim",
        "block_size",
        "vocab_size",
        "tied_embeddings",
        "qkv_bias",
        "rope_theta",
        "norm_eps",
        "dtype",
        "engine",
        "batch_size",
        "grad_accum",
        "max_iters",
        "stop_at",
        "lr",
        "min_lr",
        "warmup_iters",
        "lr_decay_iters",
        "beta1",
        "beta2",
        "eps",
        "weight_decay",
        "grad_clip",
        "seed",
        "threads",
        "log_interval",
        "eval_interval",
        "eval_iters",
        "checkpoint_interval",
        "keep_last",
        "sample_tokens",
        "temperature",
        "sample_prompt",
        "progress",
    ];

    pub fn from_toml_str(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::InvalidConfig(format!("training config: {e}")))
    }

    pub fn from_toml_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        toml::from_str(&text).map_err(|e| Error::InvalidConfig(format!("{}: {e}", path.display())))
    }

    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::InvalidConfig(format!("cannot write config as TOML: {e}")))
    }

    /// Overrides one key from a command-line string. The value is read as a TOML value
    /// (`3e-4`, `true`, `[\"a.txt\", \"b.txt\"]`), falling back to a plain string
    /// (`gpt2`, `data/input.txt`). Unknown keys and ill-typed values are errors.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.replace('-', "_");
        if !Self::KEYS.contains(&key.as_str()) {
            return Err(Error::InvalidConfig(format!("unknown training config key `{key}`")));
        }
        let mut table = match toml::Value::try_from(&*self) {
            Ok(toml::Value::Table(t)) => t,
            _ => return Err(Error::InvalidConfig("cannot represent the config as a TOML table".into())),
        };
        let parsed = toml::from_str::<toml::Table>(&format!("v = {value}")).ok().and_then(|mut t| t.remove("v"));
        let current = table.get(&key);
        let v = match (parsed, current) {
            // Strings stay strings even when they look like numbers (a prompt "1").
            (_, Some(toml::Value::String(_))) => toml::Value::String(value.to_string()),
            (Some(toml::Value::Integer(i)), Some(toml::Value::Float(_))) => toml::Value::Float(i as f64),
            (Some(p), _) => p,
            (None, _) => toml::Value::String(value.to_string()),
        };
        table.insert(key.clone(), v);
        *self = toml::Value::Table(table).try_into().map_err(|e| Error::InvalidConfig(format!("--{}: {e}", key.replace('_', "-"))))?;
        Ok(())
    }

    /// Checks ranges that would otherwise fail deep inside the trainer.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.data.is_empty() {
            return bad("no training data: set `data` to a text file or folder".into());
        }
        for (k, v) in [
            ("batch_size", self.batch_size),
            ("block_size", self.block_size),
            ("grad_accum", self.grad_accum),
            ("max_iters", self.max_iters),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("eval_iters", self.eval_iters),
            ("eval_interval", self.eval_interval),
            ("log_interval", self.log_interval),
        ] {
            if v == 0 {
                return bad(format!("`{k}` must be positive"));
            }
        }
        // NaN fails both: it is neither positive nor non-negative.
        let positive = |x: f64| x > 0.0;
        let non_negative = |x: f64| x >= 0.0;
        if !positive(self.lr) || self.min_lr < 0.0 || self.min_lr > self.lr {
            return bad(format!("need 0 <= min_lr ({}) <= lr ({}) and lr > 0", self.min_lr, self.lr));
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return bad("beta1 and beta2 must be in [0, 1)".into());
        }
        if !positive(self.eps) || !non_negative(self.weight_decay) || !non_negative(self.grad_clip) {
            return bad("eps must be positive; weight_decay and grad_clip non-negative".into());
        }
        lamina_core::sampling::check_temperature(self.temperature).map_err(Error::InvalidConfig)?;
        if !matches!(self.dtype.as_str(), "f32" | "f64") {
            return bad(format!("dtype must be f32 or f64, not `{}`", self.dtype));
        }
        match (self.engine.as_str(), self.dtype.as_str()) {
            ("auto" | "autograd", _) | ("fused", "f32") => {}
            ("fused", d) => return bad(format!("engine = \"fused\" trains in f32, not {d}; use engine = \"autograd\"")),
            (e, _) => return bad(format!("engine must be auto, fused or autograd, not `{e}`")),
        }
        if !matches!(self.token_dtype.as_str(), "auto" | "u16" | "u32") {
            return bad(format!("token_dtype must be auto, u16 or u32, not `{}`", self.token_dtype));
        }
        Ok(())
    }

    /// Whether the run uses the fused kernels (see [`TrainConfig::engine`]).
    pub fn fused(&self) -> bool {
        match self.engine.as_str() {
            "fused" => true,
            "autograd" => false,
            _ => self.dtype == "f32",
        }
    }

    pub fn candle_dtype(&self) -> Result<candle_core::DType> {
        match self.dtype.as_str() {
            "f32" => Ok(candle_core::DType::F32),
            "f64" => Ok(candle_core::DType::F64),
            other => Err(Error::InvalidConfig(format!("dtype must be f32 or f64, not `{other}`"))),
        }
    }

    /// The model shape for a tokenizer of `tokenizer_vocab` tokens.
    pub fn model_config(&self, tokenizer_vocab: usize) -> Result<ModelConfig> {
        let vocab = self.vocab_size.unwrap_or(tokenizer_vocab);
        if vocab < tokenizer_vocab {
            return Err(Error::InvalidConfig(format!("vocab_size {vocab} is smaller than the tokenizer's vocabulary ({tokenizer_vocab})")));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(Error::InvalidConfig(format!("n_embd ({}) is not divisible by n_head ({})", self.n_embd, self.n_head)));
        }
        let head_dim = self.n_embd / self.n_head;
        let cfg = match self.arch {
            Architecture::Gemma3 => return Err(Error::InvalidConfig("pre-training a Gemma 3 model is not supported yet (arch = llama or gpt2)".into())),
            Architecture::Gpt2 => ModelConfig {
                architecture: Architecture::Gpt2,
                vocab_size: vocab,
                hidden_size: self.n_embd,
                num_layers: self.n_layer,
                num_heads: self.n_head,
                num_kv_heads: self.n_head,
                head_dim,
                ffn_dim: self.ffn_dim.unwrap_or(4 * self.n_embd),
                context_length: self.block_size,
                norm_eps: self.norm_eps,
                rope_theta: 0.0,
                rope_dim: 0,
                rope_scaling: None,
                tied_embeddings: true,
                qkv_bias: true,
                sliding_window: None,
                local_layers: None,
            },
            Architecture::Llama => ModelConfig {
                architecture: Architecture::Llama,
                vocab_size: vocab,
                hidden_size: self.n_embd,
                num_layers: self.n_layer,
                num_heads: self.n_head,
                num_kv_heads: self.n_kv_head.unwrap_or(self.n_head),
                head_dim,
                ffn_dim: self.ffn_dim.unwrap_or((8 * self.n_embd / 3).div_ceil(32) * 32),
                context_length: self.block_size,
                norm_eps: self.norm_eps,
                rope_theta: self.rope_theta,
                rope_dim: head_dim,
                rope_scaling: None,
                tied_embeddings: self.tied_embeddings,
                qkv_bias: self.qkv_bias,
                sliding_window: None,
                local_layers: None,
            },
        };
        lamina_model::trainable::validate_for_training(&cfg)?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_a_field_and_settable() {
        let mut c = TrainConfig::default();
        c.set("lr", "3e-4").unwrap();
        assert_eq!(c.lr, 3e-4);
        c.set("lr", "1").unwrap();
        assert_eq!(c.lr, 1.0);
        c.set("arch", "llama").unwrap();
        assert_eq!(c.arch, Architecture::Llama);
        c.set("data", "input.txt").unwrap();
        assert_eq!(c.data, vec![PathBuf::from("input.txt")]);
        c.set("n-kv-head", "2").unwrap();
        assert_eq!(c.n_kv_head, Some(2));
        c.set("sample_prompt", "42").unwrap();
        assert_eq!(c.sample_prompt, "42");
        assert!(c.set("nope", "1").is_err());
        assert!(c.set("n_layer", "abc").is_err());
        // Every key round-trips through a TOML file that sets it.
        let text = c.to_toml_string().unwrap();
        assert_eq!(TrainConfig::from_toml_str(&text).unwrap(), c);
        for k in TrainConfig::KEYS {
            let probe = format!("{k} = 0");
            let err = TrainConfig::from_toml_str(&probe).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!err.contains("unknown field"), "{k}: {err}");
        }
    }

    #[test]
    fn heads_must_divide_embedding() {
        let c = TrainConfig { n_embd: 130, n_head: 4, ..Default::default() };
        let e = c.model_config(65).unwrap_err().to_string();
        assert!(e.contains("not divisible"), "{e}");
    }
}
