//! Streams: the first backend that opens a stream *and sends its first event* answers —
//! failures before that are retried and fallen back from like any other, and the client
//! gets a plain HTTP error if every target fails, not a stream that dies. Once events
//! flow, each is relayed as it comes (the `model` renamed to the route, one `id`
//! throughout), while the text sent so far is kept.
//!
//! When a stream breaks before its end (the connection closes, an event does not parse,
//! an error event, silence past `stream_idle_timeout`), the rest of the answer comes from
//! the next target that can continue one: the text already sent goes to it as a final
//! assistant message to carry on from (`continue_final_message`, or an assistant prefill),
//! and its events continue the same stream — the client sees one answer. Where no
//! target can continue (several choices, tool calls in flight, no fallback left), the
//! stream ends with an error event and without `[DONE]` or a finish reason, so a half
//! answer is never passed off as whole.
//!
//! Usage and cost come at the end: the chunk that carries the finish reason is held back
//! until the backend's usage arrives, then sent with `usage` (and its exact `cost`) —
//! or, when the client asked for `stream_options.include_usage`, followed by the usage
//! chunk OpenAI's clients expect.

use crate::backend::{Backend, ByteStream, Failure};
use crate::config::Continuation;
use crate::price::{Cost, Price, Tokens};
use crate::proxy::{can_continue, failure_response, try_targets, usage_json, Endpoint, Outcome, Request};
use crate::router::Target;
use crate::Gateway;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use lamina_api::{sse, ApiError, SseDecoder, SseEvent};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An open backend stream with the events read so far.
pub struct Opened {
    stream: ByteStream,
    decoder: SseDecoder,
    pending: VecDeque<SseEvent>,
    idle: Duration,
}

impl Opened {
    async fn next_event(&mut self) -> Result<SseEvent, Failure> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Ok(e);
            }
            match tokio::time::timeout(self.idle, self.stream.next()).await {
                Err(_) => return Err(Failure::Timeout(self.idle)),
                Ok(None) => return Err(Failure::Dropped("the connection closed before [DONE]".into())),
                Ok(Some(Err(f))) => return Err(f),
                Ok(Some(Ok(bytes))) => self.pending.extend(self.decoder.feed(&bytes)),
            }
        }
    }
}

/// An error event is a failure of the stream.
fn check_event(e: &SseEvent) -> Result<(), Failure> {
    if e.is_done() {
        return Ok(());
    }
    let v: serde_json::Value = serde_json::from_str(&e.data).map_err(|err| Failure::Malformed(format!("a stream event is not JSON ({err})")))?;
    if let Some(err) = v.get("error").filter(|x| !x.is_null()) {
        let m = err["message"].as_str().map(str::to_string).unwrap_or_else(|| err.to_string());
        return Err(Failure::Server { status: 502, message: format!("error event: {m}") });
    }
    Ok(())
}

/// Opens a stream and waits for its first event (within the backend's timeout).
async fn open(b: &Backend, endpoint: Endpoint, body: serde_json::Map<String, serde_json::Value>) -> Result<Opened, Failure> {
    let stream = b.open_stream(endpoint, &body).await?;
    let mut o = Opened { stream, decoder: SseDecoder::new(), pending: VecDeque::new(), idle: b.config.timeout };
    let first = o.next_event().await?;
    check_event(&first)?;
    o.pending.push_front(first);
    o.idle = b.config.stream_idle_timeout;
    Ok(o)
}

/// What the client has been sent, and the accounting so far.
struct Relay {
    endpoint: Endpoint,
    alias: String,
    include_usage: bool,
    id: Option<serde_json::Value>,
    created: Option<serde_json::Value>,
    role_sent: bool,
    texts: Vec<String>,
    finishes: Vec<Option<String>>,
    tool_calls: bool,
    /// Chunks with a finish reason, sent once usage is known.
    held: Vec<serde_json::Value>,
    tokens: Tokens,
    cost: Cost,
    /// The price of the segment being relayed.
    price: Price,
    /// Content chunks relayed (≈ tokens generated, for a continuation's token limit).
    content_chunks: u32,
    ttft: Option<Duration>,
    started: Instant,
}

enum Step {
    Send(String),
    Nothing,
    Done,
}

impl Relay {
    fn new(endpoint: Endpoint, alias: String, include_usage: bool, price: Price, started: Instant) -> Relay {
        Relay {
            endpoint,
            alias,
            include_usage,
            id: None,
            created: None,
            role_sent: false,
            texts: Vec::new(),
            finishes: Vec::new(),
            tool_calls: false,
            held: Vec::new(),
            tokens: Tokens::default(),
            cost: Cost::ZERO,
            price,
            content_chunks: 0,
            ttft: None,
            started,
        }
    }

