//! OpenAI's Responses API (`POST /v1/responses`): the request (input as text or items,
//! instructions, function tools, `text.format`, `previous_response_id`), the response
//! object with its output items, and the typed stream events.
//!
//! Follows the OpenAI API reference, "Responses" → "Create a model response", "The
//! response object" and "Streaming events". The request translates into a chat request
//! ([`ResponsesRequest::to_chat`]), so it runs through the same pipeline as chat
//! completions; the answer's text and tool calls translate back into output items
//! ([`output_items`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

use crate::chat::{ChatCompletionRequest, ChatMessage, FunctionCall, MessageContent, Role, ToolCall, ToolType};
use crate::common::FinishReason;
use crate::error::ApiError;
use crate::usage::Usage;

/// The body of `POST /v1/responses`. Unknown fields are ignored, as in the chat request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a responses request object")]
pub struct ResponsesRequest {
    pub model: String,
    pub input: ResponsesInput,
    /// A system (developer) message put before the conversation; not carried over to a
    /// response that continues this one with `previous_response_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<ResponsesTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ResponsesToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<TextConfig>,
    /// Whether the server keeps the conversation for `previous_response_id` (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_response_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Echoed back in the response.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `input`: a user message as a string, or a list of items.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum ResponsesInput {
    Text(String),
    Items(Vec<InputItem>),
}

impl Default for ResponsesInput {
    fn default() -> Self {
        ResponsesInput::Text(String::new())
    }
}

impl<'de> Deserialize<'de> for ResponsesInput {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InputVisitor;
        impl<'de> Visitor<'de> for InputVisitor {
            type Value = ResponsesInput;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of input items")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ResponsesInput, E> {
                Ok(ResponsesInput::Text(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ResponsesInput, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<InputItem>()? {
                    items.push(item);
                }
                Ok(ResponsesInput::Items(items))
            }
        }
        deserializer.deserialize_any(InputVisitor)
    }
}

/// One input item. Message items may leave out `"type"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "RawInputItem")]
pub enum InputItem {
    Message {
        role: Role,
        content: InputContent,
    },
    /// A call the model made earlier (sent back so the conversation continues).
    FunctionCall {
        call_id: String,
        name: String,
        arguments: String,
    },
    /// The result of running call `call_id`.
    FunctionCallOutput {
        call_id: String,
        output: String,
    },
}

/// A message item's `content`: a string or typed parts.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum InputContent {
    Text(String),
    Parts(Vec<InputPart>),
}

impl<'de> Deserialize<'de> for InputContent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContentVisitor;
        impl<'de> Visitor<'de> for ContentVisitor {
            type Value = InputContent;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an array of content parts")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<InputContent, E> {
                Ok(InputContent::Text(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<InputContent, A::Error> {
                let mut parts = Vec::new();
                while let Some(p) = seq.next_element::<InputPart>()? {
                    parts.push(p);
                }
                Ok(InputContent::Parts(parts))
            }
        }
        deserializer.deserialize_any(ContentVisitor)
    }
}

/// A content part. Only text parts can be generated from; images, files and audio parse
/// so that the translation names them as unsupported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputPart {
    InputText { text: String },
    OutputText { text: String },
    Refusal { refusal: String },
    InputImage {},
    InputFile {},
    InputAudio {},
}

