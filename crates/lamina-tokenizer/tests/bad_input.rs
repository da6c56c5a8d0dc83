//! Bad files and bad arguments give errors, never panics.

use candle_core::quantized::gguf_file;
use lamina_core::Error;
use lamina_tokenizer::{ChatMessage, ChatTemplate, Tokenizer};

#[test]
fn missing_files() {
    assert!(matches!(Tokenizer::from_file("/nonexistent/tokenizer.json"), Err(Error::Io { .. })));
    assert!(matches!(Tokenizer::from_gguf("/nonexistent/model.gguf"), Err(Error::ModelNotFound(_))));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(Tokenizer::from_dir(dir.path()), Err(Error::MissingTokenizer(_))));
}

#[test]
fn corrupt_tokenizer_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    for content in ["", "{not json", "{\"model\": 3}", "[1, 2, 3]"] {
        std::fs::write(&path, content).unwrap();
        assert!(matches!(Tokenizer::from_file(&path), Err(Error::Tokenizer(_))), "{content:?}");
        assert!(Tokenizer::from_dir(dir.path()).is_err());
    }
}

#[test]
fn corrupt_side_file_is_reported() {
    let tok = lamina_tokenizer::char_tokenizer("abc").unwrap();
    let dir = tempfile::tempdir().unwrap();
    tok.save(dir.path().join("tokenizer.json")).unwrap();
    std::fs::write(dir.path().join("tokenizer_config.json"), "{oops").unwrap();
    assert!(matches!(Tokenizer::from_dir(dir.path()), Err(Error::Tokenizer(_))));
}

fn write_gguf(path: &std::path::Path, metadata: &[(&str, gguf_file::Value)]) {
    let mut f = std::fs::File::create(path).unwrap();
    let md: Vec<(&str, &gguf_file::Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut f, &md, &[]).unwrap();
}

#[test]
fn gguf_without_tokenizer_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.gguf");
    write_gguf(&path, &[("general.architecture", gguf_file::Value::String("llama".into()))]);
    assert!(matches!(Tokenizer::from_gguf(&path), Err(Error::MissingTokenizer(_))));
}

#[test]
fn gguf_not_a_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.gguf");
    std::fs::write(&path, b"this is not a gguf file at all").unwrap();
    assert!(matches!(Tokenizer::from_gguf(&path), Err(Error::InvalidModelFile { .. })));
}

#[test]
fn gguf_with_inconsistent_tokenizer_metadata() {
    use gguf_file::Value as V;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let tokens = V::Array(vec![V::String("a".into()), V::String("b".into())]);
    // BOS id outside the vocabulary.
    write_gguf(
        &path,
        &[
            ("tokenizer.ggml.model", V::String("gpt2".into())),
            ("tokenizer.ggml.tokens", tokens.clone()),
            ("tokenizer.ggml.merges", V::Array(vec![])),
            ("tokenizer.ggml.bos_token_id", V::U32(7)),
        ],
    );
    assert!(matches!(Tokenizer::from_gguf(&path), Err(Error::InvalidModelFile { .. })));
    // Unsupported tokenizer model.
    write_gguf(&path, &[("tokenizer.ggml.model", V::String("bert".into())), ("tokenizer.ggml.tokens", tokens.clone())]);
    assert!(matches!(Tokenizer::from_gguf(&path), Err(Error::Tokenizer(_))));
    // A merge that refers to pieces not in the vocabulary can never apply: it is ignored,
    // as llama.cpp ignores it (our GGUF export writes one such merge for character vocabularies).
    write_gguf(
        &path,
        &[
            ("tokenizer.ggml.model", V::String("gpt2".into())),
            ("tokenizer.ggml.tokens", tokens),
            ("tokenizer.ggml.merges", V::Array(vec![V::String("x y".into())])),
        ],
    );
    assert!(Tokenizer::from_gguf(&path).is_ok());
}

#[test]
fn broken_chat_templates() {
    assert!(matches!(ChatTemplate::new("{% for %}", "", ""), Err(Error::ChatTemplate(_))));
    let t = ChatTemplate::new("{{ raise_exception('roles must alternate') }}", "", "").unwrap();
    let err = t.render(&[ChatMessage::user("hi")], true).unwrap_err();
    assert!(err.to_string().contains("roles must alternate"), "{err}");
}
