//! The chat pipeline every chat-shaped front-end shares (`/v1/chat/completions`,
//! `/v1/responses`, `/v1/messages`): a [`ChatCompletionRequest`] in — the front-ends
//! translate theirs into one — and typed results out, never wire text. [`start`] checks
//! the request, renders the conversation with the model's chat template and submits the
//! job; the [`ChatStream`] it returns gives [`ChatEvent`]s per choice (start, text, tool
//! calls, finish) and then the usage, or folds them into a whole [`ChatAnswer`]. Each
//! front-end renders those in its own wire format.
//!
//! With the `rag` extension, [`start`] first grounds the request in a collection
//! ([`crate::rag`]); when nothing retrieved is relevant the answer says so without the
//! model being called, and [`ChatStream::take_grounding`] gives what the citations are
//! reported from.

use crate::jobs::{self, Job, JobEvent, JobSpec, SamplingSpec};
use crate::models::Loaded;
use crate::rag::{self, Grounding};
use crate::structured;
use crate::tools::{self, reply::Replies, ToolUse};
use crate::AppState;
use lamina_api::{ApiError, ChatCompletionRequest, FinishReason, FunctionCall, TokenLogprob, ToolCall, ToolType, TopLogprob, Usage};
use lamina_tokenizer::Tokenizer;
use std::collections::VecDeque;
use std::sync::Arc;

/// One step of a chat answer. Per choice: `Start`, then `Text` and tool-call events in
/// the order generated, then `Finish`; after every choice finished, `Usage` once.
#[derive(Debug, Clone, PartialEq)]
pub enum ChatEvent {
    Start {
        choice: usize,
    },
    /// Text of the reply (maybe empty when only `logprob` is new).
    Text {
        choice: usize,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// A tool call begins: call `index` (0, 1, … within the choice).
    ToolCallStart {
        choice: usize,
        index: usize,
        id: String,
        name: String,
    },
    /// More of call `index`'s arguments (the fragments concatenate to its JSON).
    ToolCallArguments {
        choice: usize,
        index: usize,
        fragment: String,
    },
    Finish {
        choice: usize,
        reason: FinishReason,
        /// The request's stop string that ended the choice (`reason` is `Stop`), if one did.
        stop_sequence: Option<String>,
    },
    Usage(Usage),
}

/// One choice of a whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceAnswer {
    pub text: String,
    pub tool_calls: Vec<ToolCall>,
    pub finish_reason: FinishReason,
    /// The stop string that ended it, if one did.
    pub stop_sequence: Option<String>,
    /// One per generated token when the request asked for log-probabilities.
    pub logprobs: Option<Vec<TokenLogprob>>,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatAnswer {
    pub choices: Vec<ChoiceAnswer>,
    pub usage: Usage,
}

/// Checks `req`, grounds it in its `rag` collection if it names one (`key`: the API key
/// the request presented), renders its conversation (with its tools) and submits it,
/// constrained to its `response_format` or, when it must call a tool, to tool calls.
pub async fn start(state: &AppState, req: &ChatCompletionRequest, key: Option<&str>) -> Result<ChatStream, ApiError> {
    req.validate()?;
    let grounding = match &req.rag {
        Some(opts) => {
            let (model, _inflight) = state.models.get(&req.model).await?;
            let g = rag::ground(state, req, opts, &model, key).await?;
            if let Some(text) = g.nothing_relevant_answer() {
                return Ok(ChatStream::canned(model, req.n() as usize, text, g));
            }
            Some(g)
        }
        None => None,
    };
    let grounded = grounding.as_ref().map(|g| g.apply(req));
    let req = grounded.as_ref().unwrap_or(req);
    let logprobs = (req.logprobs == Some(true)).then(|| req.top_logprobs.unwrap_or(0) as usize);
    let sampling = SamplingSpec::from_fields(req.sampling(), logprobs, req.max_tokens().map(|m| m as usize))?;
    let tools = ToolUse::of(req);
    let format = structured::response_grammar(req.response_format.as_ref());
    let n = req.n() as usize;
    let job = jobs::start(state, &req.model, |model| {
        let (sampling, tools, format) = (sampling.clone(), tools.clone(), format.clone());
        async move {
            let text = tools::render_prompt(req, tools.as_ref(), &model.tokenizer)?;
            let constraint = match &tools {
                Some(t) => tools::prepare(&model, t).await?.1,
                None => structured::constraint(&model, format, "response_format").await?,
            };
            let prompt = jobs::tokenize(&model, text, "messages").await?;
            Ok(JobSpec { prompts: vec![prompt], n, sampling, prompt_param: "messages", constraint })
        }
    })
    .await?;
    let replies = match &tools {
        Some(t) => Some(Replies::new(t.checker(structured::compiler(&job.model).await?), state.next_call_id(), job.choices())),
        None => None,
    };
    let pending = (0..n).map(|choice| ChatEvent::Start { choice }).collect();
    let (model, n) = (job.model.clone(), job.choices());
    Ok(ChatStream { job: Some(job), model, n, pending, logprobs: logprobs.is_some(), stop: sampling.stop, replies, grounding })
}

/// A submitted chat job's events (or a fixed answer given without the model).
pub struct ChatStream {
    job: Option<Job>,
    model: Arc<Loaded>,
    n: usize,
    pending: VecDeque<ChatEvent>,
    logprobs: bool,
    /// The request's stop strings.
    stop: Vec<String>,
    /// Tool calls found in the replies, when the request offers tools.
    replies: Option<Replies>,
    /// What the request was grounded in (`rag`).
    grounding: Option<Grounding>,
}

impl ChatStream {
    /// `n` choices of `text`, without calling the model (nothing relevant was retrieved).
    fn canned(model: Arc<Loaded>, n: usize, text: String, grounding: Grounding) -> ChatStream {
        let mut pending = VecDeque::new();
        for choice in 0..n {
            pending.push_back(ChatEvent::Start { choice });
            pending.push_back(ChatEvent::Text { choice, text: text.clone(), logprob: None });
            pending.push_back(ChatEvent::Finish { choice, reason: FinishReason::Stop, stop_sequence: None });
        }
        pending.push_back(ChatEvent::Usage(Usage::new(0, 0, 0)));
        ChatStream { job: None, model, n, pending, logprobs: false, stop: Vec::new(), replies: None, grounding: Some(grounding) }
    }

