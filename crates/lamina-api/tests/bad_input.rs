//! Bodies the server must refuse: each gives 400 `invalid_request_error` naming the
//! parameter at fault.

use lamina_api::{parse_json, ApiError, ChatCompletionRequest, CompletionRequest};

/// Parse + validate a chat body, expecting an error.
fn chat_err(body: &[u8]) -> ApiError {
    match parse_json::<ChatCompletionRequest>(body) {
        Err(e) => e,
        Ok(req) => req.validate().expect_err("expected an error"),
    }
}

fn completion_err(body: &str) -> ApiError {
    match parse_json::<CompletionRequest>(body.as_bytes()) {
        Err(e) => e,
        Ok(req) => req.validate().expect_err("expected an error"),
    }
}

/// A valid chat body with `extra` fields added at the top level.
fn chat_with(extra: &str) -> String {
    format!(r#"{{"model": "m", "messages": [{{"role": "user", "content": "hi"}}], {extra}}}"#)
}

fn assert_400(e: &ApiError, param: Option<&str>) {
    assert_eq!(e.status, 400, "{e}");
    assert_eq!(e.kind, "invalid_request_error", "{e}");
    assert_eq!(e.param.as_deref(), param, "{e}");
}

#[test]
fn malformed_json() {
    let e = chat_err(br#"{"model": "m", "messages": [}"#);
    assert_400(&e, None);
    assert!(e.message.starts_with("could not parse the JSON body of your request"), "{}", e.message);
    assert!(e.message.contains("line 1 column 29"), "{}", e.message);
}

#[test]
fn truncated_and_empty_and_trailing() {
    for body in [&br#"{"model": "m""#[..], b"", br#"{"model": "m", "messages": []} x"#] {
        let e = chat_err(body);
        assert_400(&e, None);
        assert!(e.message.starts_with("could not parse the JSON body"), "{}", e.message);
        assert!(e.message.contains("line 1 column"), "{}", e.message);
    }
}

#[test]
fn line_and_column_on_later_lines() {
    let e = chat_err(b"{\n  \"model\": \"m\",\n  \"messages\": [,]\n}");
    assert_400(&e, None);
    assert!(e.message.contains("line 3 column 16"), "{}", e.message);
}

#[test]
fn invalid_utf8_reports_offset() {
    let mut body = br#"{"model": "m"#.to_vec(); // 12 bytes
    body.push(0xff);
    body.extend_from_slice(br#"", "messages": []}"#);
    let e = chat_err(&body);
    assert_400(&e, None);
    assert!(e.message.contains("UTF-8"), "{}", e.message);
    assert!(e.message.contains("offset 12"), "{}", e.message);
}

#[test]
fn content_as_number_names_the_path() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": 3}]}"#);
    assert_400(&e, Some("messages[1].content"));
    assert!(e.message.starts_with("messages[1].content: invalid type: integer `3`, expected a string or an array of content parts"), "{}", e.message);
}

#[test]
fn wrong_type_inside_a_content_part() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}"#);
    assert_400(&e, Some("messages[0].content[0].text"));
}

#[test]
fn unknown_content_part_type() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "video", "video": {}}]}]}"#);
    assert_400(&e, Some("messages[0].content[0].type"));
    assert!(e.message.contains("`video`"), "{}", e.message);
}

#[test]
fn text_part_without_text() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "text"}]}]}"#);
    assert_400(&e, Some("messages[0].content[0]"));
    assert!(e.message.contains("needs a `text` field"), "{}", e.message);
}