    fn choice_text<'a>(&self, choice: &'a serde_json::Value) -> Option<&'a str> {
        match self.endpoint {
            Endpoint::Chat => choice["delta"]["content"].as_str(),
            _ => choice["text"].as_str(),
        }
    }

    fn event(&mut self, e: &SseEvent) -> Result<Step, Failure> {
        if e.is_done() {
            return Ok(Step::Done);
        }
        check_event(e)?;
        let mut chunk: serde_json::Value = serde_json::from_str(&e.data).map_err(|err| Failure::Malformed(format!("a stream event is not JSON ({err})")))?;
        if !chunk.is_object() {
            return Err(Failure::Malformed("a stream event is not a JSON object".into()));
        }
        if let Some(t) = Tokens::from_usage(&chunk["usage"]) {
            self.cost += self.price.cost(&t);
            self.tokens.add(&t);
        }
        if let Some(o) = chunk.as_object_mut() {
            o.remove("usage");
        }
        match &self.id {
            None => self.id = Some(chunk["id"].clone()),
            Some(id) => chunk["id"] = id.clone(),
        }
        match &self.created {
            None => self.created = Some(chunk["created"].clone()),
            Some(c) => chunk["created"] = c.clone(),
        }
        chunk["model"] = self.alias.clone().into();
        let Some(choices) = chunk["choices"].as_array().cloned() else {
            return Err(Failure::Malformed("a stream chunk has no `choices` array".into()));
        };
        if choices.is_empty() {
            return Ok(Step::Nothing);
        }
        let mut content = false;
        let mut finished = false;
        for (j, c) in choices.iter().enumerate() {
            let i = c["index"].as_u64().unwrap_or(0) as usize;
            if i >= 128 {
                return Err(Failure::Malformed(format!("a stream chunk has choice index {i}")));
            }
            if self.texts.len() <= i {
                self.texts.resize(i + 1, String::new());
                self.finishes.resize(i + 1, None);
            }
            if let Some(t) = self.choice_text(c) {
                if !t.is_empty() {
                    self.texts[i].push_str(t);
                    content = true;
                }
            }
            if c["delta"].get("tool_calls").is_some_and(|t| !t.is_null()) {
                self.tool_calls = true;
                content = true;
            }
            if let Some(f) = c["finish_reason"].as_str() {
                self.finishes[i] = Some(f.to_string());
                finished = true;
            }
            // A continuation's opening role delta repeats what was sent.
            if self.endpoint == Endpoint::Chat && c["delta"].get("role").is_some() {
                if self.role_sent {
                    if let Some(d) = chunk["choices"][j]["delta"].as_object_mut() {
                        d.remove("role");
                    }
                } else {
                    self.role_sent = true;
                    content = true;
                }
            }
        }
        if content {
            self.content_chunks += 1;
            self.ttft.get_or_insert_with(|| self.started.elapsed());
        }
        if finished {
            self.held.push(chunk);
            return Ok(Step::Nothing);
        }
        let empty_delta = self.endpoint == Endpoint::Chat
            && chunk["choices"].as_array().is_some_and(|cs| cs.iter().all(|c| c["delta"].as_object().is_none_or(|d| d.is_empty())));
        if !content && empty_delta {
            return Ok(Step::Nothing);
        }
        Ok(Step::Send(sse::data(&chunk)))
    }

    fn outcome(&self, status: u16, target: Target, cache: &'static str, resumed_at: &[usize], error: Option<String>) -> Outcome {
        Outcome { status, target: Some(target), tokens: self.tokens, cost: self.cost, ttft: self.ttft, cache, resumed_at: resumed_at.to_vec(), error }
    }

    fn all_finished(&self) -> bool {
        !self.finishes.is_empty() && self.finishes.iter().all(Option::is_some)
    }

    fn object(&self) -> &'static str {
        match self.endpoint {
            Endpoint::Chat => "chat.completion.chunk",
            _ => "text_completion",
        }
    }

    /// The held chunks and the usage, then `[DONE]`.
    fn closing(&mut self) -> String {
        let usage = usage_json(&self.tokens, self.cost, false);
        let mut out = String::new();
        let mut held = std::mem::take(&mut self.held);
        if !self.include_usage {
            if let Some(last) = held.last_mut() {
                last["usage"] = usage.clone();
            }
        }
        for c in &held {
            out.push_str(&sse::data(c));
        }
        if self.include_usage || held.is_empty() {
            let chunk = serde_json::json!({
                "id": self.id.clone().unwrap_or_default(),
                "object": self.object(),
                "created": self.created.clone().unwrap_or_default(),
                "model": self.alias,
                "choices": [],
                "usage": usage,
            });
            out.push_str(&sse::data(&chunk));
        }
        out.push_str(sse::DONE);
        out
    }

    /// The answer assembled, as the non-streamed reply it stands for (for the cache).
    fn assembled(&self) -> Option<serde_json::Value> {
        if self.texts.len() != 1 || self.tool_calls {
            return None;
        }
        let finish = self.finishes[0].clone()?;
        let (object, choice) = match self.endpoint {
            Endpoint::Chat => {
                ("chat.completion", serde_json::json!({"index": 0, "message": {"role": "assistant", "content": self.texts[0]}, "finish_reason": finish}))
            }
            _ => ("text_completion", serde_json::json!({"index": 0, "text": self.texts[0], "finish_reason": finish})),
        };
        Some(serde_json::json!({
            "id": self.id.clone().unwrap_or_default(),
            "object": object,
            "created": self.created.clone().unwrap_or_default(),
            "model": self.alias,
            "choices": [choice],
            "usage": usage_json(&self.tokens, self.cost, false),
        }))
    }
}

