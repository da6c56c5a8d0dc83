//! `lamina serve` end to end: the real `openai` Python client, OpenAI's error shapes for
//! every kind of bad input, greedy output that does not depend on batching or
//! pre-emption, prefix-cache sharing seen through `/metrics`, a multi-turn chat hitting
//! the cache, back-pressure (429) and a clean SIGTERM.

mod lora_support;
mod serve_support;

use serde_json::{json, Value};
use serve_support::{openai_python, stream_events, stream_text, Server};
use std::process::Command;

fn chat(content: &str, max_tokens: u64) -> Value {
    json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens, "temperature": 0})
}

#[test]
fn the_openai_python_client_works_unchanged() {
    let Some(python) = openai_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    // A second, different model: the default one re-quantized to Q8_0.
    let default = lamina_core::registry::default_model_path().unwrap();
    let q8 = dir.path().join("smollm2-q8.gguf");
    let st = Command::new(env!("CARGO_BIN_EXE_lamina")).arg("quantize").arg(&default).arg(&q8).args(["--type", "q8_0"]).output().unwrap();
    assert!(st.status.success(), "{}", String::from_utf8_lossy(&st.stderr));
    let server = Server::start(&["smollm2-135m-instruct", &format!("q8={}", q8.display()), "--api-key", "sk-test", "--ctx", "2048"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check_client.py");
    let out = Command::new(python).arg(script).args([&server.base_url(), "sk-test", "smollm2-135m-instruct", "q8"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "openai client checks failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("all checks passed"));
}

#[test]
fn bad_input_gets_openai_errors_and_the_right_status() {
    let s = Server::start(&["--api-key", "k1", "--ctx", "256", "--max-body", "64KiB"]);
    let auth = [("Authorization", "Bearer k1"), ("Content-Type", "application/json")];
    let post = |body: &[u8]| s.request("POST", "/v1/chat/completions", &auth, body);
    let expect = |r: serve_support::Response, status: u16, param: Option<&str>, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        let e = r.error();
        if let Some(p) = param {
            assert_eq!(e["param"].as_str(), Some(p), "{what}: {e}");
        }
        e
    };
    // Authentication.
    let r = s.request("POST", "/v1/chat/completions", &[], chat("hi", 4).to_string().as_bytes());
    expect(r, 401, None, "no key");
    let r = s.request("GET", "/v1/models", &[("Authorization", "Bearer nope")], b"");
    expect(r, 401, None, "wrong key");
    // Malformed JSON, invalid UTF-8, wrong types, unknown role.
    expect(post(b"{\"model\": "), 400, None, "truncated JSON");
    expect(post(b"{\"model\": \"x\xff\"}"), 400, None, "invalid UTF-8");
    let mut bad = chat("hi", 4);
    bad["temperature"] = json!("hot");
    expect(post(bad.to_string().as_bytes()), 400, Some("temperature"), "string temperature");
    let mut bad = chat("hi", 4);
    bad["messages"][0]["content"] = json!(42);
    expect(post(bad.to_string().as_bytes()), 400, Some("messages[0].content"), "numeric content");
    let mut bad = chat("hi", 4);
    bad["messages"][0]["role"] = json!("wizard");
    expect(post(bad.to_string().as_bytes()), 400, None, "unknown role");
    // Unknown fields are ignored, as OpenAI does.
    let mut extra = chat("hi", 4);
    extra["frobnicate"] = json!({"a": 1});
    let r = post(extra.to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    // Unknown models, and names that look like paths, never reach the file system.
    for name in ["gpt-4", "../../../etc/passwd", "/root/.cache/lamina/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf"] {
        let mut b = chat("hi", 4);
        b["model"] = json!(name);
        let e = expect(post(b.to_string().as_bytes()), 404, None, name);
        assert_eq!(e["code"], "model_not_found");
    }
    // Over the body limit.
    let huge = vec![b'a'; 100 * 1024];
    expect(post(&huge), 413, None, "100 KiB body");
    // A prompt longer than the context window: 400 naming both counts, never truncated.
    let long = "word ".repeat(400);
    let e = expect(post(chat(&long, 4).to_string().as_bytes()), 400, Some("messages"), "long prompt");
    assert_eq!(e["code"], "context_length_exceeded");
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("256 tokens") && msg.chars().filter(|c| c.is_ascii_digit()).count() >= 6, "{msg}");
    // max_tokens past the window.
    let e = expect(post(chat("hi", 1000).to_string().as_bytes()), 400, Some("messages"), "max_tokens past the window");
    assert!(e["message"].as_str().unwrap().contains("1000 in the completion"), "{e}");
    // Out-of-range values.
    let mut b = chat("hi", 4);
    b["logit_bias"] = json!({"99999999": 5});
    expect(post(b.to_string().as_bytes()), 400, Some("logit_bias"), "logit_bias token outside the vocabulary");
    let mut b = chat("hi", 4);
    b["n"] = json!(0);
    expect(post(b.to_string().as_bytes()), 400, Some("n"), "n = 0");
    // Unknown routes answer in the same shape.
    let r = s.request("GET", "/v2/everything", &auth, b"");
    expect(r, 404, None, "unknown route");
    // /health and /metrics need no key.
    assert_eq!(s.request("GET", "/health", &[], b"").status, 200);
    assert!(s.metric("lamina_requests_total") >= 10.0);
    // The server is still fine after all that.
    let r = post(chat("Say hello.", 4).to_string().as_bytes());
    assert_eq!(r.status, 200);
    assert!(r.json()["choices"][0]["message"]["content"].as_str().is_some());
}

#[test]
fn greedy_output_is_the_same_alone_and_in_batches_even_when_preempted() {
    let prompts: Vec<String> = (0..16).map(|i| format!("Write a sentence about the number {i}.")).collect();
    // Alone, one request at a time.
    let solo = Server::start(&["--max-sequences", "1", "--ctx", "512"]);
    let alone: Vec<String> = prompts
        .iter()
        .map(|p| {
            let r = solo.post_json("/v1/chat/completions", &chat(p, 32));
            assert_eq!(r.status, 200);
            r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string()
        })
        .collect();
    drop(solo);
    // 16 sequences in a KV pool of 9 blocks of 16 positions: 144 positions for 16
    // prompts of ~40 tokens plus 32 generated each.
    let block = 2 * 30 * 3 * 16 * 64 * 2; // SmolLM2: 30 layers × 3 KV heads × 16 positions × 64 dims, f16, keys and values
    for (label, args) in [
        ("batched", vec!["--max-sequences".to_string(), "16".into(), "--ctx".into(), "512".into()]),
        (
            "pre-empted",
            vec![
                "--max-sequences".into(),
                "16".into(),
                "--ctx".into(),
                "128".into(),
                "--block-size".into(),
                "16".into(),
                "--kv-memory".into(),
                format!("{}", 9 * block),
            ],
        ),
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let s = Server::start(&args);
        for batch in [1usize, 4, 8, 16] {
            let got: Vec<String> = std::thread::scope(|sc| {
                let handles: Vec<_> = prompts[..batch]
                    .iter()
                    .map(|p| {
                        let s = &s;
                        sc.spawn(move || {
                            let (status, events) = stream_events(
                                s.port,
                                "/v1/chat/completions",
                                &{
                                    let mut b = chat(p, 32);
                                    b["stream"] = json!(true);
                                    b
                                },
                                |_| false,
                            );
                            assert_eq!(status, 200);
                            assert_eq!(events.last(), Some(&json!("[DONE]")));
                            stream_text(&events, 0)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            for (i, g) in got.iter().enumerate() {
                assert_eq!(g, &alone[i], "{label}: prompt {i} in a batch of {batch}");
            }
        }
        if label == "pre-empted" {
            let n = s.metric("lamina_preemptions_total");
            assert!(n >= 4.0, "only {n} pre-emptions: the pool is not tight enough to test them\n{}", s.log());
        }
        assert_eq!(s.metric("lamina_kv_blocks_used"), 0.0, "{label}: blocks still in use");
    }
}

#[test]
fn concurrent_requests_share_a_system_prompt_and_a_chat_hits_the_cache_each_turn() {
    let s = Server::start(&["--ctx", "4096"]);
    let bs = 32usize;
    let system: String = (0..70).map(|i| format!("Rule {i}: answer in one short sentence. ")).collect();
    let body = |q: &str, max: u64| {
        json!({"model": "smollm2-135m-instruct", "max_tokens": max, "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}]})
    };
    // 8 concurrent requests; /metrics sampled while they run.
    let peak = std::sync::atomic::AtomicU64::new(0);
    let done = std::sync::atomic::AtomicBool::new(false);
    let usages: Vec<Value> = std::thread::scope(|sc| {
        sc.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(s.metric("lamina_kv_blocks_used") as u64, std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        let hs: Vec<_> = (0..8)
            .map(|i| {
                let (s, b) = (&s, body(&format!("What is {i} times {i}?"), 48));
                sc.spawn(move || {
                    let (status, ev) = stream_events(s.port, "/v1/chat/completions", &b, |_| false);
                    assert_eq!(status, 200);
                    ev.iter().rev().find(|e| !e["usage"].is_null() && e.get("usage").is_some()).unwrap()["usage"].clone()
                })
            })
            .collect();
        let u = hs.into_iter().map(|h| h.join().unwrap()).collect();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        u
    });
    let prompt = usages[0]["prompt_tokens"].as_u64().unwrap() as usize;
    assert!(prompt >= 600, "system prompt of {prompt} tokens");
    let shared = (prompt - 20) / bs; // full blocks of the common part (the question is under 20 tokens)
    let peak = peak.into_inner() as usize;
    // Held once: the shared blocks plus, per request, its question, reply and one
    // partly shared block; 8 private copies would be 8 × 20+.
    assert!(peak <= shared + 8 * 4, "peak {peak} KV blocks in use for 8 requests sharing {shared} blocks");
    let mut cached: Vec<u64> = usages.iter().map(|u| u["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap()).collect();
    cached.sort();
    assert!(cached[1..].iter().all(|&c| c as usize >= shared * bs), "cached tokens {cached:?}, shared blocks {shared}");
    // A 10-turn chat replayed through the API: each turn recomputes only its new tokens
    // (the previous reply's end-of-turn markup, the new question) and at most one
    // partly filled block.
    let mut messages = vec![json!({"role": "system", "content": "You are a helpful assistant."})];
    let mut seen = 0usize;
    for turn in 0..10 {
        messages.push(json!({"role": "user", "content": format!("Tell me one fact about the number {turn}.")}));
        let r = s.post_json("/v1/chat/completions", &json!({"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 40, "temperature": 0}));
        assert_eq!(r.status, 200);
        let v = r.json();
        let (p, c) = (v["usage"]["prompt_tokens"].as_u64().unwrap() as usize, v["usage"]["completion_tokens"].as_u64().unwrap() as usize);
        let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap() as usize;
        if turn > 0 {
            let new_tokens = p - seen;
            assert!(p - cached <= new_tokens + bs, "turn {turn}: {cached} of {p} prompt tokens cached; {new_tokens} are new since the last turn");
        }
        seen = p + c;
        messages.push(json!({"role": "assistant", "content": v["choices"][0]["message"]["content"]}));
    }
    assert!(s.metric("lamina_prefix_cache_hit_rate") > 0.5);
}

#[test]
fn a_full_queue_answers_429_and_sigterm_lets_running_streams_finish() {
    let s = Server::start(&["--max-sequences", "1", "--max-queue", "1"]);
    // Loaded before the race (a model loads on its first request).
    assert_eq!(s.post_json("/v1/chat/completions", &chat("hi", 1)).status, 200);
    let long = |n: u64| {
        let mut b = chat("Count from one to one hundred.", n);
        b["stream"] = json!(true);
        b["ignore_eos"] = json!(true);
        b
    };
    let statuses: Vec<(u16, Option<String>)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..4)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    std::thread::sleep(std::time::Duration::from_millis(150 * i));
                    let r = s.request("POST", "/v1/chat/completions", &[("Content-Type", "application/json")], long(60).to_string().as_bytes());
                    (r.status, r.header("retry-after").map(String::from))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let limited: Vec<_> = statuses.iter().filter(|s| s.0 == 429).collect();
    assert!(ok >= 2 && !limited.is_empty(), "{statuses:?}");
    assert!(limited.iter().all(|s| s.1.as_deref().is_some_and(|v| v.parse::<u32>().is_ok())), "429 without Retry-After: {statuses:?}");

    // SIGTERM while a stream runs: it completes, the process exits 0, and new
    // connections are refused.
    let mut s = s;
    let port = s.port;
    let (status, events) = std::thread::scope(|sc| {
        let h = sc.spawn(move || stream_events(port, "/v1/chat/completions", &long(80), |_| false));
        std::thread::sleep(std::time::Duration::from_millis(800));
        s.terminate();
        h.join().unwrap()
    });
    assert_eq!(status, 200);
    assert_eq!(events.last(), Some(&json!("[DONE]")), "the stream was cut: {:?}", events.last());
    let finish = events.iter().rev().find_map(|e| e["choices"][0]["finish_reason"].as_str().map(String::from));
    assert_eq!(finish.as_deref(), Some("length"));
    let code = s.child.wait().unwrap();
    assert!(code.success(), "exit status {code}: {}", s.log());
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn a_model_that_cannot_fit_the_memory_budget_is_refused_with_its_sizes() {
    let s = Server::start(&["--memory", "20MiB"]);
    let r = s.post_json("/v1/chat/completions", &chat("hi", 4));
    assert_eq!(r.status, 503, "{}", String::from_utf8_lossy(&r.body));
    let msg = r.error()["message"].as_str().unwrap().to_string();
    assert!(msg.contains("MiB") && msg.contains("budget"), "{msg}");
    assert!(r.header("retry-after").is_some());
    // Still serving (health, and the same clear answer again).
    assert_eq!(s.request("GET", "/health", &[], b"").status, 200);
    assert_eq!(s.post_json("/v1/chat/completions", &chat("hi", 4)).status, 503);
}

#[test]
fn the_prefix_cache_survives_a_restart_with_cache_dir() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kv");
    let args = ["--cache-dir", cache.to_str().unwrap(), "--ctx", "2048"];
    let system: String = (0..70).map(|i| format!("Rule {i}: answer in one short sentence. ")).collect();
    let body = json!({"model": "smollm2-135m-instruct", "max_tokens": 4, "temperature": 0,
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Hello?"}]});
    let cached = |s: &Server| {
        let r = s.post_json("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        (v["usage"]["prompt_tokens"].as_u64().unwrap(), v["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap())
    };
    let stop = |mut s: Server| {
        s.terminate();
        assert!(s.child.wait().unwrap().success(), "{}", s.log());
    };
    let a = Server::start(&args);
    let (prompt, first) = cached(&a);
    assert_eq!(first, 0);
    stop(a);
    let files: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(files.len(), 1, "{files:?}");
    // After a restart the whole prompt but its last partial block comes from the cache.
    let b = Server::start(&args);
    let (_, again) = cached(&b);
    assert!(again >= prompt - 32 && again > 0, "{again} of {prompt} cached after the restart");
    stop(b);
    // A damaged file: refused with a warning; the server serves with an empty cache.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&files[0], bytes).unwrap();
    let c = Server::start(&args);
    let (_, after_damage) = cached(&c);
    assert_eq!(after_damage, 0);
    assert!(c.log().contains("checksum"), "{}", c.log());
}

#[test]
fn models_load_on_demand_unload_when_idle_and_make_room_for_each_other() {
    let path = lamina_core::registry::default_model_path().unwrap();
    let file = std::fs::metadata(&path).unwrap().len();
    // Room for one copy of the weights and its 8 MiB KV cache, not for two.
    let memory = (file as f64 * 1.5) as u64;
    let (a, b) = (format!("a={}", path.display()), format!("b={}", path.display()));
    let s = Server::start(&[&a, &b, "--memory", &memory.to_string(), "--kv-memory", "8MiB", "--ctx", "512", "--idle-unload", "2s"]);
    let ask = |model: &str| {
        let mut body = chat("Say one word.", 4);
        body["model"] = json!(model);
        let r = s.post_json("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{model}: {}\n{}", String::from_utf8_lossy(&r.body), s.log());
        assert_eq!(r.json()["model"], model);
    };
    let loaded = |model: &str| {
        let text = String::from_utf8(s.request("GET", "/metrics", &[], b"").body).unwrap();
        text.lines().any(|l| l.starts_with(&format!("lamina_kv_blocks_total{{model=\"{model}\"}}")) && !l.ends_with(" 0"))
    };
    assert!(!loaded("a") && !loaded("b"), "nothing loads before it is asked for");
    ask("a");
    assert!(loaded("a"));
    // b does not fit beside a: the idle a is unloaded to make room.
    ask("b");
    assert!(loaded("b") && !loaded("a"), "{}", s.log());
    ask("a");
    assert!(loaded("a") && !loaded("b"));
    // Idle for longer than --idle-unload: unloaded; the next request loads it again.
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert!(!loaded("a"), "a was not unloaded when idle");
    ask("a");
    assert!(loaded("a"));
}

#[test]
fn a_client_that_never_finishes_its_request_stalls_no_one() {
    use std::io::Write;
    let s = Server::start(&[]);
    // Half a request line, half a body: held open for the whole test.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    slow.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{\"model\": \"smol").unwrap();
    let mut half = std::net::TcpStream::connect(("127.0.0.1", s.port)).unwrap();
    half.write_all(b"GET /v1/mod").unwrap();
    for _ in 0..3 {
        let r = s.post_json("/v1/chat/completions", &chat("Say hi.", 4));
        assert_eq!(r.status, 200);
    }
    drop((slow, half));
    assert_eq!(s.request("GET", "/health", &[], b"").status, 200);
}

#[test]
fn speculative_serving_gives_the_same_text_and_publishes_its_acceptance() {
    let body =
        chat("Repeat this text exactly:\n\nMonday: team meeting at nine. Tuesday: dentist at three. Wednesday: pick up the parcel from the post office.", 40);
    let reply = |s: &Server| {
        let r = s.post_json("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        r.json()["choices"][0]["message"]["content"].as_str().unwrap().to_string()
    };
    let plain = Server::start(&["--ctx", "512"]);
    let want = reply(&plain);
    assert_eq!(plain.metric("lamina_spec_draft_tokens_total"), 0.0);
    drop(plain);
    let s = Server::start(&["--ctx", "512", "--speculative", "lookup"]);
    assert_eq!(reply(&s), want);
    let (drafted, kept) = (s.metric("lamina_spec_draft_tokens_total"), s.metric("lamina_spec_accepted_tokens_total"));
    assert!(kept > 5.0 && kept <= drafted, "{kept} of {drafted} drafts kept");
    let rate = s.metric("lamina_spec_acceptance_rate");
    assert!((rate - kept / drafted).abs() < 1e-9, "acceptance rate {rate}, counters {kept} / {drafted}");
}

/// `lamina serve --lora`: adapters chosen per request by `model`, giving the greedy text of
/// `lamina run --lora` with the same adapter, alone and batched with requests on the base
/// and on another adapter; added and removed over HTTP at run time; bad input refused.
#[test]
fn lora_adapters_are_served_per_request_and_loaded_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let a = lora_support::random_smollm2_adapter(dir.path(), "a", 7);
    let b = lora_support::random_smollm2_adapter(dir.path(), "b", 99);
    let prompt = "The capital of France is";
    let run = |lora: Option<&std::path::Path>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lamina"));
        cmd.args(["run", "-p", prompt, "--temperature", "0", "-n", "12"]);
        if let Some(l) = lora {
            cmd.arg("--lora").arg(l);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().strip_suffix('\n').unwrap().to_string()
    };
    let (want_base, want_a, want_b) = (run(None), run(Some(&a)), run(Some(&b)));
    assert!(want_a != want_base && want_b != want_base && want_a != want_b);

    let s = Server::start(&["--lora", &format!("poet={}", a.display()), "--lora", &format!("smollm2-135m-instruct:critic={}", b.display())]);
    let complete = |model: &str| {
        let r = s.post_json("/v1/completions", &json!({"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0}));
        assert_eq!(r.status, 200, "{model}: {}\n{}", String::from_utf8_lossy(&r.body), s.log());
        assert_eq!(r.json()["model"], model);
        r.json()["choices"][0]["text"].as_str().unwrap().to_string()
    };
    assert_eq!(complete("poet"), want_a);
    assert_eq!(complete("smollm2-135m-instruct:poet"), want_a);
    assert_eq!(complete("critic"), want_b);
    assert_eq!(complete("smollm2-135m-instruct"), want_base);
    // Together, in the same batches: each still gets its own text.
    let texts: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = ["poet", "smollm2-135m-instruct", "critic", "poet"].into_iter().map(|m| sc.spawn(move || complete(m))).collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(texts, [want_a.clone(), want_base.clone(), want_b.clone(), want_a.clone()]);
    let models = s.request("GET", "/v1/models", &[], b"").json();
    let ids: Vec<&str> = models["data"].as_array().unwrap().iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&"smollm2-135m-instruct:poet") && ids.contains(&"smollm2-135m-instruct:critic"), "{ids:?}");

    // Run-time loading and unloading.
    let r = s.post_json("/v1/adapters", &json!({"name": "late", "path": a.display().to_string(), "scale": 1.0}));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["id"], "smollm2-135m-instruct:late");
    assert_eq!(complete("late"), want_a);
    let list = s.request("GET", "/v1/adapters", &[], b"").json();
    assert_eq!(list["data"].as_array().unwrap().len(), 3);
    assert_eq!(s.request("DELETE", "/v1/adapters/late", &[], b"").status, 200);
    let gone = s.post_json("/v1/completions", &json!({"model": "late", "prompt": prompt, "max_tokens": 2}));
    assert_eq!((gone.status, gone.error()["code"].as_str()), (404, Some("model_not_found")));
    // Bad input: a missing folder, a taken name, an unknown field, a model as adapter.
    let missing = s.post_json("/v1/adapters", &json!({"name": "x", "path": dir.path().join("nope").display().to_string()}));
    assert_eq!(missing.status, 400, "{}", String::from_utf8_lossy(&missing.body));
    assert!(missing.error()["message"].as_str().unwrap().contains("nope"));
    assert_eq!(s.post_json("/v1/adapters", &json!({"name": "poet", "path": a.display().to_string()})).status, 400);
    assert_eq!(s.post_json("/v1/adapters", &json!({"name": "y", "path": a.display().to_string(), "rank": 4})).status, 400);
    assert_eq!(s.request("DELETE", "/v1/adapters/smollm2-135m-instruct", &[], b"").status, 400);
    assert_eq!(complete("poet"), want_a, "the other adapters are untouched");
}
