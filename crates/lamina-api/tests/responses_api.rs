//! The Responses API's wire types: parsing with field paths, the translation into a chat
//! request (messages, tools, tool choice, text format) and back into output items, and
//! the shapes of the response object and its stream events.

use lamina_api::responses::{output_items, output_messages, OutputItem, ResponseStatus};
use lamina_api::{parse_json, text_of, ApiError, ChatMessage, FinishReason, ResponseObject, ResponseStreamEvent, ResponsesRequest, Role, Usage};
use serde_json::{json, Value};

fn req(v: Value) -> ResponsesRequest {
    parse_json(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"))
}

fn err(v: Value) -> ApiError {
    match parse_json::<ResponsesRequest>(v.to_string().as_bytes()) {
        Ok(r) => r.to_chat(&[]).expect_err("should fail"),
        Err(e) => e,
    }
}

#[test]
fn text_input_with_instructions_is_a_system_and_a_user_message() {
    let chat = req(json!({"model": "m", "input": "Hello", "instructions": "Be brief.", "max_output_tokens": 9, "temperature": 0.5, "top_p": 0.9}))
        .to_chat(&[])
        .unwrap();
    let roles: Vec<Role> = chat.messages.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::System, Role::User]);
    assert_eq!((text_of(&chat.messages[0]).as_str(), text_of(&chat.messages[1]).as_str()), ("Be brief.", "Hello"));
    assert_eq!((chat.max_tokens(), chat.temperature, chat.top_p), (Some(9), Some(0.5), Some(0.9)));
    assert!(chat.tools.is_none() && chat.response_format.is_none());
    chat.validate().unwrap();
}

#[test]
fn items_become_chat_messages_with_tool_calls_and_tool_results() {
    let r = req(json!({"model": "m", "input": [
        {"role": "developer", "content": "Use tools."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in"}, {"type": "input_text", "text": "Oslo?"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me look."}]},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}", "id": "fc_9", "status": "completed"},
        {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp\":3}"},
        {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]}
    ]}));
    let history = [ChatMessage::new(Role::User, "earlier"), ChatMessage::new(Role::Assistant, "reply")];
    let chat = r.to_chat(&history).unwrap();
    let m = &chat.messages;
    let roles: Vec<Role> = m.iter().map(|m| m.role).collect();
    assert_eq!(roles, [Role::User, Role::Assistant, Role::Developer, Role::User, Role::Assistant, Role::Tool, Role::Tool]);
    assert_eq!(text_of(&m[0]), "earlier", "the history comes first");
    assert_eq!(text_of(&m[3]), "Weather in\nOslo?");
    // Both calls join the assistant message right before them.
    assert_eq!(text_of(&m[4]), "Let me look.");
    let calls = m[4].tool_calls.as_ref().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].id.as_str(), calls[0].function.name.as_str(), calls[0].function.arguments.as_str()), ("call_1", "weather", "{\"city\":\"Oslo\"}"));
    assert_eq!(calls[1].id, "call_2");
    assert_eq!((m[5].tool_call_id.as_deref(), text_of(&m[5]).as_str()), (Some("call_1"), "{\"temp\":3}"));
    assert_eq!((m[6].tool_call_id.as_deref(), text_of(&m[6]).as_str()), (Some("call_2"), "noon"));
    chat.validate().unwrap();
}

#[test]
fn a_call_with_no_assistant_text_before_it_is_an_assistant_message_without_content() {
    let chat = req(json!({"model": "m", "input": [
        {"role": "user", "content": "hi"},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c", "output": "ok"}
    ]}))
    .to_chat(&[])
    .unwrap();
    assert_eq!(chat.messages[1].role, Role::Assistant);
    assert!(chat.messages[1].content.is_none());
    assert_eq!(chat.messages[1].tool_calls.as_ref().unwrap()[0].id, "c");
    chat.validate().unwrap();
}

#[test]
fn tools_tool_choice_and_text_format_become_their_chat_equivalents() {
    let chat = req(json!({"model": "m", "input": "x",
        "tools": [{"type": "function", "name": "weather", "description": "Weather.", "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "weather"},
        "parallel_tool_calls": false,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": true}}}))
    .to_chat(&[])
    .unwrap();
    assert_eq!(
        serde_json::to_value(&chat.tools).unwrap(),
        json!([{"type": "function", "function": {"name": "weather", "description": "Weather.", "parameters": {"type": "object"}, "strict": true}}])
    );
    assert_eq!(serde_json::to_value(&chat.tool_choice).unwrap(), json!({"type": "function", "function": {"name": "weather"}}));
    assert_eq!(serde_json::to_value(chat.parallel_tool_calls).unwrap(), json!(false));
    assert_eq!(
        serde_json::to_value(&chat.response_format).unwrap(),
        json!({"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": true}})
    );
    for (mode, text) in [("auto", "auto"), ("none", "none"), ("required", "required")] {
        let chat = req(json!({"model": "m", "input": "x", "tool_choice": mode})).to_chat(&[]).unwrap();
        assert_eq!(serde_json::to_value(&chat.tool_choice).unwrap(), json!(text));
    }
    let chat = req(json!({"model": "m", "input": "x", "text": {"format": {"type": "json_object"}}})).to_chat(&[]).unwrap();
    assert_eq!(serde_json::to_value(&chat.response_format).unwrap(), json!({"type": "json_object"}));
}

#[test]
fn bad_input_names_the_field() {
    let cases = [
        (json!({"model": "m"}), "input"),
        (json!({"model": "m", "input": 3}), "input"),
        (json!({"model": "m", "input": []}), "input"),
        (json!({"model": "m", "input": [{"role": "user"}]}), "input[0]"),
        (json!({"model": "m", "input": [{"role": "user", "content": "a"}, {"type": "function_call", "name": "f", "arguments": "{}"}]}), "input[1]"),
        (json!({"model": "m", "input": [{"type": "reasoning", "summary": []}]}), "input[0].type"),
        (json!({"model": "m", "input": [{"role": "tool", "content": "a"}]}), "input[0]"),
        (json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}), "input[0].content"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "web_search"}]}), "tools[0].type"),
        (json!({"model": "m", "input": "x", "tools": [{"type": "function"}]}), "tools[0].name"),
        (json!({"model": "m", "input": "x", "tool_choice": "sometimes"}), "tool_choice"),
        (json!({"model": "m", "input": "x", "text": {"format": {"type": "json_schema"}}}), "text.format.name"),
        (json!({"model": "m", "input": "x", "temperature": "hot"}), "temperature"),
    ];
    for (body, param) in cases {
        let e = err(body.clone());
        assert_eq!(e.status, 400, "{body}: {e}");
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
    }
    // The content part that is not supported is named by type.
    let e = err(json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}));
    assert!(e.message.contains("input_image"), "{e}");
}

