//! Where collections live. A [`Catalog`] names collections; a [`Store`] is one collection.
//! Both back-ends — the embedded store (a folder per collection) and PostgreSQL with
//! pgvector — implement these traits, and everything above them (ingestion, search fusion,
//! prompts) is written once against the traits.

use crate::types::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, NewChunk, SourceRecord};
use crate::Result;

/// One change to a collection. A batch of changes is applied atomically.
#[derive(Debug, Clone)]
pub enum Change {
    /// Replace every chunk of `source.source` (none, if it is new) with `chunks`.
    Put { source: SourceRecord, chunks: Vec<NewChunk> },
    /// Drop a source and its chunks (nothing, if absent).
    Remove { source: String },
}

/// One collection.
///
/// Durability: when [`Store::apply`] returns `Ok`, the batch survives a crash; if the
/// process dies before, the collection reopens as it was before the batch — never half of it.
pub trait Store: Send + Sync {
    fn spec(&self) -> &CollectionSpec;
    fn info(&self) -> Result<CollectionInfo>;
    /// The source stored under `source`, if any.
    fn source(&self, source: &str) -> Result<Option<SourceRecord>>;
    /// Every source, ordered by key.
    fn sources(&self) -> Result<Vec<SourceRecord>>;
    /// Applies a batch of changes, all or nothing, durably.
    fn apply(&mut self, changes: Vec<Change>) -> Result<()>;
    /// The `k` chunks nearest to a unit-length `query` that pass `filter`, by cosine
    /// similarity, best first.
    fn vector_search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>>;
    /// The `k` best chunks for `query` by BM25 that pass `filter`, best first.
    fn keyword_search(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>>;
    /// The records of `ids`, in the same order; an id that is gone is left out.
    fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkRecord>>;
}

/// A namespace of collections.
pub trait Catalog: Send + Sync {
    /// Where it is, for messages (a folder, or a URL without its password).
    fn location(&self) -> String;
    /// Creates an empty collection; [`crate::RagError::CollectionExists`] if the name is taken.
    fn create(&self, spec: CollectionSpec) -> Result<Box<dyn Store>>;
    /// Opens a collection; [`crate::RagError::UnknownCollection`] if there is none.
    fn open(&self, name: &str) -> Result<Box<dyn Store>>;
    /// Every collection, by name.
    fn list(&self) -> Result<Vec<CollectionInfo>>;
    /// Deletes a collection and everything in it; [`crate::RagError::UnknownCollection`] if absent.
    fn delete(&self, name: &str) -> Result<()>;
}

pub mod memory;
pub use memory::{check_batch, MemoryState};
#[cfg(feature = "postgres")]
pub mod postgres;
