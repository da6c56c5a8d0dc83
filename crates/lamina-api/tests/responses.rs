//! Responses and stream chunks serialised and compared with JSON written by hand after
//! the OpenAI API reference's response examples: the field names, `null` where OpenAI
//! sends null, and absence where it omits a field.

use lamina_api::chat::{ChatChunkChoice, ChatDelta};
use lamina_api::{
    ChatChoice, ChatCompletion, ChatCompletionChunk, ChatLogprobs, Completion, CompletionChoice, CompletionChunk, CompletionChunkChoice, CompletionLogprobs,
    FinishReason, FunctionCall, FunctionCallDelta, ModelList, ModelObject, ResponseMessage, Role, TokenLogprob, ToolCall, ToolCallDelta, ToolType, TopLogprob,
    Usage,
};
use serde_json::{json, Value};

fn value(x: &impl serde::Serialize) -> Value {
    serde_json::to_value(x).unwrap()
}

fn usage_9_12_21() -> Usage {
    Usage::new(9, 12, 0)
}

const USAGE_9_12_21: &str = r#"{
  "prompt_tokens": 9, "completion_tokens": 12, "total_tokens": 21,
  "prompt_tokens_details": {"cached_tokens": 0},
  "completion_tokens_details": {"reasoning_tokens": 0}
}"#;

fn usage_json() -> Value {
    serde_json::from_str(USAGE_9_12_21).unwrap()
}

#[test]
fn usage_shape() {
    assert_eq!(value(&usage_9_12_21()), usage_json());
    assert_eq!(
        value(&Usage::new(100, 5, 64)),
        json!({"prompt_tokens": 100, "completion_tokens": 5, "total_tokens": 105,
               "prompt_tokens_details": {"cached_tokens": 64},
               "completion_tokens_details": {"reasoning_tokens": 0}})
    );
}

#[test]
fn chat_completion() {
    let mut c = ChatCompletion::new(
        "chatcmpl-123",
        1677652288,
        "gpt-4o-mini",
        vec![ChatChoice {
            index: 0,
            message: ResponseMessage::assistant("\n\nHello there, how may I assist you today?"),
            logprobs: None,
            finish_reason: FinishReason::Stop,
            stop_reason: None,
        }],
        usage_9_12_21(),
    );
    c.system_fingerprint = Some("fp_44709d6fcb".into());
    assert_eq!(
        value(&c),
        json!({
          "id": "chatcmpl-123",
          "object": "chat.completion",
          "created": 1677652288,
          "model": "gpt-4o-mini",
          "system_fingerprint": "fp_44709d6fcb",
          "choices": [{
            "index": 0,
            "message": {
              "role": "assistant",
              "content": "\n\nHello there, how may I assist you today?",
              "refusal": null
            },
            "logprobs": null,
            "finish_reason": "stop"
          }],
          "usage": usage_json()
        })
    );
}

#[test]
fn chat_completion_without_fingerprint_sends_null() {
    let c = ChatCompletion::new("id", 1, "m", vec![], usage_9_12_21());
    assert_eq!(value(&c)["system_fingerprint"], Value::Null);
    assert_eq!(value(&c)["choices"], json!([]));
}

#[test]
fn chat_completion_with_tool_calls() {
    let c = ChatCompletion::new(
        "chatcmpl-abc",
        1699896916,
        "gpt-4o-mini",
        vec![ChatChoice {
            index: 0,
            message: ResponseMessage {
                role: Role::Assistant,
                content: None,
                refusal: None,
                tool_calls: Some(vec![ToolCall {
                    id: "call_abc123".into(),
                    kind: ToolType::Function,
                    function: FunctionCall { name: "get_current_weather".into(), arguments: "{\n\"location\": \"Boston, MA\"\n}".into() },
                }]),
            },
            logprobs: None,
            finish_reason: FinishReason::ToolCalls,
            stop_reason: None,
        }],
        Usage::new(82, 17, 0),
    );
    let v = value(&c);
    assert_eq!(
        v["choices"][0],
        json!({
          "index": 0,
          "message": {
            "role": "assistant",
            "content": null,
            "refusal": null,
            "tool_calls": [{
              "id": "call_abc123",
              "type": "function",
              "function": {"name": "get_current_weather", "arguments": "{\n\"location\": \"Boston, MA\"\n}"}
            }]
          },
          "logprobs": null,
          "finish_reason": "tool_calls"
        })
    );
}

