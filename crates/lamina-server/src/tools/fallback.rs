//! How tools are shown to a model whose chat template does not handle them (SmolLM2's,
//! for one): their JSON schemas and an instruction in the system prompt, earlier calls
//! written as `<tool_call>` lines in the assistant's turn, and each result as a turn of
//! role `tool` holding the result's text. The same `<tool_call>` format is what
//! Hermes- and Qwen-style templates teach their models, so one parser reads both.

use super::parser::{CLOSE, OPEN};
use super::ToolUse;
use lamina_api::{ToolCall, ToolChoice};
use lamina_tokenizer::ChatMessage;
use serde_json::json;

/// The system prompt's part about tools.
pub fn instructions(tools: &ToolUse) -> String {
    let mut s = String::from("You can call these tools. Each is given as JSON: its name, what it does, and the JSON schema of its arguments.\n");
    for t in &tools.tools {
        let f = &t.function;
        s.push_str(&json!({"name": f.name, "description": f.description.clone().unwrap_or_default(), "parameters": f.parameters_schema()}).to_string());
        s.push('\n');
    }
    s.push_str(&format!(
        "To call a tool, reply with one line per call, exactly like this:\n{OPEN}{{\"name\": \"tool name\", \"arguments\": {{...}}}}{CLOSE}\n"
    ));
    s.push_str(match &tools.choice {
        ToolChoice::Required => "You must call at least one tool.",
        ToolChoice::Function(_) => "You must call the tool named below.",
        _ => "If no tool is needed, answer normally.",
    });
    if let ToolChoice::Function(name) = &tools.choice {
        s.push_str(&format!(" Call `{name}`."));
    }
    s
}

/// Puts the instructions in the system message (one is added when there is none).
pub fn add_instructions(messages: &mut Vec<ChatMessage>, tools: &ToolUse) {
    let text = instructions(tools);
    match messages.first_mut().filter(|m| m.role == "system") {
        Some(sys) => sys.content = format!("{}\n\n{text}", sys.content),
        None => messages.insert(0, ChatMessage::system(text)),
    }
}

/// An assistant turn that made `calls`, as the model would have written it.
pub fn assistant_calls(text: &str, calls: &[ToolCall]) -> String {
    let mut lines: Vec<String> = if text.is_empty() { Vec::new() } else { vec![text.to_string()] };
    for c in calls {
        let args = super::arguments_value(&c.function.arguments);
        lines.push(format!("{OPEN}{}{CLOSE}", json!({"name": c.function.name, "arguments": args})));
    }
    lines.join("\n")
}

/// A tool's result as the model reads it: a turn of its own, role `tool`.
pub fn tool_turn(text: &str) -> ChatMessage {
    ChatMessage::new("tool", text)
}
