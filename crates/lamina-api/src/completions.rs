//! The legacy completions endpoint (`POST /v1/completions`): the request with its
//! four prompt shapes, the response (`text_completion`) and its stream chunk, which
//! OpenAI also sends as `text_completion` objects.
//!
//! Follows the OpenAI API reference, "Completions" (legacy) → "Create completion" and
//! "The completion object". Range checks live in [`crate::validate`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use serde::{Deserialize, Serialize};

use crate::common::{FinishReason, SamplingFields, Seed, Stop, StreamOptions, TextCompletionObject};
use crate::error::ApiError;
use crate::usage::Usage;

/// OpenAI's default `max_tokens` for legacy completions.
pub const DEFAULT_MAX_TOKENS: u32 = 16;

/// The body of `POST /v1/completions`. Unknown fields are ignored; wrong types are
/// errors. Call [`validate`](CompletionRequest::validate) before using any value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a completion request object")]
pub struct CompletionRequest {
    pub model: String,
    pub prompt: Prompt,
    /// `None` means [`DEFAULT_MAX_TOKENS`]; see [`Self::max_tokens`]. 0 is allowed only
    /// with `echo: true` (score the prompt without generating).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<Seed>,
    /// 0..=5: how many most likely alternatives to report per token (with the chosen one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// Return the prompt before the completion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Unsupported (no insertion); `validate` accepts only null or `""`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Must equal `n` when given: candidates are not ranked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Extension: see [`crate::ChatCompletionRequest::top_k`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Extension (as llama.cpp's): the completion follows this grammar, GBNF when it
    /// defines rules with `::=`, Lark (llguidance's dialect) otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grammar: Option<String>,
}

impl CompletionRequest {
    /// The completion-token limit, [`DEFAULT_MAX_TOKENS`] when not given.
    pub fn max_tokens(&self) -> u32 {
        self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS)
    }

    /// The stop strings as a list (empty when none).
    pub fn stop_list(&self) -> Vec<String> {
        self.sampling().stop_list()
    }

    /// `logit_bias` with parsed token ids (see [`SamplingFields::logit_bias_map`]).
    pub fn logit_bias_map(&self) -> Result<Vec<(u32, f32)>, ApiError> {
        self.sampling().logit_bias_map()
    }

    /// Choices per prompt, 1 when not given.
    pub fn n(&self) -> u32 {
        self.n.unwrap_or(1)
    }

    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a stream ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.is_stream() && self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }

    pub fn is_echo(&self) -> bool {
        self.echo == Some(true)
    }

    /// `top_k` as a count (see [`SamplingFields::top_k`]).
    pub fn top_k(&self) -> Option<u32> {
        self.sampling().top_k()
    }

    /// The sampling fields, borrowed.
    pub fn sampling(&self) -> SamplingFields<'_> {
        SamplingFields {
            temperature: self.temperature,
            top_p: self.top_p,
            n: self.n,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            stop: self.stop.as_ref(),
            logit_bias: self.logit_bias.as_ref(),
            seed: self.seed,
            stream: self.stream,
            stream_options: self.stream_options.is_some(),
            top_k: self.top_k,
            min_p: self.min_p,
            repetition_penalty: self.repetition_penalty,
            ignore_eos: self.ignore_eos,
        }
    }
}

/// The `prompt`: one string, a batch of strings, one tokenized prompt, or a batch of
/// tokenized prompts. A batch of `p` prompts with `n` choices gives `p × n` choices,
/// indexed prompt-major.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenBatches(Vec<Vec<u32>>),
}

impl Default for Prompt {
    fn default() -> Self {
        Prompt::Text(String::new())
    }
}

/// One prompt of a [`Prompt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptItem<'a> {
    Text(&'a str),
    Tokens(&'a [u32]),
}

impl Prompt {
    /// The prompts in order (an empty array gives none; `validate` rejects it).
    pub fn items(&self) -> Vec<PromptItem<'_>> {
        match self {
            Prompt::Text(s) => vec![PromptItem::Text(s)],
            Prompt::Texts(v) => v.iter().map(|s| PromptItem::Text(s)).collect(),
            Prompt::Tokens(t) => vec![PromptItem::Tokens(t)],
            Prompt::TokenBatches(b) => b.iter().map(|t| PromptItem::Tokens(t)).collect(),
        }
    }
}

