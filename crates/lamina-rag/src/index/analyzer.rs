//! BM25's text analysis: how a text becomes the terms it is indexed and searched by.
//!
//! The default ([`Analyzer::english`]) lower-cases, splits at anything that is not a letter
//! or digit (keeping in-word apostrophes: "don't" is one term, "cat's" is "cat"), drops
//! common English function words, and reduces each word to its Snowball English stem
//! ("indexing", "indexed" → "index"). docs/retrieval.md has what each step is worth on the
//! evaluation set.

use rust_stemmers::{Algorithm, Stemmer};

/// Which words are not indexed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopWords {
    /// Every word is a term.
    None,
    /// Lucene's classic 33 English stop words (articles, conjunctions, a few prepositions).
    Short,
    /// [`ENGLISH_STOP_WORDS`]: pronouns, auxiliaries, determiners, prepositions, conjunctions.
    English,
}

/// A text analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analyzer {
    pub stop_words: StopWords,
    /// Snowball English stemming.
    pub stem: bool,
    /// Apostrophes inside a word join it ("don't"); a trailing possessive "'s" is dropped.
    pub apostrophes: bool,
}

impl Default for Analyzer {
    fn default() -> Analyzer {
        Analyzer::english()
    }
}

/// Lucene's classic English stop set.
const SHORT_STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is", "it", "no", "not", "of", "on", "or", "such", "that", "the",
    "their", "then", "there", "these", "they", "this", "to", "was", "will", "with",
];

/// English function words: they carry grammar, not topic. Sorted, for binary search.
pub const ENGLISH_STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "above",
    "after",
    "again",
    "against",
    "all",
    "am",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "because",
    "been",
    "before",
    "being",
    "below",
    "between",
    "both",
    "but",
    "by",
    "can",
    "could",
    "did",
    "do",
    "does",
    "doing",
    "don't",
    "down",
    "during",
    "each",
    "few",
    "for",
    "from",
    "further",
    "had",
    "has",
    "have",
    "having",
    "he",
    "her",
    "here",
    "hers",
    "herself",
    "him",
    "himself",
    "his",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "it's",
    "its",
    "itself",
    "just",
    "me",
    "more",
    "most",
    "my",
    "myself",
    "no",
    "nor",
    "not",
    "now",
    "of",
    "off",
    "on",
    "once",
    "only",
    "or",
    "other",
    "our",
    "ours",
    "ourselves",
    "out",
    "over",
    "own",
    "same",
    "she",
    "should",
    "so",
    "some",
    "such",
    "than",
    "that",
    "the",
    "their",
    "theirs",
    "them",
    "themselves",
    "then",
    "there",
    "these",
    "they",
    "this",
    "those",
    "through",
    "to",
    "too",
    "under",
    "until",
    "up",
    "very",
    "was",
    "we",
    "were",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "whom",
    "why",
    "will",
    "with",
    "would",
    "you",
    "your",
    "yours",
    "yourself",
    "yourselves",
];

impl Analyzer {
    /// Lower-cased alphanumeric runs, nothing else: the analysis before this module.
    pub const PLAIN: Analyzer = Analyzer { stop_words: StopWords::None, stem: false, apostrophes: false };

    /// The default: stop words out, Snowball English stems, in-word apostrophes kept.
    pub const fn english() -> Analyzer {
        Analyzer { stop_words: StopWords::English, stem: true, apostrophes: true }
    }

    /// Its name, as saved beside an index: `stop=english,stem=1,apostrophes=1`.
    pub fn id(&self) -> String {
        let stop = match self.stop_words {
            StopWords::None => "none",
            StopWords::Short => "short",
            StopWords::English => "english",
        };
        format!("stop={stop},stem={},apostrophes={}", self.stem as u8, self.apostrophes as u8)
    }