#[test]
fn temperature_as_string() {
    let e = chat_err(chat_with(r#""temperature": "hot""#).as_bytes());
    assert_400(&e, Some("temperature"));
    assert!(e.message.contains("invalid type: string \"hot\""), "{}", e.message);
}

#[test]
fn stop_as_object() {
    let e = chat_err(chat_with(r#""stop": {"a": 1}"#).as_bytes());
    assert_400(&e, Some("stop"));
    assert!(e.message.contains("expected a string or an array of strings"), "{}", e.message);
}

#[test]
fn stop_array_with_a_number() {
    let e = chat_err(chat_with(r#""stop": ["a", 2]"#).as_bytes());
    assert_400(&e, Some("stop[1]"));
}

#[test]
fn seed_as_float() {
    let e = chat_err(chat_with(r#""seed": 1.5"#).as_bytes());
    assert_400(&e, Some("seed"));
}

#[test]
fn unknown_role_is_named() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "wizard", "content": "hi"}]}"#);
    assert_400(&e, Some("messages[0].role"));
    assert!(e.message.contains("`wizard`"), "{}", e.message);
}

#[test]
fn missing_fields_are_named() {
    let e = chat_err(br#"{"model": "m"}"#);
    assert_400(&e, Some("messages"));
    assert!(e.message.contains("missing field `messages`"), "{}", e.message);
    let e = chat_err(br#"{"model": "m", "messages": [{"content": "hi"}]}"#);
    assert_400(&e, Some("messages[0].role"));
    assert!(e.message.starts_with("messages[0]: missing field `role`"), "{}", e.message);
}

#[test]
fn body_not_an_object() {
    for body in [&b"\"hello\""[..], b"42", b"null"] {
        let e = chat_err(body);
        assert_400(&e, None);
        assert!(e.message.contains("expected a chat completion request object"), "{}", e.message);
    }
}

#[test]
fn empty_messages() {
    assert_400(&chat_err(br#"{"model": "m", "messages": []}"#), Some("messages"));
}

#[test]
fn empty_model() {
    let e = chat_err(br#"{"model": "", "messages": [{"role": "user", "content": "x"}]}"#);
    assert_400(&e, Some("model"));
}

#[test]
fn user_message_without_content() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user"}]}"#);
    assert_400(&e, Some("messages[0].content"));
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": null}]}"#);
    assert_400(&e, Some("messages[0].content"));
}

#[test]
fn assistant_without_content_or_tool_calls() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "tool_calls": []}]}"#);
    assert_400(&e, Some("messages[1].content"));
}

#[test]
fn empty_content_array() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": []}]}"#);
    assert_400(&e, Some("messages[0].content"));
}

#[test]
fn tool_message_without_tool_call_id() {
    let e = chat_err(br#"{"model": "m", "messages": [{"role": "user", "content": "x"}, {"role": "tool", "content": "42"}]}"#);
    assert_400(&e, Some("messages[1].tool_call_id"));
}

#[test]
fn tool_calls_on_a_user_message() {
    let e = chat_err(
        br#"{"model": "m", "messages": [{"role": "user", "content": "x", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}"#,
    );
    assert_400(&e, Some("messages[0].tool_calls"));
}

#[test]
fn tool_call_of_unknown_type() {
    let e = chat_err(
        br#"{"model": "m", "messages": [{"role": "assistant", "tool_calls": [
            {"id": "c", "type": "retrieval", "function": {"name": "f", "arguments": "{}"}}]}]}"#,
    );
    assert_400(&e, Some("messages[0].tool_calls[0].type"));
}

