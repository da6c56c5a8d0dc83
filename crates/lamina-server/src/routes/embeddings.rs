//! `POST /v1/embeddings`: vectors for one or many inputs (text or token ids), from an
//! embedding model or a chat model's pooled hidden states.
//!
//! Length: text for an encoder is truncated at the model's limit (256 word pieces for
//! all-MiniLM-L6-v2), as sentence-transformers does — the vectors are the ones that
//! library gives; token arrays over the limit, and text over a chat model's context
//! window, are refused with 400.

use super::respond;
use crate::models::EmbedOwned;
use crate::{read_body, AppState};
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{parse_json, ApiError, EmbeddingList, EmbeddingRequest, EmbeddingVector, PromptItem};
use lamina_core::Error;
use std::sync::Arc;

pub async fn handle(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond("embeddings", embeddings(state, body).await)
}

async fn embeddings(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: EmbeddingRequest = parse_json(&bytes)?;
    req.validate()?;
    let (embedder, _inflight) = state.models.embedder(&req.model).await?;
    if let Some(d) = req.dimensions {
        if !embedder.allows_dimensions() && d as usize != embedder.dimensions() {
            return Err(ApiError::invalid_param(
                "dimensions",
                format!(
                    "model `{}` does not support `dimensions`: its {}-dimensional vectors are not trained to be shortened",
                    req.model,
                    embedder.dimensions()
                ),
            ));
        }
    }
    let inputs = req
        .input
        .items()
        .into_iter()
        .map(|i| match i {
            PromptItem::Text(t) => EmbedOwned::Text(t.to_string()),
            PromptItem::Tokens(t) => EmbedOwned::Tokens(t.to_vec()),
        })
        .collect();
    let out = state.models.embed(embedder, inputs).await.map_err(|e| match e {
        Error::PromptTooLong { prompt_tokens, context_length } => {
            ApiError::context_length_exceeded(context_length as u32, prompt_tokens as u32).with_param("input")
        }
        Error::PromptTooLongBytes { .. } | Error::InvalidInput(_) | Error::Tokenizer(_) => ApiError::invalid_param("input", e.to_string()),
        other => ApiError::server_error(other.to_string()),
    })?;
    let tokens: usize = out.iter().map(|e| e.tokens).sum();
    let vectors = out.iter().map(|e| EmbeddingVector::encode(&e.vector, req.format())).collect();
    Ok(Json(EmbeddingList::new(req.model, vectors, tokens as u32)).into_response())
}
