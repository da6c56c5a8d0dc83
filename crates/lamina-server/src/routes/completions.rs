//! `POST /v1/completions`: the legacy text completion, one or several prompts (text or
//! token ids) with `n` choices each, answered whole or streamed as `text_completion`
//! events.

use super::respond;
use super::stream::{self, sse, Render};
use crate::jobs::{self, JobEvent, JobSpec, SamplingSpec};
use crate::models::Loaded;
use crate::{read_body, unix_now, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{
    parse_json, ApiError, Completion, CompletionChoice, CompletionChunk, CompletionChunkChoice, CompletionLogprobs, CompletionRequest, PromptItem,
};
use std::collections::BTreeMap;
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("completions", completions(state, body).await)
}

/// A prompt as the request gave it: text is tokenized once the model is known.
#[derive(Clone)]
enum Given {
    Text(String),
    Tokens(Vec<u32>),
}

async fn completions(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: CompletionRequest = parse_json(&bytes)?;
    req.validate()?;
    if req.is_echo() && req.logprobs.is_some() {
        return Err(ApiError::invalid_param("logprobs", "log-probabilities of an echoed prompt are not supported by this server so far"));
    }
    let sampling = SamplingSpec::from_fields(req.sampling(), req.logprobs.map(|k| k as usize), Some(req.max_tokens() as usize))?;
    let given: Vec<Given> = req
        .prompt
        .items()
        .into_iter()
        .map(|p| match p {
            PromptItem::Text(t) => Given::Text(t.to_string()),
            PromptItem::Tokens(t) => Given::Tokens(t.to_vec()),
        })
        .collect();
    let n = req.n() as usize;
    let grammar = req.grammar.as_deref().map(crate::structured::text_grammar);
    let job = jobs::start(&state, &req.model, |model| {
        let (given, sampling, grammar) = (given.clone(), sampling.clone(), grammar.clone());
        async move {
            let constraint = crate::structured::constraint(&model, grammar, "grammar").await?;
            let mut prompts = Vec::new();
            for g in given {
                prompts.push(match g {
                    Given::Text(t) => jobs::tokenize(&model, t, "prompt").await?,
                    Given::Tokens(t) => {
                        if let Some(&bad) = t.iter().find(|&&x| x as usize >= model.vocab_size) {
                            return Err(ApiError::invalid_param("prompt", format!("token {bad} is outside the vocabulary of {} tokens", model.vocab_size)));
                        }
                        t
                    }
                });
            }
            Ok(JobSpec { prompts, n, sampling, prompt_param: "prompt", constraint })
        }
    })
    .await?;
    // With `echo`, each choice starts with its prompt's text.
    let echoes: Vec<String> = if req.is_echo() {
        given
            .iter()
            .map(|g| match g {
                Given::Text(t) => Ok(t.clone()),
                Given::Tokens(t) => job.model.tokenizer.decode(t, false).map_err(|e| ApiError::invalid_param("prompt", e.to_string())),
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![String::new(); given.len()]
    };
    let (id, created) = (state.next_id("cmpl"), unix_now());
    let logprobs = sampling.logprobs.is_some();
    if req.is_stream() {
        let chunks =
            TextChunks { id, created, model: job.model.clone(), n, echoes, logprobs, include_usage: req.include_usage(), offsets: vec![0; job.choices()] };
        let events = futures_util::stream::unfold(job, |mut j| async move { j.next().await.map(|ev| (ev, j)) });
        return Ok(sse(events, chunks));
    }
    let model = job.model.clone();
    let outcome = job.collect().await?;
    let choices = outcome
        .choices
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let echo = &echoes[i / n];
            let lp = logprobs.then(|| legacy_logprobs(&model, &c.logprobs, echo.chars().count()));
            CompletionChoice { text: format!("{echo}{}", c.text), index: i as u32, logprobs: lp, finish_reason: c.reason }
        })
        .collect();
    Ok(Json(Completion::new(id, created, req.model, choices, outcome.usage)).into_response())
}

/// The legacy logprobs arrays for `tokens`, offsets counted in characters from `start`.
fn legacy_logprobs(model: &Loaded, tokens: &[lamina_engine::TokenLogprob], start: usize) -> CompletionLogprobs {
    let tok = &model.tokenizer;
    let mut out = CompletionLogprobs::default();
    let mut offset = start;
    for l in tokens {
        let piece = tok.token_to_piece(l.token);
        out.text_offset.push(offset as u32);
        offset += piece.chars().count();
        out.tokens.push(piece);
        out.token_logprobs.push(Some(finite(l.logprob)));
        let mut top: BTreeMap<String, f32> = BTreeMap::new();
        for &(t, p) in &l.top {
            let e = top.entry(tok.token_to_piece(t)).or_insert(f32::NEG_INFINITY);
            *e = e.max(finite(p));
        }
        out.top_logprobs.push(Some(top));
    }
    out
}

fn finite(x: f32) -> f32 {
    if x.is_finite() {
        x
    } else {
        -9999.0
    }
}

struct TextChunks {
    id: String,
    created: u64,
    model: Arc<Loaded>,
    n: usize,
    echoes: Vec<String>,
    logprobs: bool,
    include_usage: bool,
    /// Characters sent so far per choice (the logprobs' text offsets).
    offsets: Vec<usize>,
}

impl TextChunks {
    fn chunk(&self, choice: CompletionChunkChoice) -> SseEvent {
        stream::data(&CompletionChunk::new(self.id.clone(), self.created, self.model.name.clone(), vec![choice]))
    }
}

impl Render<JobEvent> for TextChunks {
    /// With `echo`, each choice's prompt text before any token.
    fn open(&mut self) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for i in 0..self.offsets.len() {
            let echo = self.echoes[i / self.n].clone();
            if !echo.is_empty() {
                self.offsets[i] = echo.chars().count();
                out.push(self.chunk(CompletionChunkChoice { text: echo, index: i as u32, logprobs: None, finish_reason: None }));
            }
        }
        out
    }

    fn event(&mut self, event: JobEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        match event {
            JobEvent::Token { choice, text, logprob } => {
                let lp = logprob.filter(|_| self.logprobs).map(|l| legacy_logprobs(&self.model, std::slice::from_ref(&l), self.offsets[choice]));
                self.offsets[choice] += text.chars().count();
                if !text.is_empty() || lp.is_some() {
                    out.push(self.chunk(CompletionChunkChoice { text, index: choice as u32, logprobs: lp, finish_reason: None }));
                }
            }
            JobEvent::Done { choice, reason, .. } => {
                out.push(self.chunk(CompletionChunkChoice { text: String::new(), index: choice as u32, logprobs: None, finish_reason: Some(reason) }))
            }
            JobEvent::End(usage) if self.include_usage => {
                out.push(stream::data(&CompletionChunk::usage(self.id.clone(), self.created, self.model.name.clone(), usage)))
            }
            JobEvent::End(_) => {}
        }
        out
    }

    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent> {
        vec![stream::openai_error(error)]
    }

    fn close(&mut self) -> Vec<SseEvent> {
        vec![stream::done()]
    }
}
