//! One generation job — a prompt with `n` choices — from the HTTP side: the parts of a
//! request both completion endpoints share (sampling settings, the context-window
//! checks, submission with a retry when the model was unloaded meanwhile, the event
//! stream with latency metrics, collecting a whole answer). Endpoint files only turn
//! their wire types into a [`JobSpec`] and the results back into wire types.

use crate::executor::{Command, Event, SubmitError};
use crate::metrics as m;
use crate::models::{InFlight, Loaded};
use crate::AppState;
use lamina_api::ApiError;
use lamina_engine::{FinishReason, GenerationParams, Request, SamplingParams, TokenLogprob};
use lamina_grammar::{Constraint, Lookahead};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// Sampling settings as an API request gives them (`None`: the API's default).
#[derive(Debug, Clone, Default)]
pub struct SamplingSpec {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub min_p: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Vec<String>,
    pub logit_bias: Vec<(u32, f32)>,
    /// `Some(k)`: log-probabilities with `k` alternatives.
    pub logprobs: Option<usize>,
    pub ignore_eos: bool,
    /// `None`: as many as the context window leaves.
    pub max_tokens: Option<usize>,
}

/// What to generate: `n` choices for each prompt, choices numbered prompt-major.
pub struct JobSpec {
    pub prompts: Vec<Vec<u32>>,
    pub n: usize,
    pub sampling: SamplingSpec,
    /// The request parameter the prompt came from (`messages` or `prompt`), for errors.
    pub prompt_param: &'static str,
    /// The grammar every choice follows, compiled ([`crate::structured`]).
    pub constraint: Option<Constraint>,
}

impl SamplingSpec {
    /// The settings a request gives in its shared sampling fields, plus the two that the
    /// endpoints spell differently.
    pub fn from_fields(f: lamina_api::SamplingFields<'_>, logprobs: Option<usize>, max_tokens: Option<usize>) -> Result<Self, ApiError> {
        Ok(SamplingSpec {
            temperature: f.temperature,
            top_p: f.top_p,
            top_k: f.top_k(),
            min_p: f.min_p,
            presence_penalty: f.presence_penalty,
            frequency_penalty: f.frequency_penalty,
            repetition_penalty: f.repetition_penalty,
            seed: f.seed.map(|s| s.as_u64()),
            stop: f.stop_list(),
            logit_bias: f.logit_bias_map()?,
            logprobs,
            ignore_eos: f.ignore_eos.unwrap_or(false),
            max_tokens,
        })
    }

    /// The engine's settings for choice `choice`. OpenAI's defaults where the request is
    /// silent: temperature 1, top-p 1, no top-k or min-p, no penalties. Choices of one
    /// seeded request get consecutive seeds, so they differ but reproduce.
    fn params(&self, max_tokens: usize, choice: usize) -> GenerationParams {
        GenerationParams {
            sampling: SamplingParams {
                temperature: self.temperature.unwrap_or(1.0),
                top_k: self.top_k.unwrap_or(0) as usize,
                top_p: self.top_p.map(|p| if p <= 0.0 { f32::MIN_POSITIVE } else { p }).unwrap_or(1.0),
                min_p: self.min_p.unwrap_or(0.0),
                repetition_penalty: self.repetition_penalty.unwrap_or(1.0),
                frequency_penalty: self.frequency_penalty.unwrap_or(0.0),
                presence_penalty: self.presence_penalty.unwrap_or(0.0),
                penalty_last_n: 64,
                seed: self.seed.map(|s| s.wrapping_add(choice as u64)),
            },
            max_tokens,
            stop: self.stop.clone(),
            ignore_eos: self.ignore_eos,
            logit_bias: self.logit_bias.clone(),
            logprobs: self.logprobs,
        }
    }
}

/// A submitted job: its events, and the guard that cancels it when dropped (the client
/// went away, or the handler gave up).
pub struct Job {
    pub model: Arc<Loaded>,
    /// Tokens of each prompt.
    pub prompt_lens: Vec<usize>,
    /// Choices per prompt.
    pub n: usize,
    events: mpsc::UnboundedReceiver<Event>,
    cancel: Vec<Arc<AtomicBool>>,
    _inflight: InFlight,
    started: Instant,
    last_token: Vec<Option<Instant>>,
    /// Choices not finished yet.
    open: usize,
    tally: Usage,
    /// The usage (or an error) was given: nothing more comes.
    ended: bool,
}

