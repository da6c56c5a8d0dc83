//! One backend: an HTTP client for an OpenAI-compatible server (`lamina serve`,
//! llama-server, vLLM, OpenAI) or Anthropic's Messages API (translated both ways by
//! [`crate::anthropic`]), and the classification of everything that can go wrong with
//! it into a [`Failure`] the router acts on.

use crate::anthropic;
use crate::config::{BackendConfig, BackendKind};
use crate::proxy::Endpoint;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use lamina_api::ApiError;
use lamina_api::SseDecoder;
use serde_json::{Map, Value};
use std::time::Duration;

/// What went wrong with one try of one backend.
#[derive(Clone, Debug)]
pub enum Failure {
    /// No connection (refused, reset, DNS).
    Connect(String),
    /// No answer (or no first event, or silence mid-stream) within the limit.
    Timeout(Duration),
    /// 429.
    RateLimited { retry_after: Option<Duration>, message: String },
    /// 5xx, 408.
    Server { status: u16, message: String },
    /// The prompt does not fit the model's window: worth a fallback with a larger one.
    ContextOverflow(String),
    /// The backend refused our credentials or does not know the model (401, 403, 404):
    /// a configuration fault, so the next deployment is tried without retrying this one.
    Refused { status: u16, message: String },
    /// The client's request is at fault (another 4xx): passed back as the backend said it.
    Client { status: u16, body: Bytes },
    /// A 2xx whose body is not what the API promises, or a stream event that does not parse.
    Malformed(String),
    /// A stream ended before its end (no `[DONE]`, no finish reason).
    Dropped(String),
    /// This backend's API cannot carry the request (an Anthropic backend asked for
    /// several choices, say): the next deployment is tried; no retry, no health mark.
    Unsupported(String),
}

impl Failure {
    /// Worth another try of the same deployment after a back-off.
    pub fn retryable(&self) -> bool {
        matches!(self, Failure::Connect(_) | Failure::RateLimited { .. } | Failure::Server { .. } | Failure::Malformed(_))
    }

    /// Counts against the backend's health (ejection after repeated failures).
    pub fn is_backend_fault(&self) -> bool {
        !matches!(self, Failure::Client { .. } | Failure::ContextOverflow(_) | Failure::Unsupported(_))
    }

    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Failure::Connect(_) => "connect",
            Failure::Timeout(_) => "timeout",
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Server { .. } => "server_error",
            Failure::ContextOverflow(_) => "context_overflow",
            Failure::Refused { .. } => "refused",
            Failure::Client { .. } => "client_error",
            Failure::Malformed(_) => "malformed",
            Failure::Dropped(_) => "dropped",
            Failure::Unsupported(_) => "unsupported",
        }
    }

    pub fn message(&self) -> String {
        match self {
            Failure::Connect(m) => format!("cannot connect: {m}"),
            Failure::Timeout(d) => format!("no answer within {:.1} s", d.as_secs_f64()),
            Failure::RateLimited { message, .. } => format!("rate limited (429): {message}"),
            Failure::Server { status, message } => format!("status {status}: {message}"),
            Failure::ContextOverflow(m) => format!("context window exceeded: {m}"),
            Failure::Refused { status, message } => format!("status {status}: {message}"),
            Failure::Client { status, body } => format!("status {status}: {}", String::from_utf8_lossy(body)),
            Failure::Malformed(m) => format!("malformed reply: {m}"),
            Failure::Dropped(m) => format!("stream ended early: {m}"),
            Failure::Unsupported(m) => m.clone(),
        }
    }
}

/// The error message inside an OpenAI (or Anthropic) error body, else the body itself, cut short.
fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(m) = v["error"]["message"].as_str().or(v["message"].as_str()).or(v["error"].as_str()) {
            return m.to_string();
        }
    }
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t.chars().take(300).collect()
    }
}

/// Sorts a non-2xx reply into a [`Failure`].
pub fn classify(status: u16, retry_after: Option<Duration>, body: Bytes) -> Failure {
    let message = error_message(&body);
    let overflow = {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let code = v["error"]["code"].as_str().unwrap_or_default();
        code == "context_length_exceeded"
            || (status == 400 && message.contains("context") && (message.contains("exceed") || message.contains("too long") || message.contains("longer than")))
            || (status == 400 && message.starts_with("prompt is too long"))
    };
    match status {
        429 => Failure::RateLimited { retry_after, message },
        408 | 500..=599 => Failure::Server { status, message },
        _ if overflow => Failure::ContextOverflow(message),
        401 | 403 | 404 => Failure::Refused { status, message },
        _ => Failure::Client { status, body },
    }
}

fn transport(e: reqwest::Error, timeout: Duration) -> Failure {
    if e.is_timeout() {
        Failure::Timeout(timeout)
    } else if e.is_connect() {
        Failure::Connect(source_chain(&e))
    } else if e.is_body() || e.is_decode() {
        Failure::Dropped(source_chain(&e))
    } else {
        Failure::Connect(source_chain(&e))
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64)
}

pub struct Backend {
    pub config: BackendConfig,
    client: reqwest::Client,
}

/// A stream's body, chunk by chunk.
pub type ByteStream = BoxStream<'static, Result<Bytes, Failure>>;

