//! Anthropic's Messages API as a backend dialect. Routes speak OpenAI's chat API inside
//! the gateway; for a backend of kind `anthropic` the chat request becomes a Messages
//! request ([`request`]), the message it answers with becomes a chat completion
//! ([`reply`]), and its stream's events become chat completion chunks
//! ([`StreamTranslator`]) — so retries, fallbacks, mid-stream continuation, usage and
//! costs work on Anthropic backends as on OpenAI-compatible ones.
//!
//! Follows Anthropic's API reference ("Messages", "Streaming Messages"): requests go to
//! `{url}/messages` with `x-api-key` and `anthropic-version` ([`VERSION`]).
//!
//! What a Messages request cannot carry is refused as [`Failure::Unsupported`] (this
//! deployment cannot serve it; the next one is tried): several choices (`n` > 1),
//! log-probabilities, JSON mode, penalties and logit bias, audio and file parts. Left
//! out without a word because they change nothing a client can rely on: `seed`,
//! `stream_options` (Anthropic always reports usage), `store`, `service_tier` and
//! OpenAI's `metadata`.

use crate::backend::Failure;
use bytes::Bytes;
use lamina_api::{ApiError, SseEvent};
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};

/// The `anthropic-version` header sent.
pub const VERSION: &str = "2023-06-01";

fn client_error(message: String) -> Failure {
    Failure::Client { status: 400, body: Bytes::from(ApiError::invalid_request(message).to_json()) }
}

fn unsupported(what: &str) -> Failure {
    Failure::Unsupported(format!("{what} cannot be sent to Anthropic's Messages API"))
}

/// The text of a chat `content`: a string, or the `text` parts of an array.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter(|p| p["type"] == "text").filter_map(|p| p["text"].as_str()).collect::<Vec<_>>().join(""),
        _ => String::new(),
    }
}

/// A user message's content as Messages blocks: text, and images (a `data:` URL as a
/// base64 source, any other URL as a URL source).
fn user_blocks(content: &Value, at: &str) -> Result<Vec<Value>, Failure> {
    let parts = match content {
        Value::String(s) => return Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts,
        Value::Null => return Ok(Vec::new()),
        _ => return Err(client_error(format!("{at}: content must be a string or an array of parts"))),
    };
    let mut out = Vec::new();
    for (j, p) in parts.iter().enumerate() {
        match p["type"].as_str() {
            Some("text") => out.push(json!({"type": "text", "text": p["text"].as_str().unwrap_or_default()})),
            Some("image_url") => {
                let url = p["image_url"]["url"].as_str().or(p["image_url"].as_str()).unwrap_or_default();
                let source = match url.strip_prefix("data:").and_then(|rest| rest.split_once(";base64,")) {
                    Some((media_type, data)) => json!({"type": "base64", "media_type": media_type, "data": data}),
                    None => json!({"type": "url", "url": url}),
                };
                out.push(json!({"type": "image", "source": source}));
            }
            Some(other) => return Err(unsupported(&format!("a content part of type `{other}` ({at}[{j}])"))),
            None => return Err(client_error(format!("{at}[{j}]: a content part needs a `type`"))),
        }
    }
    Ok(out)
}

/// Appends `blocks` as a `role` turn, merged into the previous turn when it has the same
/// role (tool results after one another, a user message after them).
fn push_turn(turns: &mut Vec<Value>, role: &str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    if let Some(last) = turns.last_mut().filter(|t| t["role"] == role) {
        if let Some(c) = last["content"].as_array_mut() {
            c.extend(blocks);
            return;
        }
    }
    turns.push(json!({"role": role, "content": blocks}));
}

