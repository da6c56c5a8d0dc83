//! The gateway's HTTP endpoints: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings` (proxied), `/v1/messages` (Anthropic's clients, see
//! [`crate::messages`]), `/v1/models` (the routes), `/health` (backend state),
//! `/metrics` (Prometheus) and `/gateway/spend` (totals by key, user, tag and model).
//!
//! A proxied request is authenticated (when keys are configured: `Authorization: Bearer`
//! or `x-api-key`), read within the size limit, parsed as a JSON object with a known
//! `model`, checked against its key's models, budget and rate limits, looked up in the
//! cache, and sent on; every refusal is OpenAI's error JSON with the right status.
//! The answer carries `x-lamina-route`, `x-lamina-backend`, `x-lamina-cache` and (when
//! not streamed) `x-lamina-cost` headers, and the exact cost in `usage.cost`.

use crate::cache;
use crate::limits::KeyLimits;
use crate::price::{Cost, Tokens};
use crate::proxy::{answer, failure_response, usage_json, Endpoint, Outcome, Request};
use crate::relay;
use crate::router::{plan, stable_hash};
use crate::rules;
use crate::semantic;
use crate::{Gateway, Live};
use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use lamina_api::ApiError;
use std::sync::Arc;
use std::time::Instant;

pub fn router(live: Arc<Live>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(|s, h, b| proxied(s, Endpoint::Chat, h, b)))
        .route("/v1/completions", post(|s, h, b| proxied(s, Endpoint::Completions, h, b)))
        .route("/v1/embeddings", post(|s, h, b| proxied(s, Endpoint::Embeddings, h, b)))
        .route("/v1/messages", post(crate::messages::handle))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/gateway/spend", get(spend))
        .fallback(|| async { error(&ApiError::not_found("no such endpoint on this gateway")) })
        .with_state(live)
}

fn json(status: u16, body: Vec<u8>, headers: &[(&'static str, String)]) -> Response {
    let mut r = Response::builder().status(status).header("content-type", "application/json");
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Body::from(body)).unwrap_or_default()
}

pub(crate) fn error(e: &ApiError) -> Response {
    let mut headers = Vec::new();
    if e.status == 401 {
        headers.push(("www-authenticate", "Bearer".to_string()));
    }
    json(e.status, e.to_json().into_bytes(), &headers)
}

/// The key a request presents, if any.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        return Some(v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")).unwrap_or(v).trim());
    }
    headers.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The key's index; `None` when the gateway has no keys (open).
pub(crate) fn authenticate(gw: &Gateway, headers: &HeaderMap) -> Result<Option<usize>, ApiError> {
    if gw.config.keys.is_empty() {
        return Ok(None);
    }
    match presented(headers) {
        None => Err(ApiError::authentication("this gateway needs an API key (Authorization: Bearer KEY)")),
        Some(k) => gw.secrets.get(k).map(|&i| Some(i)).ok_or_else(|| ApiError::authentication("the API key is not valid for this gateway")),
    }
}

/// A rough prompt size in tokens (4 bytes a token) for choosing a route with room; the
/// backend's own count settles it (a context overflow falls back).
fn estimate_tokens(endpoint: Endpoint, body: &serde_json::Map<String, serde_json::Value>) -> u64 {
    fn text_bytes(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::String(s) => s.len(),
            serde_json::Value::Array(a) => a.iter().map(text_bytes).sum(),
            serde_json::Value::Object(o) => o.values().map(text_bytes).sum(),
            _ => 0,
        }
    }
    let field = match endpoint {
        Endpoint::Chat => "messages",
        Endpoint::Completions => "prompt",
        Endpoint::Embeddings => "input",
    };
    body.get(field).map_or(0, text_bytes).div_ceil(4) as u64
}

/// What keeps a conversation on one deployment under prefix affinity: the client's
/// `x-lamina-session` header; else, for chat, the messages up to the first user message
/// (the system prompt and the question that opened the conversation, which every later
/// turn repeats); for completions, the prompt's first 256 bytes.
fn affinity(endpoint: Endpoint, headers: &HeaderMap, body: &serde_json::Map<String, serde_json::Value>) -> Option<u64> {
    if let Some(s) = headers.get("x-lamina-session") {
        return Some(stable_hash(&[b"session", s.as_bytes()]));
    }
    match endpoint {
        Endpoint::Chat => {
            let messages = body.get("messages")?.as_array()?;
            let end = messages.iter().position(|m| m["role"] == "user").map_or(messages.len(), |i| i + 1);
            let start = serde_json::to_vec(&messages[..end]).ok()?;
            Some(stable_hash(&[b"chat", &start]))
        }
        Endpoint::Completions => {
            let prompt = body.get("prompt")?.as_str()?.as_bytes();
            Some(stable_hash(&[b"completions", &prompt[..prompt.len().min(256)]]))
        }
        Endpoint::Embeddings => None,
    }
}

