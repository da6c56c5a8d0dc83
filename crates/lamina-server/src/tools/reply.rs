//! A reply's tool calls on the wire: `tool_calls` of a whole message, or the deltas of a
//! stream (per call: `index`, `id`, `type` and `function.name` first, then the argument
//! fragments), and the finish reason `tool_calls`.

use super::parser::{parse_reply, CallParser, Output, ParsedCall};
use super::CallCheck;
use crate::AppState;
use lamina_api::{ChatDelta, FinishReason, FunctionCall, FunctionCallDelta, ResponseMessage, Role, ToolCall, ToolCallDelta, ToolType};
use std::sync::Arc;

/// Finds the calls in every choice of one request.
pub struct Replies {
    check: CallCheck,
    state: Arc<AppState>,
    parsers: Vec<CallParser>,
}

impl Replies {
    pub fn new(check: CallCheck, state: Arc<AppState>, choices: usize) -> Self {
        Replies { check, state, parsers: (0..choices).map(|_| CallParser::new()).collect() }
    }

    /// A whole reply as the assistant's message; `content` is `null` when the reply is
    /// only calls.
    pub fn message(&self, text: &str) -> ResponseMessage {
        let (content, calls) = parse_reply(text, &|n, a| self.check.check(n, a));
        let tool_calls: Vec<ToolCall> = calls
            .into_iter()
            .map(|c| ToolCall { id: self.state.next_call_id(), kind: ToolType::Function, function: FunctionCall { name: c.name, arguments: c.arguments } })
            .collect();
        let content = if tool_calls.is_empty() || !content.trim().is_empty() { Some(content) } else { None };
        ResponseMessage { role: Role::Assistant, content, refusal: None, tool_calls: (!tool_calls.is_empty()).then_some(tool_calls) }
    }

    /// The deltas generated `text` of `choice` gives.
    pub fn push(&mut self, choice: usize, text: &str) -> Vec<ChatDelta> {
        let before = self.parsers[choice].calls();
        let outs = self.parsers[choice].push(text, &|n, a| self.check.check(n, a));
        self.deltas(outs, before)
    }

    /// The deltas of what `choice` still held back when it ended.
    pub fn finish(&mut self, choice: usize) -> Vec<ChatDelta> {
        let before = self.parsers[choice].calls();
        let outs = self.parsers[choice].finish();
        self.deltas(outs, before)
    }

    /// `tool_calls` when `choice` made calls and stopped by itself.
    pub fn reason(&self, choice: usize, reason: FinishReason) -> FinishReason {
        if reason == FinishReason::Stop && self.parsers[choice].calls() > 0 {
            FinishReason::ToolCalls
        } else {
            reason
        }
    }

    fn deltas(&self, outs: Vec<Output>, mut index: usize) -> Vec<ChatDelta> {
        let mut deltas = Vec::new();
        for o in outs {
            match o {
                Output::Content(text) => deltas.push(ChatDelta::content(text)),
                Output::Call(call) => {
                    deltas.extend(self.call_deltas(index as u32, call));
                    index += 1;
                }
            }
        }
        deltas
    }

    fn call_deltas(&self, index: u32, call: ParsedCall) -> Vec<ChatDelta> {
        let delta = |d: ToolCallDelta| ChatDelta { tool_calls: Some(vec![d]), ..ChatDelta::default() };
        let mut out = vec![delta(ToolCallDelta {
            index,
            id: Some(self.state.next_call_id()),
            kind: Some(ToolType::Function),
            function: Some(FunctionCallDelta { name: Some(call.name.clone()), arguments: Some(String::new()) }),
        })];
        for f in call.fragments() {
            out.push(delta(ToolCallDelta { index, id: None, kind: None, function: Some(FunctionCallDelta { name: None, arguments: Some(f) }) }));
        }
        out
    }
}