#[test]
fn unknown_fields_are_ignored_and_store_defaults_to_true() {
    let r = req(json!({"model": "m", "input": "x", "reasoning": {"effort": "low"}, "truncation": "auto"}));
    assert!(r.is_stored() && !r.is_stream());
    assert!(!req(json!({"model": "m", "input": "x", "store": false})).is_stored());
}

fn call(id: &str, name: &str, args: &str) -> lamina_api::ToolCall {
    lamina_api::ToolCall {
        id: id.into(),
        kind: lamina_api::ToolType::Function,
        function: lamina_api::FunctionCall { name: name.into(), arguments: args.into() },
    }
}

#[test]
fn an_answer_becomes_output_items_and_the_conversation_to_keep() {
    let mut n = 0;
    let mut ids = |p: &str| {
        n += 1;
        format!("{p}_{n}")
    };
    let items = output_items("Checking.", &[call("call_a", "weather", "{\"city\":\"Oslo\"}")], &mut ids);
    let v = serde_json::to_value(&items).unwrap();
    assert_eq!(
        v,
        json!([
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Checking.", "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "fc_2", "call_id": "call_a", "name": "weather", "arguments": "{\"city\":\"Oslo\"}", "status": "completed"}
        ])
    );
    let kept = output_messages(&items);
    assert_eq!(kept.len(), 1);
    assert_eq!((kept[0].role, text_of(&kept[0]).as_str()), (Role::Assistant, "Checking."));
    assert_eq!(kept[0].tool_calls.as_ref().unwrap()[0].id, "call_a");
    // Only calls: no message item; an empty answer: one empty message.
    assert!(matches!(output_items("", &[call("c", "f", "{}")], &mut ids)[..], [OutputItem::FunctionCall { .. }]));
    assert!(matches!(&output_items("", &[], &mut ids)[..], [OutputItem::Message { content, .. }] if content.len() == 1));
}

#[test]
fn the_response_object_has_the_shape_the_client_reads() {
    let r = req(json!({"model": "m", "input": "x", "max_output_tokens": 5, "metadata": {"k": "v"}}));
    let mut obj = ResponseObject::new("resp_1", 1700000000, "m", &r);
    let items = output_items("Hi", &[], |p| format!("{p}_1"));
    obj.finish(items, FinishReason::Length, Usage::new(10, 5, 4));
    let v = serde_json::to_value(&obj).unwrap();
    assert_eq!(v["object"], "response");
    assert_eq!(v["status"], "incomplete");
    assert_eq!(v["incomplete_details"], json!({"reason": "max_output_tokens"}));
    assert_eq!(v["output"][0]["status"], "incomplete");
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 10, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0}, "output_tokens": 5,
               "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 15})
    );
    for field in ["error", "previous_response_id", "instructions"] {
        assert!(v[field].is_null(), "{field}: {v}");
    }
    assert_eq!((v["tool_choice"].clone(), v["tools"].clone(), v["metadata"].clone()), (json!("auto"), json!([]), json!({"k": "v"})));
    assert_eq!(v["text"], json!({"format": {"type": "text"}}));
    // A natural stop is completed.
    obj.finish(output_items("Hi", &[], |p| p.to_string()), FinishReason::Stop, Usage::new(1, 1, 0));
    assert_eq!((obj.status, obj.incomplete_details.is_none()), (ResponseStatus::Completed, true));
    // Round trip.
    let back: ResponseObject = serde_json::from_value(serde_json::to_value(&obj).unwrap()).unwrap();
    assert_eq!(back, obj);
}

#[test]
fn stream_events_are_tagged_with_their_type_and_sequence_number() {
    let ev = ResponseStreamEvent::OutputTextDelta {
        sequence_number: 4,
        item_id: "msg_1".into(),
        output_index: 0,
        content_index: 0,
        delta: "Hi".into(),
        logprobs: vec![],
    };
    assert_eq!(
        serde_json::to_value(&ev).unwrap(),
        json!({"type": "response.output_text.delta", "sequence_number": 4, "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hi", "logprobs": []})
    );
    assert_eq!(ev.type_name(), "response.output_text.delta");
    let ev = ResponseStreamEvent::FunctionCallArgumentsDone { sequence_number: 9, item_id: "fc_1".into(), output_index: 1, arguments: "{}".into() };
    let v = serde_json::to_value(&ev).unwrap();
    assert_eq!(v["type"], ev.type_name());
    assert_eq!(v["type"], "response.function_call_arguments.done");
}
