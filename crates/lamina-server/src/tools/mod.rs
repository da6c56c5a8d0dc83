//! Tool calling on chat completions: the tools shown to the model (by its own chat
//! template when it handles tools, else by our [`fallback`] format), the grammar that
//! makes a call certain when `tool_choice` is `required` or names a function, and the
//! [`parser`] that turns the reply into `tool_calls`.

pub mod fallback;
pub mod parser;
pub mod reply;

use crate::structured;
use lamina_api::{ApiError, ChatCompletionRequest, Role, Tool, ToolChoice};
use lamina_grammar::{Compiler, Grammar};
use lamina_tokenizer::{ChatMessage, Tokenizer};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// A request's tools and how they may be used (`tool_choice` not `none`).
#[derive(Clone)]
pub struct ToolUse {
    pub tools: Vec<Tool>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

impl ToolUse {
    /// The request's tool use; `None` when it offers none or forbids calls.
    pub fn of(req: &ChatCompletionRequest) -> Option<ToolUse> {
        let choice = req.tool_choice();
        (choice != ToolChoice::None && !req.tool_list().is_empty()).then(|| ToolUse {
            tools: req.tool_list().to_vec(),
            choice,
            parallel: req.parallel_tool_calls != Some(false),
        })
    }

    /// The tools a call may name (only the named one when `tool_choice` names it).
    fn callable(&self) -> impl Iterator<Item = &Tool> {
        self.tools.iter().filter(|t| match &self.choice {
            ToolChoice::Function(name) => &t.function.name == name,
            _ => true,
        })
    }

    /// The grammar of a reply that must call: one or more (one when parallel calls are
    /// off) `<tool_call>` blocks, each JSON naming a callable tool with arguments valid
    /// against its schema. `None` for `auto`.
    pub fn grammar(&self) -> Option<Grammar> {
        if !matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_)) {
            return None;
        }
        let calls: Vec<Value> = self
            .callable()
            .map(|t| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": t.function.name}, "arguments": t.function.parameters_schema()},
                    "required": ["name", "arguments"],
                    "additionalProperties": false
                })
            })
            .collect();
        let schema = json!({"anyOf": calls, "x-guidance": {"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}});
        let repeat = if self.parallel { " (\"\\n\" call)*" } else { "" };
        Some(Grammar::Lark(format!(
            "start: call{repeat}\ncall: {} %json {schema} {}\n",
            Value::String(parser::OPEN.into()),
            Value::String(parser::CLOSE.into())
        )))
    }

    /// Refuses a tool whose parameters llguidance cannot follow as a JSON schema.
    pub fn check_schemas(&self, compiler: &Compiler) -> Result<(), ApiError> {
        for (i, t) in self.tools.iter().enumerate() {
            if let Err(e) = compiler.compile(&Grammar::JsonSchema(t.function.parameters_schema())) {
                let param = format!("tools[{i}].function.parameters");
                return Err(ApiError::invalid_param(&param, format!("{param} is not a JSON schema this server can follow: {e}")));
            }
        }
        Ok(())
    }

    /// What a found call must satisfy: a callable tool, arguments valid against its schema.
    pub fn checker(&self, compiler: Arc<Compiler>) -> CallCheck {
        CallCheck { schemas: self.callable().map(|t| (t.function.name.clone(), t.function.parameters_schema())).collect(), compiler }
    }
}

/// Checks calls found in a reply.
pub struct CallCheck {
    schemas: HashMap<String, Value>,
    compiler: Arc<Compiler>,
}

impl CallCheck {
    pub fn check(&self, name: &str, args: &Value) -> bool {
        self.schemas.get(name).is_some_and(|s| self.compiler.matches_json_schema(s, &args.to_string()).unwrap_or(false))
    }
}

/// The prompt text for a chat request: its messages (tool calls and results included)
/// rendered with the model's template, and the tools shown to the model.
/// With `continue_final_message`, the last (assistant) message is left out of the template
/// and its text follows the assistant turn's opening, so the reply carries on from it.
pub fn render_prompt(req: &ChatCompletionRequest, tools: Option<&ToolUse>, tokenizer: &Tokenizer) -> Result<String, ApiError> {
    match req.continued_text() {
        Some(prefix) => Ok(render_messages(&req.messages[..req.messages.len() - 1], tools, tokenizer, true)? + &prefix),
        None => render_messages(&req.messages, tools, tokenizer, true),
    }
}

/// A conversation rendered with the model's template (tool calls and results included,
/// the tools shown to the model), optionally with the assistant turn's opening.
pub fn render_messages(
    conversation: &[lamina_api::ChatMessage],
    tools: Option<&ToolUse>,
    tokenizer: &Tokenizer,
    add_generation_prompt: bool,
) -> Result<String, ApiError> {
    let bad = |e: lamina_core::Error| ApiError::invalid_param("messages", e.to_string());
    let template = tokenizer.chat_template_compiled().map_err(bad)?;
    let native = tools.is_some() && template.handles_tools();
    let names: HashMap<&str, &str> =
        conversation.iter().flat_map(|m| m.tool_calls.iter().flatten()).map(|c| (c.id.as_str(), c.function.name.as_str())).collect();
    let mut messages: Vec<ChatMessage> = Vec::with_capacity(conversation.len() + 1);
    for m in conversation {
        let text = lamina_api::text_of(m);
        let calls = m.tool_calls.as_deref().unwrap_or_default();
        let msg = match m.role {
            // Templates know system, user, assistant (and often tool); a developer message
            // is the newer name of a system message.
            Role::Developer => ChatMessage::system(text),
            Role::Assistant if !calls.is_empty() && native => ChatMessage {
                tool_calls: Some(
                    calls.iter().map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": arguments_value(&c.function.arguments)}})).collect(),
                ),
                ..ChatMessage::assistant(text)
            },
            Role::Assistant if !calls.is_empty() => ChatMessage::assistant(fallback::assistant_calls(&text, calls)),
            Role::Tool if native => {
                let id = m.tool_call_id.clone().unwrap_or_default();
                ChatMessage { name: names.get(id.as_str()).map(|n| n.to_string()), tool_call_id: Some(id), ..ChatMessage::new("tool", text) }
            }
            Role::Tool => fallback::tool_turn(&text),
            r => ChatMessage::new(r.as_str(), text),
        };
        messages.push(msg);
    }
    match tools {
        Some(t) if native => {
            let defs: Vec<Value> = t.tools.iter().map(|t| serde_json::to_value(t).unwrap_or_default()).collect();
            template.render_with_tools(&messages, Some(&defs), add_generation_prompt).map_err(bad)
        }
        Some(t) => {
            fallback::add_instructions(&mut messages, t);
            template.render(&messages, add_generation_prompt).map_err(bad)
        }
        None => template.render(&messages, add_generation_prompt).map_err(bad),
    }
}

/// A call's `arguments` string as the object templates expect (the string itself when it
/// is not JSON).
fn arguments_value(arguments: &str) -> Value {
    serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()))
}

/// Readies a request's tools on a model: its schemas checked, and the grammar a forced
/// call follows compiled.
pub async fn prepare(model: &Arc<crate::models::Loaded>, tools: &ToolUse) -> Result<(CallCheck, Option<lamina_grammar::Constraint>), ApiError> {
    let compiler = structured::compiler(model).await?;
    tools.check_schemas(&compiler)?;
    let constraint = match tools.grammar() {
        Some(g) => Some(structured::compile(&compiler, g, "tools").await?),
        None => None,
    };
    Ok((tools.checker(compiler), constraint))
}
