//! `POST /v1/responses`: OpenAI's Responses API as a front-end of the chat pipeline. The
//! request (with the conversation of `previous_response_id`, if given) becomes a chat
//! request; the answer becomes output items, whole or streamed as typed events; the
//! conversation is kept for the next turn unless `store` is false.

use super::respond;
use super::stream::{self, sse, Render};
use crate::chat_core::{self, ChatEvent};
use crate::{read_body, unix_now, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::responses::{output_items, output_messages, OutputContent, OutputItem, ResponseError, ResponseStatus};
use lamina_api::{parse_json, ApiError, ChatMessage, FinishReason, ResponseObject, ResponseStreamEvent, ResponsesRequest, Role, Usage};
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("responses", responses(state, body).await)
}

async fn responses(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: ResponsesRequest = parse_json(&bytes)?;
    if req.max_output_tokens == Some(0) {
        return Err(ApiError::invalid_param("max_output_tokens", "max_output_tokens must be at least 1"));
    }
    let history = match &req.previous_response_id {
        Some(id) => state.responses.get(id).ok_or_else(|| {
            ApiError::not_found(format!("Previous response with id '{id}' not found (it never existed, expired, or was not stored)."))
                .with_param("previous_response_id")
        })?,
        None => Arc::new(Vec::new()),
    };
    let chat = req.to_chat(&history)?;
    let answer = chat_core::start(&state, &chat).await?;
    // What the next turn continues from: the history and this turn, without the
    // instructions (they apply to this response only), then the answer.
    let mut conversation: Vec<ChatMessage> = history.to_vec();
    conversation.extend(req.input_messages()?);
    let response = ResponseObject::new(state.next_object_id("resp"), unix_now(), answer.model().name.clone(), &req);
    let keep = Keep { state: state.clone(), conversation, store: req.is_stored() };
    if req.is_stream() {
        let events = ResponseEvents { response, keep, seq: 0, items: Vec::new(), text: None, calls: Vec::new(), reason: FinishReason::Stop };
        return Ok(sse(answer.into_stream(), events));
    }
    let whole = answer.collect().await?;
    let choice = whole.choices.into_iter().next().ok_or_else(|| ApiError::server_error("the answer has no choice"))?;
    let items = output_items(&choice.text, &choice.tool_calls, |p| state.next_object_id(p));
    let mut response = response;
    response.finish(items, choice.finish_reason, whole.usage);
    keep.keep(&response);
    Ok(Json(response).into_response())
}

/// Keeps a finished response's conversation for `previous_response_id`.
struct Keep {
    state: Arc<AppState>,
    conversation: Vec<ChatMessage>,
    store: bool,
}

impl Keep {
    fn keep(&self, response: &ResponseObject) {
        if self.store {
            let mut conversation = self.conversation.clone();
            conversation.extend(output_messages(&response.output));
            self.state.responses.put(response.id.clone(), conversation);
        }
    }
}

/// The message item being streamed.
struct OpenText {
    id: String,
    output_index: usize,
    text: String,
}

/// A function call item being streamed.
struct OpenCall {
    output_index: usize,
    item: OutputItem,
}

/// Renders chat events as the Responses API's stream: the response created, each output
/// item added, its text or arguments in deltas, done, and the response completed.
struct ResponseEvents {
    response: ResponseObject,
    keep: Keep,
    seq: u64,
    /// Finished items, in output order.
    items: Vec<(usize, OutputItem)>,
    text: Option<OpenText>,
    calls: Vec<OpenCall>,
    reason: FinishReason,
}

impl ResponseEvents {
    fn emit(&mut self, out: &mut Vec<SseEvent>, make: impl FnOnce(u64) -> ResponseStreamEvent) {
        let ev = make(self.seq);
        self.seq += 1;
        out.push(stream::named(ev.type_name(), &ev));
    }

    fn next_index(&self) -> usize {
        self.items.len() + self.text.iter().count() + self.calls.len()
    }

    fn open_text(&mut self, out: &mut Vec<SseEvent>) {
        if self.text.is_some() {
            return;
        }
        let (id, output_index) = (self.keep.state.next_object_id("msg"), self.next_index());
        let item = OutputItem::Message { id: id.clone(), role: Role::Assistant, status: ResponseStatus::InProgress, content: Vec::new() };
        self.emit(out, |s| ResponseStreamEvent::OutputItemAdded { sequence_number: s, output_index, item });
        let item_id = id.clone();
        self.emit(out, |s| ResponseStreamEvent::ContentPartAdded {
            sequence_number: s,
            item_id,
            output_index,
            content_index: 0,
            part: OutputContent::text(""),
        });
        self.text = Some(OpenText { id, output_index, text: String::new() });
    }

