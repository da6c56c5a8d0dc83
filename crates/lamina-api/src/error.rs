//! OpenAI's error body, `{"error": {"message", "type", "param", "code"}}`, paired with
//! the HTTP status it goes out with (the status is not part of the body).
//!
//! Follows the OpenAI API reference, "Error codes" (the status codes and their meaning)
//! and the error object its endpoints return.

use serde::{Deserialize, Serialize};

/// An API error: what the server sends back instead of a response.
///
/// `Display` gives `"{type}: {message}"` plus `" (param: …)"` when a parameter is named.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}{}", .param.as_deref().map(|p| format!(" (param: {p})")).unwrap_or_default())]
pub struct ApiError {
    /// The HTTP status; not serialised.
    pub status: u16,
    pub message: String,
    /// The body's `"type"`, e.g. `"invalid_request_error"`.
    pub kind: String,
    /// The request parameter at fault, as a path such as `messages[1].content`.
    pub param: Option<String>,
    /// A machine-readable code such as `"context_length_exceeded"`.
    pub code: Option<String>,
}

/// `"type"` of 400-class request errors.
pub const INVALID_REQUEST_ERROR: &str = "invalid_request_error";

impl ApiError {
    /// An error with everything given.
    pub fn new(status: u16, kind: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), kind: kind.into(), param: None, code: None }
    }

    /// 400 `invalid_request_error`. Add `param`/`code` with [`Self::with_param`] and
    /// [`Self::with_code`].
    pub fn invalid_request(message: impl Into<String>) -> Self {
        ApiError::new(400, INVALID_REQUEST_ERROR, message)
    }

    /// 400 `invalid_request_error` naming `param`.
    pub fn invalid_param(param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError::invalid_request(message).with_param(param)
    }

    /// 401 `authentication_error`, code `invalid_api_key`.
    pub fn authentication(message: impl Into<String>) -> Self {
        ApiError::new(401, "authentication_error", message).with_code("invalid_api_key")
    }

    /// 403 `permission_error`, code `permission_denied`: a valid key that may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::new(403, "permission_error", message).with_code("permission_denied")
    }

    /// 409 `invalid_request_error`, code `conflict`: the object already exists.
    pub fn conflict(message: impl Into<String>) -> Self {
        ApiError::new(409, INVALID_REQUEST_ERROR, message).with_code("conflict")
    }

    /// 404 `invalid_request_error` (an unknown route or object).
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(404, INVALID_REQUEST_ERROR, message)
    }

    /// 404 for a model that is not served, code `model_not_found`, in OpenAI's wording.
    pub fn model_not_found(model: &str) -> Self {
        ApiError::not_found(format!("The model `{model}` does not exist or you do not have access to it.")).with_code("model_not_found")
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn payload_too_large(limit: usize) -> Self {
        ApiError::new(413, INVALID_REQUEST_ERROR, format!("the request body is larger than the limit of {limit} bytes")).with_code("request_too_large")
    }

    /// 429 `rate_limit_error`, code `rate_limit_exceeded`. The server adds `Retry-After`.
    pub fn rate_limited(message: impl Into<String>) -> Self {
        ApiError::new(429, "rate_limit_error", message).with_code("rate_limit_exceeded")
    }

    /// 500 `server_error`.
    pub fn server_error(message: impl Into<String>) -> Self {
        ApiError::new(500, "server_error", message)
    }

    /// 503 `server_error`, code `service_unavailable` (overloaded, loading, shutting down).
    pub fn unavailable(message: impl Into<String>) -> Self {
        ApiError::new(503, "server_error", message).with_code("service_unavailable")
    }

    /// 400, code `context_length_exceeded`, param `messages`: the prompt alone does not
    /// fit. `limit` is the context length, `requested` the prompt's token count.
    pub fn context_length_exceeded(limit: u32, requested: u32) -> Self {
        ApiError::invalid_param(
            "messages",
            format!(
                "This model's maximum context length is {limit} tokens. However, your \
                 messages resulted in {requested} tokens. Please reduce the length of the \
                 messages."
            ),
        )
        .with_code("context_length_exceeded")
    }

    /// 400, code `context_length_exceeded`, param `messages`: the prompt plus the
    /// requested completion does not fit.
    pub fn context_length_exceeded_with_completion(limit: u32, prompt: u32, completion: u32) -> Self {
        let total = u64::from(prompt) + u64::from(completion);
        ApiError::invalid_param(
            "messages",
            format!(
                "This model's maximum context length is {limit} tokens. However, you \
                 requested {total} tokens ({prompt} in the messages, {completion} in the \
                 completion). Please reduce the length of the messages or completion."
            ),
        )
        .with_code("context_length_exceeded")
    }

    /// Sets `param`.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.param = Some(param.into());
        self
    }

    /// Sets `code`.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The JSON body, `{"error": {...}}`.
    pub fn to_json(&self) -> String {
        // Serialising strings and options into a String cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads an upstream error body (for the gateway). `None` when `body` is not an
    /// OpenAI error body; a non-string `code` (some servers send numbers) is kept as text.
    pub fn from_body(status: u16, body: &[u8]) -> Option<ApiError> {
        #[derive(Deserialize)]
        struct Envelope {
            error: Body,
        }
        #[derive(Deserialize)]
        struct Body {
            message: String,
            #[serde(rename = "type", default)]
            kind: Option<String>,
            #[serde(default)]
            param: Option<String>,
            #[serde(default)]
            code: Option<serde_json::Value>,
        }
        let e: Envelope = serde_json::from_slice(body).ok()?;
        Some(ApiError {
            status,
            message: e.error.message,
            kind: e.error.kind.unwrap_or_default(),
            param: e.error.param,
            code: e.error.code.and_then(|c| match c {
                serde_json::Value::Null => None,
                serde_json::Value::String(s) => Some(s),
                other => Some(other.to_string()),
            }),
        })
    }
}

