//! API keys: `Authorization: Bearer KEY` (or Anthropic's `x-api-key: KEY`) on every
//! `/v1` route when the server has keys; and per-collection keys ([`CollectionKeys`]):
//! a collection that has keys is reached only with one of them.

use crate::http_error::{is_anthropic_path, AnthropicError, HttpError};
use crate::AppState;
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use lamina_api::ApiError;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The key a request presents: `Authorization: Bearer KEY`, else `x-api-key: KEY`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer ")).map(str::trim);
    bearer.or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim))
}

/// The server-wide gate. With server keys, a request needs one of them — or a
/// collection's key, which is a key of the server too (it then reaches what a server
/// key reaches, plus its collections).
pub async fn require_key(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.api_keys.is_empty() {
        return next.run(request).await;
    }
    let given = presented_key(request.headers());
    let known = |key: &str| state.api_keys.iter().any(|k| constant_time_eq(k.as_bytes(), key.as_bytes())) || state.collection_keys().knows(key);
    let error = match given {
        Some(key) if known(key) => return next.run(request).await,
        Some(_) => ApiError::authentication("Incorrect API key provided."),
        None => ApiError::authentication("You didn't provide an API key. Pass it in the Authorization header as `Bearer KEY` (or as `x-api-key: KEY`)."),
    };
    if is_anthropic_path(request.uri().path()) {
        AnthropicError(error).into_response()
    } else {
        HttpError(error).into_response()
    }
}

/// Per-collection API keys: collection name → the keys that reach it. A collection not
/// listed is reached as any other endpoint is (with a server key when the server has them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CollectionKeys {
    keys: BTreeMap<String, Vec<String>>,
}

impl CollectionKeys {
    /// Reads `{"collection": ["key", …] | "key", …}`; names and keys must be non-empty.
    pub fn from_json(text: &str) -> Result<CollectionKeys, String> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Keys {
            One(String),
            Many(Vec<String>),
        }
        let raw: BTreeMap<String, Keys> =
            serde_json::from_str(text).map_err(|e| format!("expected a JSON object of collection name → key or list of keys: {e}"))?;
        let mut keys = BTreeMap::new();
        for (name, k) in raw {
            let list: Vec<String> = match k {
                Keys::One(k) => vec![k],
                Keys::Many(v) => v,
            };
            let list: Vec<String> = list.into_iter().map(|k| k.trim().to_string()).collect();
            if name.is_empty() {
                return Err("a collection name is empty".into());
            }
            if list.is_empty() || list.iter().any(String::is_empty) {
                return Err(format!("collection `{name}`: give at least one key, none empty"));
            }
            keys.insert(name, list);
        }
        Ok(CollectionKeys { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `key` is some collection's key.
    pub fn knows(&self, key: &str) -> bool {
        self.keys.values().flatten().fold(false, |found, k| found | constant_time_eq(k.as_bytes(), key.as_bytes()))
    }

    /// Whether a request presenting `key` may touch `collection`.
    pub fn allows(&self, collection: &str, key: Option<&str>) -> bool {
        self.check(collection, key).is_ok()
    }

    /// A request presenting `key` may touch `collection`: it has no keys, or `key` is one
    /// of them. Otherwise 401 without a key, 403 with another one.
    pub fn check(&self, collection: &str, key: Option<&str>) -> Result<(), ApiError> {
        let Some(allowed) = self.keys.get(collection) else { return Ok(()) };
        match key {
            None => Err(ApiError::authentication(format!(
                "collection `{collection}` needs one of its API keys: pass it in the Authorization header as `Bearer KEY`"
            ))),
            Some(key) if allowed.iter().fold(false, |ok, k| ok | constant_time_eq(k.as_bytes(), key.as_bytes())) => Ok(()),
            Some(_) => Err(ApiError::forbidden(format!("this API key may not use collection `{collection}`"))),
        }
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

    #[test]
    fn collection_keys_gate_only_their_collections() {
        let keys = super::CollectionKeys::from_json(r#"{"hr": ["k1", "k2"], "legal": "k3"}"#).unwrap();
        assert!(keys.knows("k3") && !keys.knows("k4"));
        assert_eq!(keys.check("hr", None).unwrap_err().status, 401);
        assert_eq!(keys.check("hr", Some("k3")).unwrap_err().status, 403);
        assert!(keys.check("hr", Some("k2")).is_ok());
        assert!(keys.check("legal", Some("k3")).is_ok());
        assert!(keys.check("public", None).is_ok(), "a collection without keys is open");
        for bad in [r#"["k"]"#, r#"{"hr": []}"#, r#"{"hr": [""]}"#, r#"{"": "k"}"#, r#"{"hr": 5}"#] {
            assert!(super::CollectionKeys::from_json(bad).is_err(), "{bad}");
        }
    }
}
