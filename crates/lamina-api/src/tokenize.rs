//! `POST /tokenize` and `POST /detokenize`, in vLLM's shapes: a prompt (or a chat
//! conversation, rendered with the model's template) to token ids, and ids back to text.

use serde::{Deserialize, Serialize};

use crate::chat::ChatMessage;
use crate::error::ApiError;

/// The body of `POST /tokenize`: exactly one of `prompt` and `messages`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a tokenize request object")]
pub struct TokenizeRequest {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<ChatMessage>>,
    /// Add the model's BOS/EOS as it asks for. Default: true for `prompt`, false for
    /// `messages` (the template writes them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_special_tokens: Option<bool>,
    /// `messages` only: open an assistant turn at the end (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    /// Also return each token's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_token_strs: Option<bool>,
}

impl TokenizeRequest {
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.model.is_empty() {
            return Err(ApiError::invalid_param("model", "model must not be empty"));
        }
        match (&self.prompt, &self.messages) {
            (Some(_), Some(_)) => Err(ApiError::invalid_param("messages", "give either prompt or messages, not both")),
            (None, None) => Err(ApiError::invalid_param("prompt", "prompt or messages is required")),
            (None, Some(m)) if m.is_empty() => Err(ApiError::invalid_param("messages", "messages must hold at least one message")),
            _ => Ok(()),
        }
    }

    /// Whether BOS/EOS are added (see [`Self::add_special_tokens`]).
    pub fn adds_special_tokens(&self) -> bool {
        self.add_special_tokens.unwrap_or(self.messages.is_none())
    }
}

/// The answer of `POST /tokenize`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenizeResponse {
    pub count: usize,
    /// The model's context window as served.
    pub max_model_len: usize,
    pub tokens: Vec<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_strs: Option<Vec<String>>,
}

/// The body of `POST /detokenize`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "a detokenize request object")]
pub struct DetokenizeRequest {
    pub model: String,
    pub tokens: Vec<u32>,
}

/// The answer of `POST /detokenize`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetokenizeResponse {
    pub prompt: String,
}
