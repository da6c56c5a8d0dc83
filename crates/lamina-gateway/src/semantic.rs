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
//! partition, stored as one block of floats (384 each for MiniLM: 10,000 entries take
//! 0.9 ms on one core, on par with NumPy's BLAS — `bench/gateway/semantic.sh`).

use crate::cache::{self, CacheKey};
use crate::config::SemanticCacheConfig;
use crate::internal;
use crate::proxy::{ms, Endpoint};
use crate::Gateway;
use serde::Serialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
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

/// Embeds `text` through route `route`. Returns the unit vector and the backend's name.
pub async fn embed(gw: &Gateway, route: usize, text: &str) -> Result<(Vec<f32>, String), String> {
    let mut body = Map::new();
    body.insert("input".into(), text.into());
    internal::call(gw, route, Endpoint::Embeddings, &body, |v| {
        unit_vector(&v["data"][0]["embedding"]).ok_or_else(|| "the reply holds no embedding".to_string())
    })
    .await
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

/// One partition's entries, their vectors in one contiguous block (row `i` is entry `i`),
/// so a lookup streams through memory once.
struct Partition {
    dim: usize,
    vectors: Vec<f32>,
    values: Vec<Arc<Value>>,
    expires: Vec<Instant>,
}

impl Partition {
    fn len(&self) -> usize {
        self.values.len()
    }

    /// Drops entry `i` by moving the last one into its place.
    fn swap_remove(&mut self, i: usize) {
        let last = self.len() - 1;
        if i != last {
            let (head, tail) = self.vectors.split_at_mut(last * self.dim);
            head[i * self.dim..(i + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
        }
        self.vectors.truncate(last * self.dim);
        self.values.swap_remove(i);
        self.expires.swap_remove(i);
    }

    fn drop_expired(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.len() {
            if self.expires[i] > now {
                i += 1;
            } else {
                self.swap_remove(i);
            }
        }
    }
}

#[derive(Default)]
struct Entries {
    partitions: HashMap<CacheKey, Partition>,
    count: usize,
}

impl Entries {
    fn drop_expired(&mut self, now: Instant) {
        for p in self.partitions.values_mut() {
            p.drop_expired(now);
        }
        self.partitions.retain(|_, p| p.len() > 0);
        self.count = self.partitions.values().map(Partition::len).sum();
    }
}

pub struct SemanticCache {
    entries: Mutex<Entries>,
    capacity: usize,
}

/// The dot product in sixteen independent sums, so the compiler keeps them in vector
/// registers (a single running sum would be one long dependency chain).
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let body = n / 16 * 16;
    let mut acc = [0.0f32; 16];
    let mut j = 0;
    while j < body {
        let (x, y): (&[f32; 16], &[f32; 16]) = (a[j..j + 16].try_into().unwrap(), b[j..j + 16].try_into().unwrap());
        for l in 0..16 {
            acc[l] += x[l] * y[l];
        }
        j += 16;
    }
    let mut sum: f32 = acc.iter().sum();
    while j < n {
        sum += a[j] * b[j];
        j += 1;
    }
    sum
}

/// The similarity of `probe` with each row of `rows` (`dim` floats a row); the best row
/// and its score.
fn best_row_scalar(rows: &[f32], dim: usize, probe: &[f32]) -> Option<(usize, f32)> {
    // Plain loops: an iterator adaptor's closure may be compiled out of line, without the
    // caller's target features.
    let mut best: Option<(usize, f32)> = None;
    let mut i = 0;
    while (i + 1) * dim <= rows.len() {
        let s = dot_lanes(&rows[i * dim..(i + 1) * dim], probe);
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
        i += 1;
    }
    best
}

/// [`best_row_scalar`] in AVX2 and FMA: four accumulators a row, so four FMA chains run
/// at once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn best_row_avx2(rows: &[f32], dim: usize, probe: &[f32]) -> Option<(usize, f32)> {
    use std::arch::x86_64::*;
    let body = dim.min(probe.len()) / 32 * 32;
    let mut best: Option<(usize, f32)> = None;
    for (i, row) in rows.chunks_exact(dim).enumerate() {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut j = 0;
        while j < body {
            for (k, a) in acc.iter_mut().enumerate() {
                // SAFETY: j + 32 <= body, which is at most the length of `row` and `probe`.
                unsafe {
                    let x = _mm256_loadu_ps(row.as_ptr().add(j + 8 * k));
                    let y = _mm256_loadu_ps(probe.as_ptr().add(j + 8 * k));
                    *a = _mm256_fmadd_ps(x, y, *a);
                }
            }
            j += 32;
        }
        let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
        let h = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let mut s = _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)));
        for (x, y) in row[body..].iter().zip(&probe[body..]) {
            s += x * y;
        }
        if best.is_none_or(|(_, b)| s > b) {
            best = Some((i, s));
        }
    }
    best
}

/// [`best_row_scalar`], compiled for AVX2 and FMA where the CPU has them.
fn best_row(rows: &[f32], dim: usize, probe: &[f32]) -> Option<(usize, f32)> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has both features the function is compiled for.
        return unsafe { best_row_avx2(rows, dim, probe) };
    }
    best_row_scalar(rows, dim, probe)
}

