//! Anthropic's Messages API wire types: parsing with field paths, the translation into a
//! chat request (system, blocks, tool_use and tool_result, tools, tool_choice) and back
//! into content blocks, stop reasons, usage, stream events and the error body.

use lamina_api::messages::{anthropic_error, content_blocks, tool_input, BlockDelta, MessageResponse, MessagesUsage, ResponseBlock, StopReason, StreamEvent};
use lamina_api::{parse_json, text_of, ApiError, FinishReason, MessagesRequest, Role, Usage};
use serde_json::{json, Value};

fn req(v: Value) -> MessagesRequest {
    parse_json(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(v: Value) -> ApiError {
    match parse_json::<MessagesRequest>(v.to_string().as_bytes()) {
        Ok(r) => r.to_chat().expect_err("should fail"),
        Err(e) => e,
    }
}

#[test]
fn system_and_string_content_become_chat_messages_with_the_sampling_fields() {
    let chat = req(json!({"model": "m", "max_tokens": 7, "system": [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
        "stop_sequences": ["\n\n", "END"], "temperature": 0.2, "top_p": 0.8, "top_k": 40, "stream": true}))
    .to_chat()
    .unwrap();
    let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User, Role::Assistant, Role::User]);
    assert_eq!(text_of(&chat.messages[0]), "Be\nbrief.");
    assert_eq!((chat.max_tokens(), chat.temperature, chat.top_p, chat.top_k()), (Some(7), Some(0.2), Some(0.8), Some(40)));
    assert_eq!(chat.stop_list(), ["\n\n", "END"]);
    assert!(chat.is_stream());
    assert_eq!(chat.continued_text(), None, "a final user turn is answered, not continued");
    chat.validate().unwrap();
    // A final assistant turn is Anthropic's prefill: the reply continues it.
    let prefill = req(json!({"model": "m", "max_tokens": 7, "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Well,"}]}))
        .to_chat()
        .unwrap();
    assert_eq!(prefill.continued_text().as_deref(), Some("Well,"));
    prefill.validate().unwrap();
}

#[test]
fn tool_use_and_tool_result_blocks_become_tool_calls_and_tool_messages() {
    let chat = req(json!({"model": "m", "max_tokens": 64, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo and Rome?"}]},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
            {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Rome"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "3 C"},
            {"type": "tool_result", "tool_use_id": "toolu_2", "content": [{"type": "text", "text": "no data"}], "is_error": true},
            {"type": "text", "text": "Thanks."}]}
    ]}))
    .to_chat()
    .unwrap();
    let m = &chat.messages;
    let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Tool, Role::Tool, Role::User]);
    assert_eq!(text_of(&m[1]), "Checking.");
    let calls = m[1].tool_calls.as_ref().unwrap();
    assert_eq!((calls[0].id.as_str(), calls[0].function.name.as_str()), ("toolu_1", "weather"));
    assert_eq!(serde_json::from_str::<Value>(&calls[0].function.arguments).unwrap(), json!({"city": "Oslo"}));
    assert_eq!((m[2].tool_call_id.as_deref(), text_of(&m[2]).as_str()), (Some("toolu_1"), "3 C"));
    assert_eq!((m[3].tool_call_id.as_deref(), text_of(&m[3]).as_str()), (Some("toolu_2"), "Error: no data"));
    assert_eq!(text_of(&m[4]), "Thanks.");
    chat.validate().unwrap();
    // Calls alone: an assistant message without content.
    let chat = req(json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]}))
    .to_chat()
    .unwrap();
    assert!(chat.messages[1].content.is_none());
    chat.validate().unwrap();
}

#[test]
fn tools_and_tool_choice_become_their_chat_equivalents() {
    let base = json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "weather", "description": "Weather.", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]});
    let chat = req(base.clone()).to_chat().unwrap();
    assert_eq!(
        serde_json::to_value(&chat.tools).unwrap(),
        json!([{"type": "function", "function": {"name": "weather", "description": "Weather.", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}])
    );
    let cases = [
        (json!({"type": "auto"}), json!("auto")),
        (json!({"type": "any"}), json!("required")),
        (json!({"type": "none"}), json!("none")),
        (json!({"type": "tool", "name": "weather"}), json!({"type": "function", "function": {"name": "weather"}})),
    ];
    for (choice, expected) in cases {
        let mut b = base.clone();
        b["tool_choice"] = choice.clone();
        let chat = req(b).to_chat().unwrap();
        assert_eq!(serde_json::to_value(&chat.tool_choice).unwrap(), expected, "{choice}");
        assert!(chat.parallel_tool_calls.is_none());
    }
    let mut b = base;
    b["tool_choice"] = json!({"type": "any", "disable_parallel_tool_use": true});
    assert_eq!(serde_json::to_value(req(b).to_chat().unwrap().parallel_tool_calls).unwrap(), json!(false));
}

