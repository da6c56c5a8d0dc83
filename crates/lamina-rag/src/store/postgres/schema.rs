//! What lives in the database, and how it gets there.
//!
//! - `lamina_meta` — the schema version (key `schema_version`).
//! - `lamina_collections` — one row per collection: its name (the key), a numeric id, its
//!   [`CollectionSpec`] as jsonb, when it was created.
//! - per collection `lamina_<id>_sources` (one row per source, its metadata as jsonb) and
//!   `lamina_<id>_chunks` (text, byte offsets, heading, a `vector(dimensions)` column with an
//!   HNSW index for cosine distance, and a generated `tsvector` column with a GIN index).
//!
//! Per-collection tables rather than one shared chunks table: the vector column gets its
//! collection's dimension as its type (`vector(384)`; pgvector indexes only typed columns),
//! each collection gets its own HNSW graph (a search never walks another collection's
//! vectors, and a filtered search does not lose recall to them), and deleting a collection
//! is `DROP TABLE`. Table names come from the numeric id, never from the user's name.

use super::conn::Failure;
use crate::types::CollectionSpec;
use postgres::{Client, GenericClient};

/// The schema this build writes. A database at a higher version was written by a newer
/// lamina and is refused rather than misread.
pub const SCHEMA_VERSION: i64 = 1;

/// The steps that bring a database from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the catalog.
    "CREATE TABLE lamina_collections (
         name text PRIMARY KEY,
         id bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
         spec jsonb NOT NULL,
         created_at timestamptz NOT NULL DEFAULT now()
     )",
];

/// pgvector's limits: a `vector` column holds at most 16,000 dimensions; its HNSW index
/// covers at most 2,000 (above that a collection is searched exactly).
pub const MAX_DIMENSIONS: usize = 16_000;
pub const MAX_HNSW_DIMENSIONS: usize = 2_000;

/// The oldest pgvector with iterative index scans (`hnsw.iterative_scan`).
const PGVECTOR_MIN: (u32, u32) = (0, 8);

/// Whether version `v` ("0.8.1") is at least `min` (major, minor).
fn at_least(v: &str, min: (u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= min
}

/// Serialises schema changes between clients (`pg_advisory_xact_lock`): "lamina" in ASCII.
const SETUP_LOCK: i64 = 0x6c61_6d69_6e61;

/// Makes sure pgvector is installed in the database and the catalog is at
/// [`SCHEMA_VERSION`], in one transaction.
pub fn prepare(client: &mut Client) -> Result<(), Failure> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])?;
    let vector = tx.query_opt("SELECT default_version, installed_version FROM pg_available_extensions WHERE name = 'vector'", &[])?;
    match vector {
        None => {
            return Err(Failure::Reason(
                "the server has no pgvector extension (`vector`); install pgvector 0.8 or later into this PostgreSQL and try again".into(),
            ))
        }
        Some(row) if row.get::<_, Option<String>>(1).is_none() => {
            tx.batch_execute("CREATE EXTENSION IF NOT EXISTS vector")?;
        }
        Some(_) => {}
    }
    let installed: String = tx.query_one("SELECT extversion FROM pg_extension WHERE extname = 'vector'", &[])?.get(0);
    if !at_least(&installed, PGVECTOR_MIN) {
        return Err(Failure::Reason(format!(
            "pgvector {installed} is installed in this database; lamina needs {}.{} or later (its iterative index scans): run `ALTER EXTENSION vector UPDATE`",
            PGVECTOR_MIN.0, PGVECTOR_MIN.1
        )));
    }
    tx.batch_execute("CREATE TABLE IF NOT EXISTS lamina_meta (key text PRIMARY KEY, value text NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT value FROM lamina_meta WHERE key = 'schema_version'", &[])? {
        None => 0,
        Some(row) => {
            let v: String = row.get(0);
            v.parse().map_err(|_| Failure::Reason(format!("lamina_meta holds schema_version `{v}`, not a number")))?
        }
    };
    if version > SCHEMA_VERSION {
        return Err(Failure::Reason(format!(
            "this database holds lamina's schema version {version}, written by a newer lamina; this one knows version {SCHEMA_VERSION} — upgrade lamina"
        )));
    }
    for step in &MIGRATIONS[version as usize..] {
        tx.batch_execute(step)?;
    }
    if version < SCHEMA_VERSION {
        tx.execute(
            "INSERT INTO lamina_meta (key, value) VALUES ('schema_version', $1) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            &[&SCHEMA_VERSION.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(())
}

/// The quoted names of collection `id`'s tables: (sources, chunks).
pub fn tables(id: i64) -> (String, String) {
    (format!("\"lamina_{id}_sources\""), format!("\"lamina_{id}_chunks\""))
}

/// Whether a collection of `spec` has an HNSW index (else it is searched exactly).
pub fn has_hnsw(spec: &CollectionSpec) -> bool {
    spec.dimensions <= MAX_HNSW_DIMENSIONS
}

/// Creates collection `id`'s tables and indexes (inside the caller's transaction).
pub fn create_tables(tx: &mut impl GenericClient, id: i64, spec: &CollectionSpec) -> Result<(), postgres::Error> {
    let (sources, chunks) = tables(id);
    let dims = spec.dimensions;
    let mut ddl = format!(
        "CREATE TABLE {sources} (
             source text PRIMARY KEY,
             content_hash text NOT NULL,
             bytes bigint NOT NULL,
             chunks integer NOT NULL,
             added_at bigint NOT NULL,
             metadata jsonb NOT NULL
         );
         CREATE TABLE {chunks} (
             id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
             source text NOT NULL REFERENCES {sources} (source) ON DELETE CASCADE,
             text text NOT NULL,
             byte_start bigint NOT NULL,
             byte_end bigint NOT NULL,
             heading text,
             embedding vector({dims}) NOT NULL,
             tsv tsvector GENERATED ALWAYS AS (to_tsvector('english', text)) STORED
         );
         CREATE INDEX ON {chunks} (source);
         CREATE INDEX ON {chunks} USING gin (tsv);"
    );
    if has_hnsw(spec) {
        ddl.push_str(&format!("CREATE INDEX ON {chunks} USING hnsw (embedding vector_cosine_ops);"));
    }
    tx.batch_execute(&ddl)
}

/// Drops collection `id`'s tables (inside the caller's transaction).
pub fn drop_tables(tx: &mut impl GenericClient, id: i64) -> Result<(), postgres::Error> {
    let (sources, chunks) = tables(id);
    tx.batch_execute(&format!("DROP TABLE IF EXISTS {chunks}, {sources}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn pgvector_versions_compare_by_number() {
        assert!(super::at_least("0.8.0", (0, 8)));
        assert!(super::at_least("0.10.1", (0, 8)));
        assert!(super::at_least("1.0", (0, 8)));
        assert!(!super::at_least("0.7.4", (0, 8)));
        assert!(!super::at_least("garbage", (0, 8)));
    }
}
