//! The semantic response cache. A request is answered from it when everything but its
//! last message matches a cached request exactly (the same route, parameters, system
//! prompt and earlier turns: the [`partition`]) and its last message is close enough in
//! meaning: the cosine similarity of the two messages' embeddings reaches the route's
//! `similarity`. The embeddings come from another route of the gateway
//! (`cache.embeddings`), so they are made by any backend that serves `/v1/embeddings` —
//! `lamina serve` with all-MiniLM-L6-v2, for one.
//!
//! A lookup that cannot embed (the embeddings route is down, the message is too long for
//! it) is a miss and the request goes on; the log line says why. Requests whose last
//! message is not plain text (images, audio, tool calls without text) are never looked
//! up: an embedding of their text alone would call different requests the same.
//!
//! Entries live as long as the route's `ttl`; a lookup scans the live entries of its
//! partition (384 floats each for MiniLM: a full cache of 10,000 entries is about 4
//! million multiply-adds, under 2 ms on one core).

use crate::backend::Backend;
use crate::cache::{self, CacheKey};
use crate::config::SemanticCacheConfig;
use crate::proxy::{ms, Endpoint};
use crate::router::plan;
use crate::Gateway;
use serde::Serialize;
use serde_json::{Map, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a request's lookup found, for its log line.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Lookup {
    /// The backend that embedded the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// The best similarity among the partition's entries (also on a miss: it shows how
    /// far the threshold was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub similarity: Option<f32>,
    pub ms: f64,
    /// Why there was no lookup.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A request's place in the semantic cache: its partition and its last message's
/// embedding (unit length).
#[derive(Clone, Debug)]
pub struct Probe {
    pub partition: CacheKey,
    pub vector: Vec<f32>,
}

/// The text of a content that is only text: a string, or an array of `text` parts.
fn plain_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for p in parts {
                if p["type"] != "text" {
                    return None;
                }
                out.push_str(p["text"].as_str()?);
            }
            Some(out)
        }
        _ => None,
    }
}

/// The text that is embedded and the body it is left out of, or `None` when the request
/// cannot be looked up (see the module's notes).
pub fn split(endpoint: Endpoint, body: &Map<String, Value>) -> Option<(String, Map<String, Value>)> {
    let mut rest = body.clone();
    let text = match endpoint {
        Endpoint::Chat => {
            let messages = rest.get_mut("messages")?.as_array_mut()?;
            let last = messages.last_mut()?.as_object_mut()?;
            if last.contains_key("tool_calls") || last.contains_key("audio") {
                return None;
            }
            let text = plain_text(last.get("content")?)?;
            last.remove("content");
            text
        }
        Endpoint::Completions => match rest.remove("prompt")? {
            Value::String(s) => s,
            _ => return None,
        },
        Endpoint::Embeddings => return None,
    };
    (!text.trim().is_empty()).then_some((text, rest))
}

/// The partition of a body whose embedded text was taken out by [`split`] (`model` is
/// already the route's name).
pub fn partition(endpoint: Endpoint, rest: &Map<String, Value>) -> CacheKey {
    cache::key(&format!("semantic {}", endpoint.name()), rest)
}

/// Embeds `text` through route `route`: its deployments in the router's order, one try
/// each, until one answers with a vector. Returns the unit vector and the backend's name.
pub async fn embed(gw: &Gateway, route: usize, text: &str) -> Result<(Vec<f32>, String), String> {
    let targets = plan(&gw.config, &gw.health, route, 0, Instant::now(), &mut rand::rng()).map_err(|_| "no deployment".to_string())?;
    let mut last = "the embeddings route has no deployment".to_string();
    for t in targets {
        let d = &gw.config.models[t.route].deployments[t.deployment];
        let backend: &Backend = &gw.backends[d.backend];
        let health = &gw.health[d.backend];
        let mut body = Map::new();
        body.insert("model".into(), d.model.clone().into());
        body.insert("input".into(), text.into());
        let t0 = Instant::now();
        let result = {
            let _busy = health.start();
            backend.call(Endpoint::Embeddings, &body).await
        };
        match result {
            Ok(v) => {
                health.success(t0.elapsed());
                match unit_vector(&v["data"][0]["embedding"]) {
                    Some(vector) => return Ok((vector, backend.config.name.clone())),
                    None => last = format!("{}: the reply holds no embedding", backend.config.name),
                }
            }
            Err(f) => {
                if f.is_backend_fault() {
                    health.failure(&gw.config.health, Instant::now());
                }
                last = format!("{}: {}", backend.config.name, f.message());
            }
        }
    }
    Err(last)
}