#[test]
fn out_of_range_values() {
    for (extra, param) in [
        (r#""temperature": 2.5"#, "temperature"),
        (r#""temperature": -0.1"#, "temperature"),
        (r#""top_p": 1.01"#, "top_p"),
        (r#""top_p": -0.5"#, "top_p"),
        (r#""presence_penalty": -2.5"#, "presence_penalty"),
        (r#""presence_penalty": 3"#, "presence_penalty"),
        (r#""frequency_penalty": 2.01"#, "frequency_penalty"),
        (r#""frequency_penalty": -3"#, "frequency_penalty"),
        (r#""n": 0"#, "n"),
        (r#""n": 129"#, "n"),
        (r#""logprobs": true, "top_logprobs": 21"#, "top_logprobs"),
        (r#""min_p": 1.5"#, "min_p"),
        (r#""top_k": -2"#, "top_k"),
        (r#""repetition_penalty": 0"#, "repetition_penalty"),
        (r#""max_tokens": 0"#, "max_tokens"),
        (r#""max_completion_tokens": 0"#, "max_completion_tokens"),
    ] {
        let e = chat_err(chat_with(extra).as_bytes());
        assert_400(&e, Some(param));
    }
}

#[test]
fn negative_integers_where_unsigned_expected() {
    for (extra, param) in [(r#""max_tokens": -1"#, "max_tokens"), (r#""n": -1"#, "n"), (r#""top_logprobs": -1"#, "top_logprobs")] {
        assert_400(&chat_err(chat_with(extra).as_bytes()), Some(param));
    }
}

#[test]
fn top_logprobs_without_logprobs() {
    let e = chat_err(chat_with(r#""top_logprobs": 3"#).as_bytes());
    assert_400(&e, Some("top_logprobs"));
    let e = chat_err(chat_with(r#""logprobs": false, "top_logprobs": 3"#).as_bytes());
    assert_400(&e, Some("top_logprobs"));
}

#[test]
fn logit_bias_bad_key_and_value() {
    let e = chat_err(chat_with(r#""logit_bias": {"abc": 1}"#).as_bytes());
    assert_400(&e, Some("logit_bias"));
    assert!(e.message.contains("\"abc\""), "{}", e.message);
    let e = chat_err(chat_with(r#""logit_bias": {"50256": 500}"#).as_bytes());
    assert_400(&e, Some("logit_bias"));
    assert!(e.message.contains("500"), "{}", e.message);
    for key in ["-1", "+5", "4294967296", ""] {
        let e = chat_err(chat_with(&format!(r#""logit_bias": {{"{key}": 1}}"#)).as_bytes());
        assert_400(&e, Some("logit_bias"));
    }
    let e = chat_err(chat_with(r#""logit_bias": {"5": "strong"}"#).as_bytes());
    assert_400(&e, Some("logit_bias.5"));
}

#[test]
fn token_limit_names_disagree() {
    let e = chat_err(chat_with(r#""max_tokens": 10, "max_completion_tokens": 20"#).as_bytes());
    assert_400(&e, Some("max_completion_tokens"));
    assert!(e.message.contains("10") && e.message.contains("20"), "{}", e.message);
}

#[test]
fn stop_limits() {
    let e = chat_err(chat_with(r#""stop": ["a", "b", "c", "d", "e"]"#).as_bytes());
    assert_400(&e, Some("stop"));
    let e = chat_err(chat_with(r#""stop": ["a", ""]"#).as_bytes());
    assert_400(&e, Some("stop"));
    let e = chat_err(chat_with(r#""stop": """#).as_bytes());
    assert_400(&e, Some("stop"));
}

#[test]
fn stream_options_without_stream() {
    let e = chat_err(chat_with(r#""stream_options": {"include_usage": true}"#).as_bytes());
    assert_400(&e, Some("stream_options"));
}

#[test]
fn non_finite_values_built_in_code_are_refused() {
    let mut req: ChatCompletionRequest = parse_json(chat_with(r#""n": 1"#).as_bytes()).unwrap();
    req.temperature = Some(f32::NAN);
    assert_400(&req.validate().unwrap_err(), Some("temperature"));
    req.temperature = None;
    req.top_p = Some(f32::INFINITY);
    assert_400(&req.validate().unwrap_err(), Some("top_p"));
    req.top_p = None;
    req.repetition_penalty = Some(f32::NAN);
    assert_400(&req.validate().unwrap_err(), Some("repetition_penalty"));
}

// Legacy completions.

#[test]
fn completion_out_of_range_and_unsupported() {
    for (body, param) in [
        (r#"{"model": "m", "prompt": "x", "logprobs": 6}"#, "logprobs"),
        (r#"{"model": "m", "prompt": "x", "temperature": 3}"#, "temperature"),
        (r#"{"model": "m", "prompt": "x", "best_of": 2}"#, "best_of"),
        (r#"{"model": "m", "prompt": "x", "n": 2, "best_of": 3}"#, "best_of"),
        (r#"{"model": "m", "prompt": "x", "suffix": "tail"}"#, "suffix"),
        (r#"{"model": "m", "prompt": "x", "max_tokens": 0}"#, "max_tokens"),
        (r#"{"model": "m", "prompt": []}"#, "prompt"),
        (r#"{"model": "m", "prompt": [[1, 2], []]}"#, "prompt[1]"),
        (r#"{"model": "m", "prompt": "x", "stop": ["1","2","3","4","5"]}"#, "stop"),
        (r#"{"model": "m", "prompt": "x", "logit_bias": {"x": 1}}"#, "logit_bias"),
        (r#"{"model": "m", "prompt": "x", "stream_options": {"include_usage": true}}"#, "stream_options"),
    ] {
        let e = completion_err(body);
        assert_400(&e, Some(param));
    }
}

#[test]
fn completion_suffix_message_is_clear() {
    let e = completion_err(r#"{"model": "m", "prompt": "x", "suffix": "tail"}"#);
    assert!(e.message.contains("suffix is not supported"), "{}", e.message);
}

#[test]
fn completion_prompt_shapes_that_do_not_parse() {
    for (body, param) in [
        (r#"{"model": "m", "prompt": ["a", 1]}"#, "prompt"),
        (r#"{"model": "m", "prompt": [1, [2]]}"#, "prompt"),
        (r#"{"model": "m", "prompt": [-1]}"#, "prompt[0]"),
        (r#"{"model": "m", "prompt": [[1, -2]]}"#, "prompt[0][1]"),
        (r#"{"model": "m", "prompt": [4294967296]}"#, "prompt[0]"),
        (r#"{"model": "m", "prompt": 3}"#, "prompt"),
        (r#"{"model": "m", "prompt": [{"a": 1}]}"#, "prompt[0]"),
        (r#"{"model": "m"}"#, "prompt"),
    ] {
        let e = completion_err(body);
        assert_400(&e, Some(param));
    }
    let e = completion_err(r#"{"model": "m", "prompt": ["a", 1]}"#);
    assert!(e.message.contains("only strings, only token ids"), "{}", e.message);
}

const TOOL: &str = r#"{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}"#;

#[test]
fn structured_output_and_tool_fields_are_typed_with_paths() {
    let e = chat_err(chat_with(r#""response_format": {"type": "xml"}"#).as_bytes());
    assert_400(&e, Some("response_format.type"));
    let e = chat_err(chat_with(r#""response_format": {"type": "json_schema"}"#).as_bytes());
    assert_400(&e, Some("response_format"));
    assert!(e.message.contains("needs a `json_schema` field"), "{e}");
    let e = chat_err(chat_with(r#""response_format": {"type": "json_schema", "json_schema": {"schema": {}}}"#).as_bytes());
    assert_400(&e, Some("response_format.json_schema.name"));
    let e = chat_err(chat_with(r#""response_format": {"type": "json_schema", "json_schema": {"name": "a b", "schema": {}}}"#).as_bytes());
    assert_400(&e, Some("response_format.json_schema.name"));
    let e = chat_err(chat_with(r#""response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": [1]}}"#).as_bytes());
    assert_400(&e, Some("response_format.json_schema.schema"));
    let e = chat_err(chat_with(r#""tools": [{"type": "function", "function": {"parameters": {}}}]"#).as_bytes());
    assert_400(&e, Some("tools[0].function.name"));
    let e = chat_err(chat_with(r#""tool_choice": "sometimes""#).as_bytes());
    assert_400(&e, Some("tool_choice"));
}

#[test]
fn tools_whose_parameters_are_no_schema() {
    let e = chat_err(chat_with(r#""tools": [{"type": "function", "function": {"name": "f", "parameters": "a string"}}]"#).as_bytes());
    assert_400(&e, Some("tools[0].function.parameters"));
    assert!(e.message.contains("not a valid JSON schema"), "{e}");
    let e = chat_err(chat_with(r#""tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}]"#).as_bytes());
    assert_400(&e, Some("tools[0].function.parameters"));
    let e = chat_err(chat_with(&format!(r#""tools": [{TOOL}, {TOOL}]"#)).as_bytes());
    assert_400(&e, Some("tools[1].function.name"));
}

#[test]
fn tool_choice_must_name_an_offered_tool() {
    let e = chat_err(chat_with(&format!(r#""tools": [{TOOL}], "tool_choice": {{"type": "function", "function": {{"name": "get_time"}}}}"#)).as_bytes());
    assert_400(&e, Some("tool_choice"));
    assert!(e.message.contains("`get_time`") && e.message.contains("get_weather"), "{e}");
    let e = chat_err(chat_with(r#""tool_choice": "required""#).as_bytes());
    assert_400(&e, Some("tool_choice"));
    let e = chat_err(chat_with(&format!(r#""tools": [{TOOL}], "response_format": {{"type": "json_object"}}"#)).as_bytes());
    assert_400(&e, Some("response_format"));
    let ok: ChatCompletionRequest =
        parse_json(chat_with(&format!(r#""tools": [{TOOL}], "tool_choice": {{"type": "function", "function": {{"name": "get_weather"}}}}"#)).as_bytes())
            .unwrap();
    ok.validate().unwrap();
    assert_eq!(ok.tool_choice(), lamina_api::ToolChoice::Function("get_weather".into()));
}

#[test]
fn an_empty_grammar() {
    assert_400(&completion_err(r#"{"model": "m", "prompt": "x", "grammar": " "}"#), Some("grammar"));
}