    /// The analysis [`Analyzer::id`] names.
    pub fn from_id(id: &str) -> Option<Analyzer> {
        let mut a = Analyzer::PLAIN;
        let mut seen = 0;
        for part in id.split(',') {
            let (k, v) = part.split_once('=')?;
            let flag = || match v {
                "0" => Some(false),
                "1" => Some(true),
                _ => None,
            };
            match k {
                "stop" => {
                    a.stop_words = match v {
                        "none" => StopWords::None,
                        "short" => StopWords::Short,
                        "english" => StopWords::English,
                        _ => return None,
                    }
                }
                "stem" => a.stem = flag()?,
                "apostrophes" => a.apostrophes = flag()?,
                _ => return None,
            }
            seen += 1;
        }
        (seen == 3).then_some(a)
    }

    fn is_stop_word(&self, w: &str) -> bool {
        match self.stop_words {
            StopWords::None => false,
            StopWords::Short => SHORT_STOP_WORDS.contains(&w),
            StopWords::English => ENGLISH_STOP_WORDS.binary_search(&w).is_ok(),
        }
    }

    /// The terms of `text`, in order (repeats kept: BM25 counts them).
    pub fn terms(&self, text: &str) -> Vec<String> {
        let stemmer = self.stem.then(|| Stemmer::create(Algorithm::English));
        let mut out = Vec::new();
        let mut word = String::new();
        let mut emit = |word: &mut String| {
            if word.is_empty() {
                return;
            }
            let mut w = std::mem::take(word);
            if self.apostrophes {
                w = w.trim_matches('\'').to_string();
                if let Some(base) = w.strip_suffix("'s") {
                    w = base.to_string();
                }
            }
            if w.is_empty() || self.is_stop_word(&w) {
                return;
            }
            if self.apostrophes {
                w.retain(|c| c != '\'');
            }
            match &stemmer {
                Some(s) => out.push(s.stem(&w).into_owned()),
                None => out.push(w),
            }
        };
        for c in text.chars() {
            if c.is_alphanumeric() {
                word.extend(c.to_lowercase());
            } else if self.apostrophes && matches!(c, '\'' | '\u{2019}') && !word.is_empty() {
                word.push('\'');
            } else {
                emit(&mut word);
            }
        }
        emit(&mut word);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_words_are_sorted_and_lower_case() {
        assert!(ENGLISH_STOP_WORDS.windows(2).all(|w| w[0] < w[1]), "binary search needs a sorted list");
        assert!(ENGLISH_STOP_WORDS.iter().all(|w| w.chars().all(|c| c.is_lowercase() || c == '\'')));
    }

    #[test]
    fn ids_name_the_analysis() {
        for stop_words in [StopWords::None, StopWords::Short, StopWords::English] {
            for stem in [false, true] {
                for apostrophes in [false, true] {
                    let a = Analyzer { stop_words, stem, apostrophes };
                    assert_eq!(Analyzer::from_id(&a.id()), Some(a));
                }
            }
        }
        assert_eq!(Analyzer::english().id(), "stop=english,stem=1,apostrophes=1");
        for bad in ["", "stop=english", "stop=french,stem=1,apostrophes=1", "stop=none,stem=2,apostrophes=0", "x=1,stem=1,apostrophes=1"] {
            assert_eq!(Analyzer::from_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn plain_analysis_is_lower_cased_alphanumeric_runs() {
        assert_eq!(Analyzer::PLAIN.terms("The Cat's 2 mats—don't!"), vec!["the", "cat", "s", "2", "mats", "don", "t"]);
    }

    #[test]
    fn english_analysis_drops_stop_words_and_stems() {
        let a = Analyzer::english();
        assert_eq!(a.terms("The cat's 2 mats — don't index the INDEXED indexing!"), vec!["cat", "2", "mat", "index", "index", "index"]);
        assert_eq!(a.terms("Running runners ran quickly."), vec!["run", "runner", "ran", "quick"]);
        // A curly apostrophe is an apostrophe; one that opens or closes a quote is not part of a word.
        assert_eq!(a.terms("It\u{2019}s 'quoted' O'Neill"), vec!["quot", "oneil"]);
        assert!(a.terms("what is it that they were").is_empty());
        let short = Analyzer { stop_words: StopWords::Short, stem: false, apostrophes: false };
        assert_eq!(short.terms("what is the answer"), vec!["what", "answer"]);
        assert_eq!(a.terms("Ünïcode ÉTÉ"), vec!["ünïcode", "été"]);
    }
}
