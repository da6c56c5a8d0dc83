//! Streaming stop-string detection for generated text.
//!
//! Text arrives a token at a time, and a stop string such as `"\nUser:"` is
//! usually split over several tokens. Text that might be the start of a stop
//! string is therefore held back until the following text shows whether it
//! is one, so that a client never receives part of a stop string.

/// Finds the first occurrence of any of a set of stop strings in text that
/// arrives in pieces, emitting everything before it.
///
/// The result is the same however the text is split: the concatenation of
/// everything returned by [`push`](Self::push) and [`flush`](Self::flush)
/// equals the whole text cut right before the earliest-starting occurrence
/// of any stop string (or the whole text if none occurs).
#[derive(Debug, Clone)]
pub struct StopMatcher {
    /// Non-empty stop strings.
    stops: Vec<String>,
    /// Length in bytes of the longest stop string; bounds what is held back.
    longest: usize,
    /// Text received but not yet emitted.
    pending: String,
    /// A stop string was found; nothing more is ever emitted.
    stopped: bool,
}

impl StopMatcher {
    /// Empty strings are ignored: they would match before any text and stop
    /// every generation immediately, which is never what a caller means.
    pub fn new(stops: Vec<String>) -> Self {
        let stops: Vec<String> = stops.into_iter().filter(|s| !s.is_empty()).collect();
        let longest = stops.iter().map(String::len).max().unwrap_or(0);
        Self { stops, longest, pending: String::new(), stopped: false }
    }

