//! Chat templates: the Jinja programs shipped with chat models that turn a conversation
//! into the exact prompt text the model was fine-tuned on.
//!
//! Templates are written for Python's Jinja2, so they call Python string methods
//! (`.strip()`, `.startswith()`) and `raise_exception(...)`. minijinja plus the pycompat
//! callback covers those; the environment is configured like Hugging Face's
//! (`trim_blocks`, `lstrip_blocks`) so whitespace comes out identical.

use lamina_core::{Error, Result};
use minijinja::{Environment, ErrorKind};
use serde::{Deserialize, Serialize};

const TEMPLATE_NAME: &str = "chat";

/// One turn of a conversation, shaped as Hugging Face's `apply_chat_template` passes it to
/// a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant` (templates may accept others, such as `tool`).
    pub role: String,
    pub content: String,
    /// Assistant turns: the calls made, each `{"id", "type": "function", "function":
    /// {"name", "arguments"}}` with `arguments` an object (as templates expect).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<serde_json::Value>>,
    /// Tool turns: the call answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// Tool turns: the function that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage { role: role.into(), content: content.into(), tool_calls: None, tool_call_id: None, name: None }
    }

    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }

    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }

    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A compiled chat template together with the special-token texts it may refer to.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

/// Templates use this to reject conversations they cannot format (e.g. roles that do not
/// alternate); the message becomes our error.
fn raise_exception(message: String) -> std::result::Result<String, minijinja::Error> {
    Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
}

fn render_error(e: minijinja::Error) -> Error {
    // minijinja's Display omits the chain of causes; include them so a template bug says
    // where it happened.
    let mut msg = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        msg.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::ChatTemplate(msg)
}

impl ChatTemplate {
    /// Compiles `source`. Errors are syntax errors in the template.
    pub fn new(source: &str, bos_token: impl Into<String>, eos_token: impl Into<String>) -> Result<Self> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned(TEMPLATE_NAME, source.to_string()).map_err(render_error)?;
        Ok(ChatTemplate { env, bos_token: bos_token.into(), eos_token: eos_token.into() })
    }

    /// Renders the conversation. `add_generation_prompt` asks the template to open an
    /// assistant turn, which is what a prompt for generation needs.
    pub fn render(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.render_with_tools(messages, None, add_generation_prompt)
    }

    /// Renders the conversation with the tools offered (`tools`: OpenAI's tool objects,
    /// `{"type": "function", "function": {...}}`, as Hugging Face passes them).
    pub fn render_with_tools(&self, messages: &[ChatMessage], tools: Option<&[serde_json::Value]>, add_generation_prompt: bool) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(render_error)?;
        template
            .render(minijinja::context! {
                messages => messages,
                tools => tools,
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(render_error)
    }

    /// Whether the template shows the model the tools it is given: a probe tool's name
    /// must appear in the rendered prompt (many templates ignore `tools`).
    pub fn handles_tools(&self) -> bool {
        const PROBE: &str = "lamina_probe_tool_7f3a";
        let tool =
            serde_json::json!({"type": "function", "function": {"name": PROBE, "description": "probe", "parameters": {"type": "object", "properties": {}}}});
        let messages = [ChatMessage::user("hi")];
        self.render_with_tools(&messages, Some(&[tool]), true).is_ok_and(|t| t.contains(PROBE))
    }
}
