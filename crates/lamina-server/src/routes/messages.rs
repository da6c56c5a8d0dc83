//! `POST /v1/messages`: Anthropic's Messages API as a front-end of the chat pipeline.
//! The request becomes a chat request; the answer becomes content blocks, whole or
//! streamed as Anthropic's events. Every error on this path is in Anthropic's shape.

use super::respond_anthropic;
use super::stream::{self, sse, Render};
use crate::chat_core::{self, ChatEvent};
use crate::{read_body, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::messages::{anthropic_error, content_blocks, BlockDelta, MessageDelta, MessageResponse, MessagesUsage, ResponseBlock, StopReason, StreamEvent};
use lamina_api::{parse_json, ApiError, MessagesRequest};
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond_anthropic("messages", messages(state, body).await)
}

async fn messages(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: MessagesRequest = parse_json(&bytes)?;
    let chat = req.to_chat()?;
    let answer = chat_core::start(&state, &chat).await?;
    let mut message = MessageResponse::new(state.next_object_id("msg"), answer.model().name.clone());
    if req.is_stream() {
        message.usage.input_tokens = answer.prompt_tokens() as u32;
        return Ok(sse(answer.into_stream(), MessageEvents { message, block: None, blocks: 0, stop: None }));
    }
    let whole = answer.collect().await?;
    let choice = whole.choices.into_iter().next().ok_or_else(|| ApiError::server_error("the answer has no choice"))?;
    message.content = content_blocks(&choice.text, &choice.tool_calls);
    message.stop_reason = Some(StopReason::from_finish(choice.finish_reason, choice.stop_sequence.as_deref()));
    message.stop_sequence = choice.stop_sequence;
    message.usage = MessagesUsage::from(whole.usage);
    Ok(Json(message).into_response())
}

/// The kind of the content block being streamed.
#[derive(PartialEq)]
enum Open {
    Text,
    ToolUse,
}

/// Renders chat events as Anthropic's stream: `message_start`, a `ping`, each content
/// block started, filled by deltas and stopped, `message_delta` with the stop reason and
/// usage, `message_stop`.
struct MessageEvents {
    message: MessageResponse,
    block: Option<Open>,
    /// Blocks started so far (the next block's index).
    blocks: usize,
    stop: Option<MessageDelta>,
}

fn event(ev: StreamEvent) -> SseEvent {
    stream::named(ev.type_name(), &ev)
}

impl MessageEvents {
    fn start_block(&mut self, out: &mut Vec<SseEvent>, kind: Open, content_block: ResponseBlock) {
        self.stop_block(out);
        out.push(event(StreamEvent::ContentBlockStart { index: self.blocks, content_block }));
        self.block = Some(kind);
        self.blocks += 1;
    }

    fn stop_block(&mut self, out: &mut Vec<SseEvent>) {
        if self.block.take().is_some() {
            out.push(event(StreamEvent::ContentBlockStop { index: self.blocks - 1 }));
        }
    }
}

impl Render<ChatEvent> for MessageEvents {
    fn event(&mut self, ev: ChatEvent) -> Vec<SseEvent> {
        let mut out = Vec::new();
        match ev {
            ChatEvent::Start { .. } => {
                out.push(event(StreamEvent::MessageStart { message: self.message.clone() }));
                out.push(event(StreamEvent::Ping));
            }
            ChatEvent::Text { text, .. } if !text.is_empty() => {
                if self.block != Some(Open::Text) {
                    self.start_block(&mut out, Open::Text, ResponseBlock::Text { text: String::new() });
                }
                out.push(event(StreamEvent::ContentBlockDelta { index: self.blocks - 1, delta: BlockDelta::TextDelta { text } }));
            }
            ChatEvent::Text { .. } => {}
            ChatEvent::ToolCallStart { id, name, .. } => {
                self.start_block(&mut out, Open::ToolUse, ResponseBlock::ToolUse { id, name, input: serde_json::json!({}) });
            }
            ChatEvent::ToolCallArguments { fragment, .. } => {
                out.push(event(StreamEvent::ContentBlockDelta { index: self.blocks - 1, delta: BlockDelta::InputJsonDelta { partial_json: fragment } }));
            }
            ChatEvent::Finish { reason, stop_sequence, .. } => {
                // A reply with no content is one empty text block, as when whole.
                if self.blocks == 0 {
                    self.start_block(&mut out, Open::Text, ResponseBlock::Text { text: String::new() });
                }
                self.stop_block(&mut out);
                self.stop = Some(MessageDelta { stop_reason: StopReason::from_finish(reason, stop_sequence.as_deref()), stop_sequence });
            }
            ChatEvent::Usage(usage) => {
                let delta = self.stop.take().unwrap_or(MessageDelta { stop_reason: StopReason::EndTurn, stop_sequence: None });
                out.push(event(StreamEvent::MessageDelta { delta, usage: MessagesUsage::from(usage) }));
                out.push(event(StreamEvent::MessageStop));
            }
        }
        out
    }

    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent> {
        let (_, body) = anthropic_error(error);
        vec![event(StreamEvent::Error { error: body.error })]
    }

    fn close(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
}