    /// The model answering (its served name and tokenizer).
    pub fn model(&self) -> &Arc<Loaded> {
        &self.model
    }

    /// Tokens of the rendered prompt.
    pub fn prompt_tokens(&self) -> usize {
        self.job.as_ref().map_or(0, |j| j.prompt_lens.iter().sum())
    }

    /// Choices in the answer.
    pub fn choices(&self) -> usize {
        self.n
    }

    /// What the request was grounded in, when it had `rag`: the renderer reports the
    /// citations from it once the answer is whole ([`Grounding::report`]).
    pub fn take_grounding(&mut self) -> Option<Grounding> {
        self.grounding.take()
    }

    /// The next event; `None` after [`ChatEvent::Usage`] or an error.
    pub async fn next(&mut self) -> Option<Result<ChatEvent, ApiError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(Ok(ev));
            }
            let job = self.job.as_mut()?;
            let ev = match job.next().await? {
                Ok(ev) => ev,
                Err(e) => return Some(Err(e)),
            };
            match ev {
                JobEvent::Token { choice, text, logprob } => {
                    let logprob = logprob.filter(|_| self.logprobs).map(|l| wire_logprob(&self.model.tokenizer, &l));
                    if let Some(r) = self.replies.as_mut() {
                        let mut out = Vec::new();
                        r.push(choice, &text, logprob, &mut out);
                        self.pending.extend(out);
                    } else if !text.is_empty() || logprob.is_some() {
                        self.pending.push_back(ChatEvent::Text { choice, text, logprob });
                    }
                }
                JobEvent::Done { choice, reason, tokens } => {
                    let stop_sequence = if reason == FinishReason::Stop { stop_string(&self.model.tokenizer, &self.stop, &tokens) } else { None };
                    let reason = match self.replies.as_mut() {
                        Some(r) => {
                            let mut out = Vec::new();
                            let reason = r.finish(choice, reason, &mut out);
                            self.pending.extend(out);
                            reason
                        }
                        None => reason,
                    };
                    self.pending.push_back(ChatEvent::Finish { choice, reason, stop_sequence });
                }
                JobEvent::End(usage) => self.pending.push_back(ChatEvent::Usage(usage)),
            }
        }
    }

    /// The events as a `Stream` (for server-sent events).
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Result<ChatEvent, ApiError>> + Send + 'static {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|ev| (ev, s)) })
    }

    /// Waits for the whole answer.
    pub async fn collect(mut self) -> Result<ChatAnswer, ApiError> {
        let mut fold = AnswerFold::new(self.choices(), self.logprobs);
        while let Some(ev) = self.next().await {
            if let Some(answer) = fold.add(ev?) {
                return Ok(answer);
            }
        }
        Err(ApiError::server_error("the engine stopped before the answer was complete"))
    }
}

/// Which of `stop` ended a generation of `tokens`: none when it ended at an
/// end-of-generation token; otherwise the stop string whose first occurrence in the
/// generated text ends earliest (the one the engine's matcher completed first).
fn stop_string(tok: &Tokenizer, stop: &[String], tokens: &[u32]) -> Option<String> {
    if stop.is_empty() || tokens.last().is_none_or(|&t| tok.is_end_of_generation(t)) {
        return None;
    }
    let text = tok.decode(tokens, true).ok()?;
    stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str()).map(|at| (at + s.len(), s))).min_by_key(|&(end, _)| end).map(|(_, s)| s.clone())
}

