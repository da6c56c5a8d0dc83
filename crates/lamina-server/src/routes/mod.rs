//! One file per endpoint.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod health;
pub mod metrics;
pub mod models;
pub mod page;
pub mod stream;

use crate::http_error::HttpError;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use lamina_api::ApiError;

/// Unknown paths: OpenAI's error shape, 404.
pub async fn not_found(uri: Uri) -> Response {
    HttpError(ApiError::not_found(format!("there is no endpoint {}", uri.path()))).into_response()
}

/// An endpoint's result as a response, counted in the request metric.
pub fn respond(endpoint: &'static str, result: Result<Response, ApiError>) -> Response {
    let response = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::warn!(endpoint, "{e}");
            }
            HttpError(e).into_response()
        }
    };
    crate::metrics::request(endpoint, response.status().as_u16());
    response
}
