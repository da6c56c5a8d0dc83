//! One collection in PostgreSQL: its two tables (see [`super::schema`]), searched with
//! pgvector's cosine distance and PostgreSQL's full-text search.

use super::conn::{Connection, Failure};
use super::filter;
use super::schema;
use crate::store::memory::check_batch;
use crate::store::{Change, Store};
use crate::types::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, Metadata, SourceRecord};
use crate::{RagError, Result};
use pgvector::Vector;
use postgres::error::SqlState;
use postgres::types::{Json, ToSql};
use postgres::Row;
use std::collections::HashMap;
use std::sync::Arc;

pub struct PgStore {
    conn: Arc<Connection>,
    spec: CollectionSpec,
    /// Quoted table names.
    sources: String,
    chunks: String,
}

impl PgStore {
    pub(super) fn new(conn: Arc<Connection>, spec: CollectionSpec, id: i64) -> PgStore {
        let (sources, chunks) = schema::tables(id);
        PgStore { conn, spec, sources, chunks }
    }

    /// Runs `f` on the connection; a table that is gone (the collection was deleted through
    /// another catalog) is [`RagError::UnknownCollection`].
    fn with<T>(&self, mut f: impl FnMut(&mut postgres::Client) -> std::result::Result<T, Failure>) -> Result<T> {
        self.conn.with(|c| {
            f(c).map_err(|e| match e {
                Failure::Db(e) if e.code() == Some(&SqlState::UNDEFINED_TABLE) => Failure::Rag(RagError::UnknownCollection(self.spec.name.clone())),
                other => other,
            })
        })
    }

    fn source_row(row: &Row) -> std::result::Result<SourceRecord, Failure> {
        let count = |i: usize| -> std::result::Result<u64, Failure> { Ok(u64::try_from(row.try_get::<_, i64>(i)?).unwrap_or(0)) };
        Ok(SourceRecord {
            source: row.try_get(0)?,
            content_hash: row.try_get(1)?,
            bytes: count(2)?,
            chunks: usize::try_from(row.try_get::<_, i32>(3)?).unwrap_or(0),
            added_at: count(4)?,
            metadata: row.try_get::<_, Json<Metadata>>(5)?.0,
        })
    }

    fn check_query(&self, query: &[f32]) -> Result<()> {
        if query.len() != self.spec.dimensions {
            return Err(RagError::InvalidInput(format!("a {}-dimensional query for a {}-dimensional collection", query.len(), self.spec.dimensions)));
        }
        if query.iter().any(|x| !x.is_finite()) {
            return Err(RagError::InvalidInput("the query vector has non-finite values".into()));
        }
        Ok(())
    }
}

const SOURCE_COLUMNS: &str = "source, content_hash, bytes, chunks, added_at, metadata";

/// pgvector's `hnsw.ef_search` bounds (its default is 40).
const EF_SEARCH_MIN: usize = 40;
const EF_SEARCH_MAX: usize = 1000;

impl Store for PgStore {
    fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    fn info(&self) -> Result<CollectionInfo> {
        let (sources, chunks) = (&self.sources, &self.chunks);
        let sql = format!(
            "SELECT (SELECT count(*) FROM {sources}), (SELECT count(*) FROM {chunks}),
                    pg_total_relation_size($1::text::regclass) + pg_total_relation_size($2::text::regclass)"
        );
        let row = self.with(|c| Ok(c.query_one(&sql, &[sources as &(dyn ToSql + Sync), chunks])?))?;
        let vector_index = if schema::has_hnsw(&self.spec) {
            "pgvector hnsw (cosine, m 16, ef_construction 64)".to_string()
        } else {
            format!("exact (pgvector indexes at most {} dimensions)", schema::MAX_HNSW_DIMENSIONS)
        };
        Ok(CollectionInfo {
            spec: self.spec.clone(),
            sources: row.get::<_, i64>(0) as usize,
            chunks: row.get::<_, i64>(1) as usize,
            stored_bytes: u64::try_from(row.get::<_, i64>(2)).ok(),
            vector_index,
        })
    }

    fn source(&self, source: &str) -> Result<Option<SourceRecord>> {
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM {} WHERE source = $1", self.sources);
        self.with(|c| c.query_opt(&sql, &[&source])?.as_ref().map(Self::source_row).transpose())
    }

