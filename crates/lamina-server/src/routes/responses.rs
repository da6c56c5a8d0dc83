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
    let answer = chat_core::start(&state, &chat, None).await?;
    // What the next turn continues from: the history and this turn, without the
    // instructions (they apply to this response only), then the answer.
    let mut conversation: Vec<ChatMessage> = history.to_vec();
    conversation.extend(req.input_messages()?);
    let response = ResponseObject::new(state.next_object_id("resp"), unix_now(), answer.model().name.clone(), &req);
    let keep = Keep { state: state.clone(), conversation, store: req.is_stored() };
    if req.is_stream() {
        let ids = state.clone();
        let events = ResponseEvents::new(response, Box::new(move |p| ids.next_object_id(p)), Some(keep));
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
    /// Item ids (`msg_…`, `fc_…`).
    ids: Box<dyn FnMut(&str) -> String + Send>,
    /// Where the finished response's conversation goes.
    keep: Option<Keep>,
    seq: u64,
    /// Finished items, in output order.
    items: Vec<(usize, OutputItem)>,
    text: Option<OpenText>,
    calls: Vec<OpenCall>,
    reason: FinishReason,
}

impl ResponseEvents {
    fn new(response: ResponseObject, ids: Box<dyn FnMut(&str) -> String + Send>, keep: Option<Keep>) -> Self {
        ResponseEvents { response, ids, keep, seq: 0, items: Vec::new(), text: None, calls: Vec::new(), reason: FinishReason::Stop }
    }

    fn emit(&mut self, out: &mut Vec<ResponseStreamEvent>, make: impl FnOnce(u64) -> ResponseStreamEvent) {
        out.push(make(self.seq));
        self.seq += 1;
    }

    fn next_index(&self) -> usize {
        self.items.len() + self.text.iter().count() + self.calls.len()
    }