#[test]
fn chat_completion_with_logprobs() {
    let choice = ChatChoice {
        index: 0,
        message: ResponseMessage::assistant("Hello!"),
        logprobs: Some(ChatLogprobs {
            content: Some(vec![TokenLogprob {
                token: "Hello".into(),
                logprob: -0.5,
                bytes: Some(vec![72, 101, 108, 108, 111]),
                top_logprobs: vec![
                    TopLogprob { token: "Hello".into(), logprob: -0.5, bytes: Some(vec![72, 101, 108, 108, 111]) },
                    TopLogprob { token: "Hi".into(), logprob: -1.25, bytes: Some(vec![72, 105]) },
                ],
            }]),
            refusal: None,
        }),
        finish_reason: FinishReason::Stop,
        stop_reason: None,
    };
    assert_eq!(
        value(&choice)["logprobs"],
        json!({
          "content": [{
            "token": "Hello", "logprob": -0.5, "bytes": [72, 101, 108, 108, 111],
            "top_logprobs": [
              {"token": "Hello", "logprob": -0.5, "bytes": [72, 101, 108, 108, 111]},
              {"token": "Hi", "logprob": -1.25, "bytes": [72, 105]}
            ]
          }],
          "refusal": null
        })
    );
}

#[test]
fn finish_reasons_are_snake_case() {
    let names: Vec<Value> = [FinishReason::Stop, FinishReason::Length, FinishReason::ToolCalls, FinishReason::ContentFilter].iter().map(value).collect();
    assert_eq!(names, vec![json!("stop"), json!("length"), json!("tool_calls"), json!("content_filter")]);
}

#[test]
fn chat_stream_chunks() {
    let first = ChatCompletionChunk::new("chatcmpl-123", 1694268190, "gpt-4o-mini", vec![ChatChunkChoice::new(0, ChatDelta::start())]);
    assert_eq!(
        value(&first),
        json!({
          "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
          "model": "gpt-4o-mini", "system_fingerprint": null,
          "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                       "logprobs": null, "finish_reason": null}],
          "usage": null
        })
    );
    let middle = ChatCompletionChunk::new("chatcmpl-123", 1694268190, "gpt-4o-mini", vec![ChatChunkChoice::new(0, ChatDelta::content("Hello"))]);
    assert_eq!(value(&middle)["choices"], json!([{"index": 0, "delta": {"content": "Hello"}, "logprobs": null, "finish_reason": null}]));
    let last = ChatCompletionChunk::new("chatcmpl-123", 1694268190, "gpt-4o-mini", vec![ChatChunkChoice::finished(0, FinishReason::Length, None)]);
    assert_eq!(value(&last)["choices"], json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}]));
    assert_eq!(value(&last)["usage"], Value::Null);
}

#[test]
fn chat_usage_chunk_has_empty_choices() {
    let chunk = ChatCompletionChunk::usage("chatcmpl-123", 1694268190, "gpt-4o-mini", usage_9_12_21());
    assert_eq!(
        value(&chunk),
        json!({
          "id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
          "model": "gpt-4o-mini", "system_fingerprint": null,
          "choices": [],
          "usage": usage_json()
        })
    );
}

#[test]
fn chat_tool_call_deltas() {
    let delta = ChatDelta {
        tool_calls: Some(vec![
            ToolCallDelta {
                index: 0,
                id: Some("call_1".into()),
                kind: Some(ToolType::Function),
                function: Some(FunctionCallDelta { name: Some("f".into()), arguments: Some(String::new()) }),
            },
            ToolCallDelta { index: 0, id: None, kind: None, function: Some(FunctionCallDelta { name: None, arguments: Some("{\"a\"".into()) }) },
        ]),
        ..ChatDelta::default()
    };
    assert_eq!(
        value(&delta),
        json!({"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}},
            {"index": 0, "function": {"arguments": "{\"a\""}}
        ]})
    );
}