async fn proxied(State(live): State<Arc<Live>>, endpoint: Endpoint, headers: HeaderMap, body: Body) -> Response {
    let gw = live.get();
    let started = Instant::now();
    match read_json(&gw, &headers, body).await {
        Ok(body) => respond(gw, endpoint, &headers, body, started).await,
        Err(e) => error(&e),
    }
}

/// The body of an authenticated request, read within the size limit, as a JSON object.
async fn read_json(gw: &Gateway, headers: &HeaderMap, body: Body) -> Result<serde_json::Map<String, serde_json::Value>, ApiError> {
    authenticate(gw, headers)?;
    let limit = gw.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| ApiError::payload_too_large(limit))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid_request(format!("the body is not valid JSON: {e}")))?;
    match value {
        serde_json::Value::Object(body) => Ok(body),
        _ => Err(ApiError::invalid_request("the body must be a JSON object")),
    }
}

/// Admits `body` (OpenAI's shape, for `endpoint`) and answers it; refusals are OpenAI's
/// error JSON (with `retry-after` for rate limits).
pub(crate) async fn respond(
    gw: Arc<Gateway>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: serde_json::Map<String, serde_json::Value>,
    started: Instant,
) -> Response {
    match admit(&gw, endpoint, headers, body, started).await {
        Ok(req) => send(gw, req).await,
        Err(Refused { error: e, retry_after: Some(after) }) => json(e.status, e.to_json().into_bytes(), &[("retry-after", after.as_secs().max(1).to_string())]),
        Err(Refused { error: e, .. }) => error(&e),
    }
}

/// A request turned away before any backend is asked.
struct Refused {
    error: ApiError,
    retry_after: Option<std::time::Duration>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Refused {
        Refused { error, retry_after: None }
    }
}

/// Everything before a backend is asked: authentication, route, key's models, limits.
async fn admit(
    gw: &Arc<Gateway>,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: serde_json::Map<String, serde_json::Value>,
    started: Instant,
) -> Result<Request, Refused> {
    let key = authenticate(gw, headers)?;
    let requested = match body.get("model") {
        Some(serde_json::Value::String(m)) if !m.is_empty() => m.clone(),
        Some(_) => return Err(ApiError::invalid_param("model", "`model` must be a non-empty string").into()),
        None => return Err(ApiError::invalid_param("model", "`model` is required").into()),
    };
    let stream = match body.get("stream") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::invalid_param("stream", "`stream` must be a boolean").into()),
    };
    if stream && endpoint == Endpoint::Embeddings {
        return Err(ApiError::invalid_param("stream", "embeddings are not streamed").into());
    }
    let mut tags: Vec<String> = key.map(|k| gw.config.keys[k].tags.clone()).unwrap_or_default();
    if let Some(h) = headers.get("x-lamina-tags").and_then(|v| v.to_str().ok()) {
        tags.extend(h.split(',').map(str::trim).filter(|t| !t.is_empty()).map(str::to_string));
    }
    tags.sort();
    tags.dedup();
    let estimate = estimate_tokens(endpoint, &body);
    let chosen = if gw.config.rules.is_empty() {
        None
    } else {
        let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
        let last = rules::last_message(&body);
        let facts = rules::Facts {
            model: &requested,
            tags: &tags,
            header: &header,
            prompt_tokens: estimate,
            json_mode: rules::json_mode(&body),
            tools: rules::has_tools(&body),
            last_message: &last,
        };
        rules::choose(&gw.config.rules, &facts).map(|r| (r, last))
    };
    let mut classified = None;
    let (route, rule) = match chosen {
        Some((rule, last)) => match &rule.classify {
            Some(classifier) => {
                let (picked, what) = classifier.classify(gw, &last).await;
                classified = Some(what);
                (picked.unwrap_or(rule.route), Some(rule.name.clone()))
            }
            None => (rule.route, Some(rule.name.clone())),
        },
        None => {
            let route = gw.config.route(&requested).ok_or_else(|| {
                let names = gw.config.model_names();
                let known = names.contains(&requested.as_str());
                let why = if known {
                    format!("no rule for `{requested}` matches this request")
                } else {
                    format!("The model `{requested}` does not exist or you do not have access to it")
                };
                ApiError::not_found(format!("{why} (this gateway routes: {}).", names.join(", "))).with_param("model").with_code("model_not_found")
            })?;
            (route, None)
        }
    };
    let alias = gw.config.models[route].name.clone();
    if let Some(k) = key {
        let cfg = &gw.config.keys[k];
        if !cfg.models.is_empty() && !cfg.models.contains(&route) {
            return Err(ApiError::forbidden(format!("key `{}` may not use model `{alias}`", cfg.name)).into());
        }
        let limits = KeyLimits::of(cfg);
        let admitted = gw.shared.admit(&cfg.name, &limits, started).await.map_err(|e| ApiError::unavailable(e.to_string()).with_code("state_unavailable"))?;
        admitted.map_err(|r| Refused { error: ApiError::rate_limited(r.message), retry_after: r.retry_after })?;
    }
    let affinity = affinity(endpoint, headers, &body);
    let user = body.get("user").and_then(|u| u.as_str()).map(str::to_string).or_else(|| key.and_then(|k| gw.config.keys[k].user.clone()));
    let cache_key = gw.config.models[route].cache_ttl.map(|_| {
        let mut normal = body.clone();
        normal.insert("model".into(), alias.clone().into());
        cache::key(endpoint.name(), &normal)
    });
    Ok(Request {
        id: gw.next_id(),
        endpoint,
        started,
        body,
        requested,
        alias,
        rule,
        classified,
        route,
        key,
        user,
        tags,
        stream,
        estimate,
        affinity,
        cache_key,
        probe: None,
        lookup: None,
        attempts: Vec::new(),
        gateway: gw.clone(),
        finished: false,
    })
}

