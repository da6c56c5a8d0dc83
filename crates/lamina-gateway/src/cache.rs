//! The exact response cache: a reply is stored under the SHA-256 of its request in a
//! normal form (object keys sorted, the fields that do not change the answer — `stream`,
//! `stream_options`, `user` — left out), for the route's time to live. Both streamed and
//! plain requests read and fill it: a stream is stored as the completion it assembled, and
//! a hit is replayed as a stream when the client asked for one.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type CacheKey = [u8; 32];

/// Fields that do not change what the backend answers.
const IGNORED: [&str; 3] = ["stream", "stream_options", "user"];

fn canonical(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push(':');
                canonical(&m[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// The cache key of a request body sent to `endpoint` (its route alias in `model`).
pub fn key(endpoint: &str, body: &serde_json::Map<String, serde_json::Value>) -> CacheKey {
    let mut text = String::with_capacity(256);
    text.push_str(endpoint);
    text.push('\n');
    let kept: serde_json::Map<String, serde_json::Value> =
        body.iter().filter(|(k, _)| !IGNORED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    canonical(&serde_json::Value::Object(kept), &mut text);
    Sha256::digest(text.as_bytes()).into()
}

struct Entry {
    value: Arc<serde_json::Value>,
    expires: Instant,
}

pub struct ExactCache {
    entries: Mutex<HashMap<CacheKey, Entry>>,
    capacity: usize,
}

impl ExactCache {
    pub fn new(capacity: usize) -> ExactCache {
        ExactCache { entries: Mutex::new(HashMap::new()), capacity }
    }

    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Arc<serde_json::Value>> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        match e.get(key) {
            Some(entry) if entry.expires > now => Some(entry.value.clone()),
            Some(_) => {
                e.remove(key);
                None
            }
            None => None,
        }
    }

    pub fn put(&self, key: CacheKey, value: serde_json::Value, ttl: Duration, now: Instant) {
        if self.capacity == 0 {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if e.len() >= self.capacity && !e.contains_key(&key) {
            e.retain(|_, v| v.expires > now);
            if e.len() >= self.capacity {
                // Still full: drop the entry closest to expiry.
                if let Some(k) = e.iter().min_by_key(|(_, v)| v.expires).map(|(k, _)| *k) {
                    e.remove(&k);
                }
            }
        }
        e.insert(key, Entry { value: Arc::new(value), expires: now + ttl });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn keys_ignore_field_order_and_delivery_fields() {
        let a = obj(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "stream": true}));
        let b = obj(json!({"temperature": 0, "messages": [{"content": "hi", "role": "user"}], "model": "m", "user": "x"}));
        assert_eq!(key("chat", &a), key("chat", &b));
        assert_ne!(key("chat", &a), key("completions", &a));
        let c = obj(json!({"model": "m", "messages": [{"role": "user", "content": "hi!"}], "temperature": 0}));
        assert_ne!(key("chat", &a), key("chat", &c));
    }

    #[test]
    fn entries_expire_and_the_cache_stays_within_capacity() {
        let c = ExactCache::new(2);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        c.put([1; 32], json!(1), ttl, t0);
        c.put([2; 32], json!(2), Duration::from_secs(20), t0);
        assert_eq!(*c.get(&[1; 32], t0).unwrap(), json!(1));
        assert!(c.get(&[1; 32], t0 + Duration::from_secs(11)).is_none());
        c.put([3; 32], json!(3), ttl, t0);
        c.put([4; 32], json!(4), ttl, t0);
        let live = [[2u8; 32], [3; 32], [4; 32]].iter().filter(|k| c.get(k, t0).is_some()).count();
        assert_eq!(live, 2);
    }
}
