//! Where collections live. A [`Catalog`] names collections; a [`Store`] is one collection.
//! Both back-ends — the embedded store (a folder per collection) and PostgreSQL with
//! pgvector — implement these traits, and everything above them (ingestion, search fusion,
//! prompts) is written once against the traits.

use crate::types::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, NewChunk, SourceRecord};
use crate::{RagError, Result};

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

pub mod embedded;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
pub use embedded::{EmbeddedCatalog, EmbeddedStore};
pub use memory::{check_batch, MemoryState};

/// The catalog at `location`: a `postgres://` or `postgresql://` URL is a PostgreSQL
/// database (with the `postgres` feature), anything else a folder of embedded collections.
pub fn open_catalog(location: &str) -> Result<Box<dyn Catalog>> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Box::new(postgres::PgCatalog::connect(location)?));
        #[cfg(not(feature = "postgres"))]
        return Err(RagError::InvalidInput(format!(
            "{}: this lamina was built without PostgreSQL support (build it with the `postgres` feature of lamina-rag), or give a folder",
            redact_url(location)
        )));
    }
    if location.trim().is_empty() {
        return Err(RagError::InvalidInput("no collections location given: a folder or a postgres:// URL".into()));
    }
    Ok(Box::new(EmbeddedCatalog::open(std::path::Path::new(location))?))
}

/// A URL without its password, for messages: `postgres://user:secret@host/db?password=x`
/// shows as `postgres://user@host/db`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            format!("{user}@{host}")
        }
        None => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let kept: Vec<&str> = query.split('&').filter(|kv| !kv.to_ascii_lowercase().starts_with("password=")).collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_password() {
        assert_eq!(redact_url("postgres://me:secret@db:5432/x"), "postgres://me@db:5432/x");
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
        assert_eq!(redact_url("postgresql://me@db/x?sslmode=require"), "postgresql://me@db/x?sslmode=require");
        assert_eq!(redact_url("postgresql://u:p%40ss@h/db?sslmode=disable&password=x"), "postgresql://u@h/db?sslmode=disable");
        assert_eq!(redact_url("postgres://h:5432/db?password=x"), "postgres://h:5432/db");
        assert_eq!(redact_url("postgres://u:p@h?password=x"), "postgres://u@h");
    }

    #[test]
    fn a_postgres_url_needs_the_feature_and_a_folder_is_embedded() {
        #[cfg(not(feature = "postgres"))]
        {
            let e = open_catalog("postgres://me:pw@localhost/db").err().expect("refused").to_string();
            assert!(e.contains("without PostgreSQL support") && !e.contains("pw"), "{e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let c = open_catalog(dir.path().to_str().unwrap()).unwrap();
        assert_eq!(c.location(), dir.path().display().to_string());
        assert!(c.list().unwrap().is_empty());
    }
}
