//! Legacy completion requests written by hand after the OpenAI API reference
//! ("Completions" → "Create completion"), in each of the four prompt shapes.

use lamina_api::{parse_json, CompletionRequest, Prompt, PromptItem, Seed, Stop, DEFAULT_MAX_TOKENS};

fn parse(body: &str) -> CompletionRequest {
    let req: CompletionRequest = parse_json(body.as_bytes()).expect("parses");
    req.validate().expect("valid");
    req
}

#[test]
fn reference_example() {
    let req = parse(
        r#"{"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test",
            "max_tokens": 7, "temperature": 0}"#,
    );
    assert_eq!(req.model, "gpt-3.5-turbo-instruct");
    assert_eq!(req.prompt, Prompt::Text("Say this is a test".into()));
    assert_eq!(req.max_tokens(), 7);
    assert_eq!(req.temperature, Some(0.0));
    assert_eq!(req.prompt.items(), vec![PromptItem::Text("Say this is a test")]);
}

#[test]
fn max_tokens_defaults_to_16() {
    let req = parse(r#"{"model": "m", "prompt": "x"}"#);
    assert_eq!(req.max_tokens, None);
    assert_eq!(req.max_tokens(), 16);
    assert_eq!(DEFAULT_MAX_TOKENS, 16);
    assert_eq!(req.n(), 1);
}

#[test]
fn prompt_shapes() {
    let req = parse(r#"{"model": "m", "prompt": ["a", "b"]}"#);
    assert_eq!(req.prompt, Prompt::Texts(vec!["a".into(), "b".into()]));
    assert_eq!(req.prompt.items(), vec![PromptItem::Text("a"), PromptItem::Text("b")]);

    let req = parse(r#"{"model": "m", "prompt": [1212, 318, 257]}"#);
    assert_eq!(req.prompt, Prompt::Tokens(vec![1212, 318, 257]));
    assert_eq!(req.prompt.items(), vec![PromptItem::Tokens(&[1212, 318, 257])]);

    let req = parse(r#"{"model": "m", "prompt": [[1, 2], [3]]}"#);
    assert_eq!(req.prompt, Prompt::TokenBatches(vec![vec![1, 2], vec![3]]));
    assert_eq!(req.prompt.items(), vec![PromptItem::Tokens(&[1, 2]), PromptItem::Tokens(&[3])]);

    // An empty string is a valid prompt (generate from the start of text).
    let req = parse(r#"{"model": "m", "prompt": ""}"#);
    assert_eq!(req.prompt, Prompt::Text(String::new()));
}

#[test]
fn prompt_serialises_in_its_shape() {
    for body in [r#""x""#, r#"["a","b"]"#, "[1,2]", "[[1],[2,3]]"] {
        let p: Prompt = serde_json::from_str(body).unwrap();
        assert_eq!(serde_json::to_string(&p).unwrap(), body);
    }
}

#[test]
fn every_field() {
    let req = parse(
        r#"{
          "model": "m", "prompt": "Once upon a time",
          "max_tokens": 50, "temperature": 1.0, "top_p": 0.95, "n": 3, "best_of": 3,
          "stop": "\n", "seed": 42, "logprobs": 5, "echo": true,
          "presence_penalty": 0.1, "frequency_penalty": 0.2,
          "logit_bias": {"50256": -100},
          "stream": true, "stream_options": {"include_usage": true},
          "suffix": null, "user": "u",
          "top_k": 50, "min_p": 0.1, "repetition_penalty": 1.05, "ignore_eos": false
        }"#,
    );
    assert_eq!(req.max_tokens(), 50);
    assert_eq!(req.top_p, Some(0.95));
    assert_eq!(req.n(), 3);
    assert_eq!(req.best_of, Some(3));
    assert_eq!(req.stop, Some(Stop::One("\n".into())));
    assert_eq!(req.seed, Some(Seed::from(42u64)));
    assert_eq!(req.logprobs, Some(5));
    assert!(req.is_echo());
    assert_eq!(req.presence_penalty, Some(0.1));
    assert_eq!(req.frequency_penalty, Some(0.2));
    assert_eq!(req.logit_bias_map().unwrap(), vec![(50256, -100.0)]);
    assert!(req.include_usage());
    assert_eq!(req.suffix, None);
    assert_eq!(req.user.as_deref(), Some("u"));
    assert_eq!(req.top_k(), Some(50));
    assert_eq!(req.min_p, Some(0.1));
    assert_eq!(req.repetition_penalty, Some(1.05));
    assert_eq!(req.ignore_eos, Some(false));
}

#[test]
fn empty_suffix_and_best_of_one_are_accepted() {
    let req = parse(r#"{"model": "m", "prompt": "x", "suffix": "", "best_of": 1, "logprobs": 0}"#);
    assert_eq!(req.suffix.as_deref(), Some(""));
}

#[test]
fn zero_max_tokens_with_echo_scores_the_prompt() {
    let req = parse(r#"{"model": "m", "prompt": "x", "max_tokens": 0, "echo": true, "logprobs": 1}"#);
    assert_eq!(req.max_tokens(), 0);
}

#[test]
fn unknown_fields_are_ignored() {
    let req = parse(r#"{"model": "m", "prompt": "x", "frobnicate": {"deep": [1]}}"#);
    assert_eq!(req.model, "m");
}