/// The request body that asks `t` to continue `text`, or `None` when the request cannot
/// be continued there.
fn continuation_body(gw: &Gateway, req: &Request, t: Target, text: &str, generated: u32) -> Option<serde_json::Map<String, serde_json::Value>> {
    let how = can_continue(gw, t);
    if how == Continuation::None {
        return None;
    }
    let mut body = req.body_for(gw, t);
    match req.endpoint {
        Endpoint::Chat => {
            let messages = body.get_mut("messages")?.as_array_mut()?;
            messages.push(serde_json::json!({"role": "assistant", "content": text}));
            if how == Continuation::ContinueFinalMessage {
                body.insert("continue_final_message".into(), true.into());
                body.insert("add_generation_prompt".into(), false.into());
            }
        }
        Endpoint::Completions => {
            let prompt = body.get("prompt")?.as_str()?.to_string();
            body.insert("prompt".into(), (prompt + text).into());
        }
        Endpoint::Embeddings => return None,
    }
    for field in ["max_tokens", "max_completion_tokens"] {
        if let Some(n) = body.get(field).and_then(|v| v.as_u64()) {
            body.insert(field.into(), n.saturating_sub(generated as u64).max(1).into());
        }
    }
    Some(body)
}

fn sse_response(rx: mpsc::Receiver<Bytes>, headers: Vec<(&'static str, String)>) -> Response {
    let mut rx = rx;
    let body = Body::from_stream(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx).map(|o| o.map(Ok::<_, std::convert::Infallible>))));
    let mut r = Response::builder().status(200).header("content-type", "text/event-stream").header("cache-control", "no-cache");
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.body(body).unwrap_or_default()
}

/// Serves a streamed request over `targets`.
pub async fn stream(gw: Arc<Gateway>, mut req: Request, targets: Vec<Target>, include_usage: bool) -> Result<Response, (u16, Vec<u8>)> {
    let endpoint = req.endpoint;
    let opened = try_targets(&gw, &mut req, &targets, 0, |r, t| r.body_for(&gw, t), |b, body| open(b, endpoint, body)).await;
    let (i, opened) = match opened {
        Ok(x) => x,
        Err(last) => {
            let (status, body) = match failure_response(&req, &last) {
                Ok(x) => x,
                Err(e) => (e.status, e.to_json().into_bytes()),
            };
            req.finish(&gw, Outcome::failed(status, last.message()));
            return Err((status, body));
        }
    };
    let t = targets[i];
    let backend_name = gw.backends[gw.config.models[t.route].deployments[t.deployment].backend].config.name.clone();
    let headers = vec![
        ("x-lamina-route", gw.config.models[t.route].name.clone()),
        ("x-lamina-backend", backend_name),
        ("x-lamina-cache", if req.cache_key.is_some() { "miss" } else { "off" }.to_string()),
    ];
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let relay = Relay::new(req.endpoint, req.alias.clone(), include_usage, gw.config.models[t.route].price, req.started);
    tokio::spawn(run(gw, req, targets, i, opened, relay, tx));
    Ok(sse_response(rx, headers))
}