    /// Feeds newly decoded text; returns the text that is safe to emit now
    /// and whether a stop string was hit.
    ///
    /// Text that could be the beginning of a stop string is held back until
    /// disambiguated. When a stop is hit, the returned text ends right before
    /// the stop string; from then on every call returns `("", true)`.
    ///
    /// A complete stop string is not reported while a longer stop string that
    /// starts earlier could still complete (stops `"abcd"` and `"c"` on text
    /// `"abc"`): the earliest occurrence wins, so that one is waited for.
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.pending.push_str(text);
        let first_match = self.first_match();
        let first_partial = self.first_partial();
        match (first_match, first_partial) {
            (Some(m), Some(p)) if p < m => (self.emit_before(p), false),
            (Some(m), _) => {
                let out = self.emit_before(m);
                self.stop();
                (out, true)
            }
            (None, Some(p)) => (self.emit_before(p), false),
            (None, None) => (std::mem::take(&mut self.pending), false),
        }
    }

    /// End of generation: releases held-back text. No more text can arrive,
    /// so partial stop strings are just text; a complete stop string still
    /// held back (see [`push`](Self::push)) cuts the output and marks the
    /// matcher stopped.
    pub fn flush(&mut self) -> String {
        if self.stopped {
            return String::new();
        }
        match self.first_match() {
            Some(m) => {
                let out = self.emit_before(m);
                self.stop();
                out
            }
            None => std::mem::take(&mut self.pending),
        }
    }

    /// Whether a stop string has been found (by `push` or by `flush`).
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Byte offset in `pending` of the earliest complete stop string.
    fn first_match(&self) -> Option<usize> {
        self.stops.iter().filter_map(|s| self.pending.find(s.as_str())).min()
    }

    /// Earliest offset from which the rest of `pending` is a proper prefix of
    /// some stop string, i.e. where a stop string may still be completing.
    /// Only the last `longest - 1` bytes can qualify, which keeps this cheap
    /// and the held-back text short.
    fn first_partial(&self) -> Option<usize> {
        let bytes = self.pending.as_bytes();
        let earliest = bytes.len().saturating_sub(self.longest.saturating_sub(1));
        (earliest..bytes.len()).filter(|&i| self.pending.is_char_boundary(i)).find(|&i| {
            let tail = &bytes[i..];
            self.stops.iter().any(|s| s.len() > tail.len() && s.as_bytes().starts_with(tail))
        })
    }

    /// Removes and returns `pending[..at]`; `at` is always a char boundary
    /// because it comes from `find` or from `first_partial`'s boundary check.
    fn emit_before(&mut self, at: usize) -> String {
        let rest = self.pending.split_off(at);
        std::mem::replace(&mut self.pending, rest)
    }

    fn stop(&mut self) {
        self.stopped = true;
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(stops: &[&str]) -> StopMatcher {
        StopMatcher::new(stops.iter().map(|s| s.to_string()).collect())
    }

    /// Pushes every piece, then flushes; returns all emitted text and whether
    /// any push reported a hit.
    fn run(m: &mut StopMatcher, pieces: &[&str]) -> (String, bool) {
        let mut out = String::new();
        let mut hit = false;
        for piece in pieces {
            let (text, h) = m.push(piece);
            assert!(!hit || (text.is_empty() && h), "output after a hit");
            out.push_str(&text);
            hit |= h;
        }
        out.push_str(&m.flush());
        (out, hit)
    }

    #[test]
    fn stop_spanning_several_pushes() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("Hel"), ("Hel".to_string(), false));
        assert_eq!(m.push("lo\nUs"), ("lo".to_string(), false));
        assert_eq!(m.push("er:"), (String::new(), true));
        assert_eq!(m.push("more"), (String::new(), true));
        assert_eq!(m.flush(), "");
        assert!(m.is_stopped());
    }

    #[test]
    fn false_prefix_is_emitted_in_full() {
        let mut m = matcher(&["\nUser:"]);
        assert_eq!(m.push("a\nUs"), ("a".to_string(), false));
        assert_eq!(m.push("ual"), ("\nUsual".to_string(), false));
        assert_eq!(m.push("\nU"), (String::new(), false));
        assert_eq!(m.flush(), "\nU");
        assert!(!m.is_stopped());
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = matcher(&["END", "stop"]);
        assert_eq!(run(&mut m, &["a stop then END"]), ("a ".to_string(), true));
        let mut m = matcher(&["END", "stop"]);
        assert_eq!(run(&mut m, &["aEN", "D stop"]), ("a".to_string(), true));
        // a longer stop starting earlier beats a shorter one inside it
        let mut m = matcher(&["abcd", "c"]);
        assert_eq!(m.push("xabc"), ("x".to_string(), false));
        assert_eq!(m.push("d"), (String::new(), true));
        let mut m = matcher(&["abcd", "c"]);
        assert_eq!(m.push("xabc"), ("x".to_string(), false));
        assert_eq!(m.push("e"), ("ab".to_string(), true));
        // ... and at the end of generation the complete one applies
        let mut m = matcher(&["abcd", "c"]);
        assert_eq!(m.push("xabc"), ("x".to_string(), false));
        assert_eq!(m.flush(), "ab");
        assert!(m.is_stopped());
    }

    #[test]
    fn no_stops_pass_everything_through() {
        let mut m = matcher(&[]);
        assert_eq!(m.push("anything\nUser:"), ("anything\nUser:".to_string(), false));
        assert_eq!(m.flush(), "");
        let mut m = matcher(&[""]);
        assert_eq!(m.push("x"), ("x".to_string(), false));
    }

    #[test]
    fn multibyte_characters_around_stops() {
        let mut m = matcher(&["日本"]);
        assert_eq!(run(&mut m, &["é🎉日", "本語"]), ("é🎉".to_string(), true));
        // a stop whose first byte is shared with a different character
        let mut m = matcher(&["日本"]);
        assert_eq!(m.push("aé日"), ("aé".to_string(), false));
        assert_eq!(m.push("月"), ("日月".to_string(), false));
        let mut m = matcher(&["🎉!"]);
        assert_eq!(run(&mut m, &["ok🎉", "?", "🎉", "!x"]), ("ok🎉?".to_string(), true));
    }

    /// Tiny deterministic RNG so the property test needs no dependency.
    struct TestRng(u64);
    impl TestRng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn any_split_gives_text_before_first_stop() {
        // A small alphabet makes stop strings (and near misses) frequent.
        const ALPHABET: [&str; 6] = ["a", "b", "\n", "é", "日", "🎉"];
        let mut rng = TestRng(0x5EED);
        for case in 0..3000 {
            let random_string = |rng: &mut TestRng, max_chars: usize| -> String {
                let n = 1 + rng.below(max_chars);
                (0..n).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect()
            };
            let text = random_string(&mut rng, 40);
            let stops: Vec<String> = (0..rng.below(4)).map(|_| random_string(&mut rng, 4)).collect();

            let cut = stops.iter().filter_map(|s| text.find(s.as_str())).min();
            let expected = &text[..cut.unwrap_or(text.len())];

            // split at random char boundaries
            let boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).skip(1).collect();
            let mut cuts: Vec<usize> = boundaries.into_iter().filter(|_| rng.below(3) == 0).collect();
            cuts.insert(0, 0);
            cuts.push(text.len());
            let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();

            let mut m = StopMatcher::new(stops.clone());
            let (out, _) = run(&mut m, &pieces);
            assert_eq!(out, expected, "case {case}: text {text:?} stops {stops:?} pieces {pieces:?}");
            assert_eq!(m.is_stopped(), cut.is_some(), "case {case}");
        }
    }
}
