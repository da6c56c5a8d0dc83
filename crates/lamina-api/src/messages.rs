//! Anthropic's Messages API (`POST /v1/messages`): the request (system prompt, messages
//! of content blocks, tools), the message it answers with, the stream events, and the
//! error body `{"type": "error", "error": {"type", "message"}}`.
//!
//! Follows Anthropic's API reference, "Messages" → "Create a Message", "Streaming
//! Messages" and "Errors". The request translates into a chat request
//! ([`MessagesRequest::to_chat`]) so it runs through the same pipeline as chat
//! completions; the answer translates back into content blocks ([`content_blocks`]).

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatCompletionRequest, ChatMessage, FunctionCall, Role, ToolCall, ToolType};
use crate::common::{FinishReason, Stop};
use crate::error::ApiError;
use crate::responses::chat_field;
use crate::usage::Usage;

/// The body of `POST /v1/messages`. Unknown fields are ignored, as in the chat request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a messages request object")]
pub struct MessagesRequest {
    pub model: String,
    pub messages: Vec<Message>,
    /// Required, at least 1.
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    /// In [0, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
}

/// A turn: `user` or `assistant`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a message object")]
pub struct Message {
    pub role: MessageRole,
    pub content: Content,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageRole {
    User,
    Assistant,
}

/// `content` (and `system`): a string, or an array of blocks.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Blocks(Vec<Block>),
}

impl<'de> Deserialize<'de> for Content {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = Content;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Content, E> {
                Ok(Content::Text(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content, A::Error> {
                let mut blocks = Vec::new();
                while let Some(b) = seq.next_element::<Block>()? {
                    blocks.push(b);
                }
                Ok(Content::Blocks(blocks))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// A content block of a request. Images, documents and thinking blocks parse so that the
/// translation can name them as unsupported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    /// A call the assistant made earlier.
    ToolUse {
        id: String,
        name: String,
        input: serde_json::Value,
    },
    /// The result of running call `tool_use_id`.
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<Content>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    Image {},
    Document {},
    Thinking {},
    RedactedThinking {},
}

impl Block {
    fn type_name(&self) -> &'static str {
        match self {
            Block::Text { .. } => "text",
            Block::ToolUse { .. } => "tool_use",
            Block::ToolResult { .. } => "tool_result",
            Block::Image {} => "image",
            Block::Document {} => "document",
            Block::Thinking {} => "thinking",
            Block::RedactedThinking {} => "redacted_thinking",
        }
    }
}

/// `{"name", "description"?, "input_schema"}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a tool object")]
pub struct Tool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: serde_json::Value,
}

/// `tool_choice`: `auto`, `any` (some tool), `tool` (the one named) or `none`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ToolChoice {
    Auto {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Any {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    Tool {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disable_parallel_tool_use: Option<bool>,
    },
    None {},
}

impl MessagesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Checks what the wire types cannot express, in Anthropic's ranges.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.model.is_empty() {
            return Err(ApiError::invalid_param("model", "model must not be empty"));
        }
        if self.max_tokens == 0 {
            return Err(ApiError::invalid_param("max_tokens", "max_tokens must be at least 1"));
        }
        if self.messages.is_empty() {
            return Err(ApiError::invalid_param("messages", "messages must hold at least one message"));
        }
        for (param, v) in [("temperature", self.temperature), ("top_p", self.top_p)] {
            if let Some(v) = v.filter(|v| !(0.0..=1.0).contains(v)) {
                return Err(ApiError::invalid_param(param, format!("{param} must be between 0 and 1, got {v}")));
            }
        }
        if self.stop_sequences.as_ref().is_some_and(|s| s.iter().any(String::is_empty)) {
            return Err(ApiError::invalid_param("stop_sequences", "stop_sequences must not hold an empty string"));
        }
        Ok(())
    }