#[test]
fn bad_input_names_the_field() {
    let user = json!([{"role": "user", "content": "x"}]);
    let cases = [
        (json!({"model": "m", "messages": user}), "max_tokens"),
        (json!({"model": "m", "max_tokens": 0, "messages": user}), "max_tokens"),
        (json!({"model": "m", "max_tokens": -1, "messages": user}), "max_tokens"),
        (json!({"model": "m", "max_tokens": 4, "messages": []}), "messages"),
        (json!({"model": "", "max_tokens": 4, "messages": user}), "model"),
        (json!({"model": "m", "max_tokens": 4, "messages": user, "temperature": 1.5}), "temperature"),
        (json!({"model": "m", "max_tokens": 4, "messages": user, "top_p": -0.1}), "top_p"),
        (json!({"model": "m", "max_tokens": 4, "messages": user, "stop_sequences": [""]}), "stop_sequences"),
        (json!({"model": "m", "max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}), "messages[0].role"),
        (json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}), "messages[0].content[0]"),
        (json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": [{"type": "video"}]}]}), "messages[0].content[0].type"),
        (json!({"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": []}]}), "messages[0].content"),
        (json!({"model": "m", "max_tokens": 4, "messages": user, "system": [{"type": "tool_use", "id": "a", "name": "b", "input": {}}]}), "system[0]"),
        (json!({"model": "m", "max_tokens": 4, "messages": user, "tools": [{"name": "f"}]}), "tools[0].input_schema"),
        (json!({"model": "m", "max_tokens": 4, "messages": user, "tool_choice": {"type": "tool"}}), "tool_choice.name"),
    ];
    for (body, param) in cases {
        let e = err(body.clone());
        assert_eq!(e.status, 400, "{body}: {e}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
    }
}

#[test]
fn an_answer_becomes_content_blocks_with_parsed_inputs() {
    let call = |id: &str, args: &str| lamina_api::ToolCall {
        id: id.into(),
        kind: lamina_api::ToolType::Function,
        function: lamina_api::FunctionCall { name: "weather".into(), arguments: args.into() },
    };
    let blocks = content_blocks("Checking.", &[call("t1", "{\"city\": \"Oslo\"}"), call("t2", "not json")]);
    assert_eq!(
        serde_json::to_value(&blocks).unwrap(),
        json!([{"type": "text", "text": "Checking."},
               {"type": "tool_use", "id": "t1", "name": "weather", "input": {"city": "Oslo"}},
               {"type": "tool_use", "id": "t2", "name": "weather", "input": {}}])
    );
    assert_eq!(tool_input("[1, 2]"), json!({}), "an input is always an object");
    assert_eq!(content_blocks("", &[]), vec![ResponseBlock::Text { text: String::new() }]);
    assert!(matches!(content_blocks("", &[call("t", "{}")])[..], [ResponseBlock::ToolUse { .. }]));
}

#[test]
fn stop_reasons_and_usage_in_anthropic_terms() {
    assert_eq!(StopReason::from_finish(FinishReason::Stop, None), StopReason::EndTurn);
    assert_eq!(StopReason::from_finish(FinishReason::Stop, Some("END")), StopReason::StopSequence);
    assert_eq!(StopReason::from_finish(FinishReason::Length, None), StopReason::MaxTokens);
    assert_eq!(StopReason::from_finish(FinishReason::ToolCalls, None), StopReason::ToolUse);
    // Anthropic's input_tokens exclude what was read from the cache.
    let u = MessagesUsage::from(Usage::new(100, 7, 64));
    assert_eq!(
        serde_json::to_value(u).unwrap(),
        json!({"input_tokens": 36, "output_tokens": 7, "cache_read_input_tokens": 64, "cache_creation_input_tokens": 0})
    );
    let mut m = MessageResponse::new("msg_1", "m");
    m.stop_reason = Some(StopReason::StopSequence);
    m.stop_sequence = Some("END".into());
    let v = serde_json::to_value(&m).unwrap();
    assert_eq!(
        (v["type"].clone(), v["role"].clone(), v["stop_reason"].clone(), v["stop_sequence"].clone()),
        (json!("message"), json!("assistant"), json!("stop_sequence"), json!("END"))
    );
}

#[test]
fn stream_events_have_anthropic_shapes() {
    let cases = [
        (
            StreamEvent::ContentBlockDelta { index: 1, delta: BlockDelta::InputJsonDelta { partial_json: "{\"ci".into() } },
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"ci"}}),
        ),
        (
            StreamEvent::ContentBlockDelta { index: 0, delta: BlockDelta::TextDelta { text: "Hi".into() } },
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ),
        (
            StreamEvent::ContentBlockStart { index: 1, content_block: ResponseBlock::ToolUse { id: "t".into(), name: "f".into(), input: json!({}) } },
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
        ),
        (StreamEvent::ContentBlockStop { index: 0 }, json!({"type": "content_block_stop", "index": 0})),
        (StreamEvent::MessageStop, json!({"type": "message_stop"})),
        (StreamEvent::Ping, json!({"type": "ping"})),
    ];
    for (ev, expected) in cases {
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!(v, expected);
        assert_eq!(v["type"], ev.type_name());
    }
}

#[test]
fn errors_take_anthropic_types_and_statuses() {
    let cases = [
        (ApiError::invalid_param("max_tokens", "must be at least 1"), 400, "invalid_request_error"),
        (ApiError::authentication("no key"), 401, "authentication_error"),
        (ApiError::model_not_found("x"), 404, "not_found_error"),
        (ApiError::payload_too_large(10), 413, "request_too_large"),
        (ApiError::rate_limited("busy"), 429, "rate_limit_error"),
        (ApiError::server_error("boom"), 500, "api_error"),
        (ApiError::unavailable("loading"), 529, "overloaded_error"),
    ];
    for (e, status, kind) in cases {
        let (s, body) = anthropic_error(&e);
        assert_eq!(s, status, "{e}");
        let v = serde_json::to_value(&body).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], kind, "{e}");
        assert_eq!(v.as_object().unwrap().len(), 2, "{v}");
        assert_eq!(v["error"].as_object().unwrap().len(), 2, "{v}");
    }
    // The parameter at fault leads the message.
    let (_, body) = anthropic_error(&ApiError::invalid_param("max_tokens", "must be at least 1"));
    assert_eq!(body.error.message, "max_tokens: must be at least 1");
}
