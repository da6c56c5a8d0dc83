//! A small SentencePiece-style ("llama") GGUF vocabulary: merges come from scores, unknown
//! characters fall back to byte tokens, BOS is added by default, and the space prefix is
//! added on encode and removed on decode.

use candle_core::quantized::gguf_file::{self, Value as V};
use lamina_tokenizer::{ChatMessage, Tokenizer};

fn build() -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0f32, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in [
        ("▁", -1.0),
        ("h", -2.0),
        ("e", -2.0),
        ("l", -2.0),
        ("o", -2.0),
        ("w", -2.0),
        ("r", -2.0),
        ("d", -2.0),
        ("he", -3.0),
        ("ll", -4.0),
        ("hell", -5.0),
        ("hello", -6.0),
        ("▁hello", -7.0),
        ("or", -8.0),
        ("wor", -9.0),
        ("▁w", -10.0),
        ("▁wor", -11.0),
        ("▁world", -12.0),
        ("ld", -12.5),
    ] {
        tokens.push(piece.to_string());
        types.push(1);
        scores.push(score);
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    let md: Vec<(&str, V)> = vec![
        ("tokenizer.ggml.model", V::String("llama".into())),
        ("tokenizer.ggml.tokens", V::Array(tokens.into_iter().map(V::String).collect())),
        ("tokenizer.ggml.token_type", V::Array(types.into_iter().map(V::I32).collect())),
        ("tokenizer.ggml.scores", V::Array(scores.into_iter().map(V::F32).collect())),
        ("tokenizer.ggml.bos_token_id", V::U32(1)),
        ("tokenizer.ggml.eos_token_id", V::U32(2)),
        ("tokenizer.ggml.unknown_token_id", V::U32(0)),
        (
            "tokenizer.chat_template",
            V::String("{{ bos_token }}{% for m in messages %}[{{ m.role.upper() }}] {{ m.content.strip() }}{{ eos_token }}{% endfor %}".into()),
        ),
    ];
    let refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &refs, &[]).unwrap();
    Tokenizer::from_gguf(&path).unwrap()
}

#[test]
fn sentencepiece_vocabulary() {
    let tok = build();
    let id = |s: &str| tok.token_to_id(s).unwrap();
    assert!(tok.add_bos());
    let ids = tok.encode("hello world", true).unwrap();
    assert_eq!(ids, vec![1, id("▁hello"), id("▁world")]);
    assert_eq!(tok.decode(&ids, true).unwrap(), "hello world");
    assert_eq!(tok.token_to_piece(id("▁world")), " world");

    // Characters outside the vocabulary become their UTF-8 bytes.
    let ids = tok.encode("hé", false).unwrap();
    assert_eq!(ids, vec![id("▁"), id("h"), id("<0xC3>"), id("<0xA9>")]);
    assert_eq!(tok.decode(&ids, false).unwrap(), "hé");

    // Streaming keeps the multi-byte character together and drops the space prefix once.
    let mut stream = tok.decode_stream(true);
    let mut out = String::new();
    for &i in &tok.encode("hello é world", true).unwrap() {
        if let Some(s) = stream.step(i).unwrap() {
            assert!(!s.contains('\u{FFFD}'));
            out.push_str(&s);
        }
    }
    out.extend(stream.flush().unwrap());
    assert_eq!(out, "hello é world");

    assert!(tok.is_end_of_generation(2));
    let prompt = tok.apply_chat_template(&[ChatMessage::user("  hi  ")], false).unwrap();
    assert_eq!(prompt, "<s>[USER] hi</s>");
}
