//! The hyper-parameters of a BERT-family encoder (all-MiniLM-L6-v2 and its kin), read
//! from a Hugging Face `config.json` (`model_type: bert`) and, where present,
//! sentence-transformers' `sentence_bert_config.json` (the longest input it embeds).
//! Encoders are not decoders: no KV cache, no vocabulary head, no rotary angles, so they
//! have their own configuration rather than more optional fields on [`crate::ModelConfig`].

use crate::{Error, Result};
use serde_json::Value;

/// Everything needed to build a BERT encoder.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    /// Inner width of the MLP.
    pub ffn_dim: usize,
    /// Rows of the learned position table.
    pub max_positions: usize,
    /// Rows of the token-type (segment) table.
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    pub norm_eps: f32,
    /// The longest input, in word pieces with `[CLS]`/`[SEP]`, that the model embeds:
    /// sentence-transformers' `max_seq_length` when given, else `max_positions`. Longer
    /// inputs are truncated to it, as sentence-transformers does.
    pub max_tokens: usize,
}

impl EncoderConfig {
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Reads `config.json` text, with the text of `sentence_bert_config.json` if there is one.
    pub fn from_hf_json(config: &str, sentence_config: Option<&str>) -> Result<Self> {
        let bad = |m: String| Error::InvalidConfig(format!("config.json: {m}"));
        let j: Value = serde_json::from_str(config).map_err(|e| bad(e.to_string()))?;
        let model_type = j.get("model_type").and_then(Value::as_str).unwrap_or("");
        if model_type != "bert" {
            return Err(Error::UnsupportedArchitecture(format!("{model_type} (encoders: bert)")));
        }
        let uint = |k: &str| -> Result<Option<usize>> {
            match j.get(k).filter(|v| !v.is_null()) {
                None => Ok(None),
                Some(v) => v.as_u64().map(|n| Some(n as usize)).ok_or_else(|| bad(format!("`{k}` must be a non-negative integer, got {v}"))),
            }
        };
        let need = |k: &str| uint(k)?.ok_or_else(|| bad(format!("`{k}` is missing")));
        if let Some(act) = j.get("hidden_act").and_then(Value::as_str) {
            if act != "gelu" {
                return Err(bad(format!("hidden_act `{act}` is not supported (gelu)")));
            }
        }
        if let Some(p) = j.get("position_embedding_type").and_then(Value::as_str) {
            if p != "absolute" {
                return Err(bad(format!("position_embedding_type `{p}` is not supported (absolute)")));
            }
        }
        let max_positions = uint("max_position_embeddings")?.unwrap_or(512);
        let max_tokens = match sentence_config {
            None => max_positions,
            Some(text) => {
                let s: Value = serde_json::from_str(text).map_err(|e| Error::InvalidConfig(format!("sentence_bert_config.json: {e}")))?;
                match s.get("max_seq_length").and_then(Value::as_u64) {
                    Some(n) => (n as usize).min(max_positions),
                    None => max_positions,
                }
            }
        };
        let cfg = EncoderConfig {
            vocab_size: need("vocab_size")?,
            hidden_size: need("hidden_size")?,
            num_layers: need("num_hidden_layers")?,
            num_heads: need("num_attention_heads")?,
            ffn_dim: need("intermediate_size")?,
            max_positions,
            type_vocab_size: uint("type_vocab_size")?.unwrap_or(2),
            norm_eps: j.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12) as f32,
            max_tokens,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 || self.num_heads == 0 || self.ffn_dim == 0 {
            return bad("vocab_size, hidden_size, num_hidden_layers, num_attention_heads and intermediate_size must be positive".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) {
            return bad(format!("hidden_size ({}) is not divisible by num_attention_heads ({})", self.hidden_size, self.num_heads));
        }
        if self.max_positions == 0 || self.max_tokens < 2 || self.type_vocab_size == 0 {
            return bad("max_position_embeddings, max_seq_length (at least 2) and type_vocab_size must be positive".into());
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return bad(format!("layer_norm_eps must be a positive finite number, got {}", self.norm_eps));
        }
        Ok(())
    }
}

/// Whether a `config.json` describes an encoder (BERT family) rather than a decoder.
pub fn is_encoder_config(config: &str) -> bool {
    serde_json::from_str::<Value>(config).ok().and_then(|j| j.get("model_type").and_then(Value::as_str).map(|t| t == "bert")).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures":["BertModel"],"hidden_act":"gelu","hidden_size":384,"intermediate_size":1536,
        "layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert","num_attention_heads":12,
        "num_hidden_layers":6,"position_embedding_type":"absolute","type_vocab_size":2,"vocab_size":30522}"#;

    #[test]
    fn minilm_config_reads_with_the_sentence_transformers_limit() {
        let c = EncoderConfig::from_hf_json(MINILM, Some(r#"{"max_seq_length": 256, "do_lower_case": false}"#)).unwrap();
        assert_eq!((c.hidden_size, c.num_layers, c.num_heads, c.ffn_dim, c.head_dim()), (384, 6, 12, 1536, 32));
        assert_eq!((c.max_positions, c.max_tokens), (512, 256));
        assert_eq!(EncoderConfig::from_hf_json(MINILM, None).unwrap().max_tokens, 512);
        assert!(is_encoder_config(MINILM));
        assert!(!is_encoder_config(r#"{"model_type":"llama"}"#));
    }

    #[test]
    fn unsupported_encoders_are_refused_by_name() {
        let e = EncoderConfig::from_hf_json(&MINILM.replace("\"gelu\"", "\"relu\""), None).unwrap_err().to_string();
        assert!(e.contains("hidden_act `relu`"), "{e}");
        let e = EncoderConfig::from_hf_json(&MINILM.replace("\"absolute\"", "\"relative_key\""), None).unwrap_err().to_string();
        assert!(e.contains("relative_key"), "{e}");
        let e = EncoderConfig::from_hf_json(&MINILM.replace("\"num_attention_heads\":12", "\"num_attention_heads\":7"), None).unwrap_err().to_string();
        assert!(e.contains("not divisible"), "{e}");
        assert!(matches!(EncoderConfig::from_hf_json(r#"{"model_type":"roberta"}"#, None), Err(Error::UnsupportedArchitecture(_))));
    }
}
