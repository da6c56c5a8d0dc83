//! The SmolLM2 GGUF vocabulary must tokenize exactly like llama.cpp (reference ids recorded
//! from llama.cpp), render its chat template like the real one, and stream-decode safely.

use lamina_tokenizer::{ChatMessage, Tokenizer};
use serde_json::Value;
use std::sync::OnceLock;

const TOKENIZE_REF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/smollm2_tokenize.jsonl");
const GREEDY_REF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/smollm2_greedy_llamacpp.jsonl");

fn tokenizer() -> &'static Tokenizer {
    static TOK: OnceLock<Tokenizer> = OnceLock::new();
    TOK.get_or_init(|| {
        let path = lamina_core::registry::default_model_path().expect("fetch SmolLM2");
        Tokenizer::from_gguf(&path).expect("load GGUF tokenizer")
    })
}

fn jsonl(path: &str) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("reference file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().expect("ids").iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

#[test]
fn matches_llama_cpp_token_ids() {
    let tok = tokenizer();
    let cases = jsonl(TOKENIZE_REF);
    assert!(cases.len() >= 10);
    let mut failures = Vec::new();
    for case in &cases {
        let text = case["text"].as_str().unwrap();
        let want = ids(&case["ids"]);
        let got = tok.encode(text, false).unwrap();
        if got != want {
            failures.push(format!("{text:?}\n  want {want:?}\n  got  {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn decode_inverts_encode() {
    let tok = tokenizer();
    for case in jsonl(TOKENIZE_REF) {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(&ids, false).unwrap(), text);
    }
}

#[test]
fn special_tokens_and_metadata() {
    let tok = tokenizer();
    assert_eq!(tok.vocab_size(), 49152);
    assert_eq!(tok.bos_id(), Some(1));
    assert_eq!(tok.eos_id(), Some(2));
    assert!(!tok.add_bos());
    assert!(tok.is_end_of_generation(2), "<|im_end|> ends generation");
    assert!(tok.is_end_of_generation(0), "<|endoftext|> ends generation");
    assert!(!tok.is_end_of_generation(1));
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.id_to_token(905).as_deref(), Some("Ġworld"));
    assert_eq!(tok.token_to_piece(905), " world");
    assert_eq!(tok.token_to_piece(1), "<|im_start|>");
    // Special tokens are dropped only when asked.
    let ids = tok.encode("<|im_start|>user\nhi<|im_end|>", false).unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(tok.decode(&ids, true).unwrap(), "user\nhi");
    // Out-of-range ids are an error, not a panic or silent drop.
    assert!(tok.decode(&[49152], false).is_err());
    assert_eq!(tok.token_to_piece(u32::MAX), "");
}

#[test]
fn chat_template_matches_reference_prompt() {
    let tok = tokenizer();
    let want = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
    let messages =
        [ChatMessage::system("You are a helpful AI assistant named SmolLM, trained by Hugging Face"), ChatMessage::user("What is the capital of France?")];
    assert_eq!(tok.apply_chat_template(&messages, true).unwrap(), want);
    // The template supplies the default system prompt when there is none.
    assert_eq!(tok.apply_chat_template(&messages[1..], true).unwrap(), want);
    // The same prompt was fed to llama.cpp through the real template.
    assert!(jsonl(GREEDY_REF).iter().any(|c| c["prompt"].as_str() == Some(want)));
}

#[test]
fn chat_template_missing_is_a_clear_error() {
    let mut tok = tokenizer().clone();
    tok.set_chat_template(None);
    let err = tok.apply_chat_template(&[ChatMessage::user("hi")], true).unwrap_err();
    assert!(matches!(err, lamina_core::Error::ChatTemplate(_)), "{err}");
}

#[test]
fn decode_stream_is_utf8_safe() {
    let tok = tokenizer();
    let text = "日本語 🙂 café — naïve 👍🏽 done";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = tok.decode_stream(false);
    let mut chunks = Vec::new();
    for &id in &ids {
        if let Some(chunk) = stream.step(id).unwrap() {
            chunks.push(chunk);
        }
    }
    chunks.extend(stream.flush().unwrap());
    assert!(chunks.len() > 3, "emitted incrementally: {chunks:?}");
    for c in &chunks {
        assert!(!c.contains('\u{FFFD}'), "chunk {c:?} has a replacement character");
    }
    assert_eq!(chunks.concat(), tok.decode(&ids, false).unwrap());
    assert_eq!(chunks.concat(), text);
}
