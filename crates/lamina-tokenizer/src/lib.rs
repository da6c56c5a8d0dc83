//! lamina-tokenizer: turns text into token ids and back for every model Lamina runs.
//!
//! One [`Tokenizer`] type covers both sources a model can come with: a Hugging Face
//! `tokenizer.json` (plus its `tokenizer_config.json`), or the vocabulary embedded in a
//! GGUF file's metadata. GGUF vocabularies are rebuilt as an in-memory
//! `tokenizers::Tokenizer` whose pre-tokenizer reproduces llama.cpp, so token ids match
//! what llama.cpp would feed the same model.
//!
//! Around it: chat-template rendering ([`ChatTemplate`]), UTF-8 safe streaming decode
//! ([`DecodeStream`]) and small training helpers ([`train_bpe`], [`char_tokenizer`]).

mod chat;
mod gguf;
mod hf;
mod stream;
mod tokenizer;
mod train;

pub use chat::{ChatMessage, ChatTemplate};
pub use stream::{DecodeState, DecodeStream};
pub use tokenizer::Tokenizer;
pub use train::{char_tokenizer, train_bpe};
