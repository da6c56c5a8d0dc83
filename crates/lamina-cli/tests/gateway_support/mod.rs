//! A backend that fails on command, for the gateway tests: a real HTTP/1.1 server on a
//! loopback port (plain threads, so the bytes it sends are exactly those meant, and it
//! can hang up mid-stream). The deployment's model name is the command:
//!
//! - `ok` — an answer, "fault backend ok", with usage 1234 prompt (200 cached) and 77
//!   completion (7 reasoning) tokens; streamed as OpenAI streams it when asked;
//! - `status:CODE` — that status with an OpenAI error body (429 with `Retry-After: 0`);
//! - `overflow` — 400 `context_length_exceeded`; `bad-request` — 400 about `temperature`;
//! - `flaky:N` — status 500 for the first N requests, then `ok`;
//! - `slow:MS` — `ok` after MS milliseconds; `hang` — nothing for a minute;
//! - `drip:MS` — `ok`, streamed with MS milliseconds between chunks;
//! - `malformed` — 200 with a body that is not JSON; `no-choices` — 200 with `{}`;
//! - `cut-before` — a stream's headers, then the connection closes;
//! - `cut-after:N` — N content chunks (`w0 w1 ...`), then the connection closes;
//! - `garbage-after:N` — N content chunks, then an event that is not JSON;
//! - `continue` — answers `<continued:TEXT>` when asked to continue the final assistant
//!   message TEXT (`continue_final_message`), else `<fresh>`.
//!
//! Every request body is kept, by model name, for the tests to inspect.

#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct FaultBackend {
    pub port: u16,
    bodies: Arc<Mutex<HashMap<String, Vec<Value>>>>,
}

impl FaultBackend {
    pub fn start() -> FaultBackend {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies: Arc<Mutex<HashMap<String, Vec<Value>>>> = Arc::default();
        let b = bodies.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let b = b.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &b);
                });
            }
        });
        FaultBackend { port, bodies }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Requests received for `model`.
    pub fn count(&self, model: &str) -> usize {
        self.bodies.lock().unwrap().get(model).map_or(0, Vec::len)
    }

    pub fn bodies(&self, model: &str) -> Vec<Value> {
        self.bodies.lock().unwrap().get(model).cloned().unwrap_or_default()
    }
}

pub const OK_TEXT: &str = "fault backend ok";
/// The usage `ok` reports.
pub const OK_USAGE: (u64, u64, u64, u64) = (1234, 200, 77, 7);

fn usage() -> Value {
    let (p, c, o, r) = OK_USAGE;
    json!({"prompt_tokens": p, "completion_tokens": o, "total_tokens": p + o,
           "prompt_tokens_details": {"cached_tokens": c}, "completion_tokens_details": {"reasoning_tokens": r}})
}

fn handle(mut conn: TcpStream, bodies: &Mutex<HashMap<String, Vec<Value>>>) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut length = 0usize;
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = req["model"].as_str().unwrap_or("").to_string();
    let n = {
        let mut b = bodies.lock().unwrap();
        let list = b.entry(model.clone()).or_default();
        list.push(req.clone());
        list.len()
    };
    let stream = req["stream"] == true;
    let (mode, arg) = model.split_once(':').unwrap_or((model.as_str(), ""));
    let arg_n: u64 = arg.parse().unwrap_or(0);
    let reply_error = |conn: &mut TcpStream, status: u16, code: Option<&str>, message: &str| {
        let body = json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}}).to_string();
        let extra = if status == 429 { "Retry-After: 0\r\n" } else { "" };
        write!(conn, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}", body.len())
    };
    match mode {
        "status" => return reply_error(&mut conn, arg_n as u16, None, &format!("fault backend: status {arg_n} as asked")),
        "overflow" => return reply_error(&mut conn, 400, Some("context_length_exceeded"), "This model's maximum context length is 16 tokens"),
        "bad-request" => return reply_error(&mut conn, 400, None, "temperature must be at most 2"),
        "flaky" if n as u64 <= arg_n => return reply_error(&mut conn, 500, None, "fault backend: flaky"),
        "hang" => {
            std::thread::sleep(Duration::from_secs(60));
            return Ok(());
        }
        "slow" => std::thread::sleep(Duration::from_millis(arg_n)),
        "malformed" => {
            let body = "{not json";
            return write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        }
        "no-choices" => return write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"),
        _ => {}
    }
    let text = match mode {
        "continue" if req["continue_final_message"] == true => {
            let last = req["messages"].as_array().and_then(|m| m.last()).cloned().unwrap_or_default();
            format!("<continued:{}>", last["content"].as_str().unwrap_or(""))
        }
        "continue" => "<fresh>".to_string(),
        _ => OK_TEXT.to_string(),
    };
    let chat = path.ends_with("/chat/completions");
    if !stream {
        let choice = if chat {
            json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"})
        } else {
            json!({"index": 0, "text": text, "finish_reason": "stop"})
        };
        let body = json!({"id": "fb-1", "object": "chat.completion", "created": 1, "model": model, "choices": [choice], "usage": usage()}).to_string();
        return write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    }
    write!(conn, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")?;
    let send = |conn: &mut TcpStream, data: &str| -> std::io::Result<()> {
        let event = format!("data: {data}\n\n");
        write!(conn, "{:x}\r\n{event}\r\n", event.len())?;
        conn.flush()
    };
    let chunk = |delta: Value, finish: Value| {
        let choice = if chat {
            json!({"index": 0, "delta": delta, "finish_reason": finish})
        } else {
            json!({"index": 0, "text": delta["content"].as_str().unwrap_or(""), "finish_reason": finish})
        };
        json!({"id": "fb-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [choice]}).to_string()
    };
    match mode {
        "cut-before" => return Ok(()),
        "cut-after" | "garbage-after" => {
            for i in 0..arg_n {
                let delta = if i == 0 { json!({"role": "assistant", "content": format!("w{i} ")}) } else { json!({"content": format!("w{i} ")}) };
                send(&mut conn, &chunk(delta, Value::Null))?;
                std::thread::sleep(Duration::from_millis(5));
            }
            if mode == "garbage-after" {
                send(&mut conn, "{oops")?;
            }
            return Ok(());
        }
        _ => {}
    }
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
    for (i, w) in words.iter().enumerate() {
        let delta = if i == 0 { json!({"role": "assistant", "content": w}) } else { json!({"content": w}) };
        send(&mut conn, &chunk(delta, Value::Null))?;
        if mode == "drip" {
            std::thread::sleep(Duration::from_millis(arg_n));
        }
    }
    send(&mut conn, &chunk(json!({}), json!("stop")))?;
    if req["stream_options"]["include_usage"] == true {
        send(&mut conn, &json!({"id": "fb-s", "object": "chat.completion.chunk", "created": 1, "model": model, "choices": [], "usage": usage()}).to_string())?;
    }
    send(&mut conn, "[DONE]")?;
    write!(conn, "0\r\n\r\n")
}
