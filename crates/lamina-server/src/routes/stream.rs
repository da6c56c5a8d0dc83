//! A job streamed as server-sent events, the way OpenAI streams: one JSON chunk per
//! event, the endpoint deciding each chunk's shape, then `data: [DONE]`. A failure after
//! the stream started is sent as an error object and the stream ends without `[DONE]`,
//! so a client can never take a cut-off answer for a whole one. A client that goes away
//! drops the stream, and with it the job, which cancels its sequences.

use crate::executor::Event;
use crate::jobs::{finish_reason, Job, Usage};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use lamina_api::FinishReason;
use lamina_engine::TokenLogprob;
use std::collections::VecDeque;
use std::convert::Infallible;

/// How an endpoint shapes its chunks (each method returns JSON texts to send).
pub trait Chunks: Send + 'static {
    /// Before any token (chat: each choice's role).
    fn start(&mut self) -> Vec<String>;
    /// A token of `choice` and the text it made printable (maybe empty).
    fn token(&mut self, choice: usize, text: &str, logprob: Option<&TokenLogprob>) -> Vec<String>;
    /// `choice` finished.
    fn done(&mut self, choice: usize, reason: FinishReason) -> Vec<String>;
    /// After every choice finished (the usage chunk, when asked for).
    fn end(&mut self, usage: lamina_api::Usage) -> Vec<String>;
}

struct State<C> {
    job: Job,
    chunks: C,
    queue: VecDeque<String>,
    open: usize,
    usage: Usage,
    over: bool,
}

pub fn sse<C: Chunks>(job: Job, mut chunks: C) -> Response {
    let queue: VecDeque<String> = chunks.start().into();
    let (open, usage) = (job.choices(), job.usage());
    let state = State { job, chunks, queue, open, usage, over: false };
    let events = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(data) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(SseEvent::default().data(data)), s));
            }
            if s.over {
                return None;
            }
            if s.open == 0 {
                let usage = s.usage.finish(&s.job.model.name);
                s.queue.extend(s.chunks.end(usage));
                s.queue.push_back("[DONE]".into());
                s.over = true;
                continue;
            }
            match s.job.next().await {
                Some(Event::Token { choice, text, logprob }) => {
                    let out = s.chunks.token(choice, &text, logprob.as_ref());
                    s.queue.extend(out);
                }
                Some(Event::Done { choice, reason, cached_tokens, generated_tokens, .. }) => {
                    s.usage.add(choice, generated_tokens, cached_tokens);
                    s.open -= 1;
                    match finish_reason(reason) {
                        Ok(r) => {
                            let out = s.chunks.done(choice, r);
                            s.queue.extend(out);
                        }
                        Err(e) => {
                            s.queue.push_back(e.to_json());
                            s.over = true;
                        }
                    }
                }
                None => {
                    s.queue.push_back(lamina_api::ApiError::server_error("the engine stopped before the answer was complete").to_json());
                    s.over = true;
                }
            }
        }
    });
    Sse::new(events).into_response()
}