/// Builds a whole answer from the events, the way a client reading the stream would.
struct AnswerFold {
    choices: Vec<ChoiceAnswer>,
}

impl AnswerFold {
    fn new(n: usize, logprobs: bool) -> Self {
        let empty = ChoiceAnswer {
            text: String::new(),
            tool_calls: Vec::new(),
            finish_reason: FinishReason::Stop,
            stop_sequence: None,
            logprobs: logprobs.then(Vec::new),
        };
        AnswerFold { choices: vec![empty; n] }
    }

    /// Takes one event; the answer once the usage arrives.
    fn add(&mut self, ev: ChatEvent) -> Option<ChatAnswer> {
        match ev {
            ChatEvent::Start { .. } => {}
            ChatEvent::Text { choice, text, logprob } => {
                let c = &mut self.choices[choice];
                c.text.push_str(&text);
                if let (Some(all), Some(l)) = (c.logprobs.as_mut(), logprob) {
                    all.push(l);
                }
            }
            ChatEvent::ToolCallStart { choice, index, id, name } => {
                let calls = &mut self.choices[choice].tool_calls;
                debug_assert_eq!(index, calls.len(), "tool calls start in order");
                calls.push(ToolCall { id, kind: ToolType::Function, function: FunctionCall { name, arguments: String::new() } });
            }
            ChatEvent::ToolCallArguments { choice, index, fragment } => {
                if let Some(call) = self.choices[choice].tool_calls.get_mut(index) {
                    call.function.arguments.push_str(&fragment);
                }
            }
            ChatEvent::Finish { choice, reason, stop_sequence } => {
                self.choices[choice].finish_reason = reason;
                self.choices[choice].stop_sequence = stop_sequence;
            }
            ChatEvent::Usage(usage) => return Some(ChatAnswer { choices: std::mem::take(&mut self.choices), usage }),
        }
        None
    }
}

/// A chosen token's log-probability on the wire. Non-finite values (a token that cannot
/// occur) become OpenAI's -9999.
pub fn wire_logprob(tok: &Tokenizer, l: &lamina_engine::TokenLogprob) -> TokenLogprob {
    let finite = |x: f32| if x.is_finite() { x } else { -9999.0 };
    let top = l.top.iter().map(|&(t, p)| TopLogprob { token: tok.token_to_piece(t), logprob: finite(p), bytes: Some(tok.token_bytes(t)) }).collect();
    TokenLogprob { token: tok.token_to_piece(l.token), logprob: finite(l.logprob), bytes: Some(tok.token_bytes(l.token)), top_logprobs: top }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_folds_text_tool_calls_and_finish_per_choice() {
        let mut fold = AnswerFold::new(2, false);
        let events = [
            ChatEvent::Start { choice: 0 },
            ChatEvent::Start { choice: 1 },
            ChatEvent::Text { choice: 1, text: "Hel".into(), logprob: None },
            ChatEvent::ToolCallStart { choice: 0, index: 0, id: "call_1".into(), name: "weather".into() },
            ChatEvent::Text { choice: 1, text: "lo".into(), logprob: None },
            ChatEvent::ToolCallArguments { choice: 0, index: 0, fragment: "{\"city\":".into() },
            ChatEvent::ToolCallArguments { choice: 0, index: 0, fragment: "\"Oslo\"}".into() },
            ChatEvent::Finish { choice: 0, reason: FinishReason::ToolCalls, stop_sequence: None },
            ChatEvent::Finish { choice: 1, reason: FinishReason::Stop, stop_sequence: Some("\n\n".into()) },
        ];
        for ev in events {
            assert!(fold.add(ev).is_none());
        }
        let answer = fold.add(ChatEvent::Usage(Usage::new(7, 5, 0))).expect("the usage ends the answer");
        assert_eq!(answer.choices[1].text, "Hello");
        assert_eq!(answer.choices[1].finish_reason, FinishReason::Stop);
        assert_eq!(answer.choices[1].stop_sequence.as_deref(), Some("\n\n"));
        assert!(answer.choices[1].tool_calls.is_empty());
        let call = &answer.choices[0].tool_calls[0];
        assert_eq!((call.id.as_str(), call.function.name.as_str(), call.function.arguments.as_str()), ("call_1", "weather", "{\"city\":\"Oslo\"}"));
        assert_eq!(answer.choices[0].finish_reason, FinishReason::ToolCalls);
        assert_eq!(answer.usage.total_tokens, 12);
    }
}