    /// The chat request this one runs as: `system` as a system message; each message's
    /// text blocks as one chat message, its `tool_use` blocks as the assistant's tool
    /// calls, its `tool_result` blocks as tool messages (in block order). Tools and
    /// `tool_choice` become their chat equivalents.
    pub fn to_chat(&self) -> Result<ChatCompletionRequest, ApiError> {
        self.validate()?;
        let mut messages = Vec::new();
        if let Some(system) = &self.system {
            let text = text_blocks(system, "system")?;
            if !text.is_empty() {
                messages.push(ChatMessage::new(Role::System, text));
            }
        }
        for (i, m) in self.messages.iter().enumerate() {
            messages.extend(chat_messages(m, i)?);
        }
        // A final assistant turn is a prefill, as Anthropic's API treats it: the reply continues it.
        let prefill = messages.last().is_some_and(|m| m.role == Role::Assistant && m.tool_calls.as_ref().is_none_or(|c| c.is_empty()));
        let mut chat = ChatCompletionRequest {
            model: self.model.clone(),
            continue_final_message: prefill.then_some(true),
            messages,
            max_completion_tokens: Some(self.max_tokens),
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k.map(|k| k.min(i32::MAX as u32) as i32),
            stop: self.stop_sequences.clone().filter(|s| !s.is_empty()).map(Stop::Many),
            stream: self.stream,
            ..ChatCompletionRequest::default()
        };
        if let Some(tools) = self.tools.as_ref().filter(|t| !t.is_empty()) {
            let out: Vec<serde_json::Value> = tools
                .iter()
                .map(|t| {
                    let mut function = serde_json::json!({ "name": t.name, "parameters": t.input_schema });
                    if let Some(d) = &t.description {
                        function["description"] = d.clone().into();
                    }
                    serde_json::json!({ "type": "function", "function": function })
                })
                .collect();
            chat.tools = Some(chat_field("tools", serde_json::Value::Array(out))?);
        }
        if let Some(choice) = &self.tool_choice {
            let (v, no_parallel) = match choice {
                ToolChoice::Auto { disable_parallel_tool_use: p } => (serde_json::json!("auto"), *p),
                ToolChoice::Any { disable_parallel_tool_use: p } => (serde_json::json!("required"), *p),
                ToolChoice::Tool { name, disable_parallel_tool_use: p } => (serde_json::json!({ "type": "function", "function": { "name": name } }), *p),
                ToolChoice::None {} => (serde_json::json!("none"), None),
            };
            chat.tool_choice = Some(chat_field("tool_choice", v)?);
            if no_parallel == Some(true) {
                chat.parallel_tool_calls = Some(chat_field("tool_choice", false.into())?);
            }
        }
        Ok(chat)
    }
}

/// The text of a string or of text blocks (joined by `"\n"`); other blocks are refused.
fn text_blocks(content: &Content, at: &str) -> Result<String, ApiError> {
    match content {
        Content::Text(t) => Ok(t.clone()),
        Content::Blocks(blocks) => {
            let mut texts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b {
                    Block::Text { text } => texts.push(text.as_str()),
                    other => return Err(unsupported_block(&format!("{at}[{j}]"), other)),
                }
            }
            Ok(texts.join("\n"))
        }
    }
}

fn unsupported_block(at: &str, b: &Block) -> ApiError {
    ApiError::invalid_param(at, format!("{at}: content blocks of type `{}` are not supported here by this server", b.type_name()))
        .with_code("unsupported_content_block")
}