/// An input item as it arrives: flat, so that errors keep their field path, then checked
/// to hold what its `type` needs.
#[derive(Deserialize)]
#[serde(expecting = "an input item object")]
struct RawInputItem {
    #[serde(rename = "type", default)]
    kind: Option<ItemKind>,
    role: Option<Role>,
    content: Option<InputContent>,
    call_id: Option<String>,
    name: Option<String>,
    arguments: Option<String>,
    output: Option<FunctionOutput>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ItemKind {
    Message,
    FunctionCall,
    FunctionCallOutput,
}

/// `output` of a `function_call_output`: a string or a list of text parts.
#[derive(Deserialize)]
#[serde(untagged, expecting = "a string or an array of input_text parts")]
enum FunctionOutput {
    Text(String),
    Parts(Vec<InputPart>),
}

impl TryFrom<RawInputItem> for InputItem {
    type Error = String;
    fn try_from(raw: RawInputItem) -> Result<Self, String> {
        let need = |what: &str, field: &str| format!("a `{what}` item needs `{field}`");
        match raw.kind.unwrap_or(ItemKind::Message) {
            ItemKind::Message => {
                let role = raw.role.ok_or_else(|| need("message", "role"))?;
                if role == Role::Tool {
                    return Err("a message item's role is user, assistant, system or developer; tool results are `function_call_output` items".into());
                }
                Ok(InputItem::Message { role, content: raw.content.ok_or_else(|| need("message", "content"))? })
            }
            ItemKind::FunctionCall => Ok(InputItem::FunctionCall {
                call_id: raw.call_id.ok_or_else(|| need("function_call", "call_id"))?,
                name: raw.name.ok_or_else(|| need("function_call", "name"))?,
                arguments: raw.arguments.ok_or_else(|| need("function_call", "arguments"))?,
            }),
            ItemKind::FunctionCallOutput => {
                let output = match raw.output.ok_or_else(|| need("function_call_output", "output"))? {
                    FunctionOutput::Text(t) => t,
                    FunctionOutput::Parts(parts) => parts_text(&parts).map_err(|t| format!("function_call_output parts must be text, not `{t}`"))?,
                };
                Ok(InputItem::FunctionCallOutput { call_id: raw.call_id.ok_or_else(|| need("function_call_output", "call_id"))?, output })
            }
        }
    }
}

/// The text of `parts` joined by `"\n"`; `Err(type)` names the first part that is not text.
fn parts_text(parts: &[InputPart]) -> Result<String, &'static str> {
    let mut texts = Vec::new();
    for p in parts {
        texts.push(match p {
            InputPart::InputText { text } | InputPart::OutputText { text } => text.as_str(),
            InputPart::Refusal { refusal } => refusal.as_str(),
            InputPart::InputImage {} => return Err("input_image"),
            InputPart::InputFile {} => return Err("input_file"),
            InputPart::InputAudio {} => return Err("input_audio"),
        });
    }
    Ok(texts.join("\n"))
}

/// A tool the model may call. Only `"type": "function"` is supported; others parse so
/// the translation can name them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a tool object")]
pub struct ResponsesTool {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A JSON schema of the arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

/// `tool_choice`: `"none"`, `"auto"`, `"required"`, or `{"type": "function", "name"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged, expecting = "\"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}")]
pub enum ResponsesToolChoice {
    Mode(ToolChoiceMode),
    Function {
        #[serde(rename = "type")]
        kind: ToolType,
        name: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

/// `text`: the output's format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<TextFormat>,
}

/// `text.format`: `{"type": "text"}`, `{"type": "json_object"}` or
/// `{"type": "json_schema", "name", "schema", "description"?, "strict"?}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: serde_json::Value,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

impl ResponsesRequest {
    pub fn is_stream(&self) -> bool {
        self.stream == Some(true)
    }

    /// Whether the conversation is kept for `previous_response_id` (default: yes).
    pub fn is_stored(&self) -> bool {
        self.store != Some(false)
    }

    /// This request's own turn of the conversation (its input items as chat messages,
    /// without the instructions), checked. Consecutive function calls, and a function
    /// call right after an assistant message, join that assistant message.
    pub fn input_messages(&self) -> Result<Vec<ChatMessage>, ApiError> {
        let items = match &self.input {
            ResponsesInput::Text(t) => return Ok(vec![ChatMessage::new(Role::User, t.clone())]),
            ResponsesInput::Items(items) => items,
        };
        if items.is_empty() {
            return Err(ApiError::invalid_param("input", "input must hold at least one item"));
        }
        let mut out: Vec<ChatMessage> = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item {
                InputItem::Message { role, content } => {
                    let text = match content {
                        InputContent::Text(t) => t.clone(),
                        InputContent::Parts(parts) => parts_text(parts).map_err(|t| {
                            ApiError::invalid_param(
                                format!("input[{i}].content"),
                                format!("input[{i}].content: content parts of type `{t}` are not supported by this server; only text parts are"),
                            )
                            .with_code("unsupported_content_part")
                        })?,
                    };
                    out.push(ChatMessage::new(*role, text));
                }
                InputItem::FunctionCall { call_id, name, arguments } => {
                    let call =
                        ToolCall { id: call_id.clone(), kind: ToolType::Function, function: FunctionCall { name: name.clone(), arguments: arguments.clone() } };
                    match out.last_mut() {
                        Some(m) if m.role == Role::Assistant => m.tool_calls.get_or_insert_with(Vec::new).push(call),
                        _ => out.push(ChatMessage { tool_calls: Some(vec![call]), content: None, ..ChatMessage::new(Role::Assistant, "") }),
                    }
                }
                InputItem::FunctionCallOutput { call_id, output } => {
                    out.push(ChatMessage { tool_call_id: Some(call_id.clone()), ..ChatMessage::new(Role::Tool, output.clone()) });
                }
            }
        }
        Ok(out)
    }

