//! The request log: one record per request — route, every backend tried and how it went,
//! tokens by kind, exact cost, latency, time to first token, cache. Backend keys never
//! appear: a record holds names, never credentials. Two forms:
//! - JSON lines (any file name): one `write` per line on a file opened with `O_APPEND`, so
//!   lines from concurrent requests never interleave and a crash loses at most the line
//!   being written;
//! - SQLite (a name ending `.db`, `.sqlite` or `.sqlite3`): a `requests` table with the
//!   fields to query by as columns and the whole record as JSON in `record`; WAL mode, so
//!   a crash at any moment leaves the database whole (SQLite's own guarantee) and several
//!   gateways can write one file.

use crate::price::Tokens;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// One try of one backend.
#[derive(Clone, Debug, Serialize)]
pub struct Attempt {
    pub backend: String,
    pub model: String,
    /// `ok`, or the failure's kind (`connect`, `timeout`, `rate_limited`, ...).
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub ms: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct LogLine {
    pub time: String,
    pub id: String,
    pub endpoint: &'static str,
    /// The route chosen.
    pub model: String,
    /// The `model` the client sent, when a rule chose another.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// What the rule's classifier answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<crate::classify::Classified>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub stream: bool,
    pub status: u16,
    /// The route that answered (the requested one, or a fallback).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    pub attempts: Vec<Attempt>,
    /// A later deployment answered after an earlier one failed.
    pub fallback: bool,
    /// A stream broke after it started and was completed by another backend.
    pub resumed: bool,
    /// Bytes of text the client had been sent when each break happened.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub resumed_at: Vec<usize>,
    pub tokens: Tokens,
    /// Exact decimal cost.
    pub cost: String,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// `hit` (exact), `semantic` (a semantic hit), `miss` or `off`.
    pub cache: &'static str,
    /// The semantic cache's lookup: the embedding backend, the best similarity, time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub semantic: Option<crate::semantic::Lookup>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub enum RequestLog {
    Lines(Mutex<std::fs::File>),
    Sqlite(SqliteLog),
}

/// A SQLite log: inserts on the request's own thread (the row is in the database before
/// the reply goes out), checkpoints off it. SQLite's automatic checkpoint would run inside
/// an insert every thousand pages and hold every other request behind its fsync; here
/// every [`CHECKPOINT_EVERY`] rows a blocking task checkpoints the WAL through a second
/// connection (`PASSIVE`: it never waits for, or blocks, the writer).
pub struct SqliteLog {
    writer: Mutex<rusqlite::Connection>,
    checkpointer: std::sync::Arc<Mutex<rusqlite::Connection>>,
    rows: std::sync::atomic::AtomicU64,
}

const CHECKPOINT_EVERY: u64 = 1000;

/// Whether `path` names a SQLite log.
pub fn is_sqlite(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("db" | "sqlite" | "sqlite3"))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY,
  time TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  model TEXT NOT NULL,
  key TEXT,
  user TEXT,
  status INTEGER NOT NULL,
  route TEXT,
  backend TEXT,
  prompt_tokens INTEGER NOT NULL,
  cached_tokens INTEGER NOT NULL,
  completion_tokens INTEGER NOT NULL,
  reasoning_tokens INTEGER NOT NULL,
  cost TEXT NOT NULL,
  latency_ms REAL NOT NULL,
  ttft_ms REAL,
  cache TEXT NOT NULL,
  fallback INTEGER NOT NULL,
  resumed INTEGER NOT NULL,
  record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests(time);
";

fn sqlite(path: &Path) -> rusqlite::Result<SqliteLog> {
    let db = rusqlite::Connection::open(path)?;
    db.busy_timeout(std::time::Duration::from_secs(5))?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "NORMAL")?;
    db.pragma_update(None, "wal_autocheckpoint", 0)?;
    db.execute_batch(SCHEMA)?;
    let checkpointer = rusqlite::Connection::open(path)?;
    checkpointer.busy_timeout(std::time::Duration::from_secs(5))?;
    Ok(SqliteLog { writer: Mutex::new(db), checkpointer: std::sync::Arc::new(Mutex::new(checkpointer)), rows: 0.into() })
}

impl SqliteLog {
    fn insert(&self, line: &LogLine, record: &str) -> rusqlite::Result<()> {
        let t = &line.tokens;
        self.writer.lock().unwrap_or_else(|p| p.into_inner()).execute(
            "INSERT INTO requests VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
            rusqlite::params![
                line.id,
                line.time,
                line.endpoint,
                line.model,
                line.key,
                line.user,
                line.status,
                line.route,
                line.backend,
                t.prompt as i64,
                t.cached as i64,
                t.completion as i64,
                t.reasoning as i64,
                line.cost,
                line.latency_ms,
                line.ttft_ms,
                line.cache,
                line.fallback,
                line.resumed,
                record,
            ],
        )?;
        if self.rows.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % CHECKPOINT_EVERY == CHECKPOINT_EVERY - 1 {
            let checkpointer = self.checkpointer.clone();
            let run = move || {
                // Skipped when the previous one still runs.
                if let Ok(db) = checkpointer.try_lock() {
                    if let Err(e) = db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!("request log checkpoint: {e}");
                    }
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(h) => drop(h.spawn_blocking(run)),
                Err(_) => run(),
            }
        }
        Ok(())
    }
}

impl RequestLog {
    pub fn open(path: &Path) -> std::io::Result<RequestLog> {
        if is_sqlite(path) {
            let db = sqlite(path).map_err(|e| std::io::Error::other(format!("not a usable SQLite database: {e}")))?;
            return Ok(RequestLog::Sqlite(db));
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog::Lines(Mutex::new(file)))
    }

    pub fn write(&self, line: &LogLine) {
        let Ok(mut text) = serde_json::to_string(line) else { return };
        match self {
            RequestLog::Lines(file) => {
                text.push('\n');
                let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
                if let Err(e) = f.write_all(text.as_bytes()) {
                    tracing::warn!("request log: {e}");
                }
            }
            RequestLog::Sqlite(db) => {
                if let Err(e) = db.insert(line, &text) {
                    tracing::warn!("request log: {e}");
                }
            }
        }
    }
}

/// The records of a SQLite log as JSON lines, oldest first (for `lamina gateway report`).
pub fn sqlite_records(path: &Path) -> Result<String, String> {
    let db = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(|e| e.to_string())?;
    let mut q = db.prepare("SELECT record FROM requests ORDER BY time, rowid").map_err(|e| format!("not a request log: {e}"))?;
    let rows = q.query_map([], |r| r.get::<_, String>(0)).map_err(|e| e.to_string())?;
    let mut out = String::new();
    for r in rows {
        out.push_str(&r.map_err(|e| e.to_string())?);
        out.push('\n');
    }
    Ok(out)
}

/// The current time as RFC 3339 UTC with milliseconds, e.g. `2026-12-02T18:05:09.123Z`.
pub fn now_rfc3339() -> String {
    let d = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    rfc3339(d.as_secs() as i64, d.subsec_millis())
}

fn rfc3339(secs: i64, millis: u32) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        // `date -u -d @1796234709` = Wed Dec  2 18:05:09 UTC 2026.
        assert_eq!(rfc3339(1_796_234_709, 123), "2026-12-02T18:05:09.123Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
    }
}