/// A chat request (OpenAI's body, the deployment's model already in it) as a Messages
/// request. `max_tokens` is required by Anthropic: `default_max_tokens` when the request
/// names none.
pub fn request(body: &Map<String, Value>, default_max_tokens: u32) -> Result<Map<String, Value>, Failure> {
    let set = |field: &str| body.get(field).filter(|v| !v.is_null());
    let messages = body.get("messages").and_then(Value::as_array).ok_or_else(|| client_error("`messages` must be an array".into()))?;
    let mut system: Vec<String> = Vec::new();
    let mut turns: Vec<Value> = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let at = format!("messages[{i}]");
        let content = &m["content"];
        match m["role"].as_str() {
            Some("system" | "developer") => system.push(text_of(content)),
            Some("user") => push_turn(&mut turns, "user", user_blocks(content, &at)?),
            Some("assistant") => {
                let mut blocks = Vec::new();
                let text = text_of(content);
                if !text.is_empty() {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in m["tool_calls"].as_array().into_iter().flatten() {
                    let arguments = call["function"]["arguments"].as_str().unwrap_or("{}");
                    let input = match serde_json::from_str::<Value>(arguments) {
                        Ok(v @ Value::Object(_)) => v,
                        _ => json!({}),
                    };
                    blocks.push(json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input}));
                }
                push_turn(&mut turns, "assistant", blocks);
            }
            Some("tool") => {
                let id = m["tool_call_id"].as_str().ok_or_else(|| client_error(format!("{at}: a tool message needs `tool_call_id`")))?;
                push_turn(&mut turns, "user", vec![json!({"type": "tool_result", "tool_use_id": id, "content": text_of(content)})]);
            }
            Some("function") => return Err(unsupported(&format!("a `function` message ({at}; use tool messages)"))),
            _ => return Err(client_error(format!("{at}: `role` must be system, developer, user, assistant or tool"))),
        }
    }
    if turns.is_empty() {
        return Err(client_error("`messages` holds no user or assistant message".into()));
    }
    if set("n").and_then(Value::as_u64).is_some_and(|n| n > 1) {
        return Err(unsupported("`n` above 1 (several choices)"));
    }
    if set("logprobs").is_some_and(|v| v != &Value::Bool(false)) || set("top_logprobs").is_some() {
        return Err(unsupported("`logprobs`"));
    }
    if set("response_format").is_some_and(|f| f["type"] != "text") {
        return Err(unsupported("`response_format` (JSON mode)"));
    }
    for field in ["frequency_penalty", "presence_penalty"] {
        if set(field).and_then(Value::as_f64).is_some_and(|p| p != 0.0) {
            return Err(unsupported(&format!("`{field}`")));
        }
    }
    if set("logit_bias").is_some_and(|b| b.as_object().is_none_or(|o| !o.is_empty())) {
        return Err(unsupported("`logit_bias`"));
    }

    let mut out = Map::new();
    out.insert("model".into(), body.get("model").cloned().unwrap_or_default());
    let max_tokens = set("max_completion_tokens").or(set("max_tokens")).and_then(Value::as_u64).unwrap_or(default_max_tokens as u64);
    out.insert("max_tokens".into(), max_tokens.into());
    let system: Vec<String> = system.into_iter().filter(|s| !s.is_empty()).collect();
    if !system.is_empty() {
        out.insert("system".into(), system.join("\n\n").into());
    }
    out.insert("messages".into(), turns.into());
    for field in ["temperature", "top_p", "top_k", "stream"] {
        if let Some(v) = set(field) {
            out.insert(field.into(), v.clone());
        }
    }
    match set("stop") {
        Some(Value::String(s)) => {
            out.insert("stop_sequences".into(), json!([s]));
        }
        Some(Value::Array(a)) if !a.is_empty() => {
            out.insert("stop_sequences".into(), Value::Array(a.clone()));
        }
        _ => {}
    }
    if let Some(user) = set("user").and_then(Value::as_str) {
        out.insert("metadata".into(), json!({"user_id": user}));
    }
    let tools = set("tools").and_then(Value::as_array).filter(|t| !t.is_empty());
    if let Some(tools) = tools {
        let mut list = Vec::new();
        for (i, t) in tools.iter().enumerate() {
            if t["type"] != "function" {
                return Err(unsupported(&format!("a tool of type {} (tools[{i}])", t["type"])));
            }
            let f = &t["function"];
            let mut tool = json!({"name": f["name"], "input_schema": f.get("parameters").filter(|p| !p.is_null()).cloned().unwrap_or(json!({"type": "object", "properties": {}}))});
            if let Some(d) = f["description"].as_str() {
                tool["description"] = d.into();
            }
            list.push(tool);
        }
        out.insert("tools".into(), list.into());
    }
    let mut choice = match set("tool_choice") {
        None => None,
        Some(Value::String(s)) => Some(match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "required" => json!({"type": "any"}),
            "none" => json!({"type": "none"}),
            other => return Err(client_error(format!("tool_choice `{other}` is not auto, required or none"))),
        }),
        Some(c) => match c["function"]["name"].as_str() {
            Some(name) => Some(json!({"type": "tool", "name": name})),
            None => return Err(client_error("tool_choice must name a function".into())),
        },
    };
    if set("parallel_tool_calls") == Some(&Value::Bool(false)) && tools.is_some() {
        let c = choice.get_or_insert_with(|| json!({"type": "auto"}));
        if c["type"] != "none" {
            c["disable_parallel_tool_use"] = true.into();
        }
    }
    if let Some(c) = choice {
        out.insert("tool_choice".into(), c);
    }
    Ok(out)
}