    /// The chat request this one runs as: `instructions` as a system message, then
    /// `history` (the conversation of `previous_response_id`, if any), then this turn.
    /// Tools, `tool_choice` and `text.format` become their chat equivalents.
    pub fn to_chat(&self, history: &[ChatMessage]) -> Result<ChatCompletionRequest, ApiError> {
        let mut messages = Vec::new();
        if let Some(i) = self.instructions.as_ref().filter(|i| !i.is_empty()) {
            messages.push(ChatMessage::new(Role::System, i.clone()));
        }
        messages.extend_from_slice(history);
        messages.extend(self.input_messages()?);
        let mut chat = ChatCompletionRequest {
            model: self.model.clone(),
            messages,
            max_completion_tokens: self.max_output_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            user: self.user.clone(),
            stream: self.stream,
            ..ChatCompletionRequest::default()
        };
        if let Some(tools) = self.tools.as_ref().filter(|t| !t.is_empty()) {
            let mut out = Vec::new();
            for (i, t) in tools.iter().enumerate() {
                if t.kind != "function" {
                    return Err(ApiError::invalid_param(
                        format!("tools[{i}].type"),
                        format!("tools[{i}].type: only function tools are supported by this server, not `{}`", t.kind),
                    ));
                }
                let name = t.name.as_ref().ok_or_else(|| ApiError::invalid_param(format!("tools[{i}].name"), format!("tools[{i}].name is required")))?;
                let mut function = serde_json::json!({ "name": name });
                if let Some(d) = &t.description {
                    function["description"] = d.clone().into();
                }
                if let Some(p) = &t.parameters {
                    function["parameters"] = p.clone();
                }
                if let Some(s) = t.strict {
                    function["strict"] = s.into();
                }
                out.push(serde_json::json!({ "type": "function", "function": function }));
            }
            chat.tools = Some(chat_field("tools", serde_json::Value::Array(out))?);
        }
        if let Some(choice) = &self.tool_choice {
            let v = match choice {
                ResponsesToolChoice::Mode(m) => serde_json::to_value(m).unwrap_or_default(),
                ResponsesToolChoice::Function { name, .. } => serde_json::json!({ "type": "function", "function": { "name": name } }),
            };
            chat.tool_choice = Some(chat_field("tool_choice", v)?);
        }
        if let Some(p) = self.parallel_tool_calls {
            chat.parallel_tool_calls = Some(chat_field("parallel_tool_calls", p.into())?);
        }
        if let Some(format) = self.text.as_ref().and_then(|t| t.format.as_ref()) {
            let v = match format {
                TextFormat::Text => serde_json::json!({ "type": "text" }),
                TextFormat::JsonObject => serde_json::json!({ "type": "json_object" }),
                TextFormat::JsonSchema { name, schema, description, strict } => {
                    let mut s = serde_json::json!({ "name": name, "schema": schema });
                    if let Some(d) = description {
                        s["description"] = d.clone().into();
                    }
                    if let Some(st) = strict {
                        s["strict"] = (*st).into();
                    }
                    serde_json::json!({ "type": "json_schema", "json_schema": s })
                }
            };
            chat.response_format = Some(chat_field("text.format", v)?);
        }
        Ok(chat)
    }
}

/// A chat request field from its OpenAI chat JSON, whatever type the chat request gives it.
pub(crate) fn chat_field<T: serde::de::DeserializeOwned>(param: &str, v: serde_json::Value) -> Result<T, ApiError> {
    serde_json::from_value(v).map_err(|e| ApiError::invalid_param(param, format!("{param}: {e}")))
}

/// `"object": "response"`, its status, and what it holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResponseObject {
    pub id: String,
    pub object: crate::common::ResponseObjectTag,
    /// Unix seconds.
    pub created_at: u64,
    pub status: ResponseStatus,
    /// `null` unless the response failed.
    pub error: Option<ResponseError>,
    /// `null` unless `status` is `incomplete`.
    pub incomplete_details: Option<IncompleteDetails>,
    pub instructions: Option<String>,
    pub max_output_tokens: Option<u32>,
    pub model: String,
    pub output: Vec<OutputItem>,
    pub parallel_tool_calls: bool,
    pub previous_response_id: Option<String>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub tool_choice: serde_json::Value,
    pub tools: Vec<ResponsesTool>,
    pub text: TextConfig,
    pub store: bool,
    /// `null` until the response is complete.
    pub usage: Option<ResponsesUsage>,
    pub metadata: BTreeMap<String, String>,
    pub user: Option<String>,
}

