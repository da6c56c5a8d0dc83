//! Structured output and tool calls end to end: the `openai` Python client against a real
//! `lamina serve`, every reply checked by the independent `jsonschema` validator (20 JSON
//! schemas at temperature 1; required, named and `auto` tool calls, whole and streamed,
//! two tools in one reply); and the bad input each feature can get, as 400s naming it.

mod serve_support;

use serde_json::{json, Value};
use serve_support::{openai_python, Server};
use std::process::Command;

#[test]
fn json_schemas_and_tool_calls_with_the_openai_client() {
    let Some(python) = openai_python() else { return };
    let Some(python) = serve_support::with_package(&python, "jsonschema", "4.26.0") else { return };
    let server = Server::start(&["smollm2-135m-instruct", "--ctx", "2048"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check_structured.py");
    let out = Command::new(python).arg(script).args([&server.base_url(), "smollm2-135m-instruct"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "structured output checks failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("all checks passed"));
}

#[test]
fn grammars_and_tools_that_cannot_be_followed_are_400s() {
    let s = Server::start(&["smollm2-135m-instruct", "--ctx", "512"]);
    let expect = |path: &str, body: Value, param: &str, says: &str| {
        let r = s.post_json(path, &body);
        let text = String::from_utf8_lossy(&r.body).into_owned();
        assert_eq!(r.status, 400, "{text}");
        let e: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(e["error"]["type"], "invalid_request_error", "{text}");
        assert_eq!(e["error"]["param"], param, "{text}");
        assert!(e["error"]["message"].as_str().unwrap().contains(says), "{text}");
    };
    let chat = |extra: Value| {
        let mut b = json!({"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8});
        b.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        b
    };
    let schema = |s: Value| chat(json!({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": s}}}));
    expect(
        "/v1/chat/completions",
        schema(json!({"type": "integer", "minimum": 5, "maximum": 1})),
        "response_format",
        "minimum (5) is greater than maximum (1)",
    );
    expect("/v1/chat/completions", schema(json!({"type": "objekt"})), "response_format", "objekt");
    let tool = |params: Value| json!({"type": "function", "function": {"name": "f", "parameters": params}});
    expect(
        "/v1/chat/completions",
        chat(json!({"tools": [tool(json!({"type": "object", "properties": {"a": {"type": "strin"}}}))]})),
        "tools[0].function.parameters",
        "strin",
    );
    expect("/v1/chat/completions", chat(json!({"tools": [tool(json!(7))]})), "tools[0].function.parameters", "not a valid JSON schema");
    expect(
        "/v1/chat/completions",
        chat(json!({"tools": [tool(json!({"type": "object"}))], "tool_choice": {"type": "function", "function": {"name": "g"}}})),
        "tool_choice",
        "`g`, which is not in tools",
    );
    let completion = |g: &str| json!({"model": "smollm2-135m-instruct", "prompt": "x", "max_tokens": 4, "grammar": g});
    expect("/v1/completions", completion("start: missing_rule"), "grammar", "missing_rule");
    expect("/v1/completions", completion("root ::= [a-z"), "grammar", "unterminated character class");
    // A grammar that can be followed is followed.
    let r = s.post_json("/v1/completions", &json!({"model": "smollm2-135m-instruct", "prompt": "Is the sea salty? Answer:", "max_tokens": 8, "temperature": 1, "grammar": "root ::= \" \" (\"yes\" | \"no\")"}));
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    let text = v["choices"][0]["text"].as_str().unwrap();
    assert!(text == " yes" || text == " no", "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
}
