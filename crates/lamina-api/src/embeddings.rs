//! `POST /v1/embeddings`: request and response bodies (OpenAI API reference,
//! "Embeddings" → "Create embeddings").
//!
//! `input` is a string, an array of strings, an array of token ids or an array of such
//! arrays (the same shapes as a completion's `prompt`). `encoding_format` is `float` (the
//! default: arrays of numbers) or `base64` (each vector's little-endian f32 bytes, base64
//! encoded). `dimensions` asks for shorter vectors, which only models trained for it
//! allow; the server refuses it otherwise.

use crate::completions::{Prompt, PromptItem};
use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// Most inputs in one request (OpenAI's limit).
pub const MAX_EMBEDDING_INPUTS: usize = 2048;

#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct EmbeddingRequest {
    pub model: String,
    pub input: Prompt,
    #[serde(default)]
    pub encoding_format: Option<EncodingFormat>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncodingFormat {
    #[default]
    Float,
    Base64,
}

impl EmbeddingRequest {
    /// Checks what can be checked without the model: at least one input, none empty, at
    /// most [`MAX_EMBEDDING_INPUTS`], and a positive `dimensions`.
    pub fn validate(&self) -> Result<(), ApiError> {
        let items = self.input.items();
        if items.is_empty() {
            return Err(ApiError::invalid_param("input", "`input` must hold at least one string or token array"));
        }
        if items.len() > MAX_EMBEDDING_INPUTS {
            return Err(ApiError::invalid_param("input", format!("`input` holds {} items; at most {MAX_EMBEDDING_INPUTS} are allowed", items.len())));
        }
        for (i, item) in items.iter().enumerate() {
            let empty = match item {
                PromptItem::Text(t) => t.is_empty(),
                PromptItem::Tokens(t) => t.is_empty(),
            };
            if empty {
                return Err(ApiError::invalid_param("input", format!("input {i} is empty; every input must have text or tokens")));
            }
        }
        if self.dimensions == Some(0) {
            return Err(ApiError::invalid_param("dimensions", "`dimensions` must be at least 1"));
        }
        Ok(())
    }

    pub fn format(&self) -> EncodingFormat {
        self.encoding_format.unwrap_or_default()
    }
}

/// One vector, as numbers or as base64 of its little-endian f32 bytes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingVector {
    Float(Vec<f32>),
    Base64(String),
}

impl EmbeddingVector {
    pub fn encode(v: &[f32], format: EncodingFormat) -> EmbeddingVector {
        match format {
            EncodingFormat::Float => EmbeddingVector::Float(v.to_vec()),
            EncodingFormat::Base64 => EmbeddingVector::Base64(base64(&v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingObject {
    pub object: String,
    pub index: u32,
    pub embedding: EmbeddingVector,
}

/// `usage` of an embeddings response: input tokens only.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmbeddingUsage {
    pub prompt_tokens: u32,
    pub total_tokens: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EmbeddingList {
    pub object: String,
    pub data: Vec<EmbeddingObject>,
    pub model: String,
    pub usage: EmbeddingUsage,
}

impl EmbeddingList {
    pub fn new(model: impl Into<String>, vectors: Vec<EmbeddingVector>, prompt_tokens: u32) -> Self {
        let data = vectors.into_iter().enumerate().map(|(i, embedding)| EmbeddingObject { object: "embedding".into(), index: i as u32, embedding }).collect();
        EmbeddingList { object: "list".into(), data, model: model.into(), usage: EmbeddingUsage { prompt_tokens, total_tokens: prompt_tokens } }
    }
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (raw, want) in [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="), ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")] {
            assert_eq!(base64(raw.as_bytes()), want);
        }
        // 1.0f32 is 00 00 80 3f little-endian.
        assert_eq!(EmbeddingVector::encode(&[1.0], EncodingFormat::Base64), EmbeddingVector::Base64("AACAPw==".into()));
    }

    #[test]
    fn requests_parse_and_bad_ones_are_named() {
        let r: EmbeddingRequest = parse_json(br#"{"model":"m","input":["a","b"],"encoding_format":"base64"}"#).unwrap();
        assert_eq!(r.input.items().len(), 2);
        assert_eq!(r.format(), EncodingFormat::Base64);
        r.validate().unwrap();
        let r: EmbeddingRequest = parse_json(br#"{"model":"m","input":[[1,2],[3]]}"#).unwrap();
        assert_eq!(r.format(), EncodingFormat::Float);
        for (body, param) in [
            (r#"{"model":"m","input":[]}"#, "input"),
            (r#"{"model":"m","input":""}"#, "input"),
            (r#"{"model":"m","input":["a",[]]}"#, "input"),
            (r#"{"model":"m","input":"a","dimensions":0}"#, "dimensions"),
        ] {
            let e = parse_json::<EmbeddingRequest>(body.as_bytes()).and_then(|r| r.validate()).unwrap_err();
            assert_eq!(e.status, 400, "{body}");
            assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
        }
        for body in [r#"{"model":"m","input":5}"#, r#"{"model":"m","input":"a","encoding_format":"int8"}"#, r#"{"model":"m"}"#] {
            assert_eq!(parse_json::<EmbeddingRequest>(body.as_bytes()).unwrap_err().status, 400, "{body}");
        }
    }
}
