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
use lamina_api::messages::{anthropic_error, content_blocks, MessageResponse, MessageStream, MessagesUsage, StopReason, StreamEvent};
use lamina_api::{parse_json, ApiError, MessagesRequest};
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond_anthropic("messages", messages(state, body).await)
}

async fn messages(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: MessagesRequest = parse_json(&bytes)?;
    let chat = req.to_chat()?;
    let answer = chat_core::start(&state, &chat, None).await?;
    let mut message = MessageResponse::new(state.next_object_id("msg"), answer.model().name.clone());
    if req.is_stream() {
        message.usage.input_tokens = answer.prompt_tokens() as u32;
        return Ok(sse(answer.into_stream(), MessageEvents(MessageStream::new(message))));
    }
    let whole = answer.collect().await?;
    let choice = whole.choices.into_iter().next().ok_or_else(|| ApiError::server_error("the answer has no choice"))?;
    message.content = content_blocks(&choice.text, &choice.tool_calls);
    message.stop_reason = Some(StopReason::from_finish(choice.finish_reason, choice.stop_sequence.as_deref()));
    message.stop_sequence = choice.stop_sequence;
    message.usage = MessagesUsage::from(whole.usage);
    Ok(Json(message).into_response())
}

/// Renders chat events as Anthropic's stream (see [`MessageStream`]).
struct MessageEvents(MessageStream);

impl Render<ChatEvent> for MessageEvents {
    fn event(&mut self, ev: ChatEvent) -> Vec<SseEvent> {
        self.typed(ev).iter().map(|e| stream::named(e.type_name(), e)).collect()
    }

    fn fail(&mut self, error: &ApiError) -> Vec<SseEvent> {
        let (_, body) = anthropic_error(error);
        let ev = StreamEvent::Error { error: body.error };
        vec![stream::named(ev.type_name(), &ev)]
    }

    fn close(&mut self) -> Vec<SseEvent> {
        Vec::new()
    }
}

impl MessageEvents {
    /// The Messages API events one chat event makes.
    fn typed(&mut self, ev: ChatEvent) -> Vec<StreamEvent> {
        let s = &mut self.0;
        match ev {
            ChatEvent::Start { .. } => s.start(),
            ChatEvent::Text { text, .. } => s.text(text),
            ChatEvent::ToolCallStart { id, name, .. } => s.tool_call(id, name),
            ChatEvent::ToolCallArguments { fragment, .. } => s.tool_arguments(fragment),
            ChatEvent::Finish { reason, stop_sequence, .. } => s.finish(reason, stop_sequence),
            ChatEvent::Usage(usage) => s.end(MessagesUsage::from(usage)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina_api::messages::{BlockDelta, ResponseBlock};
    use lamina_api::{FinishReason, FunctionCall, ToolCall, ToolType, Usage};

    fn events(chat: Vec<ChatEvent>) -> Vec<StreamEvent> {
        let mut m = MessageEvents(MessageStream::new(MessageResponse::new("msg_1", "m")));
        chat.into_iter().flat_map(|ev| m.typed(ev)).collect()
    }

    #[test]
    fn text_then_tool_calls_stream_as_numbered_blocks_and_end_with_tool_use() {
        let chat = vec![
            ChatEvent::Start { choice: 0 },
            ChatEvent::Text { choice: 0, text: "Checking.".into(), logprob: None },
            ChatEvent::ToolCallStart { choice: 0, index: 0, id: "call_1".into(), name: "weather".into() },
            ChatEvent::ToolCallArguments { choice: 0, index: 0, fragment: "{\"city\":\"Oslo\"}".into() },
            ChatEvent::ToolCallStart { choice: 0, index: 1, id: "call_2".into(), name: "weather".into() },
            ChatEvent::ToolCallArguments { choice: 0, index: 1, fragment: "{}".into() },
            ChatEvent::Finish { choice: 0, reason: FinishReason::ToolCalls, stop_sequence: None },
            ChatEvent::Usage(Usage::new(20, 9, 16)),
        ];
        let evs = events(chat);
        let types: Vec<&str> = evs.iter().map(|e| e.type_name()).collect();
        assert_eq!(
            types,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop",
            ]
        );
        let indices: Vec<usize> = evs
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ContentBlockStart { index, .. } | StreamEvent::ContentBlockDelta { index, .. } | StreamEvent::ContentBlockStop { index } => {
                    Some(*index)
                }
                _ => None,
            })
            .collect();
        assert_eq!(indices, [0, 0, 0, 1, 1, 1, 2, 2, 2]);
        assert!(
            matches!(&evs[5], StreamEvent::ContentBlockStart { content_block: ResponseBlock::ToolUse { id, name, .. }, .. } if id == "call_1" && name == "weather")
        );
        assert!(
            matches!(&evs[6], StreamEvent::ContentBlockDelta { delta: BlockDelta::InputJsonDelta { partial_json }, .. } if partial_json == "{\"city\":\"Oslo\"}")
        );
        let StreamEvent::MessageDelta { delta, usage } = &evs[11] else { panic!() };
        assert_eq!((delta.stop_reason, usage.input_tokens, usage.cache_read_input_tokens, usage.output_tokens), (StopReason::ToolUse, 4, 16, 9));
        // The whole answer's blocks are the same ones.
        let call = |id: &str, args: &str| ToolCall {
            id: id.into(),
            kind: ToolType::Function,
            function: FunctionCall { name: "weather".into(), arguments: args.into() },
        };
        let whole = content_blocks("Checking.", &[call("call_1", "{\"city\":\"Oslo\"}"), call("call_2", "{}")]);
        assert_eq!(whole.len(), 3);
    }

    #[test]
    fn a_stop_sequence_and_an_empty_answer() {
        let evs = events(vec![
            ChatEvent::Start { choice: 0 },
            ChatEvent::Finish { choice: 0, reason: FinishReason::Stop, stop_sequence: Some("END".into()) },
            ChatEvent::Usage(Usage::new(5, 1, 0)),
        ]);
        assert!(matches!(&evs[2], StreamEvent::ContentBlockStart { index: 0, content_block: ResponseBlock::Text { text } } if text.is_empty()));
        assert!(matches!(&evs[3], StreamEvent::ContentBlockStop { index: 0 }));
        let StreamEvent::MessageDelta { delta, .. } = &evs[4] else { panic!("{evs:?}") };
        assert_eq!((delta.stop_reason, delta.stop_sequence.as_deref()), (StopReason::StopSequence, Some("END")));
    }
}
