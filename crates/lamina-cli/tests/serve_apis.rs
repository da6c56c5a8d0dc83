//! `lamina serve`'s other front-ends end to end: the Responses API with the real `openai`
//! Python client, Anthropic's Messages API with the real `anthropic` client, `/tokenize`
//! and `/detokenize` against llama.cpp's reference tokenization, `GET /v1/models/{id}`,
//! and each API's error shape for bad input.

mod serve_support;

use serde_json::{json, Value};
use serve_support::{anthropic_python, Server};
use std::path::PathBuf;
use std::process::Command;

const MODEL: &str = "smollm2-135m-instruct";

/// Runs one of the client scripts beside `tests/openai/check_client.py` and asserts it passed.
fn run_script(python: &PathBuf, script: &str, args: &[&str], server: &Server) {
    let path = format!("{}/tests/openai/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(python).arg(&path).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{script}:\n{stdout}");
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("all checks passed"), "{stdout}");
}

#[test]
fn the_openai_and_anthropic_clients_speak_the_responses_and_messages_apis() {
    let Some(python) = anthropic_python() else { return };
    let server = Server::start(&["--api-key", "sk-test", "--ctx", "2048"]);
    run_script(&python, "check_responses.py", &[&server.base_url(), "sk-test", MODEL], &server);
    // The anthropic client adds /v1 itself.
    run_script(&python, "check_anthropic.py", &[&format!("http://127.0.0.1:{}", server.port), "sk-test", MODEL], &server);
}

#[test]
fn tool_calls_round_trip_through_the_responses_and_messages_apis() {
    let Some(python) = anthropic_python() else { return };
    let server = Server::start(&["--api-key", "sk-test", "--ctx", "2048"]);
    run_script(&python, "check_responses.py", &[&server.base_url(), "sk-test", MODEL, "--tools"], &server);
    run_script(&python, "check_anthropic.py", &[&format!("http://127.0.0.1:{}", server.port), "sk-test", MODEL, "--tools"], &server);
}

