//! [`ApiError`] as an HTTP response: its status, OpenAI's JSON error body (or, on
//! Anthropic's Messages API, Anthropic's: [`AnthropicError`]), and `Retry-After` on
//! 429 and 503/529.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use lamina_api::ApiError;

/// Seconds a client should wait before retrying a 429 or 503.
pub const RETRY_AFTER_SECS: u32 = 1;

pub struct HttpError(pub ApiError);

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut r = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], self.0.to_json()).into_response();
        if matches!(self.0.status, 429 | 503) {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        r
    }
}

/// An [`ApiError`] in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`,
/// with the status Anthropic gives it (see [`lamina_api::messages::anthropic_error`]).
pub struct AnthropicError(pub ApiError);

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let (status, body) = lamina_api::messages::anthropic_error(&self.0);
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let json = serde_json::to_string(&body).unwrap_or_default();
        let mut r = (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], json).into_response();
        if matches!(status.as_u16(), 429 | 529) {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        r
    }
}

/// Whether a path answers errors in Anthropic's shape.
pub fn is_anthropic_path(path: &str) -> bool {
    path == "/v1/messages" || path.starts_with("/v1/messages/")
}
