//! Inference on top of the model: sampling, stop strings, the batched generation engine
//! with its KV-cache slots and prefix cache, perplexity, and model resolution.

pub mod engine;
pub mod perplexity;
pub mod resolve;
pub mod sampler;
pub mod stop;

pub use engine::{Engine, EngineConfig, FinishReason, Finished, GenerationParams, SeqId, SeqStats, TokenCallback, TokenEvent};
pub use sampler::{Sampler, SamplingParams};
pub use stop::StopMatcher;