impl Serialize for ApiError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Envelope<'a> {
            error: Body<'a>,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            message: &'a str,
            #[serde(rename = "type")]
            kind: &'a str,
            param: Option<&'a str>,
            code: Option<&'a str>,
        }
        Envelope { error: Body { message: &self.message, kind: &self.kind, param: self.param.as_deref(), code: self.code.as_deref() } }.serialize(serializer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn body_has_openai_shape_and_status_is_not_serialised() {
        let e = ApiError::invalid_param("temperature", "too hot");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"error": {"message": "too hot", "type": "invalid_request_error",
                             "param": "temperature", "code": null}})
        );
        assert_eq!(e.status, 400);
    }

    #[test]
    fn constructors_set_status_type_and_code() {
        let cases = [
            (ApiError::authentication("x"), 401, "authentication_error", Some("invalid_api_key")),
            (ApiError::not_found("x"), 404, "invalid_request_error", None),
            (ApiError::forbidden("x"), 403, "permission_error", Some("permission_denied")),
            (ApiError::conflict("x"), 409, "invalid_request_error", Some("conflict")),
            (ApiError::model_not_found("m"), 404, "invalid_request_error", Some("model_not_found")),
            (ApiError::payload_too_large(10), 413, "invalid_request_error", Some("request_too_large")),
            (ApiError::rate_limited("x"), 429, "rate_limit_error", Some("rate_limit_exceeded")),
            (ApiError::server_error("x"), 500, "server_error", None),
            (ApiError::unavailable("x"), 503, "server_error", Some("service_unavailable")),
            (ApiError::invalid_request("x"), 400, "invalid_request_error", None),
        ];
        for (e, status, kind, code) in cases {
            assert_eq!(e.status, status, "{e}");
            assert_eq!(e.kind, kind, "{e}");
            assert_eq!(e.code.as_deref(), code, "{e}");
        }
    }

    #[test]
    fn context_length_message_names_both_counts() {
        let e = ApiError::context_length_exceeded(4096, 5000);
        assert_eq!(e.status, 400);
        assert_eq!(e.code.as_deref(), Some("context_length_exceeded"));
        assert_eq!(e.param.as_deref(), Some("messages"));
        assert!(e.message.starts_with(
            "This model's maximum context length is 4096 tokens. However, your messages \
             resulted in 5000 tokens"
        ));
        let e = ApiError::context_length_exceeded_with_completion(4097, 62, 4100);
        assert!(e.message.contains("you requested 4162 tokens (62 in the messages, 4100 in the completion)"));
    }

    #[test]
    fn display_names_type_and_param() {
        let e = ApiError::invalid_param("stop", "too many");
        assert_eq!(e.to_string(), "invalid_request_error: too many (param: stop)");
        assert_eq!(ApiError::server_error("boom").to_string(), "server_error: boom");
    }

    #[test]
    fn reads_upstream_bodies() {
        let body = br#"{"error":{"message":"slow down","type":"rate_limit_error","param":null,"code":429}}"#;
        let e = ApiError::from_body(429, body).unwrap();
        assert_eq!(e.message, "slow down");
        assert_eq!(e.kind, "rate_limit_error");
        assert_eq!(e.code.as_deref(), Some("429"));
        assert_eq!(e.param, None);
        assert!(ApiError::from_body(500, b"<html>").is_none());
    }
}