/// One Anthropic message as chat messages.
fn chat_messages(m: &Message, i: usize) -> Result<Vec<ChatMessage>, ApiError> {
    let at = format!("messages[{i}].content");
    let blocks = match &m.content {
        Content::Text(t) => {
            let role = if m.role == MessageRole::User { Role::User } else { Role::Assistant };
            return Ok(vec![ChatMessage::new(role, t.clone())]);
        }
        Content::Blocks(b) => b,
    };
    let mut out: Vec<ChatMessage> = Vec::new();
    match m.role {
        MessageRole::Assistant => {
            let mut texts = Vec::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b {
                    Block::Text { text } => texts.push(text.as_str()),
                    Block::ToolUse { id, name, input } => calls.push(ToolCall {
                        id: id.clone(),
                        kind: ToolType::Function,
                        function: FunctionCall { name: name.clone(), arguments: serde_json::to_string(input).unwrap_or_default() },
                    }),
                    // Earlier thinking is not part of what the model sees again.
                    Block::Thinking {} | Block::RedactedThinking {} => {}
                    other => return Err(unsupported_block(&format!("{at}[{j}]"), other)),
                }
            }
            let mut msg = ChatMessage::new(Role::Assistant, texts.join(""));
            if !calls.is_empty() {
                if texts.is_empty() {
                    msg.content = None;
                }
                msg.tool_calls = Some(calls);
            }
            out.push(msg);
        }
        MessageRole::User => {
            for (j, b) in blocks.iter().enumerate() {
                match b {
                    Block::Text { text } => match out.last_mut() {
                        Some(last) if last.role == Role::User => {
                            let joined = format!("{}\n{text}", crate::chat::text_of(last));
                            *last = ChatMessage::new(Role::User, joined);
                        }
                        _ => out.push(ChatMessage::new(Role::User, text.clone())),
                    },
                    Block::ToolResult { tool_use_id, content, is_error } => {
                        let mut text = match content {
                            None => String::new(),
                            Some(c) => text_blocks(c, &format!("{at}[{j}].content"))?,
                        };
                        if *is_error == Some(true) {
                            text = format!("Error: {text}");
                        }
                        out.push(ChatMessage { tool_call_id: Some(tool_use_id.clone()), ..ChatMessage::new(Role::Tool, text) });
                    }
                    other => return Err(unsupported_block(&format!("{at}[{j}]"), other)),
                }
            }
            if out.is_empty() {
                return Err(ApiError::invalid_param(at.clone(), format!("{at} must not be empty")));
            }
        }
    }
    Ok(out)
}

/// A content block of the answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ResponseBlock {
    Text { text: String },
    ToolUse { id: String, name: String, input: serde_json::Value },
}

/// The answer's blocks: its text (when there is text or no tool call), then one
/// `tool_use` block per call, with the arguments parsed (arguments that are not a JSON
/// object become `{}` — a tool's input is always an object).
pub fn content_blocks(text: &str, tool_calls: &[ToolCall]) -> Vec<ResponseBlock> {
    let mut out = Vec::new();
    if !text.is_empty() || tool_calls.is_empty() {
        out.push(ResponseBlock::Text { text: text.to_string() });
    }
    for c in tool_calls {
        out.push(ResponseBlock::ToolUse { id: c.id.clone(), name: c.function.name.clone(), input: tool_input(&c.function.arguments) });
    }
    out
}

/// A call's arguments as a tool's `input` object.
pub fn tool_input(arguments: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(arguments) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::json!({}),
    }
}

/// Why the answer stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    StopSequence,
    ToolUse,
}

impl StopReason {
    /// From the chat finish reason and the stop string that ended it, if any.
    pub fn from_finish(reason: FinishReason, stop_sequence: Option<&str>) -> Self {
        match reason {
            FinishReason::Length => StopReason::MaxTokens,
            FinishReason::ToolCalls => StopReason::ToolUse,
            _ if stop_sequence.is_some() => StopReason::StopSequence,
            _ => StopReason::EndTurn,
        }
    }
}

/// `usage`: prompt tokens split into those computed (`input_tokens`) and those read from
/// the prefix cache (`cache_read_input_tokens`), as Anthropic counts them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesUsage {
    pub input_tokens: u32,
    pub output_tokens: u32,
    pub cache_read_input_tokens: u32,
    /// Always 0: the prefix cache is filled as a side effect, never billed.
    pub cache_creation_input_tokens: u32,
}

