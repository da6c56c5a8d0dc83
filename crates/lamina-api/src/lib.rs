//! Wire types of Lamina's OpenAI-compatible HTTP API, shared by the server and the
//! gateway: request bodies ([`ChatCompletionRequest`], [`CompletionRequest`], [`EmbeddingRequest`]), response
//! bodies and stream chunks, the error body ([`ApiError`]), body parsing that names the
//! offending field ([`parse_json`]), range validation, and server-sent events ([`sse`]).
//!
//! The shapes follow the OpenAI API reference (<https://platform.openai.com/docs/api-reference>).
//! This crate is plain data plus parsing and validation: no HTTP framework, no async
//! runtime, no global state, and no randomness (the server supplies ids and timestamps).

pub mod chat;
pub mod common;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod ids;
pub mod models;
pub mod parse;
pub mod sse;
pub mod usage;
pub mod validate;

pub use chat::{
    text_of, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatLogprobs, ChatMessage, ContentPart,
    FileRef, FunctionCall, FunctionCallDelta, ImageUrl, InputAudio, MessageContent, ResponseMessage, Role, TokenLogprob, ToolCall, ToolCallDelta, ToolType,
    TopLogprob,
};
pub use common::{FinishReason, SamplingFields, Seed, Stop, StreamOptions};
pub use completions::{
    Completion, CompletionChoice, CompletionChunk, CompletionChunkChoice, CompletionLogprobs, CompletionRequest, Prompt, PromptItem, DEFAULT_MAX_TOKENS,
};
pub use embeddings::{EmbeddingList, EmbeddingRequest, EmbeddingVector, EncodingFormat};
pub use error::ApiError;
pub use models::{ModelList, ModelObject};
pub use parse::parse_json;
pub use sse::{SseDecoder, SseEvent};
pub use usage::{CompletionTokensDetails, PromptTokensDetails, Usage};