impl Backend {
    pub fn new(config: BackendConfig) -> Result<Backend, ApiError> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .tcp_nodelay(true)
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| ApiError::server_error(format!("backend `{}`: cannot build its HTTP client: {e}", config.name)))?;
        Ok(Backend { config, client })
    }

    fn request(&self, path: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
        let mut r = self.client.post(format!("{}{path}", self.config.url)).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        if self.config.kind == BackendKind::Anthropic {
            r = r.header("anthropic-version", anthropic::VERSION);
            if let Some(k) = &self.config.api_key {
                r = r.header("x-api-key", k);
            }
        } else if let Some(k) = &self.config.api_key {
            r = r.bearer_auth(k);
        }
        r
    }

    /// The path and bytes of `body` for this backend's API.
    fn encode(&self, endpoint: Endpoint, body: &Map<String, Value>) -> Result<(&'static str, Vec<u8>), Failure> {
        if self.config.kind != BackendKind::Anthropic {
            return Ok((endpoint.path(), serde_json::to_vec(body).unwrap_or_default()));
        }
        if endpoint != Endpoint::Chat {
            return Err(Failure::Unsupported(format!(
                "backend `{}` speaks Anthropic's Messages API, which has no {} endpoint",
                self.config.name,
                endpoint.name()
            )));
        }
        let messages = anthropic::request(body, self.config.max_tokens)?;
        Ok(("/messages", serde_json::to_vec(&messages).unwrap_or_default()))
    }

    /// A non-2xx reply as a [`Failure`]; an Anthropic error body passed back to the
    /// client is reshaped as OpenAI's.
    fn failure(&self, status: u16, after: Option<Duration>, bytes: Bytes) -> Failure {
        match classify(status, after, bytes) {
            Failure::Client { status, body } if self.config.kind == BackendKind::Anthropic => {
                Failure::Client { status, body: anthropic::openai_error(status, &body) }
            }
            f => f,
        }
    }

    /// A non-streamed request: the reply's JSON, which must be an object holding the
    /// endpoint's array (`choices` or `data`), within the backend's timeout.
    pub async fn call(&self, endpoint: Endpoint, body: &Map<String, Value>) -> Result<Value, Failure> {
        let timeout = self.config.timeout;
        let (path, bytes) = self.encode(endpoint, body)?;
        let work = async {
            let resp = self.request(path, bytes).send().await.map_err(|e| transport(e, timeout))?;
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| transport(e, timeout))?;
            if !(200..300).contains(&status) {
                return Err(self.failure(status, after, bytes));
            }
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| Failure::Malformed(format!("the body is not JSON ({e})")))?;
            let v = if self.config.kind == BackendKind::Anthropic { anthropic::reply(v)? } else { v };
            let expect = endpoint.expect();
            if !v.get(expect).is_some_and(|c| c.is_array()) {
                return Err(Failure::Malformed(format!("the reply has no `{expect}` array")));
            }
            Ok(v)
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(Failure::Timeout(timeout)))
    }

    /// Opens a stream: the status is checked (a non-2xx reply is read and classified)
    /// within the backend's timeout, and the body comes back as bytes of OpenAI's chunk
    /// stream (an Anthropic stream translated as it comes).
    pub async fn open_stream(&self, endpoint: Endpoint, body: &Map<String, Value>) -> Result<ByteStream, Failure> {
        let timeout = self.config.timeout;
        let (path, bytes) = self.encode(endpoint, body)?;
        let work = async {
            let resp = self.request(path, bytes).header(reqwest::header::ACCEPT, "text/event-stream").send().await.map_err(|e| transport(e, timeout))?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let after = retry_after(resp.headers());
                let bytes = resp.bytes().await.map_err(|e| transport(e, timeout))?;
                return Err(self.failure(status, after, bytes));
            }
            let idle = self.config.stream_idle_timeout;
            let raw = resp.bytes_stream().map(move |r| r.map_err(|e| transport(e, idle)));
            if self.config.kind != BackendKind::Anthropic {
                return Ok(raw.boxed());
            }
            let mut decoder = SseDecoder::new();
            let mut translator = anthropic::StreamTranslator::default();
            Ok(raw
                .map(move |r| {
                    let mut out = String::new();
                    for e in decoder.feed(&r?) {
                        out.extend(translator.event(&e)?);
                    }
                    Ok(Bytes::from(out))
                })
                .boxed())
        };
        tokio::time::timeout(timeout, work).await.unwrap_or(Err(Failure::Timeout(timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_sorted_by_what_to_do_next() {
        let b = |s: &str| Bytes::from(s.to_string());
        assert!(matches!(classify(429, None, b("{}")), Failure::RateLimited { .. }));
        assert!(classify(503, None, b("down")).retryable());
        let overflow = classify(400, None, b(r#"{"error":{"message":"too big","type":"invalid_request_error","code":"context_length_exceeded"}}"#));
        assert!(matches!(overflow, Failure::ContextOverflow(_)) && !overflow.retryable());
        let llama = classify(400, None, b(r#"{"error":{"message":"the request exceeds the available context size"}}"#));
        assert!(matches!(llama, Failure::ContextOverflow(_)));
        assert!(matches!(classify(401, None, b("{}")), Failure::Refused { status: 401, .. }));
        let client = classify(400, None, b(r#"{"error":{"message":"temperature must be at most 2"}}"#));
        assert!(matches!(client, Failure::Client { status: 400, .. }) && !client.is_backend_fault());
        assert_eq!(error_message(b"  "), "(empty body)");
    }
}
