//! The request log: one JSON line per request — route, every backend tried and how it
//! went, tokens by kind, exact cost, latency, time to first token, cache — appended to a
//! file with one `write` per line (`O_APPEND`), so lines from concurrent requests never
//! interleave and a crash loses at most the line being written. Backend keys never
//! appear: a line holds names, never credentials.

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

pub struct RequestLog {
    file: Mutex<std::fs::File>,
}

impl RequestLog {
    pub fn open(path: &Path) -> std::io::Result<RequestLog> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RequestLog { file: Mutex::new(file) })
    }

    pub fn write(&self, line: &LogLine) {
        let Ok(mut text) = serde_json::to_string(line) else { return };
        text.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(text.as_bytes()) {
            tracing::warn!("request log: {e}");
        }
    }
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
