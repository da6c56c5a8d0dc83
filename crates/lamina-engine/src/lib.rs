//! Inference on top of the model: the paged-KV generation engine and its parts —
//! block pool and prefix cache ([`kv`]), [`scheduler`], per-sequence state
//! ([`sequence`]) and output pipeline ([`pipeline`]: logits processors, [`sampler`],
//! detokenization, [`stop`] strings), [`speculative`] decoding, constrained decoding
//! ([`grammar`]) — plus sentence embeddings ([`embed`]), perplexity, log-likelihood scoring ([`loglikelihood`]) and model resolution.

pub mod embed;
pub mod engine;
pub mod grammar;
pub mod kv;
pub mod loglikelihood;
pub mod perplexity;
pub mod pipeline;
pub mod resolve;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod speculative;
pub mod stop;

pub use embed::{EmbedInput, Embedder, Embedding, EmbeddingNet, Pooling};
pub use engine::{model_fingerprint, Engine, EngineConfig, EngineStats, Request};
pub use grammar::grammar_compiler;
pub use loglikelihood::{loglikelihoods, loglikelihoods_with, Continuation, LogLikelihood};
pub use pipeline::{FinishReason, GenerationParams, LogitsProcessor, TokenLogprob, TokenOutput};
pub use sampler::{Sampler, SamplingParams};
pub use sequence::{Finished, SeqId, SeqStats, TokenCallback, TokenEvent};
pub use speculative::{DraftModel, SpecMethod, SpeculativeConfig};
pub use stop::StopMatcher;