/// A chat `finish_reason` for a Messages `stop_reason`.
fn finish_reason(stop_reason: &Value) -> &'static str {
    match stop_reason.as_str() {
        Some("max_tokens") => "length",
        Some("tool_use") => "tool_calls",
        Some("refusal") => "content_filter",
        _ => "stop",
    }
}

/// Messages usage as chat usage: every prompt token (computed, read from the cache or
/// written to it) in `prompt_tokens`, the cache reads in `cached_tokens`.
fn usage(u: &Value, input: u64, read: u64, written: u64) -> Value {
    let n = |k: &str, before: u64| u[k].as_u64().unwrap_or(before);
    let (input, read, written) = (n("input_tokens", input), n("cache_read_input_tokens", read), n("cache_creation_input_tokens", written));
    let output = n("output_tokens", 0);
    let prompt = input + read + written;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": read},
    })
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A Messages answer as a chat completion: its text blocks as the content, its
/// `tool_use` blocks as tool calls, the stop sequence that ended it as `stop_reason`.
/// Thinking blocks are left out (their tokens are in `output_tokens`).
pub fn reply(v: Value) -> Result<Value, Failure> {
    let Some(blocks) = v["content"].as_array().filter(|_| v["type"] == "message") else {
        return Err(Failure::Malformed("the reply is not a Messages API message (no `type: message` with a `content` array)".into()));
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in blocks {
        match b["type"].as_str() {
            Some("text") => text.push_str(b["text"].as_str().unwrap_or_default()),
            Some("tool_use") => calls.push(json!({
                "id": b["id"],
                "type": "function",
                "function": {"name": b["name"], "arguments": serde_json::to_string(&b["input"]).unwrap_or_else(|_| "{}".into())},
            })),
            _ => {}
        }
    }
    let mut message = json!({"role": "assistant", "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { text.into() }, "refusal": null});
    if !calls.is_empty() {
        message["tool_calls"] = calls.into();
    }
    let mut choice = json!({"index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&v["stop_reason"])});
    if let Some(s) = v["stop_sequence"].as_str() {
        choice["stop_reason"] = s.into();
    }
    Ok(json!({
        "id": v["id"],
        "object": "chat.completion",
        "created": now(),
        "model": v["model"],
        "choices": [choice],
        "usage": usage(&v["usage"], 0, 0, 0),
    }))
}

/// Turns a Messages stream's events into chat completion chunks (`data:` lines, and
/// `data: [DONE]` for `message_stop`). An `error` event is a failure of the stream.
#[derive(Default)]
pub struct StreamTranslator {
    id: Value,
    model: Value,
    created: u64,
    /// Prompt tokens from `message_start`: computed, read from the cache, written to it.
    input: (u64, u64, u64),
    /// Tool calls started so far; the call index of each content block that is one.
    calls: u32,
    block_call: Vec<Option<u32>>,
}

impl StreamTranslator {
    fn chunk(&self, choices: Value) -> String {
        lamina_api::sse::data(&json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": choices}))
    }

    fn delta(&self, delta: Value) -> String {
        self.chunk(json!([{"index": 0, "delta": delta, "finish_reason": null}]))
    }

    pub fn event(&mut self, e: &SseEvent) -> Result<Vec<String>, Failure> {
        let v: Value = serde_json::from_str(&e.data).map_err(|err| Failure::Malformed(format!("a Messages stream event is not JSON ({err})")))?;
        let kind = v["type"].as_str().or(e.event.as_deref()).unwrap_or_default();
        let mut out = Vec::new();
        match kind {
            "message_start" => {
                let m = &v["message"];
                self.id = m["id"].clone();
                self.model = m["model"].clone();
                self.created = now();
                let u = &m["usage"];
                let n = |k: &str| u[k].as_u64().unwrap_or(0);
                self.input = (n("input_tokens"), n("cache_read_input_tokens"), n("cache_creation_input_tokens"));
                out.push(self.delta(json!({"role": "assistant", "content": ""})));
            }
            "content_block_start" => {
                let index = v["index"].as_u64().unwrap_or(0) as usize;
                if index >= 4096 {
                    return Err(Failure::Malformed(format!("a Messages stream block has index {index}")));
                }
                if self.block_call.len() <= index {
                    self.block_call.resize(index + 1, None);
                }
                let b = &v["content_block"];
                match b["type"].as_str() {
                    Some("tool_use") => {
                        let k = self.calls;
                        self.calls += 1;
                        self.block_call[index] = Some(k);
                        out.push(
                            self.delta(
                                json!({"tool_calls": [{"index": k, "id": b["id"], "type": "function", "function": {"name": b["name"], "arguments": ""}}]}),
                            ),
                        );
                    }
                    Some("text") => {
                        if let Some(t) = b["text"].as_str().filter(|t| !t.is_empty()) {
                            out.push(self.delta(json!({"content": t})));
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = &v["delta"];
                match d["type"].as_str() {
                    Some("text_delta") => out.push(self.delta(json!({"content": d["text"]}))),
                    Some("input_json_delta") => {
                        let index = v["index"].as_u64().unwrap_or(0) as usize;
                        if let Some(k) = self.block_call.get(index).copied().flatten() {
                            out.push(self.delta(json!({"tool_calls": [{"index": k, "function": {"arguments": d["partial_json"]}}]})));
                        }
                    }
                    // Thinking, signatures and citations have no place in a chat chunk.
                    _ => {}
                }
            }
            "message_delta" => {
                let d = &v["delta"];
                let mut choice = json!({"index": 0, "delta": {}, "finish_reason": finish_reason(&d["stop_reason"])});
                if let Some(s) = d["stop_sequence"].as_str() {
                    choice["stop_reason"] = s.into();
                }
                out.push(self.chunk(json!([choice])));
                let (input, read, written) = self.input;
                let mut last = json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": self.model, "choices": []});
                last["usage"] = usage(&v["usage"], input, read, written);
                out.push(lamina_api::sse::data(&last));
            }
            "message_stop" => out.push(lamina_api::sse::DONE.to_string()),
            "error" => {
                let kind = v["error"]["type"].as_str().unwrap_or("error");
                let message = v["error"]["message"].as_str().unwrap_or("(no message)");
                let status = if kind == "overloaded_error" { 529 } else { 502 };
                return Err(Failure::Server { status, message: format!("error event ({kind}): {message}") });
            }
            // `ping`, `content_block_stop`, and event types added later.
            _ => {}
        }
        Ok(out)
    }
}

/// An Anthropic error body (`{"type": "error", "error": {"type", "message"}}`) as the
/// OpenAI error body a chat client reads, for errors passed back to the client.
pub fn openai_error(status: u16, body: &[u8]) -> Bytes {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let message = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    let kind = v["error"]["type"].as_str().unwrap_or("invalid_request_error");
    Bytes::from(ApiError::new(status, kind, message).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_chat_request_becomes_a_messages_request() {
        let body = obj(json!({
            "model": "claude-x",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12 C"},
                {"role": "user", "content": "And tomorrow?"},
                {"role": "assistant", "content": "Tomorrow it will be"}
            ],
            "max_completion_tokens": 64, "temperature": 0.5, "stop": "END", "user": "u-7", "stream": true,
            "stream_options": {"include_usage": true}, "seed": 3,
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather now", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required", "parallel_tool_calls": false
        }));
        let m = Value::Object(request(&body, 4096).unwrap());
        assert_eq!(
            m,
            json!({
                "model": "claude-x",
                "max_tokens": 64,
                "system": "Be brief.\n\nUse metric units.",
                "messages": [
                    {"role": "user", "content": [{"type": "text", "text": "Weather?"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}]},
                    {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}]},
                    // The tool result and the next user message are one user turn.
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "12 C"}, {"type": "text", "text": "And tomorrow?"}]},
                    // A final assistant turn: Anthropic continues it (the gateway's mid-stream continuation).
                    {"role": "assistant", "content": [{"type": "text", "text": "Tomorrow it will be"}]}
                ],
                "temperature": 0.5,
                "stream": true,
                "stop_sequences": ["END"],
                "metadata": {"user_id": "u-7"},
                "tools": [{"name": "weather", "description": "Weather now", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
                "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
            })
        );
        // No max tokens: the backend's default.
        let m = request(&obj(json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]})), 1000).unwrap();
        assert_eq!(m["max_tokens"], 1000);
    }

    #[test]
    fn what_a_messages_request_cannot_carry_is_refused() {
        let base = json!({"model": "c", "messages": [{"role": "user", "content": "hi"}]});
        for (field, value) in [
            ("n", json!(2)),
            ("logprobs", json!(true)),
            ("response_format", json!({"type": "json_object"})),
            ("presence_penalty", json!(0.5)),
            ("logit_bias", json!({"50256": -100})),
        ] {
            let mut b = base.clone();
            b[field] = value;
            let f = request(&obj(b), 100).unwrap_err();
            assert!(matches!(&f, Failure::Unsupported(m) if m.contains(field)), "{field}: {f:?}");
        }
        // Neutral values are fine.
        let mut b = base.clone();
        b["n"] = json!(1);
        b["presence_penalty"] = json!(0);
        b["logprobs"] = json!(false);
        b["response_format"] = json!({"type": "text"});
        assert!(request(&obj(b), 100).is_ok());
        // The client's own mistakes are client errors.
        let f = request(&obj(json!({"model": "c", "messages": [{"role": "wizard", "content": "hi"}]})), 100).unwrap_err();
        assert!(matches!(f, Failure::Client { status: 400, .. }));
        let f = request(&obj(json!({"model": "c", "messages": [{"role": "system", "content": "only this"}]})), 100).unwrap_err();
        assert!(matches!(f, Failure::Client { status: 400, .. }));
    }

    #[test]
    fn a_message_becomes_a_chat_completion() {
        let m = json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
            "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"}, {"type": "text", "text": "Let me check."},
                        {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {"city": "Oslo"}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 90, "cache_creation_input_tokens": 5, "output_tokens": 7}
        });
        let c = reply(m).unwrap();
        assert_eq!(c["id"], "msg_1");
        assert_eq!(c["choices"][0]["message"]["content"], "Let me check.");
        assert_eq!(c["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], "{\"city\":\"Oslo\"}");
        assert_eq!(c["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(c["usage"], json!({"prompt_tokens": 105, "completion_tokens": 7, "total_tokens": 112, "prompt_tokens_details": {"cached_tokens": 90}}));
        let stopped =
            reply(json!({"type": "message", "content": [{"type": "text", "text": "a"}], "stop_reason": "stop_sequence", "stop_sequence": "END", "usage": {}}))
                .unwrap();
        assert_eq!((stopped["choices"][0]["finish_reason"].as_str(), stopped["choices"][0]["stop_reason"].as_str()), (Some("stop"), Some("END")));
        assert!(matches!(reply(json!({"type": "error"})), Err(Failure::Malformed(_))));
    }

    #[test]
    fn a_messages_stream_becomes_chunks() {
        let mut t = StreamTranslator::default();
        let ev = |v: Value| SseEvent { event: v["type"].as_str().map(str::to_string), data: v.to_string(), ..Default::default() };
        let events = [
            json!({"type": "message_start", "message": {"id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 12, "cache_read_input_tokens": 30, "output_tokens": 1}}}),
            json!({"type": "ping"}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
            json!({"type": "content_block_stop", "index": 0}),
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "tu_1", "name": "weather", "input": {}}}),
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
            json!({"type": "content_block_stop", "index": 1}),
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
            json!({"type": "message_stop"}),
        ];
        let mut out = Vec::new();
        for e in events {
            out.extend(t.event(&ev(e)).unwrap());
        }
        assert_eq!(out.len(), 7, "{out:#?}");
        let chunk = |s: &str| serde_json::from_str::<Value>(s.strip_prefix("data: ").unwrap().trim()).unwrap();
        assert_eq!(chunk(&out[0])["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
        assert_eq!(chunk(&out[0])["id"], "msg_9");
        assert_eq!(chunk(&out[1])["choices"][0]["delta"]["content"], "Hi");
        assert_eq!(
            chunk(&out[2])["choices"][0]["delta"]["tool_calls"][0],
            json!({"index": 0, "id": "tu_1", "type": "function", "function": {"name": "weather", "arguments": ""}})
        );
        assert_eq!(chunk(&out[3])["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"], "{\"city\":");
        assert_eq!(chunk(&out[4])["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chunk(&out[5])["usage"],
            json!({"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51, "prompt_tokens_details": {"cached_tokens": 30}})
        );
        assert_eq!(out[6], "data: [DONE]\n\n");
        let f = t.event(&ev(json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}))).unwrap_err();
        assert!(matches!(f, Failure::Server { status: 529, .. }) && f.retryable());
        assert!(matches!(t.event(&SseEvent { data: "{oops".into(), ..Default::default() }), Err(Failure::Malformed(_))));
    }
}