impl From<Usage> for MessagesUsage {
    fn from(u: Usage) -> Self {
        let cached = u.prompt_tokens_details.cached_tokens;
        MessagesUsage {
            input_tokens: u.prompt_tokens.saturating_sub(cached),
            output_tokens: u.completion_tokens,
            cache_read_input_tokens: cached,
            cache_creation_input_tokens: 0,
        }
    }
}

/// The answer, `"type": "message"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageResponse {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: crate::common::MessageTag,
    pub role: MessageRole,
    pub model: String,
    pub content: Vec<ResponseBlock>,
    /// `null` only in the `message_start` event of a stream.
    pub stop_reason: Option<StopReason>,
    pub stop_sequence: Option<String>,
    pub usage: MessagesUsage,
}

impl MessageResponse {
    pub fn new(id: impl Into<String>, model: impl Into<String>) -> Self {
        MessageResponse {
            id: id.into(),
            kind: crate::common::MessageTag,
            role: MessageRole::Assistant,
            model: model.into(),
            content: Vec::new(),
            stop_reason: None,
            stop_sequence: None,
            usage: MessagesUsage::default(),
        }
    }
}

/// What a `content_block_delta` adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum BlockDelta {
    TextDelta { text: String },
    InputJsonDelta { partial_json: String },
}

/// `delta` of `message_delta`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDelta {
    pub stop_reason: StopReason,
    pub stop_sequence: Option<String>,
}

/// One streamed event (`event:` is its `type`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StreamEvent {
    MessageStart { message: MessageResponse },
    ContentBlockStart { index: usize, content_block: ResponseBlock },
    ContentBlockDelta { index: usize, delta: BlockDelta },
    ContentBlockStop { index: usize },
    MessageDelta { delta: MessageDelta, usage: MessagesUsage },
    MessageStop,
    Ping,
    Error { error: ErrorDetail },
}

impl StreamEvent {
    /// The `type` (and SSE `event:` name).
    pub fn type_name(&self) -> &'static str {
        match self {
            StreamEvent::MessageStart { .. } => "message_start",
            StreamEvent::ContentBlockStart { .. } => "content_block_start",
            StreamEvent::ContentBlockDelta { .. } => "content_block_delta",
            StreamEvent::ContentBlockStop { .. } => "content_block_stop",
            StreamEvent::MessageDelta { .. } => "message_delta",
            StreamEvent::MessageStop => "message_stop",
            StreamEvent::Ping => "ping",
            StreamEvent::Error { .. } => "error",
        }
    }
}

/// `error` of Anthropic's error body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    #[serde(rename = "type")]
    pub kind: String,
    pub message: String,
}

/// Anthropic's error body, `{"type": "error", "error": {"type", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "type")]
    pub kind: crate::common::ErrorTag,
    pub error: ErrorDetail,
}

/// An [`ApiError`] the way Anthropic reports it: the status (a 503, overloaded or loading,
/// becomes Anthropic's 529) and the body, its `type` chosen by status. A named parameter
/// leads the message, as Anthropic's messages name the field (`max_tokens: …`).
pub fn anthropic_error(e: &ApiError) -> (u16, ErrorBody) {
    let (status, kind) = match e.status {
        400 => (400, "invalid_request_error"),
        401 => (401, "authentication_error"),
        403 => (403, "permission_error"),
        404 => (404, "not_found_error"),
        413 => (413, "request_too_large"),
        429 => (429, "rate_limit_error"),
        503 | 529 => (529, "overloaded_error"),
        s if s >= 500 => (500, "api_error"),
        s => (s, "invalid_request_error"),
    };
    let message = match &e.param {
        Some(p) if !e.message.starts_with(p.as_str()) => format!("{p}: {}", e.message),
        _ => e.message.clone(),
    };
    (status, ErrorBody { kind: crate::common::ErrorTag, error: ErrorDetail { kind: kind.into(), message } })
}

