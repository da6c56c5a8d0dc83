//! Chat requests written by hand after the examples of the OpenAI API reference
//! ("Create chat completion"), parsed and validated.

use lamina_api::{parse_json, text_of, ChatCompletionRequest, ContentPart, MessageContent, ResponseFormat, Role, Seed, Stop, ToolChoice, ToolType};

fn parse(body: &str) -> ChatCompletionRequest {
    let req: ChatCompletionRequest = parse_json(body.as_bytes()).expect("parses");
    req.validate().expect("valid");
    req
}

#[test]
fn default_example_developer_and_user() {
    let req = parse(
        r#"{
          "model": "gpt-4o",
          "messages": [
            {"role": "developer", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"}
          ]
        }"#,
    );
    assert_eq!(req.model, "gpt-4o");
    assert_eq!(req.messages.len(), 2);
    assert_eq!(req.messages[0].role, Role::Developer);
    assert_eq!(req.messages[0].content, Some(MessageContent::Text("You are a helpful assistant.".into())));
    assert_eq!(req.messages[1].role, Role::User);
    assert_eq!(text_of(&req.messages[1]), "Hello!");
    assert_eq!(req.max_tokens(), None);
    assert_eq!(req.n(), 1);
    assert!(!req.is_stream());
    assert!(!req.include_usage());
    assert!(req.stop_list().is_empty());
    assert_eq!(req.logit_bias_map().unwrap(), vec![]);
}

#[test]
fn system_role_and_streaming_with_usage() {
    let req = parse(
        r#"{
          "model": "gpt-4o",
          "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Hello!"}
          ],
          "stream": true,
          "stream_options": {"include_usage": true}
        }"#,
    );
    assert_eq!(req.messages[0].role, Role::System);
    assert_eq!(req.stream, Some(true));
    assert_eq!(req.stream_options.as_ref().unwrap().include_usage, Some(true));
    assert!(req.is_stream());
    assert!(req.include_usage());
}

#[test]
fn image_input_example_parses_but_is_unsupported() {
    let body = r#"{
      "model": "gpt-4.1",
      "messages": [
        {
          "role": "user",
          "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/boardwalk.jpg", "detail": "low"}}
          ]
        }
      ],
      "max_tokens": 300
    }"#;
    let req: ChatCompletionRequest = parse_json(body.as_bytes()).unwrap();
    let Some(MessageContent::Parts(parts)) = &req.messages[0].content else {
        panic!("expected parts");
    };
    assert_eq!(parts[0], ContentPart::Text { text: "What is in this image?".into() });
    match &parts[1] {
        ContentPart::ImageUrl { image_url } => {
            assert_eq!(image_url.url, "https://example.com/boardwalk.jpg");
            assert_eq!(image_url.detail.as_deref(), Some("low"));
        }
        other => panic!("expected image_url, got {other:?}"),
    }
    assert_eq!(req.max_tokens(), Some(300));
    let err = req.validate().unwrap_err();
    assert_eq!(err.status, 400);
    assert_eq!(err.kind, "invalid_request_error");
    assert_eq!(err.param.as_deref(), Some("messages[0].content[1]"));
    assert!(err.message.contains("`image_url`"), "{}", err.message);
    assert!(err.message.contains("not supported"), "{}", err.message);
}

#[test]
fn audio_and_file_parts_are_named_as_unsupported() {
    for (part, name) in [
        (r#"{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}"#, "input_audio"),
        (r#"{"type": "file", "file": {"file_id": "file-abc", "filename": "a.pdf"}}"#, "file"),
    ] {
        let body = format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": [{{"type": "text", "text": "hi"}}, {part}]}}]}}"#);
        let req: ChatCompletionRequest = parse_json(body.as_bytes()).unwrap();
        let err = req.validate().unwrap_err();
        assert_eq!(err.status, 400);
        assert_eq!(err.param.as_deref(), Some("messages[0].content[1]"));
        assert!(err.message.contains(&format!("`{name}`")), "{}", err.message);
    }
}

#[test]
fn text_parts_are_joined() {
    let req = parse(
        r#"{"model": "m", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "first"}, {"type": "text", "text": "second"}]}]}"#,
    );
    assert_eq!(text_of(&req.messages[0]), "first\nsecond");
}

#[test]
fn logprobs_example() {
    let req = parse(
        r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hello!"}],
            "logprobs": true, "top_logprobs": 2}"#,
    );
    assert_eq!(req.logprobs, Some(true));
    assert_eq!(req.top_logprobs, Some(2));
}

#[test]
fn logit_bias_keys_are_token_ids() {
    let req = parse(
        r#"{"model": "m", "messages": [{"role": "user", "content": "x"}],
            "logit_bias": {"50256": -100, "1003": 2.5, "7": 100}}"#,
    );
    assert_eq!(req.logit_bias_map().unwrap(), vec![(7, 100.0), (1003, 2.5), (50256, -100.0)]);
}