impl ResponseObject {
    /// A response to `req` with no output yet, `in_progress`.
    pub fn new(id: impl Into<String>, created_at: u64, model: impl Into<String>, req: &ResponsesRequest) -> Self {
        ResponseObject {
            id: id.into(),
            object: crate::common::ResponseObjectTag,
            created_at,
            status: ResponseStatus::InProgress,
            error: None,
            incomplete_details: None,
            instructions: req.instructions.clone(),
            max_output_tokens: req.max_output_tokens,
            model: model.into(),
            output: Vec::new(),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            previous_response_id: req.previous_response_id.clone(),
            temperature: req.temperature,
            top_p: req.top_p,
            tool_choice: req.tool_choice.as_ref().and_then(|c| serde_json::to_value(c).ok()).unwrap_or_else(|| "auto".into()),
            tools: req.tools.clone().unwrap_or_default(),
            text: req.text.clone().unwrap_or(TextConfig { format: Some(TextFormat::Text) }),
            store: req.is_stored(),
            usage: None,
            metadata: req.metadata.clone().unwrap_or_default(),
            user: req.user.clone(),
        }
    }

    /// Sets the output, the usage, and the status the finish reason gives (a message cut
    /// off by `max_output_tokens` is `incomplete`, and so is the response).
    pub fn finish(&mut self, output: Vec<OutputItem>, reason: FinishReason, usage: Usage) {
        self.output = output;
        self.usage = Some(ResponsesUsage::from(usage));
        if reason == FinishReason::Length {
            for item in &mut self.output {
                if let OutputItem::Message { status, .. } = item {
                    *status = ResponseStatus::Incomplete;
                }
            }
            self.status = ResponseStatus::Incomplete;
            self.incomplete_details = Some(IncompleteDetails { reason: "max_output_tokens".into() });
        } else {
            self.status = ResponseStatus::Completed;
            self.incomplete_details = None;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseStatus {
    InProgress,
    Completed,
    Incomplete,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IncompleteDetails {
    pub reason: String,
}

/// `error` of a failed response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseError {
    pub code: String,
    pub message: String,
}

/// One output item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputItem {
    Message { id: String, role: Role, status: ResponseStatus, content: Vec<OutputContent> },
    FunctionCall { id: String, call_id: String, name: String, arguments: String, status: ResponseStatus },
}

/// One part of an output message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputContent {
    OutputText {
        text: String,
        /// Always empty here (no citations).
        annotations: Vec<serde_json::Value>,
        logprobs: Vec<serde_json::Value>,
    },
}

impl OutputContent {
    pub fn text(text: impl Into<String>) -> Self {
        OutputContent::OutputText { text: text.into(), annotations: Vec::new(), logprobs: Vec::new() }
    }
}

/// The output items of an answer: a message with its text (when there is text or no
/// tool call), then one `function_call` item per tool call. `ids` numbers the items
/// (`msg_…`, `fc_…`) with the caller's counter.
pub fn output_items(text: &str, tool_calls: &[ToolCall], mut ids: impl FnMut(&str) -> String) -> Vec<OutputItem> {
    let mut out = Vec::new();
    if !text.is_empty() || tool_calls.is_empty() {
        out.push(OutputItem::Message { id: ids("msg"), role: Role::Assistant, status: ResponseStatus::Completed, content: vec![OutputContent::text(text)] });
    }
    for c in tool_calls {
        out.push(OutputItem::FunctionCall {
            id: ids("fc"),
            call_id: c.id.clone(),
            name: c.function.name.clone(),
            arguments: c.function.arguments.clone(),
            status: ResponseStatus::Completed,
        });
    }
    out
}

/// The conversation an answer adds (kept for `previous_response_id`): one assistant
/// message with the text and the tool calls.
pub fn output_messages(items: &[OutputItem]) -> Vec<ChatMessage> {
    let mut m = ChatMessage { content: None, ..ChatMessage::new(Role::Assistant, "") };
    for item in items {
        match item {
            OutputItem::Message { content, .. } => {
                let text: Vec<&str> = content.iter().map(|OutputContent::OutputText { text, .. }| text.as_str()).collect();
                m.content = Some(MessageContent::Text(text.join("")));
            }
            OutputItem::FunctionCall { call_id, name, arguments, .. } => m.tool_calls.get_or_insert_with(Vec::new).push(ToolCall {
                id: call_id.clone(),
                kind: ToolType::Function,
                function: FunctionCall { name: name.clone(), arguments: arguments.clone() },
            }),
        }
    }
    if m.content.is_none() && m.tool_calls.is_none() {
        m.content = Some(MessageContent::Text(String::new()));
    }
    vec![m]
}

/// `usage` of a response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponsesUsage {
    pub input_tokens: u32,
    pub input_tokens_details: InputTokensDetails,
    pub output_tokens: u32,
    pub output_tokens_details: OutputTokensDetails,
    pub total_tokens: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputTokensDetails {
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: u32,
    /// Always 0: the prefix cache is filled as a side effect, never billed.
    pub cache_write_tokens: u32,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputTokensDetails {
    pub reasoning_tokens: u32,
}

impl From<Usage> for ResponsesUsage {
    fn from(u: Usage) -> Self {
        ResponsesUsage {
            input_tokens: u.prompt_tokens,
            input_tokens_details: InputTokensDetails { cached_tokens: u.prompt_tokens_details.cached_tokens, cache_write_tokens: 0 },
            output_tokens: u.completion_tokens,
            output_tokens_details: OutputTokensDetails::default(),
            total_tokens: u.total_tokens,
        }
    }
}

/// One streamed event (`event:` is its `type`). Every event carries the stream's
/// `sequence_number`, counting from 0.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ResponseStreamEvent {
    #[serde(rename = "response.created")]
    Created { sequence_number: u64, response: Box<ResponseObject> },
    #[serde(rename = "response.in_progress")]
    InProgress { sequence_number: u64, response: Box<ResponseObject> },
    #[serde(rename = "response.output_item.added")]
    OutputItemAdded { sequence_number: u64, output_index: usize, item: OutputItem },
    #[serde(rename = "response.content_part.added")]
    ContentPartAdded { sequence_number: u64, item_id: String, output_index: usize, content_index: usize, part: OutputContent },
    #[serde(rename = "response.output_text.delta")]
    OutputTextDelta { sequence_number: u64, item_id: String, output_index: usize, content_index: usize, delta: String, logprobs: Vec<serde_json::Value> },
    #[serde(rename = "response.output_text.done")]
    OutputTextDone { sequence_number: u64, item_id: String, output_index: usize, content_index: usize, text: String, logprobs: Vec<serde_json::Value> },
    #[serde(rename = "response.content_part.done")]
    ContentPartDone { sequence_number: u64, item_id: String, output_index: usize, content_index: usize, part: OutputContent },
    #[serde(rename = "response.function_call_arguments.delta")]
    FunctionCallArgumentsDelta { sequence_number: u64, item_id: String, output_index: usize, delta: String },
    #[serde(rename = "response.function_call_arguments.done")]
    FunctionCallArgumentsDone { sequence_number: u64, item_id: String, output_index: usize, arguments: String },
    #[serde(rename = "response.output_item.done")]
    OutputItemDone { sequence_number: u64, output_index: usize, item: OutputItem },
    #[serde(rename = "response.completed")]
    Completed { sequence_number: u64, response: Box<ResponseObject> },
    #[serde(rename = "response.incomplete")]
    Incomplete { sequence_number: u64, response: Box<ResponseObject> },
    #[serde(rename = "response.failed")]
    Failed { sequence_number: u64, response: Box<ResponseObject> },
    #[serde(rename = "error")]
    Error { sequence_number: u64, code: Option<String>, message: String, param: Option<String> },
}

impl ResponseStreamEvent {
    /// The `type` (and SSE `event:` name).
    pub fn type_name(&self) -> &'static str {
        match self {
            ResponseStreamEvent::Created { .. } => "response.created",
            ResponseStreamEvent::InProgress { .. } => "response.in_progress",
            ResponseStreamEvent::OutputItemAdded { .. } => "response.output_item.added",
            ResponseStreamEvent::ContentPartAdded { .. } => "response.content_part.added",
            ResponseStreamEvent::OutputTextDelta { .. } => "response.output_text.delta",
            ResponseStreamEvent::OutputTextDone { .. } => "response.output_text.done",
            ResponseStreamEvent::ContentPartDone { .. } => "response.content_part.done",
            ResponseStreamEvent::FunctionCallArgumentsDelta { .. } => "response.function_call_arguments.delta",
            ResponseStreamEvent::FunctionCallArgumentsDone { .. } => "response.function_call_arguments.done",
            ResponseStreamEvent::OutputItemDone { .. } => "response.output_item.done",
            ResponseStreamEvent::Completed { .. } => "response.completed",
            ResponseStreamEvent::Incomplete { .. } => "response.incomplete",
            ResponseStreamEvent::Failed { .. } => "response.failed",
            ResponseStreamEvent::Error { .. } => "error",
        }
    }
}
