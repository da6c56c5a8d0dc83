//! One connection to the server, shared by a catalog and the collections it opens: made on
//! first use, made again after the server went away, and every failure turned into a
//! [`RagError::Database`] naming the URL without its password.

use crate::{RagError, Result};
use postgres::{Client, Config, NoTls};
use std::sync::Mutex;
use std::time::Duration;

/// How long a connection attempt may take before the server counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Connection {
    config: Config,
    /// The URL as messages show it: no password.
    shown: String,
    client: Mutex<Option<Client>>,
}

impl Connection {
    /// Parses `url` and connects once, so that a wrong URL, a server that is down or a
    /// refused login is reported at once.
    pub fn open(url: &str) -> Result<Connection> {
        let shown = crate::store::redact_url(url);
        let mut config: Config =
            url.parse().map_err(|e: postgres::Error| RagError::Database { url: shown.clone(), reason: format!("not a valid URL: {e}") })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("lamina");
        }
        let conn = Connection { config, shown, client: Mutex::new(None) };
        conn.with(|_| Ok(()))?;
        Ok(conn)
    }

    /// The URL without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Runs `f` on the connection, connecting first when there is none or the last one
    /// closed. When a connection made earlier turns out to be broken (the server was
    /// restarted since), `f` runs once more on a new one: every operation of this back-end
    /// is a read or a batch in one transaction, so running it again after a broken
    /// connection gives the same result. A connection that fails is dropped, so the next
    /// call connects anew.
    pub fn with<T>(&self, mut f: impl FnMut(&mut Client) -> std::result::Result<T, Failure>) -> Result<T> {
        let mut guard = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let mut fresh = false;
        loop {
            if guard.as_ref().is_none_or(|c| c.is_closed()) {
                *guard = None;
                *guard = Some(self.config.connect(NoTls).map_err(|e| self.error(&e))?);
                fresh = true;
            }
            let client = guard.as_mut().expect("connected above");
            return match f(client) {
                Ok(v) => Ok(v),
                Err(Failure::Rag(e)) => Err(e),
                Err(Failure::Reason(reason)) => Err(RagError::Database { url: self.shown.clone(), reason }),
                Err(Failure::Db(e)) if broken(&e) || client.is_closed() => {
                    *guard = None;
                    if !fresh {
                        fresh = true;
                        continue;
                    }
                    Err(self.error(&e))
                }
                Err(Failure::Db(e)) => Err(self.error(&e)),
            };
        }
    }

    pub fn error(&self, e: &postgres::Error) -> RagError {
        RagError::Database { url: self.shown.clone(), reason: describe(e) }
    }
}

/// What an operation on the connection can fail with.
pub enum Failure {
    /// The server or the connection failed: reported as [`RagError::Database`].
    Db(postgres::Error),
    /// An error of the crate's own kind (an unknown collection, a taken name): passed on as is.
    Rag(RagError),
    /// The server answered, but it cannot hold collections (no pgvector, a newer schema).
    Reason(String),
}

impl From<postgres::Error> for Failure {
    fn from(e: postgres::Error) -> Failure {
        Failure::Db(e)
    }
}

impl From<RagError> for Failure {
    fn from(e: RagError) -> Failure {
        Failure::Rag(e)
    }
}

/// Whether `e` is the connection failing (closed, or an I/O error on it), rather than a
/// statement failing on a working connection.
fn broken(e: &postgres::Error) -> bool {
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        if c.is::<std::io::Error>() {
            return true;
        }
        cause = c.source();
    }
    e.is_closed()
}

/// A readable reason: the server's own message (with its detail and hint) when it sent
/// one, else what went wrong and why, and what to check when the server is unreachable.
pub fn describe(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(d) = db.detail() {
            s.push_str(&format!(" ({d})"));
        }
        if let Some(h) = db.hint() {
            s.push_str(&format!("; hint: {h}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(&format!(": {text}"));
        }
        cause = c.source();
    }
    if broken(e) {
        s.push_str(" — is the PostgreSQL server running and reachable at this address?");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_url_is_a_database_error() {
        let e = Connection::open("postgres://u:pw@host:notaport/db").err().unwrap();
        let msg = e.to_string();
        assert!(matches!(e, RagError::Database { .. }), "{msg}");
        assert!(msg.contains("postgres://u@host:notaport/db") && !msg.contains("pw"), "{msg}");
    }
}