/// What a job gives, in order: each choice's tokens and its finish, then once the usage
/// of the whole job.
#[derive(Debug)]
pub enum JobEvent {
    /// A token of `choice` and the text it made printable (maybe empty).
    Token {
        choice: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// `tokens`: the ids `choice` generated.
    Done {
        choice: usize,
        reason: lamina_api::FinishReason,
        tokens: Vec<u32>,
    },
    End(lamina_api::Usage),
}

impl Drop for Job {
    fn drop(&mut self) {
        for c in &self.cancel {
            c.store(true, Ordering::Relaxed);
        }
        m::duration(&self.model.name, self.started.elapsed().as_secs_f64());
    }
}

/// One choice's whole result.
#[derive(Debug)]
pub struct ChoiceResult {
    pub text: String,
    pub logprobs: Vec<TokenLogprob>,
    pub reason: lamina_api::FinishReason,
}

/// A job's whole result.
pub struct Outcome {
    pub choices: Vec<ChoiceResult>,
    pub usage: lamina_api::Usage,
}

/// The wire finish reason: `length` covers both `max_tokens` and a full context window.
pub fn finish_reason(r: FinishReason) -> Result<lamina_api::FinishReason, ApiError> {
    match r {
        FinishReason::Stop => Ok(lamina_api::FinishReason::Stop),
        FinishReason::Length | FinishReason::ContextFull => Ok(lamina_api::FinishReason::Length),
        FinishReason::Cancelled => Err(ApiError::server_error("the generation was stopped by the server")),
    }
}

/// Tokenizes on a blocking thread (a long prompt takes a while and must not stall the
/// other connections), refusing first by bytes a text that cannot fit.
pub async fn tokenize(model: &Arc<Loaded>, text: String, param: &'static str) -> Result<Vec<u32>, ApiError> {
    let tok = model.tokenizer.clone();
    let ctx = model.context_length;
    tokio::task::spawn_blocking(move || {
        let min = tok.min_tokens(&text);
        if min >= ctx {
            return Err(ApiError::context_length_exceeded(ctx as u32, min as u32).with_param(param));
        }
        tok.encode(&text, true).map_err(|e| ApiError::invalid_param(param, e.to_string()))
    })
    .await
    .map_err(|e| ApiError::server_error(format!("tokenizing failed: {e}")))?
}

/// Looks the model up (loading it if needed), lets `build` make the job from it, checks
/// the context window, and submits. An unloaded-meanwhile model is loaded again, once.
pub async fn start<F, Fut>(state: &AppState, model: &str, build: F) -> Result<Job, ApiError>
where
    F: Fn(Arc<Loaded>) -> Fut,
    Fut: std::future::Future<Output = Result<JobSpec, ApiError>>,
{
    let (base, adapter) = state.models.base_of(model)?;
    for _ in 0..2 {
        let (loaded, inflight) = state.models.get(&base).await?;
        let lora = loaded.lora(adapter.as_deref())?;
        let spec = build(loaded.clone()).await?;
        let ctx = loaded.context_length;
        if let Some(&(t, _)) = spec.sampling.logit_bias.iter().find(|(t, _)| *t as usize >= loaded.vocab_size) {
            return Err(ApiError::invalid_param("logit_bias", format!("token {t} is outside the vocabulary of {} tokens", loaded.vocab_size)));
        }
        let mut requests = Vec::new();
        let mut cancel = Vec::new();
        for prompt in &spec.prompts {
            let p = prompt.len();
            if p == 0 {
                return Err(ApiError::invalid_param(spec.prompt_param, "the prompt is empty"));
            }
            if p >= ctx {
                return Err(ApiError::context_length_exceeded(ctx as u32, p as u32).with_param(spec.prompt_param));
            }
            let max_tokens = match spec.sampling.max_tokens {
                Some(m) if p + m > ctx => {
                    return Err(ApiError::context_length_exceeded_with_completion(ctx as u32, p as u32, m as u32).with_param(spec.prompt_param))
                }
                Some(m) => m,
                None => ctx - p,
            };
            for c in 0..spec.n {
                let flag = Arc::new(AtomicBool::new(false));
                let mut request = Request::new(prompt.clone(), spec.sampling.params(max_tokens, c)).with_cancel(flag.clone()).with_lora(lora.clone());
                if let Some(g) = &spec.constraint {
                    request = request.with_processor(Box::new(Lookahead::new(g.fork())));
                }
                requests.push(request);
                cancel.push(flag);
            }
        }
        let choices = requests.len();
        let (tx, rx) = mpsc::unbounded_channel();
        let (reply, answer) = oneshot::channel();
        state.models.send(Command::Submit { model: base.clone(), requests, events: tx, reply });
        match answer.await {
            Ok(Ok(())) => {
                let prompt_lens: Vec<usize> = spec.prompts.iter().map(Vec::len).collect();
                let tally = Usage { prompt_lens: prompt_lens.clone(), n: spec.n, generated: 0, cached: vec![None; prompt_lens.len()] };
                return Ok(Job {
                    model: loaded,
                    prompt_lens,
                    n: spec.n,
                    events: rx,
                    cancel,
                    _inflight: inflight,
                    started: Instant::now(),
                    last_token: vec![None; choices],
                    open: choices,
                    tally,
                    ended: false,
                });
            }
            Ok(Err(SubmitError::Api(e))) => return Err(e),
            Ok(Err(SubmitError::NotLoaded)) => state.models.forget(&base, &loaded),
            Err(_) => return Err(ApiError::unavailable("the server is shutting down")),
        }
    }
    Err(ApiError::unavailable(format!("model `{model}` was unloaded while the request was queued; retry")))
}

impl Job {
    /// Choices over all prompts.
    pub fn choices(&self) -> usize {
        self.prompt_lens.len() * self.n
    }

