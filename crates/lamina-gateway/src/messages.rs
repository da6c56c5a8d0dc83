//! `POST /v1/messages`: Anthropic's Messages API for Anthropic's clients. The request is
//! read and checked as `lamina serve` reads it ([`MessagesRequest::to_chat`]), routed as
//! the chat request it stands for — same rules, keys, budgets, cache, retries,
//! fallbacks and logs — and the answer is turned back into a message: whole
//! ([`message`]), or streamed as Anthropic's events ([`ChunksToEvents`], built on
//! [`MessageStream`], the renderer `lamina serve` uses too). Every error is in
//! Anthropic's shape (`{"type": "error", "error": {"type", "message"}}`), with its status
//! (an overload is 529).
//!
//! The stream's `message_start` carries no token counts (the backend reports usage at
//! the end); `message_delta` carries all of them, as Anthropic's clients read them, plus
//! the exact `cost`. A stream that breaks and cannot be completed ends with an `error`
//! event and no `message_stop`.

use crate::proxy::Endpoint;
use crate::routes;
use crate::Live;
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use lamina_api::messages::{anthropic_error, content_blocks, MessageResponse, MessageStream, MessagesUsage, StopReason, StreamEvent};
use lamina_api::{parse_json, ApiError, FinishReason, MessagesRequest, SseDecoder, SseEvent, ToolCall};
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::Instant;

pub async fn handle(State(live): State<Arc<Live>>, headers: HeaderMap, body: Body) -> Response {
    let gw = live.get();
    let started = Instant::now();
    let answer = match chat_body(&gw, &headers, body).await {
        Ok(chat) => routes::respond(gw, Endpoint::Chat, &headers, chat, started).await,
        Err(e) => routes::error(&e),
    };
    to_anthropic(answer).await
}

/// The chat request body a Messages request stands for.
async fn chat_body(gw: &crate::Gateway, headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, ApiError> {
    routes::authenticate(gw, headers)?;
    let limit = gw.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::payload_too_large(limit))?;
    let req: MessagesRequest = parse_json(&bytes)?;
    let chat = req.to_chat()?;
    match serde_json::to_value(&chat) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(ApiError::server_error("the chat request could not be serialised")),
    }
}

/// An OpenAI error body as the [`ApiError`] it reports.
fn api_error(status: u16, body: &[u8]) -> ApiError {
    let v: Value = serde_json::from_slice(body).unwrap_or_default();
    let message = v["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect());
    ApiError::new(status, v["error"]["type"].as_str().unwrap_or("error"), message)
}

/// The gateway's OpenAI-shaped answer as Anthropic's: errors and whole answers rewritten,
/// streams translated as they flow. Headers (`x-lamina-*`, `retry-after`) are kept.
async fn to_anthropic(r: Response) -> Response {
    let (mut parts, body) = r.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::WWW_AUTHENTICATE);
    let streamed = parts.headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    if streamed && parts.status.is_success() {
        let mut decoder = SseDecoder::new();
        let mut events = ChunksToEvents::default();
        let body = body.into_data_stream().map(move |r| {
            let mut out = String::new();
            match r {
                Ok(bytes) => decoder.feed(&bytes).iter().for_each(|e| out.push_str(&events.event(e))),
                Err(e) => out.push_str(&events.fail(&ApiError::server_error(format!("the stream broke: {e}")))),
            }
            Ok::<_, std::convert::Infallible>(Bytes::from(out))
        });
        return Response::from_parts(parts, Body::from_stream(body));
    }
    let status = parts.status.as_u16();
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let out = if status >= 400 {
        let (status, body) = anthropic_error(&api_error(status, &bytes));
        parts.status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        serde_json::to_vec(&body)
    } else {
        serde_json::to_vec(&message(&serde_json::from_slice(&bytes).unwrap_or_default()))
    };
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(out.unwrap_or_default()))
}

/// `msg_…` from a chat completion's id.
fn message_id(id: &Value) -> String {
    let id = id.as_str().unwrap_or_default();
    format!("msg_{}", id.strip_prefix("chatcmpl-").unwrap_or(id))
}

/// Chat usage as Messages usage: the prompt tokens read from the cache apart.
fn messages_usage(u: &Value) -> MessagesUsage {
    let n = |v: &Value| v.as_u64().unwrap_or(0).min(u32::MAX as u64) as u32;
    let cached = n(&u["prompt_tokens_details"]["cached_tokens"]);
    MessagesUsage {
        input_tokens: n(&u["prompt_tokens"]).saturating_sub(cached),
        output_tokens: n(&u["completion_tokens"]),
        cache_read_input_tokens: cached,
        cache_creation_input_tokens: 0,
    }
}