impl SemanticCache {
    pub fn new(capacity: usize) -> SemanticCache {
        SemanticCache { entries: Mutex::new(Entries::default()), capacity }
    }

    /// The live entry of the probe's partition closest to it, and its similarity.
    pub fn nearest(&self, probe: &Probe, now: Instant) -> Option<(Arc<Value>, f32)> {
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entries = &mut *guard;
        let p = entries.partitions.get_mut(&probe.partition)?;
        let before = p.len();
        p.drop_expired(now);
        entries.count -= before - p.len();
        if p.dim != probe.vector.len() {
            return None;
        }
        let (i, s) = best_row(&p.vectors, p.dim, &probe.vector)?;
        Some((p.values[i].clone(), s))
    }

    pub fn put(&self, probe: Probe, value: Value, ttl: Duration, now: Instant) {
        if self.capacity == 0 || probe.vector.is_empty() {
            return;
        }
        let mut guard = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entries = &mut *guard;
        if entries.count >= self.capacity {
            entries.drop_expired(now);
        }
        if entries.count >= self.capacity {
            // Still full: drop the entry closest to expiry.
            let oldest = entries
                .partitions
                .iter()
                .flat_map(|(k, p)| p.expires.iter().enumerate().map(move |(i, e)| (*e, *k, i)))
                .min_by_key(|(e, _, _)| *e)
                .map(|(_, k, i)| (k, i));
            if let Some((k, i)) = oldest {
                if let Some(p) = entries.partitions.get_mut(&k) {
                    p.swap_remove(i);
                }
                entries.count -= 1;
            }
        }
        let dim = probe.vector.len();
        let p = entries.partitions.entry(probe.partition).or_insert_with(|| Partition { dim, vectors: Vec::new(), values: Vec::new(), expires: Vec::new() });
        let mut dropped = 0;
        if p.dim != dim {
            // The embeddings route now answers in another size: the old entries cannot be
            // compared with new ones.
            dropped = p.len();
            *p = Partition { dim, vectors: Vec::new(), values: Vec::new(), expires: Vec::new() };
        }
        p.vectors.extend_from_slice(&probe.vector);
        p.values.push(Arc::new(value));
        p.expires.push(now + ttl);
        entries.count = entries.count + 1 - dropped;
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
    fn the_scan_finds_the_best_row_on_every_path() {
        // Rows of 387 floats (a body of whole vector blocks and a tail), scores checked
        // against f64 sums; the SIMD path against the scalar one where the CPU has it.
        let dim = 387;
        let mut rng = rand::rng();
        let rows: Vec<f32> = (0..50 * dim).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0)).collect();
        let probe: Vec<f32> = (0..dim).map(|_| rand::Rng::random_range(&mut rng, -1.0f32..1.0)).collect();
        let exact: Vec<f64> = rows.chunks(dim).map(|r| r.iter().zip(&probe).map(|(x, y)| *x as f64 * *y as f64).sum()).collect();
        let want = (0..exact.len()).max_by(|a, b| exact[*a].total_cmp(&exact[*b])).unwrap();
        let check = |(i, s): (usize, f32), path: &str| {
            assert_eq!(i, want, "{path}");
            // 387 products of numbers below 1 summed in f32: within 1e-4 of the f64 sum.
            assert!((s as f64 - exact[want]).abs() < 1e-4, "{path}: {s} vs {}", exact[want]);
        };
        check(best_row_scalar(&rows, dim, &probe).unwrap(), "scalar");
        check(best_row(&rows, dim, &probe).unwrap(), "dispatched");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has the features.
            check(unsafe { best_row_avx2(&rows, dim, &probe) }.unwrap(), "avx2");
        }
        assert!(best_row(&[], dim, &probe).is_none());
    }

    #[test]
    fn a_new_vector_size_replaces_the_partition_and_counts_stay_right() {
        let c = SemanticCache::new(2);
        let t0 = Instant::now();
        let ttl = Duration::from_secs(10);
        c.put(Probe { partition: [1; 32], vector: vec![1.0, 0.0] }, json!("two"), ttl, t0);
        c.put(Probe { partition: [1; 32], vector: vec![1.0, 0.0, 0.0] }, json!("three"), ttl, t0);
        assert!(c.nearest(&Probe { partition: [1; 32], vector: vec![1.0, 0.0] }, t0).is_none());
        assert_eq!(c.nearest(&Probe { partition: [1; 32], vector: vec![1.0, 0.0, 0.0] }, t0).unwrap().0.as_str(), Some("three"));
        // One entry lives, so a second partition fits without evicting it.
        c.put(Probe { partition: [2; 32], vector: vec![0.0, 1.0] }, json!("other"), ttl, t0);
        assert!(c.nearest(&Probe { partition: [1; 32], vector: vec![1.0, 0.0, 0.0] }, t0).is_some());
        assert!(c.nearest(&Probe { partition: [2; 32], vector: vec![0.0, 1.0] }, t0).is_some());
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
