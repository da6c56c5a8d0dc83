//! `response_format` of a chat request: plain text, any JSON object, or JSON valid
//! against a schema (OpenAI's structured outputs).
//!
//! Follows the OpenAI API reference, "Chat" → "Create chat completion" → `response_format`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"type": "text"}`, `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {...}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "RawResponseFormat")]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// `json_schema` of a [`ResponseFormat::JsonSchema`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(expecting = "a json_schema object")]
pub struct JsonSchemaFormat {
    /// `[a-zA-Z0-9_-]{1,64}` (checked by `validate`).
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The schema; absent means any JSON value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<Value>,
    /// Whether the output must follow the schema exactly. This server always constrains
    /// the output to the schema, so `false` gets the same (stronger) guarantee.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FormatKind {
    Text,
    JsonObject,
    JsonSchema,
}

/// Parsed flat first, so a wrong field keeps its path in the error.
#[derive(Deserialize)]
#[serde(expecting = "a response_format object")]
struct RawResponseFormat {
    #[serde(rename = "type")]
    kind: FormatKind,
    json_schema: Option<JsonSchemaFormat>,
}

impl TryFrom<RawResponseFormat> for ResponseFormat {
    type Error = String;
    fn try_from(raw: RawResponseFormat) -> Result<Self, String> {
        Ok(match raw.kind {
            FormatKind::Text => ResponseFormat::Text,
            FormatKind::JsonObject => ResponseFormat::JsonObject,
            FormatKind::JsonSchema => {
                ResponseFormat::JsonSchema { json_schema: raw.json_schema.ok_or("a response_format of type `json_schema` needs a `json_schema` field")? }
            }
        })
    }
}
