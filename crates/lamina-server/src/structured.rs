//! Constrained decoding for requests: each model's grammar compiler (made on the first
//! request that needs it, on a blocking thread: it indexes the vocabulary), and grammars
//! compiled for a request, refused with 400 and llguidance's reason when it cannot follow
//! them.

use crate::models::Loaded;
use lamina_api::{ApiError, ResponseFormat};
use lamina_grammar::{Compiler, Constraint, Grammar};
use std::sync::Arc;

/// The model's compiler.
pub async fn compiler(model: &Arc<Loaded>) -> Result<Arc<Compiler>, ApiError> {
    if let Some(c) = model.grammar.get() {
        return c.clone().map_err(ApiError::server_error);
    }
    let tok = model.tokenizer.clone();
    let made = tokio::task::spawn_blocking(move || lamina_engine::grammar_compiler(tok).map(Arc::new).map_err(|e| e.to_string()))
        .await
        .map_err(|e| ApiError::server_error(format!("building the grammar compiler failed: {e}")))?;
    model.grammar.get_or_init(|| made).clone().map_err(ApiError::server_error)
}

/// `grammar` compiled, or 400 naming `param`.
pub async fn compile(compiler: &Arc<Compiler>, grammar: Grammar, param: &str) -> Result<Constraint, ApiError> {
    let c = compiler.clone();
    let result =
        tokio::task::spawn_blocking(move || c.compile(&grammar)).await.map_err(|e| ApiError::server_error(format!("compiling the grammar failed: {e}")))?;
    result.map_err(|e| ApiError::invalid_param(param, format!("{param}: {e}")))
}

/// The grammar of a chat request's `response_format` (`None` for text).
pub fn response_grammar(format: Option<&ResponseFormat>) -> Option<Grammar> {
    match format? {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(Grammar::JsonObject),
        ResponseFormat::JsonSchema { json_schema } => Some(Grammar::JsonSchema(json_schema.schema.clone().unwrap_or_else(|| serde_json::json!({})))),
    }
}

/// A completion request's `grammar`: GBNF when it defines a rule with `::=`, else Lark.
pub fn text_grammar(text: &str) -> Grammar {
    if text.contains("::=") {
        Grammar::Gbnf(text.to_string())
    } else {
        Grammar::Lark(text.to_string())
    }
}

/// `grammar` compiled on `model`, when there is one.
pub async fn constraint(model: &Arc<Loaded>, grammar: Option<Grammar>, param: &str) -> Result<Option<Constraint>, ApiError> {
    match grammar {
        None => Ok(None),
        Some(g) => Ok(Some(compile(&compiler(model).await?, g, param).await?)),
    }
}