/// The kind of the content block being streamed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpenBlock {
    Text,
    ToolUse,
}

/// Anthropic's stream built from an answer's pieces, in its order: `message_start` and a
/// `ping`, each content block started, filled by deltas and stopped, `message_delta`
/// with the stop reason and usage, `message_stop`. Each method returns the events that
/// piece makes. Written once for every producer of such a stream (`lamina serve` from its
/// chat events, the gateway from chat completion chunks).
#[derive(Clone, Debug)]
pub struct MessageStream {
    message: MessageResponse,
    open: Option<OpenBlock>,
    /// Blocks started so far (the next block's index).
    blocks: usize,
    stop: Option<MessageDelta>,
}

impl MessageStream {
    /// A stream of `message` (its id, model and the usage known at the start).
    pub fn new(message: MessageResponse) -> Self {
        MessageStream { message, open: None, blocks: 0, stop: None }
    }

    pub fn start(&mut self) -> Vec<StreamEvent> {
        vec![StreamEvent::MessageStart { message: self.message.clone() }, StreamEvent::Ping]
    }

    /// Text, appended to the open text block (one is started when none is open).
    pub fn text(&mut self, text: String) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if text.is_empty() {
            return out;
        }
        if self.open != Some(OpenBlock::Text) {
            self.start_block(&mut out, OpenBlock::Text, ResponseBlock::Text { text: String::new() });
        }
        out.push(StreamEvent::ContentBlockDelta { index: self.blocks - 1, delta: BlockDelta::TextDelta { text } });
        out
    }

    /// A tool call's start: a new `tool_use` block.
    pub fn tool_call(&mut self, id: String, name: String) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        self.start_block(&mut out, OpenBlock::ToolUse, ResponseBlock::ToolUse { id, name, input: serde_json::json!({}) });
        out
    }

    /// A fragment of the open tool call's arguments (ignored when no tool call is open).
    pub fn tool_arguments(&mut self, partial_json: String) -> Vec<StreamEvent> {
        if self.open != Some(OpenBlock::ToolUse) {
            return Vec::new();
        }
        vec![StreamEvent::ContentBlockDelta { index: self.blocks - 1, delta: BlockDelta::InputJsonDelta { partial_json } }]
    }

    /// The answer's end: the open block stopped (an answer with no content is one empty
    /// text block, as when whole), the stop reason kept for [`MessageStream::end`].
    pub fn finish(&mut self, reason: FinishReason, stop_sequence: Option<String>) -> Vec<StreamEvent> {
        let mut out = Vec::new();
        if self.blocks == 0 {
            self.start_block(&mut out, OpenBlock::Text, ResponseBlock::Text { text: String::new() });
        }
        self.stop_block(&mut out);
        self.stop = Some(MessageDelta { stop_reason: StopReason::from_finish(reason, stop_sequence.as_deref()), stop_sequence });
        out
    }

    /// `message_delta` with the final usage, and `message_stop`.
    pub fn end(&mut self, usage: MessagesUsage) -> Vec<StreamEvent> {
        let delta = self.stop.take().unwrap_or(MessageDelta { stop_reason: StopReason::EndTurn, stop_sequence: None });
        vec![StreamEvent::MessageDelta { delta, usage }, StreamEvent::MessageStop]
    }

    fn start_block(&mut self, out: &mut Vec<StreamEvent>, kind: OpenBlock, content_block: ResponseBlock) {
        self.stop_block(out);
        out.push(StreamEvent::ContentBlockStart { index: self.blocks, content_block });
        self.open = Some(kind);
        self.blocks += 1;
    }

    fn stop_block(&mut self, out: &mut Vec<StreamEvent>) {
        if self.open.take().is_some() {
            out.push(StreamEvent::ContentBlockStop { index: self.blocks - 1 });
        }
    }
}