#[test]
fn tool_calling_conversation() {
    let req = parse(
        r#"{
          "model": "gpt-4o",
          "messages": [
            {"role": "user", "content": "What's the weather like in Boston today?"},
            {"role": "assistant", "content": null, "tool_calls": [
              {"id": "call_abc123", "type": "function",
               "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Boston, MA\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_abc123", "content": "{\"temperature\": 22}"},
            {"role": "assistant", "tool_calls": [
              {"id": "call_def456", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]}
          ],
          "tools": [{"type": "function", "function": {"name": "get_current_weather",
                     "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}}],
          "tool_choice": "auto",
          "parallel_tool_calls": false
        }"#,
    );
    let assistant = &req.messages[1];
    assert_eq!(assistant.role, Role::Assistant);
    assert_eq!(assistant.content, None);
    let calls = assistant.tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].id, "call_abc123");
    assert_eq!(calls[0].kind, ToolType::Function);
    assert_eq!(calls[0].function.name, "get_current_weather");
    assert_eq!(calls[0].function.arguments, r#"{"location": "Boston, MA"}"#);
    let tool = &req.messages[2];
    assert_eq!(tool.role, Role::Tool);
    assert_eq!(tool.tool_call_id.as_deref(), Some("call_abc123"));
    assert_eq!(text_of(tool), r#"{"temperature": 22}"#);
    assert_eq!(req.messages[3].content, None);
    assert_eq!(req.tool_choice, Some(ToolChoice::Auto));
    assert_eq!(req.parallel_tool_calls, Some(false));
    let f = &req.tool_list()[0].function;
    assert_eq!(f.name, "get_current_weather");
    assert_eq!(f.parameters.as_ref().unwrap()["properties"]["location"]["type"], "string");
}

#[test]
fn every_field() {
    let req = parse(
        r#"{
          "model": "lamina-8b",
          "messages": [{"role": "user", "content": "hi", "name": "ann"}],
          "max_tokens": 64,
          "max_completion_tokens": 64,
          "temperature": 0.7,
          "top_p": 0.9,
          "n": 2,
          "stop": ["\n\n", "END"],
          "seed": -5,
          "presence_penalty": 0.5,
          "frequency_penalty": -0.5,
          "logprobs": true,
          "top_logprobs": 20,
          "user": "user-1234",
          "stream": false,
          "response_format": {"type": "json_object"},
          "top_k": 40,
          "min_p": 0.05,
          "repetition_penalty": 1.1,
          "ignore_eos": true
        }"#,
    );
    assert_eq!(req.messages[0].name.as_deref(), Some("ann"));
    assert_eq!(req.max_tokens(), Some(64));
    assert_eq!(req.temperature, Some(0.7));
    assert_eq!(req.top_p, Some(0.9));
    assert_eq!(req.n(), 2);
    assert_eq!(req.stop, Some(Stop::Many(vec!["\n\n".into(), "END".into()])));
    assert_eq!(req.stop_list(), vec!["\n\n".to_string(), "END".to_string()]);
    assert_eq!(req.seed, Some(Seed::from(-5i64)));
    assert_eq!(req.seed.unwrap().as_u64(), u64::MAX - 4);
    assert_eq!(req.presence_penalty, Some(0.5));
    assert_eq!(req.frequency_penalty, Some(-0.5));
    assert_eq!(req.top_logprobs, Some(20));
    assert_eq!(req.user.as_deref(), Some("user-1234"));
    assert!(!req.is_stream());
    assert_eq!(req.response_format, Some(ResponseFormat::JsonObject));
    assert_eq!(req.top_k(), Some(40));
    assert_eq!(req.min_p, Some(0.05));
    assert_eq!(req.repetition_penalty, Some(1.1));
    assert_eq!(req.ignore_eos, Some(true));
}

#[test]
fn max_completion_tokens_alone_and_single_stop_string() {
    let req = parse(
        r####"{"model": "m", "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 10, "stop": "###"}"####,
    );
    assert_eq!(req.max_tokens(), Some(10));
    assert_eq!(req.stop, Some(Stop::One("###".into())));
    assert_eq!(req.stop_list(), vec!["###".to_string()]);
}

#[test]
fn seeds_above_i64_max_are_kept() {
    let req = parse(
        r#"{"model": "m", "messages": [{"role": "user", "content": "x"}],
            "seed": 18446744073709551615}"#,
    );
    assert_eq!(req.seed.unwrap().get(), 18446744073709551615i128);
    assert_eq!(req.seed.unwrap().as_u64(), u64::MAX);
    // Written back as the same number.
    let v = serde_json::to_value(&req).unwrap();
    assert_eq!(v["seed"], serde_json::json!(18446744073709551615u64));
}

#[test]
fn nulls_mean_absent() {
    let req = parse(
        r#"{"model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": null, "stop": null, "seed": null, "tools": null,
            "stream_options": null, "logit_bias": null, "top_k": null}"#,
    );
    assert_eq!(req.temperature, None);
    assert_eq!(req.stop, None);
    assert_eq!(req.seed, None);
    assert_eq!(req.tools, None);
    assert_eq!(req.stream_options, None);
    assert_eq!(req.top_k(), None);
}

#[test]
fn unknown_fields_are_ignored() {
    let req = parse(
        r#"{"model": "m", "messages": [{"role": "user", "content": "x", "weight": 3}],
            "store": true, "metadata": {"a": "b"}, "reasoning_effort": "low",
            "service_tier": "auto", "modalities": ["text"], "nonsense": [1, {"x": null}]}"#,
    );
    assert_eq!(req.model, "m");
    assert_eq!(req.messages.len(), 1);
}

#[test]
fn top_k_zero_or_minus_one_disables() {
    for k in [0, -1] {
        let body = format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": "x"}}], "top_k": {k}}}"#);
        let req = parse(&body);
        assert_eq!(req.top_k, Some(k));
        assert_eq!(req.top_k(), None);
    }
}

#[test]
fn boundary_values_are_accepted() {
    for extra in [
        r#""temperature": 0"#,
        r#""temperature": 2"#,
        r#""top_p": 0"#,
        r#""top_p": 1"#,
        r#""presence_penalty": -2"#,
        r#""frequency_penalty": 2"#,
        r#""n": 128"#,
        r#""logprobs": true, "top_logprobs": 0"#,
        r#""logit_bias": {"0": -100, "4294967295": 100}"#,
        r#""stop": ["a", "b", "c", "d"]"#,
        r#""stop": []"#,
        r#""max_tokens": 1"#,
        r#""min_p": 1"#,
        r#""stream_options": {"include_usage": false}, "stream": true"#,
    ] {
        let body = format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": "x"}}], {extra}}}"#);
        let req: ChatCompletionRequest = parse_json(body.as_bytes()).unwrap();
        req.validate().unwrap_or_else(|e| panic!("{extra}: {e}"));
    }
}

#[test]
fn serialises_back_without_absent_fields() {
    let req = parse(r#"{"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1}"#);
    assert_eq!(serde_json::to_value(&req).unwrap(), serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": 1}));
}

#[test]
fn floats_are_forwarded_as_written() {
    let req = parse(
        r#"{"model": "m", "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.7, "top_p": 0.95, "logit_bias": {"11": 0.1}}"#,
    );
    let text = serde_json::to_string(&req).unwrap();
    assert!(text.contains(r#""temperature":0.7,"#), "{text}");
    assert!(text.contains(r#""top_p":0.95,"#), "{text}");
    assert!(text.contains(r#""logit_bias":{"11":0.1}"#), "{text}");
}

#[test]
fn a_final_assistant_message_can_be_continued() {
    let req = parse(
        r#"{"model": "m", "continue_final_message": true,
            "messages": [{"role": "user", "content": "Count to five."}, {"role": "assistant", "content": "1, 2, 3"}]}"#,
    );
    assert_eq!(req.continued_text().as_deref(), Some("1, 2, 3"));
    // Without the flag the assistant turn is a finished one.
    let plain = parse(r#"{"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#);
    assert_eq!(plain.continued_text(), None);
    let bad = |body: &str| {
        let req: ChatCompletionRequest = parse_json(body.as_bytes()).expect("parses");
        let e = req.validate().expect_err("refused");
        assert_eq!(e.param.as_deref(), Some("continue_final_message"), "{e:?}");
        e.message
    };
    assert!(bad(r#"{"model": "m", "continue_final_message": true, "messages": [{"role": "user", "content": "a"}]}"#)
        .contains("last message to be an assistant turn"));
    assert!(bad(
        r#"{"model": "m", "continue_final_message": true, "n": 2, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}"#
    )
    .contains("n = 1"));
}
