//! `Tokenizer::min_tokens` / `check_fits`: a prompt that cannot fit the context is refused
//! by its length, before tokenizing it (a 10 MB prompt took 66 s and 1.5 GB to tokenize
//! just to be rejected). The bound must be a true lower bound on the token count for any
//! text, so it is checked here against real encodings of adversarial texts, and it must be
//! absent for tokenizers that can shrink or drop text.

use candle_core::quantized::gguf_file::{self, Value as V};
use lamina_core::Error;
use lamina_tokenizer::{char_tokenizer, train_bpe, Tokenizer};
use tokenizers::models::bpe::BPE;
use tokenizers::AddedToken;

fn smollm2() -> Tokenizer {
    let path = lamina_core::registry::default_model_path().expect("fetch SmolLM2");
    Tokenizer::from_gguf(&path).expect("load GGUF tokenizer")
}

fn shakespeare() -> String {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/tinyshakespeare.txt");
    std::fs::read_to_string(p).expect("tinyshakespeare.txt")
}

fn trained_bpe() -> Tokenizer {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus.txt");
    std::fs::write(&corpus, &shakespeare()[..100_000]).unwrap();
    train_bpe(&[corpus], 500, &["<|endoftext|>"], 2).unwrap()
}

/// A SentencePiece GGUF vocabulary, with all 256 byte tokens or none.
fn sentencepiece(byte_tokens: bool) -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    if byte_tokens {
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(6);
        }
    }
    for piece in ["▁", "h", "e", "l", "o", "he", "ll", "hell", "hello", "▁hello", "▁hellohellohello"] {
        tokens.push(piece.to_string());
        types.push(1);
    }
    let scores: Vec<f32> = (0..tokens.len()).map(|i| -(i as f32)).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spm.gguf");
    let md: Vec<(&str, V)> = vec![
        ("tokenizer.ggml.model", V::String("llama".into())),
        ("tokenizer.ggml.tokens", V::Array(tokens.into_iter().map(V::String).collect())),
        ("tokenizer.ggml.token_type", V::Array(types.into_iter().map(V::I32).collect())),
        ("tokenizer.ggml.scores", V::Array(scores.into_iter().map(V::F32).collect())),
        ("tokenizer.ggml.unknown_token_id", V::U32(0)),
    ];
    let refs: Vec<(&str, &V)> = md.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut std::fs::File::create(&path).unwrap(), &refs, &[]).unwrap();
    Tokenizer::from_gguf(&path).unwrap()
}

/// Texts built to need as few tokens per byte as possible, or to hit the edge cases:
/// the vocabulary's longest pieces repeated, special tokens, whitespace runs, control
/// characters, bytes some vocabularies lack, and characters outside every vocabulary.
fn adversarial(tok: &Tokenizer) -> Vec<String> {
    let mut texts: Vec<String> = vec![
        String::new(),
        " ".repeat(5000),
        "\n".repeat(3000),
        "\t \n ".repeat(700),
        "a".repeat(4000),
        "0123456789".repeat(300),
        "🙂日本語".repeat(300),
        "\u{4}\u{6}\u{13}\u{14}\u{16}\u{1d}".repeat(400),
        "\u{40000}\u{80000}\u{10FFFF}".repeat(200),
        "<|endoftext|><|im_start|><|im_end|><s></s>".repeat(200),
        "hellohellohello ".repeat(300),
        shakespeare()[..20_000].to_string(),
    ];
    // The 20 longest vocabulary entries, as the text they decode to, repeated.
    let mut pieces: Vec<(usize, u32)> = (0..tok.vocab_size() as u32).filter_map(|id| tok.id_to_token(id).map(|p| (p.len(), id))).collect();
    pieces.sort_unstable_by(|a, b| b.cmp(a));
    for &(_, id) in pieces.iter().take(20) {
        let text = tok.decode(&[id], false).unwrap();
        if !text.is_empty() {
            texts.push(text.repeat(4000 / text.len().max(1) + 1));
        }
    }
    texts
}