/// Serialises Messages usage with the gateway's `cost` (and cache mark) beside it.
fn usage_value(u: &Value) -> Value {
    let mut out = serde_json::to_value(messages_usage(u)).unwrap_or_default();
    for k in ["cost", "cache_hit"] {
        if let Some(x) = u.get(k) {
            out[k] = x.clone();
        }
    }
    out
}

/// A chat completion (choice 0) as a message.
pub fn message(v: &Value) -> Value {
    let c = &v["choices"][0];
    let text = c["message"]["content"].as_str().unwrap_or_default();
    let calls: Vec<ToolCall> = serde_json::from_value(c["message"]["tool_calls"].clone()).unwrap_or_default();
    let finish: FinishReason = serde_json::from_value(c["finish_reason"].clone()).unwrap_or(FinishReason::Stop);
    let stop = c["stop_reason"].as_str().map(str::to_string);
    let mut m = MessageResponse::new(message_id(&v["id"]), v["model"].as_str().unwrap_or_default());
    m.content = content_blocks(text, &calls);
    let reason = StopReason::from_finish(finish, stop.as_deref());
    m.stop_reason = Some(reason);
    m.stop_sequence = stop.filter(|_| reason == StopReason::StopSequence);
    let mut out = serde_json::to_value(m).unwrap_or_default();
    out["usage"] = usage_value(&v["usage"]);
    out
}

fn render(events: Vec<StreamEvent>, usage: Option<&Value>) -> String {
    let mut out = String::new();
    for e in events {
        let mut v = serde_json::to_value(&e).unwrap_or_default();
        if let (StreamEvent::MessageDelta { .. }, Some(u)) = (&e, usage) {
            v["usage"] = usage_value(u);
        }
        out.push_str(&format!("event: {}\ndata: {v}\n\n", e.type_name()));
    }
    out
}

/// Turns the gateway's chat completion chunks (choice 0) into Anthropic's events.
#[derive(Default)]
pub struct ChunksToEvents {
    stream: Option<MessageStream>,
    finished: bool,
    usage: Option<Value>,
    ended: bool,
}

impl ChunksToEvents {
    /// The Anthropic events (SSE text) one chunk makes.
    pub fn event(&mut self, e: &SseEvent) -> String {
        if self.ended {
            return String::new();
        }
        if e.is_done() {
            let Some(s) = self.stream.as_mut() else {
                return self.fail(&ApiError::new(502, "upstream_error", "the stream ended before it began"));
            };
            let mut events = Vec::new();
            if !self.finished {
                events.extend(s.finish(FinishReason::Stop, None));
            }
            let usage = self.usage.take().unwrap_or_default();
            events.extend(s.end(messages_usage(&usage)));
            self.ended = true;
            return render(events, Some(&usage));
        }
        let Ok(v) = serde_json::from_str::<Value>(&e.data) else {
            return self.fail(&ApiError::new(502, "upstream_error", "a stream event is not JSON"));
        };
        if let Some(err) = v.get("error").filter(|x| !x.is_null()) {
            let message = err["message"].as_str().unwrap_or("the stream failed");
            return self.fail(&ApiError::new(502, err["type"].as_str().unwrap_or("upstream_error"), message));
        }
        let mut events = Vec::new();
        let s = match &mut self.stream {
            Some(s) => s,
            None => {
                let mut s = MessageStream::new(MessageResponse::new(message_id(&v["id"]), v["model"].as_str().unwrap_or_default()));
                events.extend(s.start());
                self.stream.insert(s)
            }
        };
        for c in v["choices"].as_array().into_iter().flatten().filter(|c| c["index"].as_u64().unwrap_or(0) == 0) {
            let d = &c["delta"];
            if let Some(t) = d["content"].as_str() {
                events.extend(s.text(t.to_string()));
            }
            for call in d["tool_calls"].as_array().into_iter().flatten() {
                if let Some(id) = call["id"].as_str() {
                    events.extend(s.tool_call(id.to_string(), call["function"]["name"].as_str().unwrap_or_default().to_string()));
                }
                if let Some(a) = call["function"]["arguments"].as_str().filter(|a| !a.is_empty()) {
                    events.extend(s.tool_arguments(a.to_string()));
                }
            }
            if let Some(f) = c["finish_reason"].as_str() {
                let reason: FinishReason = serde_json::from_value(f.into()).unwrap_or(FinishReason::Stop);
                events.extend(s.finish(reason, c["stop_reason"].as_str().map(str::to_string)));
                self.finished = true;
            }
        }
        if v["usage"].is_object() {
            self.usage = Some(v["usage"].clone());
        }
        render(events, None)
    }