/// A JSON array of numbers scaled to unit length; `None` unless it is a non-zero vector.
fn unit_vector(v: &Value) -> Option<Vec<f32>> {
    let xs: Vec<f32> = v.as_array()?.iter().map(|x| x.as_f64().map(|f| f as f32)).collect::<Option<_>>()?;
    let norm = xs.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm.is_finite() && norm > 0.0 && !xs.is_empty()).then(|| xs.iter().map(|x| x / norm).collect())
}

/// Looks a request up: embeds its last message and finds the closest entry. Returns the
/// probe (to store the answer under on a miss), the hit if the closest entry is close
/// enough, and what happened, for the log.
pub async fn look_up(
    gw: &Gateway,
    cfg: SemanticCacheConfig,
    endpoint: Endpoint,
    body: &Map<String, Value>,
) -> (Option<Probe>, Option<Arc<Value>>, Option<Lookup>) {
    let Some((text, rest)) = split(endpoint, body) else { return (None, None, None) };
    let t0 = Instant::now();
    match embed(gw, cfg.embeddings, &text).await {
        Err(e) => (None, None, Some(Lookup { ms: ms(t0.elapsed()), error: Some(e), ..Lookup::default() })),
        Ok((vector, backend)) => {
            let probe = Probe { partition: partition(endpoint, &rest), vector };
            let best = gw.shared.semantic.nearest(&probe, Instant::now());
            let similarity = best.as_ref().map(|(_, s)| *s);
            let hit = best.filter(|(_, s)| *s >= cfg.similarity).map(|(v, _)| v);
            (Some(probe), hit, Some(Lookup { backend: Some(backend), similarity, ms: ms(t0.elapsed()), error: None }))
        }
    }
}

struct Entry {
    partition: CacheKey,
    vector: Vec<f32>,
    value: Arc<Value>,
    expires: Instant,
}

pub struct SemanticCache {
    entries: Mutex<Vec<Entry>>,
    capacity: usize,
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

impl SemanticCache {
    pub fn new(capacity: usize) -> SemanticCache {
        SemanticCache { entries: Mutex::new(Vec::new()), capacity }
    }

    /// The live entry of the probe's partition closest to it, and its similarity.
    pub fn nearest(&self, probe: &Probe, now: Instant) -> Option<(Arc<Value>, f32)> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.expires > now);
        entries
            .iter()
            .filter(|e| e.partition == probe.partition && e.vector.len() == probe.vector.len())
            .map(|e| (e, dot(&e.vector, &probe.vector)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(e, s)| (e.value.clone(), s))
    }