    fn open_text(&mut self, out: &mut Vec<ResponseStreamEvent>) {
        if self.text.is_some() {
            return;
        }
        let (id, output_index) = ((self.ids)("msg"), self.next_index());
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

    fn close_text(&mut self, out: &mut Vec<ResponseStreamEvent>) {
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

    fn close_calls(&mut self, out: &mut Vec<ResponseStreamEvent>) {
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

fn sse_events(events: Vec<ResponseStreamEvent>) -> Vec<SseEvent> {
    events.iter().map(|e| stream::named(e.type_name(), e)).collect()
}

impl Render<ChatEvent> for ResponseEvents {
    fn event(&mut self, event: ChatEvent) -> Vec<SseEvent> {
        sse_events(self.typed(event))
    }

    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent> {
        let mut r = Box::new(self.response.clone());
        r.status = ResponseStatus::Failed;
        r.error = Some(ResponseError { code: "server_error".into(), message: error.message.clone() });
        let mut out = Vec::new();
        self.emit(&mut out, |s| ResponseStreamEvent::Failed { sequence_number: s, response: r });
        sse_events(out)
    }

    fn close(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
}

impl ResponseEvents {
    /// The Responses API events one chat event makes.
    fn typed(&mut self, event: ChatEvent) -> Vec<ResponseStreamEvent> {
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
                let (id, output_index) = ((self.ids)("fc"), self.next_index());
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

    fn complete(&mut self, out: &mut Vec<ResponseStreamEvent>, usage: Usage) {
        let mut items = std::mem::take(&mut self.items);
        items.sort_by_key(|(i, _)| *i);
        self.response.finish(items.into_iter().map(|(_, item)| item).collect(), self.reason, usage);
        if let Some(k) = &self.keep {
            k.keep(&self.response);
        }
        let r = Box::new(self.response.clone());
        if self.response.status == ResponseStatus::Incomplete {
            self.emit(out, |s| ResponseStreamEvent::Incomplete { sequence_number: s, response: r });
        } else {
            self.emit(out, |s| ResponseStreamEvent::Completed { sequence_number: s, response: r });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_api::responses::output_items;
    use lamina_api::{FunctionCall, ToolCall, ToolType};

    fn events(req: serde_json::Value, chat: Vec<ChatEvent>) -> Vec<ResponseStreamEvent> {
        let req: ResponsesRequest = serde_json::from_value(req).unwrap();
        let mut n = 0;
        let ids = Box::new(move |p: &str| {
            n += 1;
            format!("{p}_{n}")
        });
        let mut r = ResponseEvents::new(ResponseObject::new("resp_0", 0, "m", &req), ids, None);
        chat.into_iter().flat_map(|ev| r.typed(ev)).collect()
    }

    fn text(t: &str) -> ChatEvent {
        ChatEvent::Text { choice: 0, text: t.into(), logprob: None }
    }

    #[test]
    fn text_then_a_tool_call_streams_as_two_items_and_completes_with_both() {
        let chat = vec![
            ChatEvent::Start { choice: 0 },
            text("Let me "),
            text("check."),
            ChatEvent::ToolCallStart { choice: 0, index: 0, id: "call_1".into(), name: "weather".into() },
            ChatEvent::ToolCallArguments { choice: 0, index: 0, fragment: "{\"city\":".into() },
            ChatEvent::ToolCallArguments { choice: 0, index: 0, fragment: "\"Oslo\"}".into() },
            ChatEvent::Finish { choice: 0, reason: FinishReason::ToolCalls, stop_sequence: None },
            ChatEvent::Usage(Usage::new(10, 6, 2)),
        ];
        let evs = events(serde_json::json!({"model": "m", "input": "x"}), chat);
        let types: Vec<&str> = evs.iter().map(|e| e.type_name()).collect();
        assert_eq!(
            types,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed",
            ]
        );
        let seqs: Vec<u64> = evs.iter().map(|e| serde_json::to_value(e).unwrap()["sequence_number"].as_u64().unwrap()).collect();
        assert_eq!(seqs, (0..evs.len() as u64).collect::<Vec<_>>());
        let ResponseStreamEvent::FunctionCallArgumentsDone { arguments, output_index, .. } = &evs[12] else { panic!("{:?}", evs[12]) };
        assert_eq!((arguments.as_str(), *output_index), ("{\"city\":\"Oslo\"}", 1));
        // The final response holds what the whole answer's output items would.
        let ResponseStreamEvent::Completed { response, .. } = &evs[14] else { panic!() };
        let call = ToolCall {
            id: "call_1".into(),
            kind: ToolType::Function,
            function: FunctionCall { name: "weather".into(), arguments: "{\"city\":\"Oslo\"}".into() },
        };
        let mut n = 0;
        let whole = output_items("Let me check.", &[call], |p| {
            n += 1;
            format!("{p}_{n}")
        });
        assert_eq!(response.output, whole);
        assert_eq!(response.status, ResponseStatus::Completed);
        assert_eq!(response.usage.map(|u| (u.input_tokens, u.output_tokens, u.input_tokens_details.cached_tokens)), Some((10, 6, 2)));
    }

    #[test]
    fn an_answer_cut_off_is_incomplete_and_an_empty_one_is_one_empty_message() {
        let chat = vec![
            ChatEvent::Start { choice: 0 },
            text("Hel"),
            ChatEvent::Finish { choice: 0, reason: FinishReason::Length, stop_sequence: None },
            ChatEvent::Usage(Usage::new(3, 1, 0)),
        ];
        let evs = events(serde_json::json!({"model": "m", "input": "x"}), chat);
        let ResponseStreamEvent::Incomplete { response, .. } = evs.last().unwrap() else { panic!("{evs:?}") };
        assert_eq!(response.incomplete_details.as_ref().map(|d| d.reason.as_str()), Some("max_output_tokens"));
        assert!(matches!(&response.output[..], [OutputItem::Message { status: ResponseStatus::Incomplete, .. }]));
        let chat = vec![
            ChatEvent::Start { choice: 0 },
            ChatEvent::Finish { choice: 0, reason: FinishReason::Stop, stop_sequence: None },
            ChatEvent::Usage(Usage::new(3, 1, 0)),
        ];
        let evs = events(serde_json::json!({"model": "m", "input": "x"}), chat);
        let ResponseStreamEvent::Completed { response, .. } = evs.last().unwrap() else { panic!("{evs:?}") };
        assert_eq!(response.output, output_items("", &[], |p| format!("{p}_1")));
    }
}