fn assert_lower_bound(name: &str, tok: &Tokenizer) {
    for text in adversarial(tok) {
        let real = tok.encode(&text, false).unwrap().len();
        let bound = tok.min_tokens(&text);
        assert!(bound <= real, "{name}: min_tokens says {bound} but {:?}… encodes to {real} tokens", &text.chars().take(40).collect::<String>());
    }
}

#[test]
fn the_bound_never_exceeds_the_real_token_count() {
    let tokenizers = [("smollm2", smollm2()), ("trained bpe", trained_bpe()), ("sentencepiece", sentencepiece(true))];
    for (name, tok) in &tokenizers {
        assert_lower_bound(name, tok);
        // …and it is a real bound, not 0, for these byte-complete vocabularies.
        assert!(tok.min_tokens(&"a".repeat(100_000)) > 100, "{name}");
    }
}

#[test]
fn a_10_mb_prompt_is_refused_by_its_length_without_tokenizing() {
    let tok = smollm2();
    let text = "a".repeat(10_000_000);
    let t0 = std::time::Instant::now();
    let e = tok.check_fits(&text, 8191).unwrap_err();
    assert!(t0.elapsed().as_secs_f64() < 1.0, "took {:?}", t0.elapsed());
    assert!(matches!(e, Error::PromptTooLongBytes { bytes: 10_000_000, max_tokens: 8191, .. }), "{e}");
    assert!(e.to_string().contains("prompt of 10000000 bytes has at least"), "{e}");
    // A prompt that fits passes; so does one that may fit and must be tokenized to know.
    tok.check_fits("The capital of France is", 8191).unwrap();
    tok.check_fits(&"a".repeat(20_000), 8191).unwrap();
    // Bytes the vocabulary has no token for are dropped, so they do not count.
    let dropped = "\u{4}".repeat(1_000_000);
    assert_eq!(tok.encode(&dropped[..1000], false).unwrap().len(), 0, "SmolLM2 drops U+0004");
    assert_eq!(tok.min_tokens(&dropped), 0);
}

#[test]
fn no_bound_for_tokenizers_that_can_shrink_or_drop_text() {
    let vocab: tokenizers::models::bpe::Vocab = [("[UNK]", 0u32), ("a", 1), ("b", 2)].into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    let bpe = || BPE::builder().vocab_and_merges(vocab.clone(), vec![]).unk_token("[UNK]".into()).build().unwrap();

    // A whitespace pre-tokenizer removes spaces: 10,000 of them encode to nothing.
    let mut inner = tokenizers::Tokenizer::new(bpe());
    inner.with_pre_tokenizer(Some(tokenizers::pre_tokenizers::whitespace::Whitespace {}));
    let ws = Tokenizer::from_inner(inner).unwrap();
    let spaces = format!("a{}b", " ".repeat(10_000));
    assert_eq!(ws.encode(&spaces, false).unwrap().len(), 2);
    assert_eq!(ws.min_tokens(&spaces), 0);

    // NFKC folds "ﬀ" (3 bytes) into "ff" (2 bytes).
    let mut inner = tokenizers::Tokenizer::new(bpe());
    inner.with_normalizer(Some(tokenizers::normalizers::unicode::NFKC));
    assert_eq!(Tokenizer::from_inner(inner).unwrap().min_tokens(&"ﬀ".repeat(1000)), 0);

    // An added token that strips the spaces around it swallows any number of them.
    let mut inner = tokenizers::Tokenizer::new(bpe());
    inner.add_special_tokens(&[AddedToken::from("<m>", true).lstrip(true)]);
    let strip = Tokenizer::from_inner(inner).unwrap();
    assert_eq!(strip.min_tokens("aaaaaaaaaaaaaaaa"), 0);

    // Unknown characters fused into one token, without byte fallback: a run of any
    // length is one token.
    let spm = sentencepiece(false);
    let unknown = "ÿ".repeat(5000);
    assert_eq!(spm.encode(&unknown, false).unwrap().len(), 2, "▁ and one fused <unk>");
    assert_eq!(spm.min_tokens(&unknown), 0);

    // A word-level model (the character tokenizer) has no piece-length guarantee.
    let chars = char_tokenizer("abc").unwrap();
    assert_eq!(chars.min_tokens("abcabc"), 0);
}