#[test]
fn openai_responses_parse_back() {
    // What a gateway reads from an upstream: OpenAI's own example, including fields
    // this crate does not model (`service_tier`, `annotations`).
    let c: ChatCompletion = serde_json::from_str(
        r#"{
          "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
          "object": "chat.completion",
          "created": 1741569952,
          "model": "gpt-4.1-2025-04-14",
          "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "Hello! How can I assist you today?",
                        "refusal": null, "annotations": []},
            "logprobs": null,
            "finish_reason": "stop"
          }],
          "usage": {"prompt_tokens": 19, "completion_tokens": 10, "total_tokens": 29,
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
          "service_tier": "default"
        }"#,
    )
    .unwrap();
    assert_eq!(c.choices[0].message.content.as_deref(), Some("Hello! How can I assist you today?"));
    assert_eq!(c.choices[0].finish_reason, FinishReason::Stop);
    assert_eq!(c.usage.total_tokens, 29);
    assert_eq!(c.system_fingerprint, None);

    // A wrong `object` is refused.
    let wrong = r#"{"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
                    "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}"#;
    assert!(serde_json::from_str::<ChatCompletion>(wrong).is_err());

    // Usage without the details objects (older servers) still parses.
    let chunk: ChatCompletionChunk = serde_json::from_str(
        r#"{"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}"#,
    )
    .unwrap();
    assert_eq!(chunk.usage.unwrap().completion_tokens, 4);
}

#[test]
fn legacy_completion() {
    let c = Completion::new(
        "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
        1589478378,
        "gpt-3.5-turbo-instruct",
        vec![CompletionChoice { text: "\n\nThis is indeed a test".into(), index: 0, logprobs: None, finish_reason: FinishReason::Length }],
        Usage::new(5, 7, 0),
    );
    assert_eq!(
        value(&c),
        json!({
          "id": "cmpl-uqkvlQyYK7bGYrRHQ0eXlWi7",
          "object": "text_completion",
          "created": 1589478378,
          "model": "gpt-3.5-turbo-instruct",
          "system_fingerprint": null,
          "choices": [{"text": "\n\nThis is indeed a test", "index": 0, "logprobs": null,
                       "finish_reason": "length"}],
          "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12,
                    "prompt_tokens_details": {"cached_tokens": 0},
                    "completion_tokens_details": {"reasoning_tokens": 0}}
        })
    );
}

#[test]
fn legacy_logprobs_with_echo() {
    let lp = CompletionLogprobs {
        tokens: vec!["Hello".into(), " world".into()],
        token_logprobs: vec![None, Some(-2.5)],
        top_logprobs: vec![None, Some([(" world".to_string(), -2.5), (" there".to_string(), -0.75)].into())],
        text_offset: vec![0, 5],
    };
    assert_eq!(
        value(&lp),
        json!({
          "tokens": ["Hello", " world"],
          "token_logprobs": [null, -2.5],
          "top_logprobs": [null, {" world": -2.5, " there": -0.75}],
          "text_offset": [0, 5]
        })
    );
}

#[test]
fn legacy_stream_chunks() {
    let chunk =
        CompletionChunk::new("cmpl-1", 1700000000, "m", vec![CompletionChunkChoice { text: " a".into(), index: 0, logprobs: None, finish_reason: None }]);
    assert_eq!(
        value(&chunk),
        json!({
          "id": "cmpl-1", "object": "text_completion", "created": 1700000000, "model": "m",
          "system_fingerprint": null,
          "choices": [{"text": " a", "index": 0, "logprobs": null, "finish_reason": null}],
          "usage": null
        })
    );
    let usage = CompletionChunk::usage("cmpl-1", 1700000000, "m", usage_9_12_21());
    assert_eq!(value(&usage)["choices"], json!([]));
    assert_eq!(value(&usage)["usage"], usage_json());
    assert_eq!(value(&usage)["object"], json!("text_completion"));
}

#[test]
fn model_list() {
    let list = ModelList::new(vec![ModelObject::new("lamina-8b-q4", 1686935002, "lamina").with_loaded(true), ModelObject::new("tiny", 0, "user")]);
    assert_eq!(
        value(&list),
        json!({
          "object": "list",
          "data": [
            {"id": "lamina-8b-q4", "object": "model", "created": 1686935002, "owned_by": "lamina", "loaded": true},
            {"id": "tiny", "object": "model", "created": 0, "owned_by": "user"}
          ]
        })
    );
    let back: ModelList = serde_json::from_value(value(&list)).unwrap();
    assert_eq!((back.data[0].loaded, back.data[1].id.as_str(), back.data[1].loaded), (Some(true), "tiny", None));
}
