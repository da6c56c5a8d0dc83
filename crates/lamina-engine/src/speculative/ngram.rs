//! Prompt lookup: drafts copied from earlier in the sequence itself.
//!
//! The last `n` tokens (`max_n` first, down to `min_n`) are looked for earlier in the
//! prompt and output, the latest occurrence first; the tokens that followed it there are
//! the proposal. Output that quotes or edits its input (summaries, rewrites, code
//! changes, extraction) follows long runs of the prompt, which this finds with no second
//! model and no memory; where nothing matches it proposes nothing and the step is a plain
//! decode.

use super::{DraftRequest, Drafter};
use lamina_core::Result;

/// The prompt-lookup drafter: n-grams of `min_n..=max_n` tokens.
#[derive(Debug, Clone, Copy)]
pub struct PromptLookup {
    pub min_n: usize,
    pub max_n: usize,
}

impl PromptLookup {
    /// Up to `k` tokens that followed the latest earlier occurrence of the longest
    /// matching suffix of `tokens`, appended to `out`.
    pub fn lookup(&self, tokens: &[u32], k: usize, out: &mut Vec<u32>) {
        let len = tokens.len();
        if k == 0 {
            return;
        }
        for n in (self.min_n..=self.max_n).rev() {
            if n == 0 || len <= n {
                continue;
            }
            let suffix = &tokens[len - n..];
            // Start positions of an earlier copy, latest first; the copy must end
            // before the suffix does, so something follows it.
            if let Some(i) = (0..len - n).rev().find(|&i| tokens[i..i + n] == *suffix) {
                let from = i + n;
                out.extend_from_slice(&tokens[from..(from + k).min(len)]);
                return;
            }
        }
    }
}

impl Drafter for PromptLookup {
    fn propose(&mut self, reqs: &[DraftRequest<'_>], out: &mut [Vec<u32>]) -> Result<()> {
        for (r, o) in reqs.iter().zip(out) {
            self.lookup(r.tokens, r.k, o);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn look(tokens: &[u32], k: usize, min_n: usize, max_n: usize) -> Vec<u32> {
        let mut out = Vec::new();
        PromptLookup { min_n, max_n }.lookup(tokens, k, &mut out);
        out
    }

    #[test]
    fn proposes_what_followed_the_longest_latest_match() {
        // "1 2 3" occurred at the start followed by 4 5 6 7.
        assert_eq!(look(&[1, 2, 3, 4, 5, 6, 7, 9, 1, 2, 3], 3, 1, 3), vec![4, 5, 6]);
        // At most what is there: 2 3 was followed only by 9 at the end.
        assert_eq!(look(&[8, 2, 3, 9, 2, 3], 5, 2, 2), vec![9, 2, 3]);
        // The latest occurrence wins among equally long ones.
        assert_eq!(look(&[5, 6, 1, 5, 6, 2, 5, 6], 1, 2, 2), vec![2]);
        // A longer match is preferred to a later shorter one: "1 2" (→ 3) over "2" (→ 7).
        assert_eq!(look(&[1, 2, 3, 2, 7, 1, 2], 1, 1, 2), vec![3]);
        // Below min_n nothing is proposed.
        assert_eq!(look(&[1, 2, 3, 4, 2], 3, 2, 4), Vec::<u32>::new());
        // A repeating pattern continues itself (the copy may overlap the suffix).
        assert_eq!(look(&[7, 7, 7], 4, 2, 2), vec![7]);
        assert_eq!(look(&[1, 2, 1, 2, 1, 2], 4, 2, 4), vec![1, 2]);
        // Too short to hold an earlier copy, or no room asked for.
        assert_eq!(look(&[1, 1], 3, 2, 2), Vec::<u32>::new());
        assert_eq!(look(&[1, 2, 1, 2], 0, 1, 2), Vec::<u32>::new());
    }
}
