//! Wire types of Lamina's HTTP API, shared by the server and the gateway: request bodies
//! ([`ChatCompletionRequest`], [`CompletionRequest`], [`EmbeddingRequest`], the Responses API's
//! [`ResponsesRequest`], Anthropic's [`MessagesRequest`], [`TokenizeRequest`]), response
//! bodies and stream events, the error body ([`ApiError`]), body parsing that names the
//! offending field ([`parse_json`]), range validation, and server-sent events ([`sse`]).
//! The Responses and Messages requests translate into a chat request (`to_chat`), so one
//! pipeline serves all three.
//!
//! The shapes follow the OpenAI API reference (<https://platform.openai.com/docs/api-reference>)
//! and, for [`messages`], Anthropic's (<https://docs.anthropic.com/en/api/messages>).
//! This crate is plain data plus parsing and validation: no HTTP framework, no async
//! runtime, no global state, and no randomness (the server supplies ids and timestamps).

pub mod adapters;
pub mod chat;
pub mod collections;
pub mod common;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod ids;
pub mod messages;
pub mod models;
pub mod parse;
pub mod response_format;
pub mod responses;
pub mod sse;
pub mod tokenize;
pub mod tools;
pub mod usage;
pub mod validate;

pub use chat::{
    text_of, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatDelta, ChatLogprobs, ChatMessage, ContentPart,
    FileRef, FunctionCall, FunctionCallDelta, ImageUrl, InputAudio, MessageContent, ResponseMessage, Role, TokenLogprob, ToolCall, ToolCallDelta, ToolType,
    TopLogprob,
};
pub use collections::{CollectionList, CollectionObject, RagOptions, RagReport};
pub use common::{FinishReason, SamplingFields, Seed, Stop, StreamOptions};
pub use completions::{
    Completion, CompletionChoice, CompletionChunk, CompletionChunkChoice, CompletionLogprobs, CompletionRequest, Prompt, PromptItem, DEFAULT_MAX_TOKENS,
};
pub use embeddings::{EmbeddingList, EmbeddingRequest, EmbeddingVector, EncodingFormat};
pub use error::ApiError;
pub use messages::MessagesRequest;
pub use models::{ModelList, ModelObject};
pub use parse::parse_json;
pub use response_format::{JsonSchemaFormat, ResponseFormat};
pub use responses::{ResponseObject, ResponseStreamEvent, ResponsesRequest};
pub use sse::{SseDecoder, SseEvent};
pub use tokenize::{DetokenizeRequest, DetokenizeResponse, TokenizeRequest, TokenizeResponse};
pub use tools::{FunctionDef, Tool, ToolChoice};
pub use usage::{CompletionTokensDetails, PromptTokensDetails, Usage};
