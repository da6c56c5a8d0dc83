//! What can go wrong when compiling a grammar.

/// A grammar that cannot be used, with llguidance's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// The grammar (schema, Lark or GBNF text) is malformed or unsupported.
    #[error("invalid {kind}: {message}")]
    Invalid { kind: &'static str, message: String },
    /// The vocabulary cannot be used for constrained decoding.
    #[error("the tokenizer cannot be used for constrained decoding: {0}")]
    Vocabulary(String),
}
