//! `/tokenize` and `/detokenize` bodies in vLLM's shapes.

use lamina_api::{parse_json, ApiError, DetokenizeRequest, TokenizeRequest, TokenizeResponse};
use serde_json::json;

fn tokenize(v: serde_json::Value) -> Result<TokenizeRequest, ApiError> {
    let r: TokenizeRequest = parse_json(v.to_string().as_bytes())?;
    r.validate()?;
    Ok(r)
}

#[test]
fn special_tokens_are_added_to_prompts_and_left_to_the_template_for_messages() {
    assert!(tokenize(json!({"model": "m", "prompt": "hi"})).unwrap().adds_special_tokens());
    assert!(!tokenize(json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})).unwrap().adds_special_tokens());
    assert!(!tokenize(json!({"model": "m", "prompt": "hi", "add_special_tokens": false})).unwrap().adds_special_tokens());
}

#[test]
fn exactly_one_of_prompt_and_messages() {
    let cases = [
        (json!({"model": "m"}), "prompt"),
        (json!({"model": "m", "prompt": "a", "messages": [{"role": "user", "content": "b"}]}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (json!({"model": "", "prompt": "a"}), "model"),
        (json!({"model": "m", "prompt": 5}), "prompt"),
    ];
    for (body, param) in cases {
        let e = tokenize(body.clone()).unwrap_err();
        assert_eq!((e.status, e.param.as_deref()), (400, Some(param)), "{body}: {e}");
    }
}

#[test]
fn token_ids_are_non_negative_integers() {
    let r: DetokenizeRequest = parse_json(br#"{"model": "m", "tokens": [1, 2, 3]}"#).unwrap();
    assert_eq!(r.tokens, [1, 2, 3]);
    for (body, param) in
        [(r#"{"model": "m", "tokens": [1, -2]}"#, "tokens[1]"), (r#"{"model": "m", "tokens": [1.5]}"#, "tokens[0]"), (r#"{"model": "m"}"#, "tokens")]
    {
        let e = parse_json::<DetokenizeRequest>(body.as_bytes()).unwrap_err();
        assert_eq!(e.param.as_deref(), Some(param), "{body}: {e}");
    }
}

#[test]
fn the_answer_leaves_out_token_strings_unless_asked() {
    let v = serde_json::to_value(TokenizeResponse { count: 2, max_model_len: 8, tokens: vec![5, 6], token_strs: None }).unwrap();
    assert_eq!(v, json!({"count": 2, "max_model_len": 8, "tokens": [5, 6]}));
}
