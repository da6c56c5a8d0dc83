//! How long a semantic-cache lookup takes when the cache is full, for
//! `bench/gateway/semantic.sh`: fills a cache with N random unit vectors of D floats (one
//! partition, the worst case) and prints one JSON line with the mean time of a lookup.
//!
//!     semantic_scan [--entries N] [--dim D] [--lookups L]

use lamina_gateway::cache;
use lamina_gateway::semantic::{Probe, SemanticCache};
use rand::Rng;
use std::time::{Duration, Instant};

fn unit(rng: &mut impl Rng, dim: usize) -> Vec<f32> {
    let v: Vec<f32> = (0..dim).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

fn main() {
    let (mut entries, mut dim, mut lookups) = (10_000usize, 384usize, 200usize);
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let value = it.next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{a} needs a number"));
        match a.as_str() {
            "--entries" => entries = value,
            "--dim" => dim = value,
            "--lookups" => lookups = value,
            _ => panic!("unknown argument {a}"),
        }
    }
    let mut rng = rand::rng();
    let partition = cache::key("semantic chat", &serde_json::Map::new());
    let cache = SemanticCache::new(entries);
    let now = Instant::now();
    for i in 0..entries {
        cache.put(Probe { partition, vector: unit(&mut rng, dim) }, serde_json::json!({ "i": i }), Duration::from_secs(3600), now);
    }
    let probes: Vec<Probe> = (0..lookups).map(|_| Probe { partition, vector: unit(&mut rng, dim) }).collect();
    let t0 = Instant::now();
    let mut best = 0.0f32;
    for p in &probes {
        best += cache.nearest(p, now).map_or(0.0, |(_, s)| s);
    }
    let ms = t0.elapsed().as_secs_f64() * 1e3 / lookups as f64;
    println!("{{\"entries\": {entries}, \"dim\": {dim}, \"lookups\": {lookups}, \"ms_per_lookup\": {ms:.4}, \"mean_best\": {:.4}}}", best / lookups as f32);
}
