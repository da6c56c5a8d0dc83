//! One file per endpoint.

pub mod adapters;
pub mod chat;
pub mod collections;
pub mod completions;
pub mod embeddings;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod models;
pub mod page;
pub mod responses;
pub mod stream;
pub mod tokenize;

use crate::http_error::{is_anthropic_path, AnthropicError, HttpError};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use lamina_api::ApiError;

/// Unknown paths: 404 in OpenAI's error shape (Anthropic's under `/v1/messages/`).
pub async fn not_found(uri: Uri) -> Response {
    let e = ApiError::not_found(format!("there is no endpoint {}", uri.path()));
    if is_anthropic_path(uri.path()) {
        AnthropicError(e).into_response()
    } else {
        HttpError(e).into_response()
    }
}

/// An endpoint's result as a response (errors in OpenAI's shape), counted in the
/// request metric.
pub fn respond(endpoint: &'static str, result: Result<Response, ApiError>) -> Response {
    respond_as(endpoint, result, |e| HttpError(e).into_response())
}

/// [`respond`] for Anthropic's Messages API: errors in Anthropic's shape.
pub fn respond_anthropic(endpoint: &'static str, result: Result<Response, ApiError>) -> Response {
    respond_as(endpoint, result, |e| AnthropicError(e).into_response())
}

fn respond_as(endpoint: &'static str, result: Result<Response, ApiError>, error: impl FnOnce(ApiError) -> Response) -> Response {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::warn!(endpoint, "{e}");
            }
            error(e)
        }
    };
    crate::metrics::request(endpoint, response.status().as_u16());
    response
}
