//! What a request constrains its output to.

use llguidance::api::TopLevelGrammar;
use serde_json::{json, Value};

/// The four kinds of grammar a request can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrammarKind {
    /// Any JSON object (`response_format: {"type": "json_object"}`).
    JsonObject,
    /// JSON valid against a schema (`json_schema`).
    JsonSchema,
    /// A Lark grammar (llguidance's dialect).
    Lark,
    /// A GBNF grammar (llama.cpp's format), translated to Lark.
    Gbnf,
}

impl GrammarKind {
    pub fn name(self) -> &'static str {
        match self {
            GrammarKind::JsonObject => "JSON object",
            GrammarKind::JsonSchema => "JSON schema",
            GrammarKind::Lark => "Lark grammar",
            GrammarKind::Gbnf => "GBNF grammar",
        }
    }
}

/// A grammar as given, not compiled yet ([`crate::Compiler::compile`] compiles it).
#[derive(Debug, Clone, PartialEq)]
pub enum Grammar {
    JsonObject,
    JsonSchema(Value),
    Lark(String),
    Gbnf(String),
}

/// How generated JSON is laid out: one space after `,` and `:`, no other whitespace. A
/// small model given free whitespace can spend its whole budget on newlines.
fn json_layout() -> Value {
    json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "})
}

impl Grammar {
    pub fn kind(&self) -> GrammarKind {
        match self {
            Grammar::JsonObject => GrammarKind::JsonObject,
            Grammar::JsonSchema(_) => GrammarKind::JsonSchema,
            Grammar::Lark(_) => GrammarKind::Lark,
            Grammar::Gbnf(_) => GrammarKind::Gbnf,
        }
    }

    /// A grammar read from a file: GBNF when the name ends in `.gbnf`, else Lark.
    pub fn from_grammar_file(path: &std::path::Path, text: String) -> Self {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("gbnf")) {
            Grammar::Gbnf(text)
        } else {
            Grammar::Lark(text)
        }
    }

    /// The grammar in llguidance's terms.
    pub(crate) fn to_llguidance(&self) -> Result<TopLevelGrammar, String> {
        Ok(match self {
            Grammar::JsonObject => TopLevelGrammar::from_json_schema(json!({"type": "object", "x-guidance": json_layout()})),
            Grammar::JsonSchema(schema) => {
                let mut schema = schema.clone();
                match &mut schema {
                    Value::Object(map) => {
                        map.entry("x-guidance").or_insert_with(json_layout);
                    }
                    Value::Bool(_) => {}
                    other => return Err(format!("a JSON schema is an object or a boolean, not {}", kind_of(other))),
                }
                TopLevelGrammar::from_json_schema(schema)
            }
            Grammar::Lark(text) => {
                if text.trim().is_empty() {
                    return Err("the grammar is empty".into());
                }
                TopLevelGrammar::from_lark(text.clone())
            }
            Grammar::Gbnf(text) => TopLevelGrammar::from_lark(crate::gbnf::gbnf_to_lark(text)?),
        })
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
