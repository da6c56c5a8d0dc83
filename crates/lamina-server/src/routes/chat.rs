//! `POST /v1/chat/completions`: the chat pipeline ([`crate::chat_core`]) answered whole
//! as a `chat.completion` or streamed as `chat.completion.chunk` events.

use super::respond;
use super::stream::{self, sse, Render};
use crate::chat_core::{self, ChatAnswer, ChatEvent};
use crate::{read_body, unix_now, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{
    parse_json, ApiError, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatLogprobs, FunctionCallDelta,
    ResponseMessage, ToolCallDelta, ToolType,
};
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("chat_completions", chat(state, body).await)
}

async fn chat(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: ChatCompletionRequest = parse_json(&bytes)?;
    let answer = chat_core::start(&state, &req).await?;
    let (id, created) = (state.next_id("chatcmpl"), unix_now());
    if req.is_stream() {
        let chunks = ChatChunks { id, created, model: answer.model().name.clone(), include_usage: req.include_usage() };
        return Ok(sse(answer.into_stream(), chunks));
    }
    let model = answer.model().name.clone();
    Ok(Json(completion(id, created, model, answer.collect().await?)).into_response())
}

fn completion(id: String, created: u64, model: String, answer: ChatAnswer) -> ChatCompletion {
    let choices = answer
        .choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let mut message = ResponseMessage::assistant(c.text);
            if !c.tool_calls.is_empty() {
                message.tool_calls = Some(c.tool_calls);
                message.content = message.content.filter(|t| !t.is_empty());
            }
            let logprobs = c.logprobs.map(|l| ChatLogprobs { content: Some(l), refusal: None });
            ChatChoice { index: i as u32, message, logprobs, finish_reason: c.finish_reason }
        })
        .collect();
    ChatCompletion::new(id, created, model, choices, answer.usage)
}

/// Renders chat events as `chat.completion.chunk`s.
struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
}

impl ChatChunks {
    fn chunk(&self, choice: ChatChunkChoice) -> SseEvent {
        stream::data(&ChatCompletionChunk::new(self.id.clone(), self.created, self.model.clone(), vec![choice]))
    }

    fn tool_delta(&self, choice: usize, delta: ToolCallDelta) -> SseEvent {
        let delta = ChatDelta { tool_calls: Some(vec![delta]), ..ChatDelta::default() };
        self.chunk(ChatChunkChoice::new(choice as u32, delta))
    }
}

impl Render<ChatEvent> for ChatChunks {
    fn event(&mut self, event: ChatEvent) -> Vec<SseEvent> {
        let ev = match event {
            ChatEvent::Start { choice } => self.chunk(ChatChunkChoice::new(choice as u32, ChatDelta::start())),
            ChatEvent::Text { choice, text, logprob } => {
                let mut c = ChatChunkChoice::new(choice as u32, ChatDelta::content(text));
                c.logprobs = logprob.map(|l| ChatLogprobs { content: Some(vec![l]), refusal: None });
                self.chunk(c)
            }
            ChatEvent::ToolCallStart { choice, index, id, name } => {
                let function = FunctionCallDelta { name: Some(name), arguments: Some(String::new()) };
                self.tool_delta(choice, ToolCallDelta { index: index as u32, id: Some(id), kind: Some(ToolType::Function), function: Some(function) })
            }
            ChatEvent::ToolCallArguments { choice, index, fragment } => {
                let function = FunctionCallDelta { name: None, arguments: Some(fragment) };
                self.tool_delta(choice, ToolCallDelta { index: index as u32, id: None, kind: None, function: Some(function) })
            }
            ChatEvent::Finish { choice, reason, .. } => self.chunk(ChatChunkChoice::finished(choice as u32, reason)),
            ChatEvent::Usage(usage) if self.include_usage => {
                stream::data(&ChatCompletionChunk::usage(self.id.clone(), self.created, self.model.clone(), usage))
            }
            ChatEvent::Usage(_) => return Vec::new(),
        };
        vec![ev]
    }

    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent> {
        vec![stream::openai_error(error)]
    }

    fn close(&mut self) -> Vec<SseEvent> {
        vec![stream::done()]
    }
}
