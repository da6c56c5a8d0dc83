//! A Hugging Face tokenizer.json (BERT WordPiece, all-MiniLM-L6-v2) must give the same
//! input ids as the reference, including its [CLS]/[SEP] post-processing and without the
//! fixed padding its tokenizer.json asks for.

use lamina_tokenizer::Tokenizer;
use serde_json::Value;

const REF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/minilm_embeddings.jsonl");

fn cases() -> Vec<(String, Vec<u32>)> {
    std::fs::read_to_string(REF)
        .expect("reference file")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ids = v["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (v["text"].as_str().unwrap().to_string(), ids)
        })
        .collect()
}

/// Fetched once per process: `ensure` stages downloads in a per-process folder, so two
/// tests fetching at once would trample each other's staging files.
fn model_dir() -> &'static std::path::Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| lamina_core::registry::default_embedding_model_dir().expect("fetch MiniLM"))
}

fn check(tok: &Tokenizer) {
    let cases = cases();
    assert!(cases.len() >= 10);
    for (text, want) in cases {
        assert_eq!(tok.encode(&text, true).unwrap(), want, "{text:?}");
    }
}

#[test]
fn tokenizer_json_matches_reference_ids() {
    let dir = model_dir();
    check(&Tokenizer::from_file(dir.join("tokenizer.json")).unwrap());
}

#[test]
fn model_dir_matches_reference_ids() {
    let dir = model_dir();
    let tok = Tokenizer::from_dir(dir).unwrap();
    check(&tok);
    assert_eq!(tok.unk_id(), Some(100));
    assert_eq!(tok.pad_id(), Some(0));
    assert_eq!(tok.vocab_size(), 30522);
    assert!(tok.chat_template().is_none());
    assert!(tok.encode("hello", false).unwrap().len() == 1);
}

#[test]
fn truncation_keeps_cls_and_sep_like_sentence_transformers() {
    let tok = Tokenizer::from_dir(model_dir()).unwrap();
    let cases = cases();
    let (text, full) = cases.iter().find(|(_, ids)| ids.len() > 256).expect("the reference has a text over 256 word pieces");
    let (ids, cut) = tok.encode_truncated(text, 256).unwrap();
    assert!(cut);
    assert_eq!(ids.len(), 256);
    // [CLS] and the first 254 word pieces, then [SEP] (id 102).
    assert_eq!(&ids[..255], &full[..255]);
    assert_eq!(ids[255], 102);
    let (short, cut) = tok.encode_truncated("word", 256).unwrap();
    assert!(!cut);
    assert_eq!(short, tok.encode("word", true).unwrap());
    assert!(tok.encode_truncated("word", 2).is_err());
}