/// A cached answer, at no cost, marked as a hit of the `kind` of cache that held it
/// (whole, or replayed as a stream when the client asked for one).
fn from_cache(gw: &Gateway, mut req: Request, hit: &serde_json::Value, kind: &'static str, include_usage: bool) -> Response {
    let tokens = Tokens::from_usage(&hit["usage"]).unwrap_or_default();
    let usage = usage_json(&tokens, Cost::ZERO, true);
    let mut headers = vec![("x-lamina-route", req.alias.clone()), ("x-lamina-cache", kind.to_string()), ("x-lamina-cost", Cost::ZERO.decimal())];
    if let Some(s) = req.lookup.as_ref().and_then(|l| l.similarity) {
        headers.push(("x-lamina-cache-similarity", format!("{s:.4}")));
    }
    let response = if req.stream {
        relay::sse_body(relay::replay(req.endpoint, hit, usage, include_usage), headers)
    } else {
        let mut v = hit.clone();
        v["usage"] = usage;
        json(200, serde_json::to_vec(&v).unwrap_or_default(), &headers)
    };
    let ttft = Some(req.started.elapsed());
    req.finish(gw, Outcome { status: 200, target: None, tokens, cost: Cost::ZERO, ttft, cache: kind, resumed_at: Vec::new(), error: None });
    response
}

