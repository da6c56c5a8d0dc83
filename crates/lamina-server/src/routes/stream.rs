//! A stream of typed events sent as server-sent events, each front-end deciding the
//! wire shape of each event ([`Render`]). A failure after the stream started is sent in
//! the front-end's error shape and the stream ends there (without OpenAI's `[DONE]`), so
//! a client can never take a cut-off answer for a whole one. A client that goes away
//! drops the stream, and with it the job, which cancels its sequences.

use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use lamina_api::ApiError;
use std::collections::VecDeque;
use std::convert::Infallible;

/// How a front-end shapes its events on the wire.
pub trait Render<E>: Send + 'static {
    /// Before any event.
    fn open(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
    /// One event of the answer.
    fn event(&mut self, event: E) -> Vec<SseEvent>;
    /// A failure after the stream started: the last events sent.
    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent>;
    /// After the last event, when the answer was whole.
    fn close(&mut self) -> Vec<SseEvent>;
}

/// `data: {json}` with no event name (OpenAI's chat and completion chunks).
pub fn data(json: &impl serde::Serialize) -> SseEvent {
    SseEvent::default().data(serde_json::to_string(json).unwrap_or_default())
}

/// `event: NAME` + `data: {json}` (the Responses and Messages APIs name their events).
pub fn named(name: &str, json: &impl serde::Serialize) -> SseEvent {
    data(json).event(name)
}

/// OpenAI's end of stream, `data: [DONE]`.
pub fn done() -> SseEvent {
    SseEvent::default().data("[DONE]")
}

/// A failure in OpenAI's error shape, `data: {"error": {...}}`.
pub fn openai_error(e: &ApiError) -> SseEvent {
    SseEvent::default().data(e.to_json())
}

struct State<S, R> {
    events: std::pin::Pin<Box<S>>,
    render: R,
    queue: VecDeque<SseEvent>,
    over: bool,
}

/// The response streaming `events` as `render` shapes them.
pub fn sse<E, S, R>(events: S, render: R) -> Response
where
    S: Stream<Item = Result<E, ApiError>> + Send + 'static,
    R: Render<E>,
{
    let mut render = render;
    let queue = render.open().into();
    let state = State { events: Box::pin(events), render, queue, over: false };
    let out = futures_util::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(ev) = s.queue.pop_front() {
                return Some((Ok::<_, Infallible>(ev), s));
            }
            if s.over {
                return None;
            }
            match s.events.next().await {
                Some(Ok(ev)) => {
                    let out = s.render.event(ev);
                    s.queue.extend(out);
                }
                Some(Err(e)) => {
                    if e.status >= 500 {
                        tracing::warn!("stream failed: {e}");
                    }
                    let out = s.render.fail(&e);
                    s.queue.extend(out);
                    s.over = true;
                }
                None => {
                    let out = s.render.close();
                    s.queue.extend(out);
                    s.over = true;
                }
            }
        }
    });
    Sse::new(out).into_response()
}
