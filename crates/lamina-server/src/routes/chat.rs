//! `POST /v1/chat/completions`: messages rendered with the model's own chat template,
//! answered whole or streamed as `chat.completion.chunk` events.

use super::respond;
use super::stream::{sse, Chunks};
use crate::jobs::{self, finish_reason, JobSpec, SamplingSpec};
use crate::models::Loaded;
use crate::{read_body, unix_now, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{
    parse_json, ApiError, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatLogprobs, FinishReason,
    ResponseMessage, Role, TokenLogprob, TopLogprob,
};
use lamina_tokenizer::{ChatMessage, Tokenizer};
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("chat_completions", chat(state, body).await)
}

async fn chat(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: ChatCompletionRequest = parse_json(&bytes)?;
    req.validate()?;
    unsupported(&req)?;
    let sampling = SamplingSpec::from_fields(
        req.sampling(),
        (req.logprobs == Some(true)).then(|| req.top_logprobs.unwrap_or(0) as usize),
        req.max_tokens().map(|m| m as usize),
    )?;
    let messages: Vec<ChatMessage> = req
        .messages
        .iter()
        .map(|m| {
            // Templates know system, user, assistant (and often tool); a developer message
            // is the newer name of a system message.
            let role = match m.role {
                Role::Developer => "system",
                r => r.as_str(),
            };
            ChatMessage::new(role, lamina_api::text_of(m))
        })
        .collect();
    let n = req.n() as usize;
    let job = jobs::start(&state, &req.model, |model| {
        let (messages, sampling) = (messages.clone(), sampling.clone());
        async move {
            let text = model.tokenizer.apply_chat_template(&messages, true).map_err(|e| ApiError::invalid_param("messages", e.to_string()))?;
            let prompt = jobs::tokenize(&model, text, "messages").await?;
            Ok(JobSpec { prompts: vec![prompt], n, sampling, prompt_param: "messages", constraint: None })
        }
    })
    .await?;
    let (id, created) = (state.next_id("chatcmpl"), unix_now());
    let logprobs = sampling.logprobs.is_some();
    if req.is_stream() {
        let chunks = ChatChunks { id, created, model: job.model.clone(), n, logprobs, include_usage: req.include_usage() };
        return Ok(sse(job, chunks));
    }
    let model = job.model.clone();
    let outcome = job.collect().await?;
    let choices = outcome
        .choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let lp = logprobs.then(|| ChatLogprobs { content: Some(c.logprobs.iter().map(|l| wire_logprob(&model.tokenizer, l)).collect()), refusal: None });
            let reason = finish_reason(c.reason.expect("collected choices are finished"))?;
            Ok(ChatChoice { index: i as u32, message: ResponseMessage::assistant(c.text), logprobs: lp, finish_reason: reason })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok(Json(ChatCompletion::new(id, created, req.model, choices, outcome.usage)).into_response())
}

/// Fields this server understands but does not implement yet: refused by name rather
/// than silently ignored (the answer would not be what the client asked for).
fn unsupported(req: &ChatCompletionRequest) -> Result<(), ApiError> {
    if let Some(f) = &req.response_format {
        if f.get("type").and_then(|t| t.as_str()) != Some("text") {
            return Err(ApiError::invalid_param("response_format", "only {\"type\": \"text\"} is supported by this server so far"));
        }
    }
    let none = |v: &Option<serde_json::Value>| v.as_ref().is_none_or(|v| v.is_null() || v.as_array().is_some_and(|a| a.is_empty()));
    if !none(&req.tools) {
        return Err(ApiError::invalid_param("tools", "tool calls are not supported by this server so far"));
    }
    Ok(())
}

/// A chosen token's log-probability on the wire. Non-finite values (a token that cannot
/// occur) become OpenAI's -9999.
pub fn wire_logprob(tok: &Tokenizer, l: &lamina_engine::TokenLogprob) -> TokenLogprob {
    let finite = |x: f32| if x.is_finite() { x } else { -9999.0 };
    let top = l.top.iter().map(|&(t, p)| TopLogprob { token: tok.token_to_piece(t), logprob: finite(p), bytes: Some(tok.token_bytes(t)) }).collect();
    TokenLogprob { token: tok.token_to_piece(l.token), logprob: finite(l.logprob), bytes: Some(tok.token_bytes(l.token)), top_logprobs: top }
}

struct ChatChunks {
    id: String,
    created: u64,
    model: Arc<Loaded>,
    n: usize,
    logprobs: bool,
    include_usage: bool,
}

impl ChatChunks {
    fn chunk(&self, choice: ChatChunkChoice) -> String {
        let c = ChatCompletionChunk::new(self.id.clone(), self.created, self.model.name.clone(), vec![choice]);
        serde_json::to_string(&c).unwrap_or_default()
    }
}

impl Chunks for ChatChunks {
    fn start(&mut self) -> Vec<String> {
        (0..self.n).map(|i| self.chunk(ChatChunkChoice::new(i as u32, ChatDelta::start()))).collect()
    }

    fn token(&mut self, choice: usize, text: &str, logprob: Option<&lamina_engine::TokenLogprob>) -> Vec<String> {
        let lp = logprob.filter(|_| self.logprobs).map(|l| ChatLogprobs { content: Some(vec![wire_logprob(&self.model.tokenizer, l)]), refusal: None });
        if text.is_empty() && lp.is_none() {
            return Vec::new();
        }
        let mut c = ChatChunkChoice::new(choice as u32, ChatDelta::content(text));
        c.logprobs = lp;
        vec![self.chunk(c)]
    }

    fn done(&mut self, choice: usize, reason: FinishReason) -> Vec<String> {
        vec![self.chunk(ChatChunkChoice::finished(choice as u32, reason))]
    }

    fn end(&mut self, usage: lamina_api::Usage) -> Vec<String> {
        if !self.include_usage {
            return Vec::new();
        }
        let c = ChatCompletionChunk::usage(self.id.clone(), self.created, self.model.name.clone(), usage);
        vec![serde_json::to_string(&c).unwrap_or_default()]
    }
}
