//! [`ApiError`] as an HTTP response: its status, OpenAI's JSON error body, and
//! `Retry-After` on 429 and 503.

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
