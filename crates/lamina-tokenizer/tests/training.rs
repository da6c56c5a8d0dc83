//! Vocabularies built from scratch: byte-level BPE and the character-level tokenizer.

use lamina_tokenizer::{char_tokenizer, train_bpe, Tokenizer};
use std::path::PathBuf;

const SHAKESPEARE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/tinyshakespeare.txt");

fn shakespeare() -> String {
    std::fs::read_to_string(SHAKESPEARE).expect("tinyshakespeare.txt")
}

fn first_chars(s: &str, n: usize) -> &str {
    let end = s.char_indices().nth(n).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

#[test]
fn bpe_trains_round_trips_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, first_chars(&shakespeare(), 200_000)).unwrap();
    let tok = train_bpe(&[corpus], 600, &["<|endoftext|>", "<|pad|>"], 2).unwrap();
    assert!(tok.vocab_size() > 256 && tok.vocab_size() <= 600, "{}", tok.vocab_size());
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(0));
    assert_eq!(tok.eos_id(), Some(0));

    // Text outside the corpus, including characters never seen, still round-trips.
    let text = "First Citizen:\nBefore we proceed any further, hear me speak. — naïve 日本 🙂<|endoftext|>";
    let ids = tok.encode(text, false).unwrap();
    assert!(ids.len() < text.len(), "merges compress the text");
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
    assert_eq!(*ids.last().unwrap(), 0, "special token parsed");

    let saved = dir.path().join("tokenizer.json");
    tok.save(&saved).unwrap();
    let reloaded = Tokenizer::from_file(&saved).unwrap();
    assert_eq!(reloaded.encode(text, false).unwrap(), ids);
    assert_eq!(reloaded.vocab_size(), tok.vocab_size());
    // The atomic write leaves no temporary file behind.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn bpe_rejects_bad_arguments() {
    assert!(train_bpe(&[], 1000, &[], 2).is_err());
    assert!(matches!(train_bpe(&[PathBuf::from("/nonexistent/corpus.txt")], 1000, &[], 2), Err(lamina_core::Error::Io { .. })));
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.txt");
    std::fs::write(&corpus, "abc").unwrap();
    assert!(train_bpe(&[corpus], 100, &[], 2).is_err(), "smaller than the byte alphabet");
}

#[test]
fn char_tokenizer_round_trips_shakespeare() {
    let full = shakespeare();
    let tok = char_tokenizer(&full).unwrap();
    assert_eq!(tok.vocab_size(), 65);
    // Ids follow code-point order: '\n' is the smallest character in the corpus.
    assert_eq!(tok.token_to_id("\n"), Some(0));
    assert_eq!(tok.token_to_id(" "), Some(1));

    let text = first_chars(&full, 10_000);
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(tok.decode(&ids, false).unwrap(), text);

    let dir = tempfile::tempdir().unwrap();
    let saved = dir.path().join("tokenizer.json");
    tok.save(&saved).unwrap();
    let reloaded = Tokenizer::from_file(&saved).unwrap();
    assert_eq!(reloaded.encode(text, false).unwrap(), ids);
    assert_eq!(reloaded.decode(&ids, false).unwrap(), text);

    // A character the corpus never had cannot be encoded.
    assert!(tok.encode("日", false).is_err());
}