async fn run(gw: Arc<Gateway>, mut req: Request, targets: Vec<Target>, mut at: usize, mut cur: Opened, mut relay: Relay, tx: mpsc::Sender<Bytes>) {
    let mut resumed_at: Vec<usize> = Vec::new();
    loop {
        let step = match cur.next_event().await {
            Ok(e) => relay.event(&e),
            Err(f) => Err(f),
        };
        match step {
            Ok(Step::Nothing) => {}
            Ok(Step::Send(text)) => {
                if tx.send(Bytes::from(text)).await.is_err() {
                    req.finish(&gw, relay.outcome(499, targets[at], "off", &resumed_at, Some("the client went away".into())));
                    return;
                }
            }
            Ok(Step::Done) => {
                let _ = tx.send(Bytes::from(relay.closing())).await;
                if let Some(v) = relay.assembled().filter(|_| req.cache_key.is_some()) {
                    req.store(&gw, &v);
                }
                req.finish(&gw, relay.outcome(200, targets[at], if req.cache_key.is_some() { "miss" } else { "off" }, &resumed_at, None));
                return;
            }
            Err(f) => {
                let t = targets[at];
                let d = &gw.config.models[t.route].deployments[t.deployment];
                let backend = &gw.backends[d.backend];
                req.attempts.push(crate::log::Attempt {
                    backend: backend.config.name.clone(),
                    model: d.model.clone(),
                    outcome: f.kind(),
                    error: Some(f.message()),
                    ms: 0.0,
                });
                gw.health[d.backend].failure(&gw.config.health, Instant::now());
                if relay.all_finished() {
                    // Only the end marker (and perhaps the usage) is missing: the answer is whole.
                    let _ = tx.send(Bytes::from(relay.closing())).await;
                    req.finish(&gw, relay.outcome(200, t, "off", &resumed_at, Some(f.message())));
                    return;
                }
                let resumable = relay.texts.len() <= 1 && !relay.tool_calls;
                let text = relay.texts.first().cloned().unwrap_or_default();
                let generated = relay.content_chunks;
                // Nothing but the role sent yet: any target can start the answer afresh.
                let fresh = resumable && text.is_empty();
                let body = |r: &Request, t: Target| if fresh { Some(r.body_for(&gw, t)) } else { continuation_body(&gw, r, t, &text, generated) };
                let rest: Vec<Target> = targets[at + 1..].iter().copied().filter(|&t| resumable && body(&req, t).is_some()).collect();
                let endpoint = req.endpoint;
                let next = if rest.is_empty() {
                    Err(f.clone())
                } else {
                    try_targets(&gw, &mut req, &rest, 0, |r, t| body(r, t).unwrap_or_default(), |b, body| open(b, endpoint, body)).await
                };
                match next {
                    Ok((j, opened)) => {
                        let t2 = rest[j];
                        at = targets.iter().position(|&x| x == t2).unwrap_or(at);
                        relay.price = gw.config.models[t2.route].price;
                        cur = opened;
                        resumed_at.push(text.len());
                        tracing::info!("stream of {} resumed on another backend after: {}", req.id, f.message());
                    }
                    Err(last) => {
                        let why = if rest.is_empty() && !resumable {
                            "it cannot be continued elsewhere (several choices or tool calls)".to_string()
                        } else if rest.is_empty() {
                            "no fallback can continue it".to_string()
                        } else {
                            format!("the fallbacks failed too ({})", last.message())
                        };
                        let e = ApiError::new(
                            502,
                            "upstream_error",
                            format!("the stream broke after it started ({}) and {why}; the answer is incomplete", f.message()),
                        );
                        let _ = tx.send(Bytes::from(sse::data(&e))).await;
                        req.finish(&gw, relay.outcome(502, t, "off", &resumed_at, Some(e.message)));
                        return;
                    }
                }
            }
        }
    }
}

