//! The server's Prometheus metrics: names, labels and histogram buckets in one place.
//!
//! Values go through the `metrics` facade. The binary installs the recorder
//! ([`prometheus_builder`]) and hands its handle to the server, which renders it at
//! `GET /metrics`; a library never installs one, and without one these calls do nothing.

use lamina_engine::EngineStats;
use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

pub const REQUESTS: &str = "lamina_requests_total";
pub const PROMPT_TOKENS: &str = "lamina_prompt_tokens_total";
pub const GENERATED_TOKENS: &str = "lamina_generated_tokens_total";
pub const CACHED_TOKENS: &str = "lamina_cached_prompt_tokens_total";
pub const QUEUE_DEPTH: &str = "lamina_queue_depth";
pub const RUNNING: &str = "lamina_running_sequences";
pub const KV_BLOCKS_TOTAL: &str = "lamina_kv_blocks_total";
pub const KV_BLOCKS_USED: &str = "lamina_kv_blocks_used";
pub const KV_BLOCKS_FREE: &str = "lamina_kv_blocks_free";
pub const KV_BLOCKS_CACHED: &str = "lamina_kv_blocks_cached";
pub const PREFIX_HIT_RATE: &str = "lamina_prefix_cache_hit_rate";
pub const PREFIX_QUERY_TOKENS: &str = "lamina_prefix_cache_query_tokens_total";
pub const PREFIX_HIT_TOKENS: &str = "lamina_prefix_cache_hit_tokens_total";
pub const PREEMPTIONS: &str = "lamina_preemptions_total";
pub const SPEC_DRAFT_TOKENS: &str = "lamina_spec_draft_tokens_total";
pub const SPEC_ACCEPTED_TOKENS: &str = "lamina_spec_accepted_tokens_total";
pub const SPEC_ACCEPTANCE: &str = "lamina_spec_acceptance_rate";
pub const TTFT: &str = "lamina_time_to_first_token_seconds";
pub const ITL: &str = "lamina_inter_token_latency_seconds";
pub const DURATION: &str = "lamina_request_duration_seconds";

/// A Prometheus recorder with this server's histogram buckets.
pub fn prometheus_builder() -> PrometheusBuilder {
    let latency = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    let itl = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(TTFT.into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DURATION.into()), &latency))
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(ITL.into()), &itl))
        .expect("bucket lists are non-empty")
}

pub fn request(endpoint: &'static str, status: u16) {
    counter!(REQUESTS, "endpoint" => endpoint, "status" => status.to_string()).increment(1);
}

pub fn usage(model: &str, prompt: usize, generated: usize, cached: usize) {
    let model = model.to_string();
    counter!(PROMPT_TOKENS, "model" => model.clone()).increment(prompt as u64);
    counter!(GENERATED_TOKENS, "model" => model.clone()).increment(generated as u64);
    counter!(CACHED_TOKENS, "model" => model).increment(cached as u64);
}

pub fn time_to_first_token(model: &str, secs: f64) {
    histogram!(TTFT, "model" => model.to_string()).record(secs);
}

pub fn inter_token(model: &str, secs: f64) {
    histogram!(ITL, "model" => model.to_string()).record(secs);
}

pub fn duration(model: &str, secs: f64) {
    histogram!(DURATION, "model" => model.to_string()).record(secs);
}

/// The engine's load and cache after a step.
pub fn engine_stats(model: &str, s: &EngineStats) {
    let l = |v: &str| [("model", v.to_string())];
    gauge!(QUEUE_DEPTH, &l(model)).set(s.waiting as f64);
    gauge!(RUNNING, &l(model)).set(s.running as f64);
    gauge!(KV_BLOCKS_TOTAL, &l(model)).set(s.kv_blocks as f64);
    gauge!(KV_BLOCKS_USED, &l(model)).set(s.kv_blocks_used as f64);
    gauge!(KV_BLOCKS_FREE, &l(model)).set(s.kv_blocks_free as f64);
    gauge!(KV_BLOCKS_CACHED, &l(model)).set(s.kv_blocks_cached as f64);
    let rate = if s.prefix_query_tokens == 0 { 0.0 } else { s.prefix_hit_tokens as f64 / s.prefix_query_tokens as f64 };
    gauge!(PREFIX_HIT_RATE, &l(model)).set(rate);
    counter!(PREFIX_QUERY_TOKENS, &l(model)).absolute(s.prefix_query_tokens);
    counter!(PREFIX_HIT_TOKENS, &l(model)).absolute(s.prefix_hit_tokens);
    counter!(PREEMPTIONS, &l(model)).absolute(s.preemptions);
    counter!(SPEC_DRAFT_TOKENS, &l(model)).absolute(s.spec_draft_tokens);
    counter!(SPEC_ACCEPTED_TOKENS, &l(model)).absolute(s.spec_accepted_tokens);
    let acceptance = if s.spec_draft_tokens == 0 { 0.0 } else { s.spec_accepted_tokens as f64 / s.spec_draft_tokens as f64 };
    gauge!(SPEC_ACCEPTANCE, &l(model)).set(acceptance);
}

/// A model was unloaded: its gauges go to zero.
pub fn clear_model(model: &str) {
    engine_stats(model, &EngineStats::default());
}
