//! Range and consistency checks on parsed requests, each failure a 400
//! `invalid_request_error` whose `param` names the offending field.
//!
//! The ranges are those of the OpenAI API reference, "Chat" → "Create chat completion"
//! and "Completions" → "Create completion" (request body). Extension fields get the
//! ranges llama.cpp and vLLM give them.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use crate::chat::{ChatCompletionRequest, ContentPart, MessageContent, Role};
use crate::common::{SamplingFields, Stop};
use crate::completions::{CompletionRequest, Prompt};
use crate::error::ApiError;
use crate::response_format::ResponseFormat;
use crate::tools::ToolChoice;

/// Most stop sequences a request may give.
pub const MAX_STOP: usize = 4;
/// Most choices a request may ask for.
pub const MAX_N: u32 = 128;
/// Most alternatives per token in a chat request's `top_logprobs`.
pub const MAX_TOP_LOGPROBS: u32 = 20;
/// Most alternatives per token in a legacy request's `logprobs`.
pub const MAX_COMPLETION_LOGPROBS: u32 = 5;

impl ChatCompletionRequest {
    /// Checks everything the wire types cannot express. Call after [`crate::parse_json`].
    pub fn validate(&self) -> Result<(), ApiError> {
        check_model(&self.model)?;
        self.check_messages()?;
        check_min_tokens("max_tokens", self.max_tokens)?;
        check_min_tokens("max_completion_tokens", self.max_completion_tokens)?;
        if let (Some(a), Some(b)) = (self.max_tokens, self.max_completion_tokens) {
            if a != b {
                return Err(ApiError::invalid_param(
                    "max_completion_tokens",
                    format!(
                        "max_tokens ({a}) and max_completion_tokens ({b}) disagree; \
                         give one of them"
                    ),
                ));
            }
        }
        check_sampling(&self.sampling())?;
        if let Some(k) = self.top_logprobs {
            check_u32("top_logprobs", k, 0..=MAX_TOP_LOGPROBS)?;
            if self.logprobs != Some(true) {
                return Err(ApiError::invalid_param("top_logprobs", "top_logprobs requires logprobs to be true"));
            }
        }
        self.check_response_format()?;
        if let Some(rag) = &self.rag {
            rag.validate()?;
        }
        self.check_continuation()?;
        self.check_tools()
    }

