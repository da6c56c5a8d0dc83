//! The Lamina transformers: the decoder-only language models and the BERT-family encoder
//! ([`encoder`]) used for embeddings.
//!
//! One model definition, two ways to run it:
//! - [`trainable`]: the forward pass on candle tensors with autograd, used by training;
//! - [`model`]: the inference forward pass on `lamina-kernels`, used by generation and serving.
//!
//! Both read the same [`lamina_core::ModelConfig`] and the same tensor names, and a test
//! checks that they compute the same logits for the same weights.

pub mod adapter;
pub mod encoder;
pub mod gguf;
pub mod linear;
pub mod load;
pub mod lora;
pub mod merge;
pub mod model;
pub mod paged_kv;
pub mod quantize;
pub mod trainable;

pub use adapter::{LinearLora, ModelLora, Proj};
pub use encoder::{Encoder, EncoderScratch};
pub use linear::Linear;
pub use load::{load_gguf, load_model, load_safetensors_dir};
pub use model::{BatchInput, Model, Precision, Scratch, SeqChunk};
pub use paged_kv::{KvDtype, KvShape, PagedKv, DEFAULT_BLOCK_SIZE};
