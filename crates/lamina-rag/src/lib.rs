//! Retrieval for Lamina: documents in, cited answers out.
//!
//! The pipeline follows LlamaIndex's stages, one module each:
//! documents ([`document`]) → chunks ([`chunk`]) → embedded and stored in a collection
//! ([`store`], by [`ingest`]) → retrieved ([`search`]: vector, keyword or hybrid over the
//! [`index`] structures) → put in a prompt with numbered citations ([`answer`]).
//!
//! A collection lives behind the [`store::Store`] trait, with two back-ends: the embedded
//! store (files in a folder, the default) and PostgreSQL with pgvector (a `postgres://` URL).
//! Everything above the trait — ingestion, fusion, filters, prompts — is written once.
//!
//! The crate needs no tensors: embedding and token counting come in through the
//! [`embed::TextEmbedder`] and [`embed::TokenCounter`] traits. With the `engine` feature it
//! implements them for lamina-engine's `Embedder` and lamina-tokenizer's `Tokenizer`.

pub mod answer;
pub mod chunk;
pub mod document;
pub mod embed;
pub mod error;
pub mod eval;
pub mod index;
pub mod ingest;
pub mod rerank;
pub mod search;
pub mod store;
pub mod types;

pub use embed::{TextEmbedder, TokenCounter};
pub use error::{RagError, Result};
pub use rerank::{rerank, RerankOptions, Reranker};
pub use search::{search, Fusion, SearchRequest};
pub use store::{Catalog, Store};
pub use types::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Condition, Filter, Hit, Metadata, NewChunk, SearchMode, SourceRecord};
