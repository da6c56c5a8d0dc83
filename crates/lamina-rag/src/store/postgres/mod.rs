//! Collections in PostgreSQL with pgvector, selected by a `postgres://` URL.
//!
//! [`PgCatalog::connect`] opens one connection (the sync `postgres` client, which runs its
//! own small single-threaded runtime per connection), installs the `vector` extension when
//! it is missing and brings lamina's catalog table to the current schema ([`schema`]). The
//! catalog and every collection opened from it share that connection, one statement at a
//! time; when the server goes away the call fails with [`crate::RagError::Database`] and the
//! next one connects again.
//!
//! Vector search is pgvector's HNSW index on cosine distance (similarity = 1 − distance),
//! with the filter in the same SQL query and iterative index scans so a filter does not
//! starve the result. Keyword search is PostgreSQL's full text search (English stemming,
//! `ts_rank_cd`) — not BM25, so its scores differ from the embedded store's; hybrid search
//! fuses ranks, not scores, so it composes the same way.

mod conn;
mod filter;
pub mod schema;
mod store;

pub use store::PgStore;

use crate::store::{Catalog, Store};
use crate::types::{CollectionInfo, CollectionSpec};
use crate::{RagError, Result};
use conn::{Connection, Failure};
use postgres::types::Json;
use std::sync::Arc;

pub struct PgCatalog {
    conn: Arc<Connection>,
}

impl PgCatalog {
    /// Connects to `url` (`postgres://user:password@host:port/database`), makes sure pgvector
    /// is installed there and lamina's tables are at the current schema.
    pub fn connect(url: &str) -> Result<PgCatalog> {
        let conn = Connection::open(url)?;
        conn.with(schema::prepare)?;
        Ok(PgCatalog { conn: Arc::new(conn) })
    }

    /// The collections' (name, id, spec), by name.
    fn rows(&self, name: Option<&str>) -> Result<Vec<(String, i64, CollectionSpec)>> {
        self.conn.with(|c| {
            let rows = match name {
                Some(n) => c.query("SELECT name, id, spec FROM lamina_collections WHERE name = $1", &[&n])?,
                None => c.query("SELECT name, id, spec FROM lamina_collections ORDER BY name COLLATE \"C\"", &[])?,
            };
            rows.iter()
                .map(|r| {
                    let name: String = r.get(0);
                    let spec = r
                        .try_get::<_, Json<CollectionSpec>>(2)
                        .map_err(|e| Failure::Rag(RagError::Corrupt { collection: name.clone(), reason: format!("its stored spec does not read: {e}") }))?
                        .0;
                    Ok((name, r.get(1), spec))
                })
                .collect()
        })
    }
}

impl Catalog for PgCatalog {
    fn location(&self) -> String {
        self.conn.shown().to_string()
    }

    fn create(&self, spec: CollectionSpec) -> Result<Box<dyn Store>> {
        CollectionSpec::check_name(&spec.name)?;
        if spec.dimensions == 0 || spec.dimensions > schema::MAX_DIMENSIONS {
            return Err(RagError::InvalidInput(format!(
                "collection `{}`: pgvector holds 1 to {} dimensions, not {}",
                spec.name,
                schema::MAX_DIMENSIONS,
                spec.dimensions
            )));
        }
        let id = self.conn.with(|c| {
            let mut tx = c.transaction()?;
            let row = tx.query_opt(
                "INSERT INTO lamina_collections (name, spec) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
                &[&spec.name, &Json(&spec)],
            )?;
            let id: i64 = row.ok_or_else(|| RagError::CollectionExists(spec.name.clone()))?.get(0);
            schema::create_tables(&mut tx, id, &spec)?;
            tx.commit()?;
            Ok(id)
        })?;
        Ok(Box::new(PgStore::new(self.conn.clone(), spec, id)))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Store>> {
        CollectionSpec::check_name(name)?;
        let (_, id, spec) = self.rows(Some(name))?.pop().ok_or_else(|| RagError::UnknownCollection(name.to_string()))?;
        Ok(Box::new(PgStore::new(self.conn.clone(), spec, id)))
    }

    fn list(&self) -> Result<Vec<CollectionInfo>> {
        let mut out = Vec::new();
        for (name, id, spec) in self.rows(None)? {
            match PgStore::new(self.conn.clone(), spec, id).info() {
                Ok(info) => out.push(info),
                // Deleted by another client since the listing: not there any more.
                Err(RagError::UnknownCollection(n)) if n == name => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn delete(&self, name: &str) -> Result<()> {
        CollectionSpec::check_name(name)?;
        self.conn.with(|c| {
            let mut tx = c.transaction()?;
            let row = tx.query_opt("DELETE FROM lamina_collections WHERE name = $1 RETURNING id", &[&name])?;
            let id: i64 = row.ok_or_else(|| RagError::UnknownCollection(name.to_string()))?.get(0);
            schema::drop_tables(&mut tx, id)?;
            tx.commit()?;
            Ok(())
        })
    }
}
