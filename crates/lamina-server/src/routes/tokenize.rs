//! `POST /tokenize` and `POST /detokenize` (vLLM's extension endpoints): a prompt, or a
//! conversation rendered with the model's chat template, to the model's token ids, and
//! ids back to text.

use super::respond;
use crate::{read_body, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{parse_json, ApiError, DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
use std::sync::Arc;

pub async fn tokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("tokenize", tokenize_body(state, body).await)
}

pub async fn detokenize(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("detokenize", detokenize_body(state, body).await)
}

async fn tokenize_body(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: TokenizeRequest = parse_json(&bytes)?;
    req.validate()?;
    let (model, _inflight) = state.models.get(&req.model).await?;
    let (tok, ctx) = (model.tokenizer.clone(), model.context_length);
    // Tokenizing a long text takes a while: not on the connection threads.
    tokio::task::spawn_blocking(move || {
        let (text, param) = match (&req.prompt, &req.messages) {
            (Some(p), _) => (p.clone(), "prompt"),
            (None, Some(m)) => {
                let text = crate::tools::render_messages(m, None, &tok, req.add_generation_prompt.unwrap_or(true))?;
                (text, "messages")
            }
            (None, None) => unreachable!("validated"),
        };
        let tokens = tok.encode(&text, req.adds_special_tokens()).map_err(|e| ApiError::invalid_param(param, e.to_string()))?;
        let token_strs = (req.return_token_strs == Some(true)).then(|| tokens.iter().map(|&t| tok.token_to_piece(t)).collect());
        Ok(Json(TokenizeResponse { count: tokens.len(), max_model_len: ctx, tokens, token_strs }).into_response())
    })
    .await
    .map_err(|e| ApiError::server_error(format!("tokenizing failed: {e}")))?
}

async fn detokenize_body(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: DetokenizeRequest = parse_json(&bytes)?;
    if req.model.is_empty() {
        return Err(ApiError::invalid_param("model", "model must not be empty"));
    }
    let (model, _inflight) = state.models.get(&req.model).await?;
    if let Some((i, bad)) = req.tokens.iter().enumerate().find(|(_, &t)| t as usize >= model.vocab_size) {
        return Err(ApiError::invalid_param(
            format!("tokens[{i}]"),
            format!("tokens[{i}]: token {bad} is outside the vocabulary of {} tokens", model.vocab_size),
        ));
    }
    let tok = model.tokenizer.clone();
    let prompt = tokio::task::spawn_blocking(move || tok.decode(&req.tokens, false))
        .await
        .map_err(|e| ApiError::server_error(format!("detokenizing failed: {e}")))?
        .map_err(|e| ApiError::invalid_param("tokens", e.to_string()))?;
    Ok(Json(DetokenizeResponse { prompt }).into_response())
}