async fn send(gw: Arc<Gateway>, mut req: Request) -> Response {
    let include_usage = req.body.get("stream_options").and_then(|o| o.get("include_usage")).and_then(|v| v.as_bool()).unwrap_or(false);
    if let Some(key) = req.cache_key {
        if let Some(hit) = gw.shared.cached(&key, Instant::now()).await {
            return from_cache(&gw, req, &hit, "hit", include_usage);
        }
        if let Some(cfg) = gw.config.models[req.route].semantic {
            let (probe, hit, lookup) = semantic::look_up(&gw, cfg, req.endpoint, &req.body).await;
            req.lookup = lookup;
            if let Some(hit) = hit {
                return from_cache(&gw, req, &hit, "semantic", include_usage);
            }
            req.probe = probe;
        }
    }
    let targets = match plan(&gw.config, &gw.health, req.route, req.estimate, req.affinity, Instant::now(), &mut rand::rng()) {
        Ok(t) => t,
        Err(too_long) => {
            let e = ApiError::invalid_request(format!(
                "the request is about {} tokens, more than the largest context window ({}) of `{}` and its fallbacks",
                too_long.estimate, too_long.largest, req.alias
            ))
            .with_param("messages")
            .with_code("context_length_exceeded");
            req.finish(&gw, Outcome::failed(400, e.message.clone()));
            return error(&e);
        }
    };
    if req.stream {
        return match relay::stream(gw, req, targets, include_usage).await {
            Ok(r) => r,
            Err((status, body)) => json(status, body, &[]),
        };
    }
    match answer(&gw, &mut req, &targets).await {
        Ok((t, v, tokens, cost)) => {
            let m = &gw.config.models[t.route];
            let backend = gw.backends[m.deployments[t.deployment].backend].config.name.clone();
            let cached = req.cache_key.is_some();
            req.store(&gw, &v);
            let headers = vec![
                ("x-lamina-route", m.name.clone()),
                ("x-lamina-backend", backend),
                ("x-lamina-cache", if cached { "miss" } else { "off" }.to_string()),
                ("x-lamina-cost", cost.decimal()),
            ];
            let response = json(200, serde_json::to_vec(&v).unwrap_or_default(), &headers);
            req.finish(
                &gw,
                Outcome {
                    status: 200,
                    target: Some(t),
                    tokens,
                    cost,
                    ttft: None,
                    cache: if cached { "miss" } else { "off" },
                    resumed_at: Vec::new(),
                    error: None,
                },
            );
            response
        }
        Err(last) => {
            let (status, body) = match failure_response(&req, &last) {
                Ok(x) => x,
                Err(e) => (e.status, e.to_json().into_bytes()),
            };
            req.finish(&gw, Outcome::failed(status, last.message()));
            json(status, body, &[])
        }
    }
}

async fn models(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    let gw = live.get();
    let key = match authenticate(&gw, &headers) {
        Ok(k) => k,
        Err(e) => return error(&e),
    };
    let allowed =
        |name: &str| key.is_none_or(|k| gw.config.keys[k].models.is_empty() || gw.config.route(name).is_some_and(|r| gw.config.keys[k].models.contains(&r)));
    let data: Vec<serde_json::Value> = gw
        .config
        .model_names()
        .into_iter()
        .filter(|n| gw.config.route(n).is_none() || allowed(n))
        .map(|n| {
            let window = gw.config.route(n).and_then(|r| gw.config.models[r].context_window);
            serde_json::json!({"id": n, "object": "model", "created": 0, "owned_by": "lamina-gateway", "context_window": window})
        })
        .collect();
    json(200, serde_json::to_vec(&serde_json::json!({"object": "list", "data": data})).unwrap_or_default(), &[])
}

async fn health(State(live): State<Arc<Live>>) -> Response {
    let gw = live.get();
    let now = Instant::now();
    let backends: Vec<serde_json::Value> = gw
        .backends
        .iter()
        .zip(&gw.health)
        .map(|(b, h)| {
            serde_json::json!({
                "name": b.config.name,
                "ejected": h.is_ejected(now),
                "in_flight": h.in_flight(),
                "latency_ms": h.latency().map(crate::proxy::ms),
            })
        })
        .collect();
    json(200, serde_json::to_vec(&serde_json::json!({"status": "ok", "backends": backends})).unwrap_or_default(), &[])
}

async fn metrics(State(live): State<Arc<Live>>) -> Response {
    let gw = live.get();
    match &gw.shared.metrics {
        Some(h) => Response::builder().header("content-type", "text/plain; version=0.0.4").body(Body::from(h.render())).unwrap_or_default(),
        None => error(&ApiError::not_found("metrics are off")),
    }
}

async fn spend(State(live): State<Arc<Live>>, headers: HeaderMap) -> Response {
    let gw = live.get();
    if let Err(e) = authenticate(&gw, &headers) {
        return error(&e);
    }
    json(200, serde_json::to_vec(&gw.totals().await).unwrap_or_default(), &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompt_size_counts_only_the_text() {
        let body = serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x".repeat(40)}]});
        // "user" (4 bytes) + 40 bytes of content = 44 bytes ≈ 11 tokens.
        assert_eq!(estimate_tokens(Endpoint::Chat, body.as_object().unwrap()), 11);
        let body = serde_json::json!({"model": "m", "prompt": ["abcd", "efgh"]});
        assert_eq!(estimate_tokens(Endpoint::Completions, body.as_object().unwrap()), 2);
    }
}
