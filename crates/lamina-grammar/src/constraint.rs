//! One sequence's grammar state: the mask of tokens allowed next, and the step past each
//! chosen token.

use llguidance::Matcher;
use std::time::{Duration, Instant};
use toktrie::SimpleVob;

/// Time spent computing masks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskStats {
    pub masks: u64,
    pub total: Duration,
    pub longest: Duration,
}

impl MaskStats {
    pub fn record(&mut self, took: Duration) {
        self.masks += 1;
        self.total += took;
        self.longest = self.longest.max(took);
    }

    pub fn mean(&self) -> Duration {
        if self.masks == 0 {
            Duration::ZERO
        } else {
            self.total / self.masks as u32
        }
    }
}

/// The tokens allowed at one point of the output.
pub struct Mask(SimpleVob);

impl Mask {
    /// Sets every disallowed token's logit (and every id past the vocabulary) to -inf.
    pub fn apply(&self, logits: &mut [f32]) {
        let words = self.0.as_slice();
        for (i, chunk) in logits.chunks_mut(32).enumerate() {
            let w = words.get(i).copied().unwrap_or(0);
            if w == u32::MAX {
                continue;
            }
            for (b, l) in chunk.iter_mut().enumerate() {
                if w & (1 << b) == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }

    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }
}

/// A compiled grammar following one sequence's output.
pub struct Constraint {
    matcher: Matcher,
    end_ids: Vec<u32>,
    vocab: usize,
    stats: MaskStats,
}

impl Constraint {
    pub(crate) fn new(matcher: Matcher, end_ids: Vec<u32>, vocab: usize) -> Self {
        Constraint { matcher, end_ids, vocab, stats: MaskStats::default() }
    }

    /// An independent copy in the same state (one per choice of a request, compiled once).
    pub fn fork(&self) -> Constraint {
        Constraint { matcher: self.matcher.deep_clone(), end_ids: self.end_ids.clone(), vocab: self.vocab, stats: MaskStats::default() }
    }

    /// The tokens allowed next: only the end-of-sequence ids once the grammar is complete
    /// (and, should llguidance fail, so that generation ends rather than leave the grammar).
    pub fn mask(&mut self) -> Mask {
        let t0 = Instant::now();
        let mask = match self.matcher.compute_mask_or_eos() {
            Ok(m) => m,
            Err(_) => self.end_only(),
        };
        self.stats.record(t0.elapsed());
        Mask(mask)
    }

    fn end_only(&self) -> SimpleVob {
        let mut v = SimpleVob::alloc(self.vocab);
        for &t in &self.end_ids {
            v.allow_token(t);
        }
        v
    }

    /// Advances past the chosen `token`. A token the mask did not allow puts the
    /// constraint in its error state ([`error`](Self::error)), which ends generation.
    pub fn accept(&mut self, token: u32) {
        if self.matcher.is_stopped() {
            return;
        }
        let _ = self.matcher.consume_token(token);
    }

    /// Advances past all of `tokens` if the grammar allows them; false at the first it does not.
    pub(crate) fn consume_all(&mut self, tokens: &[u32]) -> bool {
        matches!(self.matcher.try_consume_tokens(tokens), Ok(n) if n == tokens.len())
    }

    /// Whether the output is complete (nothing but the end may follow) or the constraint failed.
    pub fn is_done(&self) -> bool {
        self.matcher.is_stopped()
    }

    /// Whether the output so far may end here.
    pub fn is_accepting(&mut self) -> bool {
        self.matcher.is_accepting().unwrap_or(false)
    }

    /// llguidance's reason, if the constraint failed.
    pub fn error(&self) -> Option<String> {
        self.matcher.get_error()
    }

    /// The ids that end generation.
    pub fn end_ids(&self) -> &[u32] {
        &self.end_ids
    }

    pub fn stats(&self) -> MaskStats {
        self.stats
    }
}