    fn sources(&self) -> Result<Vec<SourceRecord>> {
        // Byte order of the keys, as the embedded store's.
        let sql = format!("SELECT {SOURCE_COLUMNS} FROM {} ORDER BY source COLLATE \"C\"", self.sources);
        self.with(|c| c.query(&sql, &[])?.iter().map(Self::source_row).collect())
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        check_batch(&self.spec, &changes)?;
        check_storable(&changes)?;
        let (sources, chunks) = (&self.sources, &self.chunks);
        let delete = format!("DELETE FROM {sources} WHERE source = $1");
        let insert_source = format!("INSERT INTO {sources} ({SOURCE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)");
        // One statement per source; WITH ORDINALITY keeps the chunks' order in their ids.
        let insert_chunks = format!(
            "INSERT INTO {chunks} (source, text, byte_start, byte_end, heading, embedding)
             SELECT $1, t.text, t.byte_start, t.byte_end, t.heading, t.embedding
             FROM unnest($2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::vector[])
                  WITH ORDINALITY AS t(text, byte_start, byte_end, heading, embedding, n)
             ORDER BY t.n"
        );
        self.with(|c| {
            // Dropped without commit (an error, or the connection lost), the transaction
            // rolls back: the server keeps nothing of it.
            let mut tx = c.transaction()?;
            let delete = tx.prepare(&delete)?;
            let insert_source = tx.prepare(&insert_source)?;
            let insert_chunks = tx.prepare(&insert_chunks)?;
            for change in &changes {
                match change {
                    Change::Remove { source } => {
                        tx.execute(&delete, &[source])?;
                    }
                    Change::Put { source, chunks } => {
                        tx.execute(&delete, &[&source.source])?;
                        let n = i32::try_from(chunks.len()).map_err(|_| RagError::InvalidInput(format!("`{}` has too many chunks", source.source)))?;
                        let params: [&(dyn ToSql + Sync); 6] =
                            [&source.source, &source.content_hash, &to_i64(source.bytes)?, &n, &to_i64(source.added_at)?, &Json(&source.metadata)];
                        tx.execute(&insert_source, &params)?;
                        if chunks.is_empty() {
                            continue;
                        }
                        let texts: Vec<&str> = chunks.iter().map(|ch| ch.text.as_str()).collect();
                        let starts = chunks.iter().map(|ch| to_i64(ch.byte_range.start)).collect::<Result<Vec<_>>>()?;
                        let ends = chunks.iter().map(|ch| to_i64(ch.byte_range.end)).collect::<Result<Vec<_>>>()?;
                        let headings: Vec<Option<&str>> = chunks.iter().map(|ch| ch.heading.as_deref()).collect();
                        let vectors: Vec<Vector> = chunks.iter().map(|ch| Vector::from(ch.vector.clone())).collect();
                        tx.execute(&insert_chunks, &[&source.source, &texts, &starts, &ends, &headings, &vectors])?;
                    }
                }
            }
            tx.commit()?;
            Ok(())
        })
    }

