//! One structured error enum for all library crates. Each variant carries enough context
//! to print a one-line, actionable message; the CLI prints `error: {e}` and exits non-zero.

use std::path::PathBuf;

/// Every failure a Lamina library can report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The cause is part of the message and deliberately not also exposed as
    /// `source()`: printers that walk the chain (anyhow's `{:#}`) would repeat it.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    #[error("{path} is {kind}, not a regular file")]
    NotRegularFile { path: PathBuf, kind: &'static str },
    #[error("model path does not exist: {0}")]
    ModelNotFound(PathBuf),
    #[error("invalid model file {path}: {reason}")]
    InvalidModelFile { path: PathBuf, reason: String },
    #[error("unsupported architecture `{0}` (supported: llama, mistral, qwen2, gpt2)")]
    UnsupportedArchitecture(String),
    #[error("unsupported tensor type {dtype} for tensor `{tensor}`")]
    UnsupportedTensorType { tensor: String, dtype: String },
    #[error("missing tensor `{0}` in model file")]
    MissingTensor(String),
    #[error("tensor `{name}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, actual: Vec<usize> },
    #[error("invalid model configuration: {0}")]
    InvalidConfig(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("no tokenizer found for model {0} (expected tokenizer.json beside it or a vocabulary in the GGUF metadata)")]
    MissingTokenizer(PathBuf),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("prompt has {prompt_tokens} tokens but the context window holds {context_length}")]
    PromptTooLong { prompt_tokens: usize, context_length: usize },
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("the draft model's vocabulary is not the target's: {0}")]
    DraftVocabulary(String),
    #[error("download failed: {0}")]
    Download(String),
    #[error("{what} needs {} but only {} of memory is available", crate::memory::human_bytes(*.needed), crate::memory::human_bytes(*.available))]
    OutOfMemory { what: String, needed: u64, available: u64 },
    #[error("prompt of {bytes} bytes has at least {min_tokens} tokens; at most {max_tokens} fit in the context window")]
    PromptTooLongBytes { bytes: usize, min_tokens: usize, max_tokens: usize },
    #[error("checkpoint {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("{0}")]
    Candle(String),
    #[error("{0}")]
    Other(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Attaches the path to an I/O error, so messages always say which file failed.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), error: source }
    }

    pub fn invalid_file(path: impl Into<PathBuf>, reason: impl std::fmt::Display) -> Self {
        Error::InvalidModelFile { path: path.into(), reason: reason.to_string() }
    }
}
