//! `POST /v1/chat/completions`: the chat pipeline ([`crate::chat_core`]) answered whole
//! as a `chat.completion` or streamed as `chat.completion.chunk` events. With `rag`, the
//! sources the answer cited go beside the message (`citations`, and `rag` for what
//! retrieval did): in the body, or in one chunk after every choice finished, before the
//! usage chunk and `[DONE]`.

use super::respond;
use super::stream::{self, sse, Render};
use crate::chat_core::{self, ChatAnswer, ChatEvent};
use crate::rag::Grounding;
use crate::{read_body, unix_now, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{
    parse_json, ApiError, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatLogprobs, FunctionCallDelta,
    ResponseMessage, ToolCallDelta, ToolType,
};
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    respond("chat_completions", chat(state, headers, body).await)
}

async fn chat(state: Arc<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: ChatCompletionRequest = parse_json(&bytes)?;
    let mut answer = chat_core::start(&state, &req, crate::auth::presented_key(&headers)).await?;
    let (id, created) = (state.next_id("chatcmpl"), unix_now());
    let grounding = answer.take_grounding();
    if req.is_stream() {
        let texts = vec![String::new(); answer.choices()];
        let chunks = ChatChunks { id, created, model: answer.model().name.clone(), include_usage: req.include_usage(), grounding, texts };
        return Ok(sse(answer.into_stream(), chunks));
    }
    let model = answer.model().name.clone();
    let whole = answer.collect().await?;
    let cited = grounding.map(|g| g.report(&whole.choices.iter().map(|c| c.text.as_str()).collect::<Vec<_>>()));
    let mut body = completion(id, created, model, whole);
    if let Some((citations, rag)) = cited {
        body.citations = Some(citations);
        body.rag = Some(rag);
    }
    Ok(Json(body).into_response())
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
            ChatChoice { index: i as u32, message, logprobs, finish_reason: c.finish_reason, stop_reason: c.stop_sequence }
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
    /// With `rag`: what the citations chunk reports, and each choice's text so far.
    grounding: Option<Grounding>,
    texts: Vec<String>,
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
                if self.grounding.is_some() {
                    if let Some(t) = self.texts.get_mut(choice) {
                        t.push_str(&text);
                    }
                }
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
            ChatEvent::Finish { choice, reason, stop_sequence } => self.chunk(ChatChunkChoice::finished(choice as u32, reason, stop_sequence)),
            ChatEvent::Usage(usage) => {
                let mut out = Vec::new();
                if let Some(g) = self.grounding.take() {
                    let (citations, rag) = g.report(&self.texts);
                    out.push(stream::data(&ChatCompletionChunk::citations(self.id.clone(), self.created, self.model.clone(), citations, rag)));
                }
                if self.include_usage {
                    out.push(stream::data(&ChatCompletionChunk::usage(self.id.clone(), self.created, self.model.clone(), usage)));
                }
                return out;
            }
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
