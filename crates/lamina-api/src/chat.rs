//! The chat completions endpoint (`POST /v1/chat/completions`): the request body with its
//! messages and content parts, the response (`chat.completion`), and the stream chunk
//! (`chat.completion.chunk`).
//!
//! Follows the OpenAI API reference, "Chat" → "Create chat completion" (request body),
//! "The chat completion object" and "The chat completion chunk object". Range checks
//! live in [`crate::validate`].

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::collections::{Citation, RagOptions, RagReport};
use crate::common::{ChatCompletionChunkObject, ChatCompletionObject, FinishReason, SamplingFields, Seed, Stop, StreamOptions};
use crate::error::ApiError;
use crate::response_format::ResponseFormat;
use crate::tools::{Tool, ToolChoice};
use crate::usage::Usage;

/// The body of `POST /v1/chat/completions`.
///
/// Unknown fields are ignored, as OpenAI ignores them; a known field of the wrong type
/// is an error. Parse with [`crate::parse_json`], then call
/// [`validate`](ChatCompletionRequest::validate) before using any value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a chat completion request object")]
pub struct ChatCompletionRequest {
    pub model: String,
    /// Non-empty (checked by `validate`).
    pub messages: Vec<ChatMessage>,
    /// The older name of the completion-token limit; see [`Self::max_tokens`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// The newer name; when both are given they must agree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Token id (as a decimal string) → bias in [-100, 100]. Kept as sent; use
    /// [`Self::logit_bias_map`] for parsed ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, f32>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// 0..=20 alternatives per token; only with `logprobs: true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    /// `None`: `auto` when tools are given, else `none`; see [`Self::tool_choice`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    /// Whether one reply may make several calls (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Extension (llama.cpp, vLLM): keep the k most likely tokens; 0 or -1 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i32>,
    /// Extension: drop tokens below `min_p` × the top probability; in [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Extension: multiplicative penalty on repeated tokens; > 0, 1 disables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Extension: keep generating past the end-of-sequence token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Extension: answer from a collection's documents, with citations
    /// ([`crate::collections::RagOptions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<RagOptions>,
    /// Extension (vLLM's name): the last message is an assistant turn to continue rather
    /// than a finished one — the reply carries on from its text, which is not repeated.
    /// The gateway uses it to complete a stream that failed midway on another backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_final_message: Option<bool>,
}

impl ChatCompletionRequest {
    /// The completion-token limit: `max_completion_tokens`, else `max_tokens`, else `None`
    /// (up to the context length). `validate` has checked that the two agree.
    pub fn max_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    /// The assistant text to continue from (`continue_final_message`), if any; `validate`
    /// has checked that the last message is then an assistant turn.
    pub fn continued_text(&self) -> Option<String> {
        if self.continue_final_message != Some(true) {
            return None;
        }
        self.messages.last().map(text_of)
    }

    /// The stop strings as a list (empty when none).
    pub fn stop_list(&self) -> Vec<String> {
        self.sampling().stop_list()
    }

    /// `logit_bias` with parsed token ids (see [`SamplingFields::logit_bias_map`]).
    pub fn logit_bias_map(&self) -> Result<Vec<(u32, f32)>, ApiError> {
        self.sampling().logit_bias_map()
    }

    /// The number of choices, 1 when not given.
    pub fn n(&self) -> u32 {
        self.n.unwrap_or(1)
    }

    /// Whether the response is streamed as server-sent events.
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether a stream ends with a usage chunk (`stream_options.include_usage`).
    pub fn include_usage(&self) -> bool {
        self.is_stream() && self.stream_options.as_ref().and_then(|o| o.include_usage).unwrap_or(false)
    }

    /// `top_k` as a count (see [`SamplingFields::top_k`]).
    pub fn top_k(&self) -> Option<u32> {
        self.sampling().top_k()
    }

    /// The tools offered (empty when none).
    pub fn tool_list(&self) -> &[Tool] {
        self.tools.as_deref().unwrap_or_default()
    }

