//! API keys: `Authorization: Bearer KEY` (or Anthropic's `x-api-key: KEY`) on every
//! `/v1` route when the server has keys.

use crate::http_error::{is_anthropic_path, AnthropicError, HttpError};
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lamina_api::ApiError;
use std::sync::Arc;

pub async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let headers = request.headers();
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    let given = bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim));
    let error = match given {
        Some(key) if state.api_keys.iter().any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) => return next.run(request).await,
        Some(_) => ApiError::authentication("Incorrect API key provided."),
        None => ApiError::authentication("You didn't provide an API key. Pass it in the Authorization header as `Bearer KEY` (or as `x-api-key: KEY`)."),
    };
    if is_anthropic_path(request.uri().path()) {
        AnthropicError(error).into_response()
    } else {
        HttpError(error).into_response()
    }
}

/// Compares without an early exit on the first differing byte (the time taken does not
/// tell an attacker how much of a guess was right).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_compare_exactly() {
        assert!(super::constant_time_eq(b"secret", b"secret"));
        assert!(!super::constant_time_eq(b"secret", b"secreT"));
        assert!(!super::constant_time_eq(b"secret", b"secret2"));
    }
}
