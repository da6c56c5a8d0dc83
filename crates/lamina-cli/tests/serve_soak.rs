//! A bounded loopback soak of `lamina serve`: 64 concurrent streaming clients for three
//! minutes (`LAMINA_SOAK_SECS` to change it), some hanging up mid-stream. Every stream
//! that runs to its end is whole; memory stays flat after warm-up; no KV block leaks.

mod serve_support;

use serde_json::json;
use serve_support::{Connection, Server};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[test]
fn sixty_four_streaming_clients_with_disconnects() {
    let secs: u64 = std::env::var("LAMINA_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(180);
    let s = Server::start(&["--max-sequences", "16", "--max-queue", "1024", "--ctx", "1024"]);
    // Loaded (and its KV cache committed) before anything is measured.
    assert_eq!(
        s.post_json("/v1/chat/completions", &json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}))
            .status,
        200
    );
    let blocks_total = s.metric("lamina_kv_blocks_total");
    assert_eq!(s.metric("lamina_kv_blocks_used"), 0.0);
    let (whole, cut, failed) = (AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0));
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let mut rss_after_warmup = 0u64;
    let mut rss_peak_later = 0u64;
    std::thread::scope(|sc| {
        for client in 0..64u64 {
            let (s, whole, cut, failed, stop) = (&s, &whole, &cut, &failed, &stop);
            sc.spawn(move || {
                let mut round = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    round += 1;
                    let max_tokens = 16 + (client * 7 + round * 13) % 64;
                    let body = json!({"model": "smollm2-135m-instruct", "stream": true, "max_tokens": max_tokens, "temperature": 0.8, "seed": client * 1000 + round,
                        "messages": [{"role": "user", "content": format!("Client {client}, request {round}: tell me something about rivers.")}]});
                    // One request in five hangs up after a few events.
                    let hang_up_after = (client + round).is_multiple_of(5).then_some(3 + (round % 5) as usize);
                    match run_stream(s.port, &body, hang_up_after) {
                        Ok(true) => whole.fetch_add(1, Ordering::Relaxed),
                        Ok(false) => cut.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            eprintln!("client {client} request {round}: {e}");
                            failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                }
            });
        }
        let warmup = Duration::from_secs((secs / 6).max(5));
        while start.elapsed() < Duration::from_secs(secs) {
            std::thread::sleep(Duration::from_secs(1));
            let rss = s.rss();
            if start.elapsed() < warmup {
                rss_after_warmup = rss;
            } else {
                rss_peak_later = rss_peak_later.max(rss);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    let (whole, cut, failed) = (whole.into_inner(), cut.into_inner(), failed.into_inner());
    eprintln!(
        "soak {secs} s: {whole} whole streams, {cut} hung up, {failed} failed; RSS after warm-up {} MiB, peak later {} MiB",
        rss_after_warmup >> 20,
        rss_peak_later >> 20
    );
    assert_eq!(failed, 0, "{}", s.log());
    assert!(whole >= 64 && cut >= 8, "{whole} whole, {cut} cut");
    // Flat: within 10 % (allocator noise, the tokenizer's and template's caches).
    assert!(rss_peak_later as f64 <= rss_after_warmup as f64 * 1.10, "RSS grew from {} to {} MiB", rss_after_warmup >> 20, rss_peak_later >> 20);
    // Every block back once the hung-up clients' sequences are reaped.
    let t0 = Instant::now();
    while s.metric("lamina_kv_blocks_used") != 0.0 && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.metric("lamina_kv_blocks_used"), 0.0, "blocks leaked");
    assert_eq!(s.metric("lamina_kv_blocks_free"), blocks_total);
    assert_eq!(s.metric("lamina_running_sequences"), 0.0);
    assert_eq!(s.metric("lamina_queue_depth"), 0.0);
}

/// Streams one request. `Ok(true)`: it ended with a finish reason and `[DONE]`, every
/// chunk well-formed; `Ok(false)`: we hung up as planned.
fn run_stream(port: u16, body: &serde_json::Value, hang_up_after: Option<usize>) -> Result<bool, String> {
    let mut c = Connection::open(port, "POST", "/v1/chat/completions", &[("Content-Type", "application/json")], body.to_string().as_bytes())
        .map_err(|e| e.to_string())?;
    if c.status != 200 {
        return Err(format!("status {}", c.status));
    }
    let mut decoder = lamina_api::SseDecoder::new();
    let (mut events, mut finished, mut done) = (0usize, false, false);
    while let Some(chunk) = c.next_chunk().map_err(|e| e.to_string())? {
        for e in decoder.feed(&chunk) {
            if done {
                return Err("data after [DONE]".into());
            }
            if e.is_done() {
                done = true;
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(&e.data).map_err(|err| format!("bad chunk {:?}: {err}", e.data))?;
            if v.get("error").is_some() {
                return Err(format!("error event {v}"));
            }
            finished |= v["choices"][0]["finish_reason"].is_string();
            events += 1;
            if hang_up_after.is_some_and(|n| events >= n) {
                return Ok(false);
            }
        }
    }
    if done && finished {
        Ok(true)
    } else {
        Err(format!("stream ended without {}", if done { "a finish reason" } else { "[DONE]" }))
    }
}