/// `../shared/reference/<name>` as JSON lines.
fn reference(name: &str) -> Vec<Value> {
    let path = format!("{}/../../../shared/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

#[test]
fn tokenize_and_detokenize_agree_with_llama_cpp_and_the_model_object_is_found() {
    let s = Server::start(&["--ctx", "1024"]);
    // Raw text, special tokens parsed, as llama.cpp's llama-tokenize gives it (no BOS: the
    // model asks for none).
    for r in reference("smollm2_tokenize.jsonl") {
        let text = r["text"].as_str().unwrap();
        let got = s.post_json("/tokenize", &json!({"model": MODEL, "prompt": text, "return_token_strs": true}));
        assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
        let v = got.json();
        assert_eq!(v["tokens"], r["ids"], "{text:?}");
        assert_eq!(v["count"].as_u64(), r["ids"].as_array().map(|a| a.len() as u64));
        assert_eq!(v["max_model_len"], 1024);
        assert_eq!(v["token_strs"].as_array().map(Vec::len), r["ids"].as_array().map(Vec::len));
        // And back.
        let back = s.post_json("/detokenize", &json!({"model": MODEL, "tokens": r["ids"]}));
        assert_eq!(back.status, 200);
        assert_eq!(back.json()["prompt"].as_str(), Some(text), "{text:?}");
    }
    // A conversation, rendered with the chat template: the ids transformers gave for the
    // same conversation (its system and user turns, read back from the rendered prompt).
    let chats: Vec<Value> =
        reference("smollm2_greedy_hf_f32.jsonl").into_iter().filter(|r| r["prompt"].as_str().unwrap().starts_with("<|im_start|>")).collect();
    assert!(!chats.is_empty());
    for r in chats {
        let prompt = r["prompt"].as_str().unwrap();
        let messages: Vec<Value> = prompt
            .split("<|im_start|>")
            .filter_map(|turn| turn.split_once('\n'))
            .filter(|(_, body)| body.contains("<|im_end|>"))
            .map(|(role, body)| json!({"role": role, "content": body.split("<|im_end|>").next().unwrap()}))
            .collect();
        assert_eq!(messages.len(), 2, "{prompt:?}");
        let v = s.post_json("/tokenize", &json!({"model": MODEL, "messages": messages})).json();
        assert_eq!(v["tokens"], r["prompt_ids"], "{prompt:?}");
    }
    // The model object, and an unknown one.
    let m = s.request("GET", &format!("/v1/models/{MODEL}"), &[], b"");
    assert_eq!(m.status, 200);
    let v = m.json();
    assert_eq!((v["id"].as_str(), v["object"].as_str()), (Some(MODEL), Some("model")));
    assert!(v["created"].as_u64().is_some_and(|c| c > 1_600_000_000) && v["owned_by"].is_string(), "{v}");
    let r = s.request("GET", "/v1/models/gpt-4", &[], b"");
    assert_eq!(r.status, 404);
    assert_eq!(r.error()["code"], "model_not_found");
}

#[test]
fn bad_input_on_the_new_endpoints_gets_each_api_s_error_shape() {
    let s = Server::start(&["--api-key", "k1", "--ctx", "256", "--max-body", "64KiB"]);
    let openai = [("Authorization", "Bearer k1"), ("Content-Type", "application/json")];
    let anthropic = [("x-api-key", "k1"), ("anthropic-version", "2023-06-01"), ("Content-Type", "application/json")];
    // OpenAI's shape on /v1/responses, /tokenize and /detokenize.
    let post = |path: &str, body: &Value| s.request("POST", path, &openai, body.to_string().as_bytes());
    let expect_openai = |r: serve_support::Response, status: u16, param: Option<&str>, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        let e = r.error();
        if let Some(p) = param {
            assert_eq!(e["param"].as_str(), Some(p), "{what}: {e}");
        }
        e
    };
    let e = expect_openai(
        post("/v1/responses", &json!({"model": MODEL, "input": "hi", "previous_response_id": "resp_unknown"})),
        404,
        Some("previous_response_id"),
        "unknown previous_response_id",
    );
    assert!(e["message"].as_str().unwrap().contains("resp_unknown"), "{e}");
    expect_openai(post("/v1/responses", &json!({"model": MODEL, "input": [{"type": "function_call_output"}]})), 400, Some("input[0]"), "item without call_id");
    expect_openai(post("/v1/responses", &json!({"model": MODEL, "input": 7})), 400, Some("input"), "numeric input");
    expect_openai(post("/v1/responses", &json!({"model": MODEL, "input": []})), 400, Some("input"), "no items");
    expect_openai(
        post("/v1/responses", &json!({"model": MODEL, "input": "hi", "tools": [{"type": "web_search"}]})),
        400,
        Some("tools[0].type"),
        "web search tool",
    );
    expect_openai(post("/v1/responses", &json!({"model": MODEL, "input": "hi", "max_output_tokens": 0})), 400, Some("max_output_tokens"), "no output tokens");
    let r = s.request("POST", "/v1/responses", &[], json!({"model": MODEL, "input": "hi"}).to_string().as_bytes());
    expect_openai(r, 401, None, "responses without a key");
    expect_openai(post("/tokenize", &json!({"model": MODEL})), 400, Some("prompt"), "nothing to tokenize");
    expect_openai(post("/tokenize", &json!({"model": MODEL, "prompt": "a", "messages": [{"role": "user", "content": "b"}]})), 400, Some("messages"), "both");
    expect_openai(post("/detokenize", &json!({"model": MODEL, "tokens": [1, 99999999]})), 400, Some("tokens[1]"), "token outside the vocabulary");
    expect_openai(post("/detokenize", &json!({"model": MODEL, "tokens": [-1]})), 400, Some("tokens[0]"), "negative token");
    expect_openai(post("/detokenize", &json!({"model": "nope", "tokens": [1]})), 404, None, "detokenize with an unknown model");

    // Anthropic's shape, and Anthropic's statuses, on /v1/messages.
    let msg = |max_tokens: Value| json!({"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]});
    let expect_anthropic = |r: serve_support::Response, status: u16, kind: &str, what: &str| {
        assert_eq!(r.status, status, "{what}: {}", String::from_utf8_lossy(&r.body));
        let v = r.json();
        assert_eq!(v["type"], "error", "{what}: {v}");
        assert_eq!(v["error"]["type"], kind, "{what}: {v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {v}");
        assert!(v.get("param").is_none() && v["error"].get("param").is_none(), "{what}: not Anthropic's shape: {v}");
        v["error"]["message"].as_str().unwrap().to_string()
    };
    let send = |headers: &[(&str, &str)], body: &[u8]| s.request("POST", "/v1/messages", headers, body);
    expect_anthropic(send(&[("Content-Type", "application/json")], msg(json!(4)).to_string().as_bytes()), 401, "authentication_error", "no key");
    expect_anthropic(send(&[("x-api-key", "nope")], msg(json!(4)).to_string().as_bytes()), 401, "authentication_error", "wrong key");
    let m = expect_anthropic(send(&anthropic, json!({"model": MODEL, "messages": []}).to_string().as_bytes()), 400, "invalid_request_error", "no max_tokens");
    assert!(m.contains("max_tokens"), "{m}");
    let m = expect_anthropic(send(&anthropic, msg(json!("many")).to_string().as_bytes()), 400, "invalid_request_error", "string max_tokens");
    assert!(m.starts_with("max_tokens"), "{m}");
    expect_anthropic(send(&anthropic, b"{\"model\": "), 400, "invalid_request_error", "truncated JSON");
    let mut bad = msg(json!(4));
    bad["messages"][0]["role"] = json!("system");
    expect_anthropic(send(&anthropic, bad.to_string().as_bytes()), 400, "invalid_request_error", "system role in messages");
    let mut bad = msg(json!(4));
    bad["messages"][0]["content"] = json!([{"type": "image", "source": {"type": "url", "url": "http://x"}}]);
    let m = expect_anthropic(send(&anthropic, bad.to_string().as_bytes()), 400, "invalid_request_error", "image block");
    assert!(m.contains("messages[0].content[0]") && m.contains("image"), "{m}");
    let mut bad = msg(json!(4));
    bad["model"] = json!("claude-3-opus");
    expect_anthropic(send(&anthropic, bad.to_string().as_bytes()), 404, "not_found_error", "unknown model");
    expect_anthropic(send(&anthropic, &vec![b'a'; 100 * 1024]), 413, "request_too_large", "100 KiB body");
    let r = s.request("POST", "/v1/messages/count_tokens", &anthropic, msg(json!(4)).to_string().as_bytes());
    expect_anthropic(r, 404, "not_found_error", "an endpoint this server does not have");
    let long = json!({"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "word ".repeat(400)}]});
    let m = expect_anthropic(send(&anthropic, long.to_string().as_bytes()), 400, "invalid_request_error", "prompt past the window");
    assert!(m.contains("256 tokens"), "{m}");
    // Bearer keys work on /v1/messages too, and the server still answers after all that.
    let r = send(&openai, msg(json!(4)).to_string().as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["type"], "text");
    assert!(v["usage"]["output_tokens"].as_u64().is_some_and(|n| (1..=4).contains(&n)), "{v}");
}
