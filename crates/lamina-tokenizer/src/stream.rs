//! Incremental decoding for printing tokens as they are generated.
//!
//! Decoding one token at a time is wrong in two ways: a character may be split over
//! several byte tokens (each alone decodes to U+FFFD), and some decoders depend on context
//! (SentencePiece strips the space only at the very start). So we keep a short window of
//! ids, decode the window with and without the newest tokens, and emit the difference
//! only once it no longer ends in an incomplete character.

use crate::tokenizer::Tokenizer;
use lamina_core::Result;

/// The state of an incremental decode without a borrow of the tokenizer, so it can live
/// inside long-lived structures (a sequence in the engine); each call is given the
/// tokenizer. [`DecodeStream`] is the borrowing convenience wrapper.
#[derive(Debug, Clone, Default)]
pub struct DecodeState {
    skip_special: bool,
    /// Ids not yet fully emitted, plus a few already-emitted ones for context.
    ids: Vec<u32>,
    /// `ids[..prefix]` is context only: their text was emitted earlier.
    prefix: usize,
}

const REPLACEMENT: char = '\u{FFFD}';

impl DecodeState {
    pub fn new(skip_special: bool) -> Self {
        DecodeState { skip_special, ids: Vec::new(), prefix: 0 }
    }

    /// Adds one id; returns new text if the pending ids now end on a character boundary.
    pub fn step(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[..self.prefix], self.skip_special)?;
        let after = tokenizer.decode(&self.ids, self.skip_special)?;
        if after.ends_with(REPLACEMENT) {
            // The newest bytes do not complete a character yet: wait for more.
            return Ok(None);
        }
        let new_text = new_suffix(&before, &after).to_string();
        self.advance();
        Ok(if new_text.is_empty() { None } else { Some(new_text) })
    }

    /// Returns whatever text is still pending (an incomplete trailing character comes out
    /// as U+FFFD, since no more bytes will complete it) and resets the state.
    pub fn flush(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        let before = tokenizer.decode(&self.ids[..self.prefix], self.skip_special)?;
        let after = tokenizer.decode(&self.ids, self.skip_special)?;
        let rest = new_suffix(&before, &after).to_string();
        self.ids.clear();
        self.prefix = 0;
        Ok(if rest.is_empty() { None } else { Some(rest) })
    }

    /// Marks every pending id as emitted, keeping a few for context so the next decode
    /// sees the same neighbourhood (spaces and merges at the boundary) as a full decode.
    fn advance(&mut self) {
        const CONTEXT: usize = 4;
        let drop = self.ids.len().saturating_sub(CONTEXT);
        self.ids.drain(..drop);
        self.prefix = self.ids.len();
    }
}

/// Streaming decoder over one [`Tokenizer`]; create with [`Tokenizer::decode_stream`].
#[derive(Debug)]
pub struct DecodeStream<'a> {
    tokenizer: &'a Tokenizer,
    state: DecodeState,
}

impl<'a> DecodeStream<'a> {
    pub fn new(tokenizer: &'a Tokenizer, skip_special: bool) -> Self {
        DecodeStream { tokenizer, state: DecodeState::new(skip_special) }
    }

    /// Adds one id; returns new text if the pending ids now end on a character boundary.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        self.state.step(self.tokenizer, id)
    }

    /// Returns whatever text is still pending and resets the stream.
    pub fn flush(&mut self) -> Result<Option<String>> {
        self.state.flush(self.tokenizer)
    }
}

/// The part of `after` beyond `before`. Decoders almost always extend the earlier text;
/// if one rewrote it, we emit from the first differing character (already-printed text
/// cannot be taken back).
fn new_suffix<'s>(before: &str, after: &'s str) -> &'s str {
    if let Some(rest) = after.strip_prefix(before) {
        return rest;
    }
    let common: usize = before.char_indices().zip(after.chars()).take_while(|((_, a), b)| a == b).map(|((_, a), _)| a.len_utf8()).sum();
    &after[common..]
}