    /// How tools may be used: as given, else `auto` when tools are offered, else `none`.
    pub fn tool_choice(&self) -> ToolChoice {
        match &self.tool_choice {
            Some(c) => c.clone(),
            None if self.tool_list().is_empty() => ToolChoice::None,
            None => ToolChoice::Auto,
        }
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

/// A message author's role. An unknown role is a parse error naming it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    System,
    /// OpenAI's newer name for system instructions.
    Developer,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::Developer => "developer",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One message of the conversation. One flat shape for every role (so that parse errors
/// name the field path); which fields a role needs is checked by `validate`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a message object")]
pub struct ChatMessage {
    pub role: Role,
    /// Absent or null only for an assistant message that has `tool_calls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<MessageContent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Assistant messages: the tool calls the model made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    /// Tool messages: the call this message answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Assistant messages: a refusal the model gave earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
}

impl ChatMessage {
    /// A message with plain-text content and no other fields.
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        ChatMessage { role, content: Some(MessageContent::Text(text.into())), name: None, tool_calls: None, tool_call_id: None, refusal: None }
    }
}

/// The text of a message: the string content, or its `text` parts joined by `"\n"`
/// (other part types are skipped; `validate` rejects them), or `""` when there is none.
pub fn text_of(message: &ChatMessage) -> String {
    match &message.content {
        None => String::new(),
        Some(MessageContent::Text(s)) => s.clone(),
        Some(MessageContent::Parts(parts)) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|p| match p {
                    ContentPart::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect();
            texts.join("\n")
        }
    }
}

/// A message's `content`: a string, or an array of typed parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

impl<'de> Deserialize<'de> for MessageContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = MessageContent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<MessageContent, E> {
                Ok(MessageContent::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<MessageContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element::<ContentPart>()? {
                    parts.push(p);
                }
                Ok(MessageContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// One element of an array `content`, tagged by `"type"`. Only `text` is supported for
/// generation; the others parse so that `validate` can name them as unsupported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "RawContentPart")]
pub enum ContentPart {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
    InputAudio { input_audio: InputAudio },
    File { file: FileRef },
    Refusal { refusal: String },
}

impl ContentPart {
    /// The part's `"type"` on the wire.
    pub fn type_name(&self) -> &'static str {
        match self {
            ContentPart::Text { .. } => "text",
            ContentPart::ImageUrl { .. } => "image_url",
            ContentPart::InputAudio { .. } => "input_audio",
            ContentPart::File { .. } => "file",
            ContentPart::Refusal { .. } => "refusal",
        }
    }
}

/// `{"url", "detail"?}` of an `image_url` part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an image_url object")]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// `{"data", "format"}` of an `input_audio` part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "an input_audio object")]
pub struct InputAudio {
    pub data: String,
    pub format: String,
}

/// `{"file_id"?, "file_data"?, "filename"?}` of a `file` part.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "a file object")]
pub struct FileRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_data: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
}

/// The `type` values a content part may have.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PartKind {
    Text,
    ImageUrl,
    InputAudio,
    File,
    Refusal,
}

/// A content part as it arrives: parsed as a flat struct (so errors keep their field
/// path) and then checked to hold the payload its `type` names.
#[derive(Deserialize)]
#[serde(expecting = "a content part object")]
struct RawContentPart {
    #[serde(rename = "type")]
    kind: PartKind,
    text: Option<String>,
    image_url: Option<ImageUrl>,
    input_audio: Option<InputAudio>,
    file: Option<FileRef>,
    refusal: Option<String>,
}

impl TryFrom<RawContentPart> for ContentPart {
    type Error = String;
    fn try_from(raw: RawContentPart) -> Result<Self, String> {
        let missing = |t: &str| format!("a content part of type `{t}` needs a `{t}` field");
        Ok(match raw.kind {
            PartKind::Text => ContentPart::Text { text: raw.text.ok_or_else(|| missing("text"))? },
            PartKind::ImageUrl => ContentPart::ImageUrl { image_url: raw.image_url.ok_or_else(|| missing("image_url"))? },
            PartKind::InputAudio => ContentPart::InputAudio { input_audio: raw.input_audio.ok_or_else(|| missing("input_audio"))? },
            PartKind::File => ContentPart::File { file: raw.file.ok_or_else(|| missing("file"))? },
            PartKind::Refusal => ContentPart::Refusal { refusal: raw.refusal.ok_or_else(|| missing("refusal"))? },
        })
    }
}

/// The kind of a tool; OpenAI has only `"function"` here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolType {
    #[default]
    Function,
}

/// A tool call made by the assistant: `{"id", "type": "function", "function": {...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "a tool call object")]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default)]
    pub kind: ToolType,
    pub function: FunctionCall,
}

/// `{"name", "arguments"}`: `arguments` is a JSON document encoded as a string, as the
/// model wrote it (it may not be valid JSON).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(expecting = "a function call object")]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A piece of a tool call in a stream chunk: the first piece for a call carries `id`,
/// `type` and `function.name`; later ones append to `function.arguments`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ToolType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<FunctionCallDelta>,
}

/// `function` of a [`ToolCallDelta`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCallDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// The response body, `"object": "chat.completion"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: ChatCompletionObject,
    /// Unix seconds.
    pub created: u64,
    pub model: String,
    /// Serialised as `null` when `None`.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
    /// Extension, with `rag` in the request: the sources the answer cited, by number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<Citation>>,
    /// Extension, with `rag` in the request: what retrieval did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<RagReport>,
}

impl ChatCompletion {
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>, choices: Vec<ChatChoice>, usage: Usage) -> Self {
        ChatCompletion {
            id: id.into(),
            object: ChatCompletionObject,
            created,
            model: model.into(),
            system_fingerprint: None,
            choices,
            usage,
            citations: None,
            rag: None,
        }
    }
}