    fn vector_search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        self.check_query(query)?;
        if k == 0 {
            return Ok(Vec::new());
        }
        let (condition, extra) = filter::to_sql(filter, &self.sources, 3);
        // The HNSW scan is iterative (pgvector 0.8): with a filter it goes on until `k`
        // chunks pass, in relaxed order, so the outer query sorts the few it returns.
        let sql = format!(
            "WITH nearest AS MATERIALIZED (
                 SELECT c.id, c.embedding <=> $1::vector AS distance FROM {} c
                 WHERE {condition} ORDER BY c.embedding <=> $1::vector LIMIT $2
             ) SELECT id, distance FROM nearest ORDER BY distance, id",
            self.chunks
        );
        let settings = format!("SET LOCAL hnsw.ef_search = {}; SET LOCAL hnsw.iterative_scan = relaxed_order", k.clamp(EF_SEARCH_MIN, EF_SEARCH_MAX));
        let q = Vector::from(query.to_vec());
        let limit = k as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&q, &limit];
        params.extend(extra.iter().map(|p| p.as_ref()));
        let rows = self.with(|c| {
            let mut tx = c.transaction()?;
            tx.batch_execute(&settings)?;
            let rows = tx.query(&sql, &params)?;
            tx.commit()?;
            Ok(rows)
        })?;
        // Cosine distance is 1 − cosine similarity.
        Ok(rows.iter().map(|r| (ChunkId(r.get::<_, i64>(0) as u64), (1.0 - r.get::<_, f64>(1)) as f32)).collect())
    }

    fn keyword_search(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        let tsquery = any_word(query);
        if k == 0 || tsquery.is_empty() {
            return Ok(Vec::new());
        }
        let (condition, extra) = filter::to_sql(filter, &self.sources, 3);
        // Rank normalisation 1: divided by 1 + log(length), so long chunks do not win by size.
        let sql = format!(
            "SELECT c.id, ts_rank_cd(c.tsv, q, 1) AS rank FROM {} c, to_tsquery('english', $1) q
             WHERE c.tsv @@ q AND {condition} ORDER BY rank DESC, c.id LIMIT $2",
            self.chunks
        );
        let limit = k as i64;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tsquery, &limit];
        params.extend(extra.iter().map(|p| p.as_ref()));
        let rows = self.with(|c| Ok(c.query(&sql, &params)?))?;
        Ok(rows.iter().map(|r| (ChunkId(r.get::<_, i64>(0) as u64), r.get::<_, f32>(1))).collect())
    }

    fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkRecord>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "SELECT c.id, c.source, c.text, c.byte_start, c.byte_end, c.heading, s.metadata
             FROM {} c JOIN {} s ON s.source = c.source WHERE c.id = ANY($1)",
            self.chunks, self.sources
        );
        let wanted: Vec<i64> = ids.iter().filter_map(|id| i64::try_from(id.0).ok()).collect();
        let rows = self.with(|c| Ok(c.query(&sql, &[&wanted])?))?;
        let mut found: HashMap<u64, ChunkRecord> = HashMap::with_capacity(rows.len());
        for r in &rows {
            let id = r.get::<_, i64>(0) as u64;
            let (start, end) = (r.get::<_, i64>(3) as u64, r.get::<_, i64>(4) as u64);
            let metadata = r.try_get::<_, Json<Metadata>>(6).map_err(|e| self.conn.error(&e))?.0;
            found.insert(id, ChunkRecord { id: ChunkId(id), source: r.get(1), text: r.get(2), byte_range: start..end, heading: r.get(5), metadata });
        }
        Ok(ids.iter().filter_map(|id| found.get(&id.0).cloned()).collect())
    }
}

fn to_i64(v: u64) -> Result<i64> {
    i64::try_from(v).map_err(|_| RagError::InvalidInput(format!("{v} is too large to store in PostgreSQL")))
}

/// PostgreSQL's text and jsonb cannot hold the NUL character: refuse the batch before
/// sending it, naming the source.
fn check_storable(changes: &[Change]) -> Result<()> {
    fn json_has_nul(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(s) => s.contains('\0'),
            serde_json::Value::Array(a) => a.iter().any(json_has_nul),
            serde_json::Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
            _ => false,
        }
    }
    for change in changes {
        let (key, bad) = match change {
            Change::Remove { source } => (source, source.contains('\0')),
            Change::Put { source, chunks } => (
                &source.source,
                source.source.contains('\0')
                    || source.metadata.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v))
                    || chunks.iter().any(|ch| ch.text.contains('\0') || ch.heading.as_deref().is_some_and(|h| h.contains('\0'))),
            ),
        };
        if bad {
            return Err(RagError::InvalidInput(format!("`{}` holds a NUL character, which PostgreSQL cannot store", key.replace('\0', "\\0"))));
        }
    }
    Ok(())
}

/// A tsquery matching chunks with any of the query's words (`w1 | w2 | …`), as BM25 scores
/// any of them; each word is a run of letters and digits, so the query cannot be malformed.
/// PostgreSQL stems the words and drops English stop words.
fn any_word(query: &str) -> String {
    let words: Vec<&str> = query.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).collect();
    words.join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::NewChunk;

    #[test]
    fn keyword_queries_are_words_joined_by_or() {
        assert_eq!(any_word("How do I install it? (from source!)"), "How | do | I | install | it | from | source");
        assert_eq!(any_word("'; DROP TABLE x; -- & | !"), "DROP | TABLE | x");
        assert_eq!(any_word("  ?! "), "");
    }

    #[test]
    fn nul_characters_are_refused_before_sending() {
        let source = SourceRecord { source: "a".into(), content_hash: "h".into(), bytes: 1, chunks: 0, added_at: 0, metadata: Metadata::new() };
        let chunk = NewChunk { text: "x\0y".into(), byte_range: 0..3, heading: None, vector: vec![1.0] };
        let e = check_storable(&[Change::Put { source: source.clone(), chunks: vec![chunk] }]).unwrap_err();
        assert!(matches!(e, RagError::InvalidInput(_)) && e.to_string().contains("NUL"), "{e}");
        assert!(check_storable(&[Change::Put { source, chunks: vec![] }]).is_ok());
    }
}
