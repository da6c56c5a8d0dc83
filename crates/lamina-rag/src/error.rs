//! The crate's error type: every failure a user can cause or meet, typed, with a message
//! that says what to do.

use std::path::PathBuf;

pub type Result<T, E = RagError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum RagError {
    #[error("no collection named `{0}`")]
    UnknownCollection(String),
    #[error("a collection named `{0}` already exists")]
    CollectionExists(String),
    #[error("invalid collection name `{0}`: use 1-64 letters, digits, `-`, `_` or `.`, not starting with `.`")]
    InvalidName(String),
    #[error("collection `{collection}` holds {expected}-dimensional vectors of `{model}`; `{got_model}` gives {got}")]
    DimensionMismatch { collection: String, model: String, expected: usize, got_model: String, got: usize },
    #[error("{path}: {reason}")]
    Unreadable { path: PathBuf, reason: String },
    #[error("collection `{collection}` is corrupt: {reason}")]
    Corrupt { collection: String, reason: String },
    #[error("collection `{0}` is being written by another process (another `lamina index add`, or a server); try again when it has finished")]
    Locked(String),
    #[error("the saved {index} index is corrupt: {reason}")]
    CorruptIndex { index: &'static str, reason: String },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error("database {url}: {reason}")]
    Database { url: String, reason: String },
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error(transparent)]
    Core(#[from] lamina_core::Error),
}

impl RagError {
    pub fn io(context: impl std::fmt::Display, source: std::io::Error) -> RagError {
        RagError::Io { context: context.to_string(), source }
    }
}
