//! A load generator for `bench/gateway/run.sh`: sends chat completions to an
//! OpenAI-compatible URL and prints one JSON line — requests/s, latency percentiles and,
//! for streams, time to first chunk.
//!
//!     load URL [--concurrency C] [--requests N | --seconds S] [--stream] [--model M] [--key K]

use futures_util::StreamExt;
use std::time::{Duration, Instant};

struct Args {
    url: String,
    concurrency: usize,
    requests: Option<usize>,
    seconds: f64,
    stream: bool,
    model: String,
    key: Option<String>,
}

fn args() -> Args {
    let mut a = Args { url: String::new(), concurrency: 1, requests: None, seconds: 10.0, stream: false, model: "fast".into(), key: None };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--concurrency" => a.concurrency = it.next().and_then(|v| v.parse().ok()).expect("--concurrency N"),
            "--requests" => a.requests = it.next().and_then(|v| v.parse().ok()),
            "--seconds" => a.seconds = it.next().and_then(|v| v.parse().ok()).expect("--seconds S"),
            "--stream" => a.stream = true,
            "--model" => a.model = it.next().expect("--model M"),
            "--key" => a.key = it.next(),
            url => a.url = url.to_string(),
        }
    }
    assert!(!a.url.is_empty(), "usage: load URL [--concurrency C] [--requests N | --seconds S] [--stream] [--model M]");
    a
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let a = args();
    let client = reqwest::Client::builder().tcp_nodelay(true).pool_max_idle_per_host(a.concurrency * 2).build().unwrap();
    let body =
        serde_json::json!({"model": a.model, "messages": [{"role": "user", "content": "Say something."}], "max_tokens": 16, "stream": a.stream}).to_string();
    let url = format!("{}/chat/completions", a.url.trim_end_matches('/'));
    let deadline = Instant::now() + Duration::from_secs_f64(a.seconds);
    let budget = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(a.requests.unwrap_or(usize::MAX)));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.concurrency {
        let (client, body, url, key, budget) = (client.clone(), body.clone(), url.clone(), a.key.clone(), budget.clone());
        let (stream, timed) = (a.stream, a.requests.is_none());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut ttft = Vec::new();
            let mut errors = 0usize;
            loop {
                if timed && Instant::now() >= deadline {
                    break;
                }
                if !timed && budget.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, |b| b.checked_sub(1)).is_err() {
                    break;
                }
                let start = Instant::now();
                let mut r = client.post(&url).header("content-type", "application/json").body(body.clone());
                if let Some(k) = &key {
                    r = r.bearer_auth(k);
                }
                let ok = match r.send().await {
                    Ok(resp) if resp.status().is_success() => {
                        if stream {
                            let mut s = resp.bytes_stream();
                            let mut first = true;
                            let mut whole = Vec::new();
                            while let Some(Ok(b)) = s.next().await {
                                if first {
                                    ttft.push(start.elapsed().as_secs_f64() * 1e3);
                                    first = false;
                                }
                                whole.extend_from_slice(&b);
                            }
                            whole.ends_with(b"data: [DONE]\n\n")
                        } else {
                            resp.bytes().await.is_ok()
                        }
                    }
                    _ => false,
                };
                if ok {
                    lat.push(start.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (lat, ttft, errors)
        }));
    }
    let (mut lat, mut ttft, mut errors) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (l, f, e) = t.await.unwrap();
        lat.extend(l);
        ttft.extend(f);
        errors += e;
    }
    let secs = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    ttft.sort_by(f64::total_cmp);
    println!(
        "{}",
        serde_json::json!({
            "requests": lat.len(), "errors": errors, "seconds": secs, "rps": lat.len() as f64 / secs,
            "p50_ms": percentile(&lat, 0.5), "p99_ms": percentile(&lat, 0.99),
            "ttft_p50_ms": percentile(&ttft, 0.5), "ttft_p99_ms": percentile(&ttft, 0.99),
        })
    );
}
