//! The gateway's Prometheus metrics. Values go through the `metrics` facade; the binary
//! installs the recorder ([`prometheus_builder`]) and hands its handle to the gateway,
//! which renders it at `GET /metrics`. Without a recorder these calls do nothing.

use crate::price::{Cost, Tokens};
use metrics::{counter, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use std::time::Duration;

pub const REQUESTS: &str = "lamina_gateway_requests_total";
pub const FALLBACKS: &str = "lamina_gateway_fallbacks_total";
pub const CACHE_HITS: &str = "lamina_gateway_cache_hits_total";
pub const TOKENS: &str = "lamina_gateway_tokens_total";
/// Cost in micro-units: the exact total per model, rounded down (exact figures are in the
/// log and at `/gateway/spend`).
pub const COST: &str = "lamina_gateway_cost_micro_units_total";
pub const DURATION: &str = "lamina_gateway_request_duration_seconds";
pub const TTFT: &str = "lamina_gateway_time_to_first_token_seconds";

pub fn prometheus_builder() -> PrometheusBuilder {
    let latency = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(DURATION.into()), &latency)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(TTFT.into()), &latency))
        .expect("bucket lists are non-empty")
}

#[allow(clippy::too_many_arguments)]
pub fn request(
    model: &str,
    backend: &str,
    status: u16,
    cache: &'static str,
    fallback: bool,
    tokens: &Tokens,
    model_total: Cost,
    elapsed: Duration,
    ttft: Option<Duration>,
) {
    let model = model.to_string();
    counter!(REQUESTS, "model" => model.clone(), "backend" => backend.to_string(), "status" => status.to_string()).increment(1);
    if fallback {
        counter!(FALLBACKS, "model" => model.clone()).increment(1);
    }
    if cache == "hit" || cache == "semantic" {
        counter!(CACHE_HITS, "model" => model.clone(), "cache" => cache.to_string()).increment(1);
    }
    counter!(TOKENS, "model" => model.clone(), "kind" => "prompt").increment(tokens.prompt);
    counter!(TOKENS, "model" => model.clone(), "kind" => "completion").increment(tokens.completion);
    counter!(COST, "model" => model.clone()).absolute((model_total.0 / 1_000_000) as u64);
    histogram!(DURATION, "model" => model.clone()).record(elapsed.as_secs_f64());
    if let Some(t) = ttft {
        histogram!(TTFT, "model" => model).record(t.as_secs_f64());
    }
}
