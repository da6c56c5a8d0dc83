//! Token usage reported with a response (and in the final stream chunk when
//! `stream_options.include_usage` is set).
//!
//! Follows the OpenAI API reference, "Chat" → "The chat completion object" → `usage`.

use serde::{Deserialize, Serialize};

/// Token counts for one request, all choices together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
    pub total_tokens: u32,
    #[serde(default)]
    pub prompt_tokens_details: PromptTokensDetails,
    #[serde(default)]
    pub completion_tokens_details: CompletionTokensDetails,
}

impl Usage {
    /// Usage with `total_tokens = prompt + completion` and the given number of prompt
    /// tokens served from the prefix cache.
    pub fn new(prompt_tokens: u32, completion_tokens: u32, cached_tokens: u32) -> Self {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
            prompt_tokens_details: PromptTokensDetails { cached_tokens },
            completion_tokens_details: CompletionTokensDetails::default(),
        }
    }
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens whose KV entries were reused rather than computed.
    #[serde(default)]
    pub cached_tokens: u32,
}

/// `usage.completion_tokens_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionTokensDetails {
    /// Always 0 here: no separate reasoning channel is counted.
    #[serde(default)]
    pub reasoning_tokens: u32,
}