    pub fn put(&self, probe: Probe, value: Value, ttl: Duration, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.expires > now);
        if entries.len() >= self.capacity {
            // Still full: drop the entry closest to expiry.
            if let Some(i) = entries.iter().enumerate().min_by_key(|(_, e)| e.expires).map(|(i, _)| i) {
                entries.swap_remove(i);
            }
        }
        entries.push(Entry { partition: probe.partition, vector: probe.vector, value: Arc::new(value), expires: now + ttl });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_last_message_is_embedded_and_everything_else_partitions() {
        let a = obj(json!({"model": "m", "temperature": 0, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the capital of France?"}]}));
        let (text, rest) = split(Endpoint::Chat, &a).unwrap();
        assert_eq!(text, "What is the capital of France?");
        let b = obj(json!({"model": "m", "temperature": 0, "messages": [
            {"role": "system", "content": "Be brief."}, {"role": "user", "content": [{"type": "text", "text": "Capital of France?"}]}]}));
        let (text_b, rest_b) = split(Endpoint::Chat, &b).unwrap();
        assert_eq!(text_b, "Capital of France?");
        assert_eq!(partition(Endpoint::Chat, &rest), partition(Endpoint::Chat, &rest_b));
        // Another system prompt, temperature or endpoint is another partition.
        let mut c = a.clone();
        c["messages"][0]["content"] = "Be verbose.".into();
        assert_ne!(partition(Endpoint::Chat, &split(Endpoint::Chat, &c).unwrap().1), partition(Endpoint::Chat, &rest));
        let mut d = a.clone();
        d["temperature"] = 1.into();
        assert_ne!(partition(Endpoint::Chat, &split(Endpoint::Chat, &d).unwrap().1), partition(Endpoint::Chat, &rest));
        assert_ne!(partition(Endpoint::Completions, &rest), partition(Endpoint::Chat, &rest));
        // Completions embed a string prompt.
        let p = obj(json!({"model": "m", "prompt": "Once upon a time"}));
        assert_eq!(split(Endpoint::Completions, &p).unwrap().0, "Once upon a time");
    }

    #[test]
    fn requests_that_are_not_plain_text_are_not_looked_up() {
        let image = obj(json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}]}));
        assert!(split(Endpoint::Chat, &image).is_none());
        let calls = obj(json!({"model": "m", "messages": [{"role": "assistant", "content": "x", "tool_calls": []}]}));
        assert!(split(Endpoint::Chat, &calls).is_none());
        assert!(split(Endpoint::Chat, &obj(json!({"model": "m", "messages": [{"role": "user", "content": "  "}]}))).is_none());
        assert!(split(Endpoint::Completions, &obj(json!({"model": "m", "prompt": [1, 2, 3]}))).is_none());
        assert!(split(Endpoint::Embeddings, &obj(json!({"model": "m", "input": "x"}))).is_none());
    }

    #[test]
    fn the_nearest_live_entry_of_the_partition_is_found() {
        let c = SemanticCache::new(3);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        let probe = |p: u8, v: &[f32]| Probe { partition: [p; 32], vector: unit_vector(&json!(v)).unwrap() };
        c.put(probe(1, &[1.0, 0.0]), json!("east"), ttl, t0);
        c.put(probe(1, &[0.0, 1.0]), json!("north"), ttl, t0);
        c.put(probe(2, &[0.6, 0.8]), json!("other partition"), ttl, t0);
        let (v, s) = c.nearest(&probe(1, &[0.6, 0.8]), t0).unwrap();
        assert_eq!((v.as_str(), (s * 1e4).round()), (Some("north"), 8000.0));
        assert!(c.nearest(&probe(3, &[1.0, 0.0]), t0).is_none());
        // Expired entries are gone; a full cache drops the one closest to expiry.
        assert!(c.nearest(&probe(1, &[1.0, 0.0]), t0 + Duration::from_secs(11)).is_none());
        let c = SemanticCache::new(2);
        c.put(probe(1, &[1.0, 0.0]), json!("a"), Duration::from_secs(5), t0);
        c.put(probe(1, &[0.0, 1.0]), json!("b"), Duration::from_secs(20), t0);
        c.put(probe(1, &[1.0, 1.0]), json!("c"), Duration::from_secs(20), t0);
        let (v, _) = c.nearest(&probe(1, &[1.0, 0.0]), t0).unwrap();
        assert_eq!(v.as_str(), Some("c"), "`a` expired first, so it was dropped");
    }

    #[test]
    fn embeddings_must_be_non_zero_number_arrays() {
        assert_eq!(unit_vector(&json!([3.0, 4.0])), Some(vec![0.6, 0.8]));
        assert!(unit_vector(&json!([0.0, 0.0])).is_none());
        assert!(unit_vector(&json!([])).is_none());
        assert!(unit_vector(&json!([1.0, "x"])).is_none());
        assert!(unit_vector(&json!("1.0")).is_none());
    }
}
