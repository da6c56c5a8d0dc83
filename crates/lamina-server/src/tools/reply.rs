//! A reply's tool calls as chat events: per call found, [`ChatEvent::ToolCallStart`]
//! (index, id, name) and then its argument fragments; content around the calls as
//! [`ChatEvent::Text`]; the finish reason `tool_calls` for a choice that called.

use super::parser::{CallParser, Output};
use super::CallCheck;
use crate::chat_core::ChatEvent;
use lamina_api::{FinishReason, TokenLogprob};

/// Finds the calls in every choice of one request.
pub struct Replies {
    check: CallCheck,
    /// Ids are this plus the choice and the call's index.
    id_base: String,
    parsers: Vec<CallParser>,
}

impl Replies {
    pub fn new(check: CallCheck, id_base: String, choices: usize) -> Self {
        Replies { check, id_base, parsers: (0..choices).map(|_| CallParser::new()).collect() }
    }

    /// The events generated `text` of `choice` gives (`logprob`, its token's, goes with the
    /// first, or alone).
    pub fn push(&mut self, choice: usize, text: &str, logprob: Option<TokenLogprob>, out: &mut Vec<ChatEvent>) {
        let before = self.parsers[choice].calls();
        let outs = self.parsers[choice].push(text, &|n, a| self.check.check(n, a));
        self.events(choice, outs, before, logprob, out);
    }

    /// `choice` ended: the events of what it still held back, and its finish reason
    /// (`tool_calls` when it made calls and stopped by itself).
    pub fn finish(&mut self, choice: usize, reason: FinishReason, out: &mut Vec<ChatEvent>) -> FinishReason {
        let before = self.parsers[choice].calls();
        let outs = self.parsers[choice].finish();
        self.events(choice, outs, before, None, out);
        if reason == FinishReason::Stop && self.parsers[choice].calls() > 0 {
            FinishReason::ToolCalls
        } else {
            reason
        }
    }

    fn events(&self, choice: usize, outs: Vec<Output>, mut index: usize, mut logprob: Option<TokenLogprob>, out: &mut Vec<ChatEvent>) {
        for o in outs {
            match o {
                Output::Content(text) => out.push(ChatEvent::Text { choice, text, logprob: logprob.take() }),
                Output::Call(call) => {
                    let id = format!("{}{choice:02x}{index:02x}", self.id_base);
                    let fragments = call.fragments();
                    out.push(ChatEvent::ToolCallStart { choice, index, id, name: call.name });
                    out.extend(fragments.into_iter().map(|fragment| ChatEvent::ToolCallArguments { choice, index, fragment }));
                    index += 1;
                }
            }
        }
        if logprob.is_some() {
            out.push(ChatEvent::Text { choice, text: String::new(), logprob });
        }
    }
}