    fn close_text(&mut self, out: &mut Vec<SseEvent>) {
        let Some(t) = self.text.take() else { return };
        let (id, idx) = (t.id.clone(), t.output_index);
        let text = t.text.clone();
        self.emit(out, |s| ResponseStreamEvent::OutputTextDone {
            sequence_number: s,
            item_id: id.clone(),
            output_index: idx,
            content_index: 0,
            text: text.clone(),
            logprobs: Vec::new(),
        });
        let part = OutputContent::text(text);
        let item_id = id.clone();
        self.emit(out, |s| ResponseStreamEvent::ContentPartDone { sequence_number: s, item_id, output_index: idx, content_index: 0, part: part.clone() });
        // Text cut off by max_output_tokens is incomplete; text before a tool call, or at
        // a natural end, is complete.
        let cut = self.reason == FinishReason::Length && self.calls.is_empty();
        let status = if cut { ResponseStatus::Incomplete } else { ResponseStatus::Completed };
        let item = OutputItem::Message { id, role: Role::Assistant, status, content: vec![part] };
        let done = item.clone();
        self.emit(out, |s| ResponseStreamEvent::OutputItemDone { sequence_number: s, output_index: idx, item: done });
        self.items.push((idx, item));
    }

    fn close_calls(&mut self, out: &mut Vec<SseEvent>) {
        for mut c in std::mem::take(&mut self.calls) {
            let OutputItem::FunctionCall { id, arguments, status, .. } = &mut c.item else { continue };
            *status = ResponseStatus::Completed;
            let (item_id, args, idx) = (id.clone(), arguments.clone(), c.output_index);
            self.emit(out, |s| ResponseStreamEvent::FunctionCallArgumentsDone { sequence_number: s, item_id, output_index: idx, arguments: args });
            let done = c.item.clone();
            self.emit(out, |s| ResponseStreamEvent::OutputItemDone { sequence_number: s, output_index: idx, item: done });
            self.items.push((idx, c.item));
        }
    }
}

impl Render<ChatEvent> for ResponseEvents {
    fn event(&mut self, event: ChatEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        match event {
            ChatEvent::Start { .. } => {
                let r = Box::new(self.response.clone());
                self.emit(&mut out, |s| ResponseStreamEvent::Created { sequence_number: s, response: r.clone() });
                self.emit(&mut out, |s| ResponseStreamEvent::InProgress { sequence_number: s, response: r });
            }
            ChatEvent::Text { text, .. } if !text.is_empty() => {
                self.open_text(&mut out);
                let t = self.text.as_mut().expect("opened above");
                t.text.push_str(&text);
                let (item_id, output_index) = (t.id.clone(), t.output_index);
                self.emit(&mut out, |s| ResponseStreamEvent::OutputTextDelta {
                    sequence_number: s,
                    item_id,
                    output_index,
                    content_index: 0,
                    delta: text,
                    logprobs: Vec::new(),
                });
            }
            ChatEvent::Text { .. } => {}
            ChatEvent::ToolCallStart { id: call_id, name, .. } => {
                self.close_text(&mut out);
                let (id, output_index) = (self.keep.state.next_object_id("fc"), self.next_index());
                let item = OutputItem::FunctionCall { id, call_id, name, arguments: String::new(), status: ResponseStatus::InProgress };
                let added = item.clone();
                self.emit(&mut out, |s| ResponseStreamEvent::OutputItemAdded { sequence_number: s, output_index, item: added });
                self.calls.push(OpenCall { output_index, item });
            }
            ChatEvent::ToolCallArguments { index, fragment, .. } => {
                if let Some(OpenCall { output_index, item: OutputItem::FunctionCall { id, arguments, .. } }) = self.calls.get_mut(index) {
                    arguments.push_str(&fragment);
                    let (item_id, output_index) = (id.clone(), *output_index);
                    self.emit(&mut out, |s| ResponseStreamEvent::FunctionCallArgumentsDelta { sequence_number: s, item_id, output_index, delta: fragment });
                }
            }
            ChatEvent::Finish { reason, .. } => {
                // A reply with neither text nor calls is one empty message, as when whole.
                if self.items.is_empty() && self.calls.is_empty() {
                    self.open_text(&mut out);
                }
                self.reason = reason;
                self.close_text(&mut out);
                self.close_calls(&mut out);
            }
            ChatEvent::Usage(usage) => self.complete(&mut out, usage),
        }
        out
    }

    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent> {
        let mut r = Box::new(self.response.clone());
        r.status = ResponseStatus::Failed;
        r.error = Some(ResponseError { code: "server_error".into(), message: error.message.clone() });
        let mut out = Vec::new();
        self.emit(&mut out, |s| ResponseStreamEvent::Failed { sequence_number: s, response: r });
        out
    }

    fn close(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
}

impl ResponseEvents {
    fn complete(&mut self, out: &mut Vec<SseEvent>, usage: Usage) {
        let mut items = std::mem::take(&mut self.items);
        items.sort_by_key(|(i, _)| *i);
        self.response.finish(items.into_iter().map(|(_, item)| item).collect(), self.reason, usage);
        self.keep.keep(&self.response);
        let r = Box::new(self.response.clone());
        if self.response.status == ResponseStatus::Incomplete {
            self.emit(out, |s| ResponseStreamEvent::Incomplete { sequence_number: s, response: r });
        } else {
            self.emit(out, |s| ResponseStreamEvent::Completed { sequence_number: s, response: r });
        }
    }
}