    fn check_continuation(&self) -> Result<(), ApiError> {
        if self.continue_final_message != Some(true) {
            return Ok(());
        }
        let param = "continue_final_message";
        match self.messages.last() {
            Some(m) if m.role != Role::Assistant => {
                Err(ApiError::invalid_param(param, "continue_final_message needs the last message to be an assistant turn to continue"))
            }
            Some(m) if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) => {
                Err(ApiError::invalid_param(param, "continue_final_message cannot continue an assistant turn that made tool calls"))
            }
            _ if self.n.is_some_and(|n| n > 1) => Err(ApiError::invalid_param(param, "continue_final_message takes one choice (n = 1)")),
            _ => Ok(()),
        }
    }

    fn check_response_format(&self) -> Result<(), ApiError> {
        let Some(ResponseFormat::JsonSchema { json_schema }) = &self.response_format else {
            return Ok(());
        };
        check_name("response_format.json_schema.name", &json_schema.name)?;
        if let Some(schema) = &json_schema.schema {
            check_schema_shape("response_format.json_schema.schema", schema)?;
        }
        Ok(())
    }

    fn check_tools(&self) -> Result<(), ApiError> {
        let tools = self.tool_list();
        for (i, t) in tools.iter().enumerate() {
            let at = format!("tools[{i}].function");
            check_name(&format!("{at}.name"), &t.function.name)?;
            if tools[..i].iter().any(|o| o.function.name == t.function.name) {
                return Err(ApiError::invalid_param(format!("{at}.name"), format!("{at}.name: two tools are called `{}`", t.function.name)));
            }
            if let Some(p) = &t.function.parameters {
                check_schema_shape(&format!("{at}.parameters"), p)?;
                if p.get("type").is_some_and(|k| k != "object") {
                    return Err(ApiError::invalid_param(
                        format!("{at}.parameters"),
                        format!("{at}.parameters must describe an object (`\"type\": \"object\"`)"),
                    ));
                }
            }
        }
        let choice = self.tool_choice();
        match &choice {
            ToolChoice::Required | ToolChoice::Function(_) if tools.is_empty() => {
                return Err(ApiError::invalid_param("tool_choice", "tool_choice asks for a tool call, but the request offers no tools"));
            }
            ToolChoice::Function(name) if !tools.iter().any(|t| &t.function.name == name) => {
                let known: Vec<&str> = tools.iter().map(|t| t.function.name.as_str()).collect();
                return Err(ApiError::invalid_param("tool_choice", format!("tool_choice names `{name}`, which is not in tools ({})", known.join(", "))));
            }
            _ => {}
        }
        let structured = self.response_format.as_ref().is_some_and(|f| *f != ResponseFormat::Text);
        if structured && !tools.is_empty() && choice != ToolChoice::None {
            return Err(ApiError::invalid_param(
                "response_format",
                "response_format together with tools is not supported by this server so far: leave one out, or set tool_choice to none",
            ));
        }
        Ok(())
    }

    fn check_messages(&self) -> Result<(), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid_param("messages", "messages must hold at least one message"));
        }
        for (i, m) in self.messages.iter().enumerate() {
            let at = format!("messages[{i}]");
            let has_tool_calls = m.tool_calls.as_ref().is_some_and(|c| !c.is_empty());
            if m.tool_calls.is_some() && m.role != Role::Assistant {
                return Err(ApiError::invalid_param(
                    format!("{at}.tool_calls"),
                    format!("{at}.tool_calls: only assistant messages have tool_calls, this is a `{}` message", m.role),
                ));
            }
            match &m.content {
                None if m.role == Role::Assistant && has_tool_calls => {}
                None if m.role == Role::Assistant => {
                    return Err(ApiError::invalid_param(format!("{at}.content"), format!("{at}.content: an assistant message needs content or tool_calls")))
                }
                None => return Err(ApiError::invalid_param(format!("{at}.content"), format!("{at}.content is required for a `{}` message", m.role))),
                Some(MessageContent::Text(_)) => {}
                Some(MessageContent::Parts(parts)) => {
                    if parts.is_empty() {
                        return Err(ApiError::invalid_param(format!("{at}.content"), format!("{at}.content must not be an empty array")));
                    }
                    for (j, part) in parts.iter().enumerate() {
                        if !matches!(part, ContentPart::Text { .. }) {
                            return Err(ApiError::invalid_param(
                                format!("{at}.content[{j}]"),
                                format!(
                                    "{at}.content[{j}]: content parts of type `{}` are not \
                                     supported by this server; only `text` parts are",
                                    part.type_name()
                                ),
                            )
                            .with_code("unsupported_content_part"));
                        }
                    }
                }
            }
            if m.role == Role::Tool && m.tool_call_id.as_deref().is_none_or(str::is_empty) {
                return Err(ApiError::invalid_param(format!("{at}.tool_call_id"), format!("{at}.tool_call_id is required for a `tool` message")));
            }
        }
        Ok(())
    }
}

impl CompletionRequest {
    /// Checks everything the wire types cannot express. Call after [`crate::parse_json`].
    pub fn validate(&self) -> Result<(), ApiError> {
        check_model(&self.model)?;
        check_prompt(&self.prompt)?;
        if self.max_tokens == Some(0) && !self.is_echo() {
            return Err(ApiError::invalid_param("max_tokens", "max_tokens must be at least 1 (0 is allowed only with echo, to score the prompt)"));
        }
        check_sampling(&self.sampling())?;
        if let Some(k) = self.logprobs {
            check_u32("logprobs", k, 0..=MAX_COMPLETION_LOGPROBS)?;
        }
        if let Some(best_of) = self.best_of {
            if best_of != self.n() {
                return Err(ApiError::invalid_param(
                    "best_of",
                    format!(
                        "best_of ({best_of}) must equal n ({}): this server does not rank \
                         candidates",
                        self.n()
                    ),
                ));
            }
        }
        if self.grammar.as_deref().is_some_and(|g| g.trim().is_empty()) {
            return Err(ApiError::invalid_param("grammar", "grammar must not be empty"));
        }
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            return Err(ApiError::invalid_param("suffix", "suffix is not supported by this server (no insertion); omit it or send null"));
        }
        Ok(())
    }
}

fn check_sampling(s: &SamplingFields<'_>) -> Result<(), ApiError> {
    check_f32("temperature", s.temperature, 0.0..=2.0)?;
    check_f32("top_p", s.top_p, 0.0..=1.0)?;
    if let Some(n) = s.n {
        check_u32("n", n, 1..=MAX_N)?;
    }
    check_f32("presence_penalty", s.presence_penalty, -2.0..=2.0)?;
    check_f32("frequency_penalty", s.frequency_penalty, -2.0..=2.0)?;
    check_stop(s.stop)?;
    parse_logit_bias(s.logit_bias)?;
    if s.stream_options && s.stream != Some(true) {
        return Err(ApiError::invalid_param("stream_options", "stream_options is only allowed when stream is true"));
    }
    if let Some(k) = s.top_k {
        if k < -1 {
            return Err(ApiError::invalid_param("top_k", format!("top_k must be -1 or 0 (disabled) or a positive count, got {k}")));
        }
    }
    check_f32("min_p", s.min_p, 0.0..=1.0)?;
    if let Some(p) = s.repetition_penalty {
        if !(p.is_finite() && p > 0.0) {
            return Err(ApiError::invalid_param("repetition_penalty", format!("repetition_penalty must be greater than 0, got {p}")));
        }
    }
    Ok(())
}

