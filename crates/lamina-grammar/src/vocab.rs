//! A model's vocabulary as llguidance sees it: every token's bytes in a token trie, the
//! ids that end generation, and our own tokenizer for the text a grammar forces.

use crate::error::GrammarError;
use std::sync::Arc;
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

/// What a vocabulary is built from: implemented over the model's tokenizer by its user
/// (this crate does not depend on the tokenizer crate, which reads GGUF files).
pub trait TokenSource: Send + Sync {
    /// Ids are `0..vocab_size()` (ids without a string have no bytes).
    fn vocab_size(&self) -> usize;
    /// The bytes a token stands for (a control token: its text).
    fn token_bytes(&self, id: u32) -> Vec<u8>;
    /// Whether `id` is a control token (`<|im_end|>`), never produced from plain text.
    fn is_special(&self, id: u32) -> bool;
    /// The ids that end generation, the tokenizer's EOS first. Not empty.
    fn end_ids(&self) -> Vec<u32>;
    /// The canonical tokens of `text` (no BOS/EOS), or `None` when it cannot be encoded.
    fn encode(&self, text: &str) -> Option<Vec<u32>>;
}

/// Every byte a token, and one end token: enough to check finished text against a
/// grammar ([`crate::Compiler::matches_json_schema`]) without a model's tokenizer.
struct Bytes;

impl TokenSource for Bytes {
    fn vocab_size(&self) -> usize {
        257
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        match id {
            0..=255 => vec![id as u8],
            _ => b"<end>".to_vec(),
        }
    }
    fn is_special(&self, id: u32) -> bool {
        id == 256
    }
    fn end_ids(&self) -> Vec<u32> {
        vec![256]
    }
    fn encode(&self, text: &str) -> Option<Vec<u32>> {
        Some(text.bytes().map(u32::from).collect())
    }
}

/// A vocabulary ready for llguidance ([`toktrie::TokenizerEnv`]).
pub struct Vocabulary {
    trie: TokTrie,
    source: Box<dyn TokenSource>,
    end_ids: Vec<u32>,
}

impl Vocabulary {
    pub fn new(source: impl TokenSource + 'static) -> Result<Self, GrammarError> {
        let n = source.vocab_size();
        let end_ids = source.end_ids();
        let Some(&eos) = end_ids.first() else {
            return Err(GrammarError::Vocabulary("it has no end-of-sequence token".into()));
        };
        if let Some(bad) = end_ids.iter().find(|&&t| t as usize >= n) {
            return Err(GrammarError::Vocabulary(format!("end-of-sequence id {bad} is outside the vocabulary of {n} tokens")));
        }
        let words: Vec<Vec<u8>> = (0..n as u32)
            .map(|id| {
                let bytes = source.token_bytes(id);
                if source.is_special(id) && !bytes.is_empty() {
                    // llguidance marks control tokens by a leading 0xFF byte (never valid UTF-8).
                    let mut w = Vec::with_capacity(bytes.len() + 1);
                    w.push(TokTrie::SPECIAL_TOKEN_MARKER);
                    w.extend_from_slice(&bytes);
                    w
                } else {
                    bytes
                }
            })
            .collect();
        let mut info = TokRxInfo::new(n as u32, eos);
        info.tok_end_of_turn = end_ids.get(1).copied();
        let trie = TokTrie::from(&info, &words).with_eos_tokens(&end_ids);
        Ok(Vocabulary { trie, source: Box::new(source), end_ids })
    }

    /// The byte vocabulary, for checking text rather than generating it.
    pub fn bytes() -> Vocabulary {
        Vocabulary::new(Bytes).expect("the byte vocabulary has an end token inside it")
    }

    /// The ids that end generation.
    pub fn end_ids(&self) -> &[u32] {
        &self.end_ids
    }

    pub fn size(&self) -> usize {
        self.trie.vocab_size()
    }

    /// As llguidance takes it.
    pub(crate) fn into_env(self) -> TokEnv {
        Arc::new(self)
    }
}

impl TokenizerEnv for Vocabulary {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Our tokenizer's tokens when they spell exactly `s` (a tokenizer may add a prefix
    /// space, or `s` may be part of a character); otherwise the longest-match tokens of
    /// the trie, which always do.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        if let Some(ids) = std::str::from_utf8(s).ok().and_then(|t| self.source.encode(t)) {
            let spelled: Vec<u8> = ids.iter().flat_map(|&t| self.trie.token(t).to_vec()).collect();
            if spelled == s {
                return ids;
            }
        }
        self.trie.greedy_tokenize(s)
    }
}