    /// An `error` event; nothing follows it.
    pub fn fail(&mut self, e: &ApiError) -> String {
        self.ended = true;
        let (_, body) = anthropic_error(e);
        render(vec![StreamEvent::Error { error: body.error }], None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn data(v: Value) -> SseEvent {
        SseEvent { data: v.to_string(), ..Default::default() }
    }

    /// `(event name, data)` of each event in SSE text.
    fn parsed(text: &str) -> Vec<(String, Value)> {
        let mut d = SseDecoder::new();
        d.feed(text.as_bytes()).into_iter().map(|e| (e.event.unwrap_or_default(), serde_json::from_str(&e.data).unwrap())).collect()
    }

    #[test]
    fn chunks_become_anthropic_events_with_usage_and_cost_at_the_end() {
        let mut t = ChunksToEvents::default();
        let chunk = |delta: Value, finish: Value| {
            data(
                json!({"id": "chatcmpl-7", "model": "smol", "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "stop_reason": if finish.is_null() { Value::Null } else { "END".into() }}]}),
            )
        };
        let mut text = String::new();
        text += &t.event(&chunk(json!({"role": "assistant", "content": ""}), Value::Null));
        text += &t.event(&chunk(json!({"content": "Hel"}), Value::Null));
        text += &t.event(&chunk(json!({"content": "lo"}), Value::Null));
        let usage = json!({"prompt_tokens": 30, "completion_tokens": 2, "prompt_tokens_details": {"cached_tokens": 16}, "cost": 1.5e-5});
        text += &t.event(&data(
            json!({"id": "chatcmpl-7", "model": "smol", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "stop_reason": "END"}], "usage": usage}),
        ));
        text += &t.event(&SseEvent { data: "[DONE]".into(), ..Default::default() });
        let evs = parsed(&text);
        let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(evs[0].1["message"]["id"], "msg_7");
        assert_eq!(evs[0].1["message"]["model"], "smol");
        assert_eq!(evs[3].1["delta"], json!({"type": "text_delta", "text": "Hel"}));
        assert_eq!(evs[6].1["delta"], json!({"stop_reason": "stop_sequence", "stop_sequence": "END"}));
        assert_eq!(
            evs[6].1["usage"],
            json!({"input_tokens": 14, "output_tokens": 2, "cache_read_input_tokens": 16, "cache_creation_input_tokens": 0, "cost": 1.5e-5})
        );
        // Nothing after the end.
        assert_eq!(t.event(&data(json!({"id": "x", "choices": []}))), "");
    }

    #[test]
    fn a_broken_stream_ends_with_an_error_event() {
        let mut t = ChunksToEvents::default();
        let mut text =
            t.event(&data(json!({"id": "c", "model": "m", "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": null}]})));
        text += &t.event(&data(json!({"error": {"message": "the stream broke after it started", "type": "upstream_error"}})));
        let evs = parsed(&text);
        let (name, last) = evs.last().unwrap();
        assert_eq!(name, "error");
        assert_eq!(last["error"]["type"], "api_error");
        assert!(!evs.iter().any(|(n, _)| n == "message_stop" || n == "message_delta"));
    }

    #[test]
    fn a_tool_call_answer_becomes_a_message() {
        let v = json!({
            "id": "chatcmpl-1", "model": "smol",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 9, "prompt_tokens_details": {"cached_tokens": 0}, "cost": 0.0}
        });
        let m = message(&v);
        assert_eq!(m["id"], "msg_1");
        assert_eq!(m["type"], "message");
        assert_eq!(m["content"], json!([{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}]));
        assert_eq!(m["stop_reason"], "tool_use");
        assert_eq!(m["usage"]["input_tokens"], 20);
        // A stop string reported by the backend is the stop sequence.
        let v = json!({"id": "chatcmpl-2", "model": "smol", "choices": [{"index": 0, "finish_reason": "stop", "stop_reason": "END", "message": {"content": "a"}}], "usage": {}});
        let m = message(&v);
        assert_eq!((m["stop_reason"].as_str(), m["stop_sequence"].as_str()), (Some("stop_sequence"), Some("END")));
    }
}
