//! A backend that answers at once, for measuring what a gateway adds
//! (`bench/gateway/run.sh`): `POST /v1/chat/completions` returns a fixed 16-token answer
//! (streamed as 16 chunks when asked), with usage; `GET /health` is 200.
//!
//!     cargo run --release -p lamina-gateway --example fast_backend -- 127.0.0.1:9100

use axum::body::Body;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

const WORDS: [&str; 16] =
    ["The ", "quick ", "brown ", "fox ", "jumps ", "over ", "the ", "lazy ", "dog ", "and ", "runs ", "far ", "into ", "the ", "green ", "woods."];

async fn chat(body: axum::body::Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = req["model"].as_str().unwrap_or("fast").to_string();
    let usage = serde_json::json!({"prompt_tokens": 12, "completion_tokens": 16, "total_tokens": 28});
    if req["stream"] != true {
        let v = serde_json::json!({"id": "fast-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": WORDS.concat()}, "finish_reason": "stop"}], "usage": usage});
        return Response::builder().header("content-type", "application/json").body(Body::from(v.to_string())).unwrap();
    }
    let mut out = String::new();
    for (i, w) in WORDS.iter().enumerate() {
        let delta = if i == 0 { serde_json::json!({"role": "assistant", "content": w}) } else { serde_json::json!({"content": w}) };
        let c = serde_json::json!({"id": "fast-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
        out.push_str(&format!("data: {c}\n\n"));
    }
    let fin = serde_json::json!({"id": "fast-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]});
    out.push_str(&format!("data: {fin}\n\n"));
    if req["stream_options"]["include_usage"] == true {
        let u = serde_json::json!({"id": "fast-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage});
        out.push_str(&format!("data: {u}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    Response::builder().header("content-type", "text/event-stream").body(Body::from(out)).unwrap()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() {
    let addr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:9100".into());
    let app = Router::new().route("/v1/chat/completions", post(chat)).route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
    eprintln!("fast backend on http://{addr}");
    axum::serve(listener, app).await.expect("serve");
}