    /// The next event, recording time to first token and inter-token latency; `None`
    /// after [`JobEvent::End`] or an error. A choice the engine cancelled, or an engine
    /// that went away, is an error: an answer is never cut off silently.
    pub async fn next(&mut self) -> Option<Result<JobEvent, ApiError>> {
        if self.ended {
            return None;
        }
        if self.open == 0 {
            self.ended = true;
            return Some(Ok(JobEvent::End(self.tally.finish(&self.model.name))));
        }
        let Some(ev) = self.events.recv().await else {
            self.ended = true;
            return Some(Err(ApiError::server_error("the engine stopped before the answer was complete")));
        };
        Some(match ev {
            Event::Token { choice, text, logprob } => {
                let now = Instant::now();
                match self.last_token[choice].replace(now) {
                    None => m::time_to_first_token(&self.model.name, now.duration_since(self.started).as_secs_f64()),
                    Some(prev) => m::inter_token(&self.model.name, now.duration_since(prev).as_secs_f64()),
                }
                Ok(JobEvent::Token { choice, text, logprob })
            }
            Event::Done { choice, reason, cached_tokens, generated_tokens, tokens } => {
                self.tally.add(choice, generated_tokens, cached_tokens);
                self.open -= 1;
                let r = finish_reason(reason);
                self.ended = r.is_err();
                r.map(|reason| JobEvent::Done { choice, reason, tokens })
            }
        })
    }

    /// Waits for every choice to finish.
    pub async fn collect(mut self) -> Result<Outcome, ApiError> {
        let mut text = vec![String::new(); self.choices()];
        let mut logprobs: Vec<Vec<TokenLogprob>> = vec![Vec::new(); self.choices()];
        let mut reasons = vec![lamina_api::FinishReason::Stop; self.choices()];
        while let Some(ev) = self.next().await {
            match ev? {
                JobEvent::Token { choice, text: t, logprob } => {
                    text[choice].push_str(&t);
                    logprobs[choice].extend(logprob);
                }
                JobEvent::Done { choice, reason, .. } => reasons[choice] = reason,
                JobEvent::End(usage) => {
                    let choices =
                        text.into_iter().zip(logprobs).zip(reasons).map(|((text, logprobs), reason)| ChoiceResult { text, logprobs, reason }).collect();
                    return Ok(Outcome { choices, usage });
                }
            }
        }
        Err(ApiError::server_error("the engine stopped before the answer was complete"))
    }
}

/// Adds up a job's token counts as choices finish: completion tokens over all choices;
/// each prompt counted once, and as cached only what every choice of it reused.
pub struct Usage {
    prompt_lens: Vec<usize>,
    n: usize,
    generated: usize,
    cached: Vec<Option<usize>>,
}

impl Usage {
    pub fn add(&mut self, choice: usize, generated: usize, cached: usize) {
        self.generated += generated;
        let c = &mut self.cached[choice / self.n.max(1)];
        *c = Some(c.map_or(cached, |c| c.min(cached)));
    }

    /// The wire usage, also counted in the metrics.
    pub fn finish(&self, model: &str) -> lamina_api::Usage {
        let prompt: usize = self.prompt_lens.iter().sum();
        let cached: usize = self.cached.iter().map(|c| c.unwrap_or(0)).sum();
        m::usage(model, prompt, self.generated, cached);
        lamina_api::Usage::new(prompt as u32, self.generated as u32, cached as u32)
    }
}