/// A cached reply replayed as a stream: per choice, its role and whole text (or tool
/// calls) in one chunk and its finish reason in the next; then usage and `[DONE]`.
pub fn replay(endpoint: Endpoint, cached: &serde_json::Value, usage: serde_json::Value, include_usage: bool) -> String {
    let object = if endpoint == Endpoint::Chat { "chat.completion.chunk" } else { "text_completion" };
    let base = |choices: serde_json::Value| serde_json::json!({"id": cached["id"], "object": object, "created": cached["created"], "model": cached["model"], "choices": choices});
    let mut out = String::new();
    let choices = cached["choices"].as_array().cloned().unwrap_or_default();
    for c in &choices {
        let index = c["index"].clone();
        let body = match endpoint {
            Endpoint::Chat => {
                let mut delta = serde_json::json!({"role": "assistant", "content": c["message"]["content"]});
                if let Some(calls) = c["message"]["tool_calls"].as_array() {
                    let calls: Vec<serde_json::Value> = calls
                        .iter()
                        .enumerate()
                        .map(|(k, call)| {
                            let mut call = call.clone();
                            call["index"] = k.into();
                            call
                        })
                        .collect();
                    delta["tool_calls"] = calls.into();
                }
                serde_json::json!([{"index": index, "delta": delta, "finish_reason": null}])
            }
            _ => serde_json::json!([{"index": index, "text": c["text"], "finish_reason": null}]),
        };
        out.push_str(&sse::data(&base(body)));
    }
    let last = choices.len().saturating_sub(1);
    for (k, c) in choices.iter().enumerate() {
        let fin = match endpoint {
            Endpoint::Chat => {
                let mut fin = serde_json::json!({"index": c["index"], "delta": {}, "finish_reason": c["finish_reason"]});
                if c["stop_reason"].is_string() {
                    fin["stop_reason"] = c["stop_reason"].clone();
                }
                serde_json::json!([fin])
            }
            _ => serde_json::json!([{"index": c["index"], "text": "", "finish_reason": c["finish_reason"]}]),
        };
        let mut chunk = base(fin);
        if k == last && !include_usage {
            chunk["usage"] = usage.clone();
        }
        out.push_str(&sse::data(&chunk));
    }
    if include_usage {
        let mut chunk = base(serde_json::json!([]));
        chunk["usage"] = usage;
        out.push_str(&sse::data(&chunk));
    }
    out.push_str(sse::DONE);
    out
}

/// A whole stream body sent at once (a cache hit).
pub fn sse_body(text: String, headers: Vec<(&'static str, String)>) -> Response {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.try_send(Bytes::from(text));
    sse_response(rx, headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay() -> Relay {
        Relay::new(Endpoint::Chat, "chat".into(), false, Price { input: 1_000_000, cached_input: 0, output: 2_000_000, reasoning: 0 }, Instant::now())
    }

    fn ev(v: serde_json::Value) -> SseEvent {
        SseEvent { data: v.to_string(), ..Default::default() }
    }

    #[test]
    fn a_resumed_stream_reads_as_one_answer() {
        let mut r = relay();
        let chunk = |id: &str, model: &str, delta: serde_json::Value, finish: serde_json::Value| {
            ev(
                serde_json::json!({"id": id, "created": 5, "model": model, "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}),
            )
        };
        let Step::Send(s) = r.event(&chunk("a", "m1", serde_json::json!({"role": "assistant", "content": "Hel"}), serde_json::Value::Null)).unwrap() else {
            panic!()
        };
        assert!(s.contains("\"model\":\"chat\"") && s.contains("Hel"));
        // The second backend's stream: another id and model, and its own role delta.
        let Step::Send(s) = r.event(&chunk("b", "m2", serde_json::json!({"role": "assistant", "content": "lo"}), serde_json::Value::Null)).unwrap() else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_str(s.trim_start_matches("data: ").trim()).unwrap();
        assert_eq!(v["id"], "a");
        assert_eq!(v["model"], "chat");
        assert!(v["choices"][0]["delta"].get("role").is_none());
        assert!(matches!(r.event(&chunk("b", "m2", serde_json::json!({}), "stop".into())).unwrap(), Step::Nothing));
        let usage = ev(serde_json::json!({"id": "b", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}));
        assert!(matches!(r.event(&usage).unwrap(), Step::Nothing));
        assert!(matches!(r.event(&SseEvent { data: "[DONE]".into(), ..Default::default() }).unwrap(), Step::Done));
        assert_eq!(r.texts, vec!["Hello".to_string()]);
        // 3 × 1 µ + 2 × 2 µ = 7 micro-units.
        assert_eq!(r.cost, Cost(7_000_000));
        let closing = r.closing();
        assert!(closing.ends_with("data: [DONE]\n\n"));
        assert!(closing.contains("\"finish_reason\":\"stop\"") && closing.contains("\"cost\":7e-6"), "{closing}");
        assert_eq!(r.assembled().unwrap()["choices"][0]["message"]["content"], "Hello");
    }

    #[test]
    fn error_events_and_garbage_are_failures() {
        let mut r = relay();
        assert!(matches!(r.event(&SseEvent { data: "{not json".into(), ..Default::default() }), Err(Failure::Malformed(_))));
        assert!(matches!(r.event(&ev(serde_json::json!({"error": {"message": "boom"}}))), Err(Failure::Server { .. })));
        assert!(matches!(r.event(&ev(serde_json::json!({"id": "x"}))), Err(Failure::Malformed(_))));
    }
}