/// An element of a prompt array before the array's shape is known.
enum PromptElement {
    Text(String),
    Token(u32),
    Tokens(Vec<u32>),
}

impl<'de> Deserialize<'de> for PromptElement {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ElementVisitor;
        impl<'de> Visitor<'de> for ElementVisitor {
            type Value = PromptElement;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, a token id, or an array of token ids")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PromptElement, E> {
                Ok(PromptElement::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<PromptElement, E> {
                Ok(PromptElement::Text(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PromptElement, E> {
                u32::try_from(v).map(PromptElement::Token).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &"a token id (u32)"))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PromptElement, E> {
                u32::try_from(v).map(PromptElement::Token).map_err(|_| E::invalid_value(Unexpected::Signed(v), &"a token id (u32)"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<PromptElement, A::Error> {
                let mut ids = Vec::new();
                while let Some(id) = seq.next_element::<u32>()? {
                    ids.push(id);
                }
                Ok(PromptElement::Tokens(ids))
            }
        }
        deserializer.deserialize_any(ElementVisitor)
    }
}

impl<'de> Deserialize<'de> for Prompt {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PromptVisitor;
        impl<'de> Visitor<'de> for PromptVisitor {
            type Value = Prompt;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(
                    "a string, an array of strings, an array of token ids, \
                     or an array of arrays of token ids",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Prompt, E> {
                Ok(Prompt::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Prompt, E> {
                Ok(Prompt::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Prompt, A::Error> {
                let mut texts = Vec::new();
                let mut tokens = Vec::new();
                let mut batches = Vec::new();
                while let Some(element) = seq.next_element::<PromptElement>()? {
                    match element {
                        PromptElement::Text(s) => texts.push(s),
                        PromptElement::Token(t) => tokens.push(t),
                        PromptElement::Tokens(b) => batches.push(b),
                    }
                }
                match (texts.is_empty(), tokens.is_empty(), batches.is_empty()) {
                    (_, true, true) => Ok(Prompt::Texts(texts)),
                    (true, false, true) => Ok(Prompt::Tokens(tokens)),
                    (true, true, false) => Ok(Prompt::TokenBatches(batches)),
                    _ => Err(de::Error::custom(
                        "a prompt array must hold only strings, only token ids, \
                         or only arrays of token ids",
                    )),
                }
            }
        }
        deserializer.deserialize_any(PromptVisitor)
    }
}

/// The response body, `"object": "text_completion"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: TextCompletionObject,
    pub created: u64,
    pub model: String,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChoice>,
    pub usage: Usage,
}

impl Completion {
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>, choices: Vec<CompletionChoice>, usage: Usage) -> Self {
        Completion { id: id.into(), object: TextCompletionObject, created, model: model.into(), system_fingerprint: None, choices, usage }
    }
}

/// One choice of a [`Completion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    /// `null` unless the request set `logprobs`.
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: FinishReason,
}

/// The legacy logprobs shape: parallel arrays, one entry per token. With `echo` the
/// first prompt token has no log probability: its entries are `null`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<Option<f32>>,
    /// Token text → log probability of the most likely alternatives. Tokens whose text
    /// coincides share one key; the server should keep the larger value.
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    /// Character offset of each token in the returned text (prompt included with echo).
    pub text_offset: Vec<u32>,
}

/// One server-sent event of a streamed legacy completion. As in OpenAI's streams its
/// `object` is `"text_completion"`; `usage` is `null` except in the final usage chunk
/// (empty `choices`) when `stream_options.include_usage` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunk {
    pub id: String,
    pub object: TextCompletionObject,
    pub created: u64,
    pub model: String,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<CompletionChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
}

impl CompletionChunk {
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>, choices: Vec<CompletionChunkChoice>) -> Self {
        CompletionChunk { id: id.into(), object: TextCompletionObject, created, model: model.into(), system_fingerprint: None, choices, usage: None }
    }

    /// The final usage chunk: empty `choices`, `usage` set.
    pub fn usage(id: impl Into<String>, created: u64, model: impl Into<String>, usage: Usage) -> Self {
        CompletionChunk { usage: Some(usage), ..CompletionChunk::new(id, created, model, Vec::new()) }
    }
}

/// One choice of a [`CompletionChunk`]: `finish_reason` is `null` until the last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CompletionChunkChoice {
    pub text: String,
    pub index: u32,
    #[serde(default)]
    pub logprobs: Option<CompletionLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}