/// OpenAI's rule for function and schema names: 1 to 64 of `a-z A-Z 0-9 _ -`.
fn check_name(param: &str, name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_param(param, format!("{param} must be 1 to 64 letters, digits, `_` or `-`, got {name:?}")))
    }
}

/// A JSON schema is an object or a boolean; whether its contents are a schema the server
/// can follow is checked when it is compiled.
fn check_schema_shape(param: &str, schema: &serde_json::Value) -> Result<(), ApiError> {
    if schema.is_object() || schema.is_boolean() {
        Ok(())
    } else {
        Err(ApiError::invalid_param(param, format!("{param} is not a valid JSON schema: a schema is an object (or a boolean), got {schema}")))
    }
}

fn check_model(model: &str) -> Result<(), ApiError> {
    if model.is_empty() {
        return Err(ApiError::invalid_param("model", "model must not be empty"));
    }
    Ok(())
}

fn check_prompt(prompt: &Prompt) -> Result<(), ApiError> {
    let empty_array = match prompt {
        Prompt::Text(_) => false,
        Prompt::Texts(v) => v.is_empty(),
        Prompt::Tokens(v) => v.is_empty(),
        Prompt::TokenBatches(b) => {
            if let Some(i) = b.iter().position(Vec::is_empty) {
                return Err(ApiError::invalid_param(format!("prompt[{i}]"), format!("prompt[{i}] must not be an empty array of token ids")));
            }
            b.is_empty()
        }
    };
    if empty_array {
        return Err(ApiError::invalid_param("prompt", "prompt must not be an empty array"));
    }
    Ok(())
}

fn check_min_tokens(param: &str, value: Option<u32>) -> Result<(), ApiError> {
    if value == Some(0) {
        return Err(ApiError::invalid_param(param, format!("{param} must be at least 1, got 0")));
    }
    Ok(())
}

/// `value` within `range`; NaN and infinities fail (they cannot come from JSON, but a
/// value built in code might).
fn check_f32(param: &str, value: Option<f32>, range: RangeInclusive<f32>) -> Result<(), ApiError> {
    match value {
        Some(v) if !range.contains(&v) => {
            Err(ApiError::invalid_param(param, format!("{param} must be between {} and {}, got {v}", range.start(), range.end())))
        }
        _ => Ok(()),
    }
}

fn check_u32(param: &str, value: u32, range: RangeInclusive<u32>) -> Result<(), ApiError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid_param(param, format!("{param} must be between {} and {}, got {value}", range.start(), range.end())))
    }
}

fn check_stop(stop: Option<&Stop>) -> Result<(), ApiError> {
    let list: Vec<&str> = match stop {
        None => return Ok(()),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v.iter().map(String::as_str).collect(),
    };
    if list.len() > MAX_STOP {
        return Err(ApiError::invalid_param("stop", format!("stop may hold at most {MAX_STOP} sequences, got {}", list.len())));
    }
    if list.iter().any(|s| s.is_empty()) {
        return Err(ApiError::invalid_param("stop", "stop sequences must not be empty"));
    }
    Ok(())
}

/// `logit_bias` as `(token id, bias)` sorted by id; shared by validation and the
/// requests' `logit_bias_map`.
pub(crate) fn parse_logit_bias(bias: Option<&BTreeMap<String, f32>>) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(bias) = bias else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(bias.len());
    for (key, &value) in bias {
        // `str::parse` would also take "+5"; a token id is digits only.
        let digits = !key.is_empty() && key.bytes().all(|b| b.is_ascii_digit());
        let id: u32 = key
            .parse()
            .ok()
            .filter(|_| digits)
            .ok_or_else(|| ApiError::invalid_param("logit_bias", format!("logit_bias keys must be token ids (non-negative integers), got {key:?}")))?;
        if !(-100.0..=100.0).contains(&value) {
            return Err(ApiError::invalid_param("logit_bias", format!("logit_bias values must be between -100 and 100, got {value} for token {key}")));
        }
        out.push((id, value));
    }
    out.sort_by_key(|&(id, _)| id);
    Ok(out)
}
