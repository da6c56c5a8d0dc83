//! Constrained decoding in the engine: a model's tokenizer as the vocabulary llguidance
//! compiles grammars against, and a grammar's [`Lookahead`] as a request's logits
//! processor (its mask for the next token is computed while the forward pass runs).

use crate::pipeline::LogitsProcessor;
use lamina_core::{Error, Result};
use lamina_grammar::{Compiler, Lookahead, TokenSource, Vocabulary};
use lamina_tokenizer::Tokenizer;
use std::sync::Arc;

/// A tokenizer as a grammar vocabulary.
struct TokenizerSource(Arc<Tokenizer>);

impl TokenSource for TokenizerSource {
    fn vocab_size(&self) -> usize {
        self.0.vocab_size()
    }

    fn token_bytes(&self, id: u32) -> Vec<u8> {
        self.0.token_bytes(id)
    }

    fn is_special(&self, id: u32) -> bool {
        self.0.is_special(id)
    }

    fn end_ids(&self) -> Vec<u32> {
        let mut ids = self.0.end_of_generation_ids();
        if let Some(eos) = self.0.eos_id().filter(|e| ids.contains(e)) {
            ids.retain(|&t| t != eos);
            ids.insert(0, eos);
        }
        ids
    }

    fn encode(&self, text: &str) -> Option<Vec<u32>> {
        self.0.encode(text, false).ok()
    }
}

/// The grammar compiler for a model's tokenizer (indexes the vocabulary: make it once per
/// model and share it).
pub fn grammar_compiler(tokenizer: Arc<Tokenizer>) -> Result<Compiler> {
    let vocabulary = Vocabulary::new(TokenizerSource(tokenizer)).map_err(|e| Error::InvalidInput(e.to_string()))?;
    Compiler::new(vocabulary).map_err(|e| Error::InvalidInput(e.to_string()))
}

impl LogitsProcessor for Lookahead {
    fn process(&mut self, _generated: &[u32], logits: &mut [f32]) {
        self.apply(logits);
    }

    fn accept(&mut self, token: u32) {
        Lookahead::accept(self, token);
    }

    fn is_done(&self) -> bool {
        Lookahead::is_done(self)
    }
}