/// One choice of a [`ChatCompletion`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ResponseMessage,
    /// `null` unless the request asked for `logprobs`.
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: FinishReason,
    /// Extension (vLLM's name): the stop string that ended the choice; omitted otherwise.
    /// Anthropic's `stop_sequence` is read from it where the answer is translated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

/// The assistant's message in a response. `content` and `refusal` are always present
/// (`null` when `None`); `tool_calls` is omitted when `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseMessage {
    pub role: Role,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default)]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

impl ResponseMessage {
    /// An assistant message with text content.
    pub fn assistant(content: impl Into<String>) -> Self {
        ResponseMessage { role: Role::Assistant, content: Some(content.into()), refusal: None, tool_calls: None }
    }
}

/// `choices[].logprobs` of a chat response or chunk.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatLogprobs {
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
    #[serde(default)]
    pub refusal: Option<Vec<TokenLogprob>>,
}

/// One generated token with its log probability and the most likely alternatives.
/// `logprob` must be finite (serde_json writes a non-finite number as `null`); OpenAI
/// reports `-9999.0` for "effectively impossible".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f32,
    /// The token's UTF-8 bytes; `null` when it has none.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// One alternative in [`TokenLogprob::top_logprobs`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

/// One server-sent event of a streamed response, `"object": "chat.completion.chunk"`.
/// `usage` is `null` in every chunk except the last one of a stream whose request set
/// `stream_options.include_usage`; that chunk has empty `choices`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletionChunk {
    pub id: String,
    pub object: ChatCompletionChunkObject,
    pub created: u64,
    pub model: String,
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    pub choices: Vec<ChatChunkChoice>,
    #[serde(default)]
    pub usage: Option<Usage>,
    /// Extension, with `rag` in the request: only on the chunk after every choice
    /// finished (before the usage chunk): the sources the answer cited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub citations: Option<Vec<Citation>>,
    /// Extension: on that same chunk, what retrieval did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rag: Option<RagReport>,
}

impl ChatCompletionChunk {
    /// A chunk carrying `choices` and `"usage": null`.
    pub fn new(id: impl Into<String>, created: u64, model: impl Into<String>, choices: Vec<ChatChunkChoice>) -> Self {
        ChatCompletionChunk {
            id: id.into(),
            object: ChatCompletionChunkObject,
            created,
            model: model.into(),
            system_fingerprint: None,
            choices,
            usage: None,
            citations: None,
            rag: None,
        }
    }

    /// The citations chunk of a RAG answer: empty `choices`, `citations` and `rag` set.
    pub fn citations(id: impl Into<String>, created: u64, model: impl Into<String>, citations: Vec<Citation>, rag: RagReport) -> Self {
        ChatCompletionChunk { citations: Some(citations), rag: Some(rag), ..ChatCompletionChunk::new(id, created, model, Vec::new()) }
    }

    /// The final usage chunk: empty `choices`, `usage` set.
    pub fn usage(id: impl Into<String>, created: u64, model: impl Into<String>, usage: Usage) -> Self {
        ChatCompletionChunk { usage: Some(usage), ..ChatCompletionChunk::new(id, created, model, Vec::new()) }
    }
}

/// One choice of a chunk. `logprobs` and `finish_reason` are always present (`null`
/// until the last chunk of the choice carries its finish reason).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatChunkChoice {
    pub index: u32,
    pub delta: ChatDelta,
    #[serde(default)]
    pub logprobs: Option<ChatLogprobs>,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
    /// Extension, on the closing chunk: the stop string that ended the choice (as in
    /// [`ChatChoice::stop_reason`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<String>,
}

impl ChatChunkChoice {
    /// A choice whose delta is `delta`, not finished.
    pub fn new(index: u32, delta: ChatDelta) -> Self {
        ChatChunkChoice { index, delta, logprobs: None, finish_reason: None, stop_reason: None }
    }

    /// The closing chunk of a choice: empty delta, `finish_reason` set (and the stop
    /// string that ended it, if one did).
    pub fn finished(index: u32, reason: FinishReason, stop: Option<String>) -> Self {
        ChatChunkChoice { finish_reason: Some(reason), stop_reason: stop, ..ChatChunkChoice::new(index, ChatDelta::default()) }
    }
}

/// What a chunk adds to a choice. Fields that are `None` are omitted, so the closing
/// chunk's delta is `{}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refusal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

impl ChatDelta {
    /// The first delta of a choice: `{"role": "assistant", "content": ""}`.
    pub fn start() -> Self {
        ChatDelta { role: Some(Role::Assistant), content: Some(String::new()), ..ChatDelta::default() }
    }

    /// A delta adding text.
    pub fn content(text: impl Into<String>) -> Self {
        ChatDelta { content: Some(text.into()), ..ChatDelta::default() }
    }
}
