//! Building vocabularies for models trained from scratch: byte-level BPE for real corpora,
//! and a character-level vocabulary for toy models (the classic tiny-Shakespeare setup).
//! Both produce ordinary `tokenizers` tokenizers so they save to and load from
//! tokenizer.json like any downloaded one.

use crate::tokenizer::{tok_err, Tokenizer};
use lamina_core::{Error, Result};
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::models::bpe::{BpeTrainer, Vocab, BPE};
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

/// Trains a byte-level BPE vocabulary of (at most) `vocab_size` tokens on `files`.
///
/// All 256 byte symbols are in the initial alphabet, so any text, including characters
/// absent from the corpus, can be encoded. `special_tokens` get the first ids, in order.
/// Pairs seen fewer than `min_frequency` times are not merged.
pub fn train_bpe(files: &[PathBuf], vocab_size: usize, special_tokens: &[&str], min_frequency: u64) -> Result<Tokenizer> {
    if files.is_empty() {
        return Err(Error::InvalidInput("train_bpe needs at least one training file".into()));
    }
    let minimum = 256 + special_tokens.len();
    if vocab_size < minimum {
        return Err(Error::InvalidInput(format!(
            "vocab_size {vocab_size} is too small: the 256 byte symbols and {} special tokens need {minimum}",
            special_tokens.len()
        )));
    }
    let mut names = Vec::with_capacity(files.len());
    for f in files {
        std::fs::metadata(f).map_err(|e| Error::io(f, e))?;
        let name = f.to_str().ok_or_else(|| Error::InvalidInput(format!("training file path is not UTF-8: {}", f.display())))?;
        names.push(name.to_string());
    }

    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(min_frequency)
        .special_tokens(special_tokens.iter().map(|s| AddedToken::from(*s, true)).collect())
        .initial_alphabet(alphabet)
        .show_progress(false)
        .build();
    let mut inner = tokenizers::Tokenizer::new(BPE::default());
    inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    inner.train_from_files(&mut TrainerWrapper::BpeTrainer(trainer), names).map_err(|e| Error::Tokenizer(format!("BPE training failed: {e}")))?;
    Tokenizer::from_inner(inner)
}

/// A character-level tokenizer: one token per distinct character of `text`, ids assigned in
/// code-point order. Encoding a character that is not in `text` is an error, since a
/// character model has no way to represent it.
pub fn char_tokenizer(text: &str) -> Result<Tokenizer> {
    let chars: BTreeSet<char> = text.chars().collect();
    let vocab: Vocab = chars.iter().enumerate().map(|(i, c)| (c.to_string(), i as u32)).collect();
    let model = WordLevel::builder().vocab(vocab).build().map_err(tok_err)?;
    let mut inner = tokenizers::Tokenizer::new(model);
    // Every character is its own word; `[\s\S]` matches any character, newlines included.
    let split = Split::new(SplitPattern::Regex(r"[\s\S]".into()), SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?;
    inner.with_pre_tokenizer(Some(split));
    // Without a decoder tokens would be joined with spaces.
    inner.with_decoder(Some(Fuse::new()));
    Tokenizer::from_inner(inner)
}
