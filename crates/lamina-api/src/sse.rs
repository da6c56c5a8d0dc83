//! Server-sent events: encoding the `data: {json}` events of a streamed response and
//! the closing `data: [DONE]`, and an incremental decoder for reading such streams (the
//! gateway reads upstream streams with it; the tests read the server's).
//!
//! OpenAI streams responses as server-sent events when `stream` is true (API reference,
//! "Chat" → "Create chat completion" → `stream`, and "Streaming"). The decoder follows
//! the event-stream format of the WHATWG HTML standard, § "Server-sent events".

use serde::Serialize;

use crate::error::ApiError;

/// The event that ends an OpenAI stream.
pub const DONE: &str = "data: [DONE]\n\n";

/// A comment line OpenAI-compatible servers send to keep idle connections open;
/// decoders ignore it.
pub const KEEP_ALIVE: &str = ": keep-alive\n\n";

/// `data: {json}\n\n`. serde_json writes compact JSON with no raw line breaks, so the
/// event is one `data:` line. Should serialisation fail (it cannot for this crate's
/// types), the event carries a `server_error` body instead.
pub fn data(json: &impl Serialize) -> String {
    match serde_json::to_string(json) {
        Ok(s) => format!("data: {s}\n\n"),
        Err(e) => format!("data: {}\n\n", ApiError::server_error(format!("could not serialise a stream event: {e}")).to_json()),
    }
}

/// An event with an optional `event:` name and arbitrary text: each line of `data`
/// becomes its own `data:` line, so the decoder gives back `data` unchanged.
pub fn event(name: Option<&str>, data: &str) -> String {
    let mut out = String::with_capacity(data.len() + 16);
    if let Some(name) = name {
        out.push_str("event: ");
        out.push_str(name);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// One decoded event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` name; `None` for the default type (`message`).
    pub event: Option<String>,
    /// The `data:` lines joined by `\n`.
    pub data: String,
    /// The last event id seen on the stream (it persists across events), if any.
    pub id: Option<String>,
}

impl SseEvent {
    /// Whether this is OpenAI's end-of-stream marker, `data: [DONE]`.
    pub fn is_done(&self) -> bool {
        self.data == "[DONE]"
    }

    /// Parses `data` as JSON, with the errors of [`crate::parse_json`].
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        crate::parse::parse_json(self.data.as_bytes())
    }
}

/// Incremental event-stream decoder: feed it bytes as they arrive, in chunks split
/// anywhere (inside a line ending or a UTF-8 character included), and it returns each
/// event once its terminating blank line has arrived.
///
/// Handles `\n`, `\r\n` and `\r` line endings, a leading byte-order mark, comments
/// (lines starting with `:`), `event:`, `data:` (several are joined by `\n`) and `id:`
/// fields; `retry:` and unknown fields are ignored. Invalid UTF-8 in a line is replaced
/// with U+FFFD. An event not terminated when the stream ends is never returned, as the
/// standard says.
#[derive(Clone, Debug, Default)]
pub struct SseDecoder {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// The previous byte was `\r`: a `\n` right after it ends no further line.
    after_cr: bool,
    /// At least one line has been completed (so a byte-order mark was already handled).
    started: bool,
    data: String,
    has_data: bool,
    event: Option<String>,
    last_id: Option<String>,
}

impl SseDecoder {
    pub fn new() -> Self {
        SseDecoder::default()
    }

    /// Consumes `bytes`, returning the events they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let mut rest = bytes;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            self.line.extend_from_slice(&rest[..pos]);
            let is_cr = rest[pos] == b'\r';
            rest = &rest[pos + 1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if let Some(event) = self.end_line() {
                events.push(event);
            }
        }
        self.line.extend_from_slice(rest);
        events
    }

    /// Processes the completed line in `self.line`.
    fn end_line(&mut self) -> Option<SseEvent> {
        let raw = std::mem::take(&mut self.line);
        let mut line: &str = &String::from_utf8_lossy(&raw);
        if !self.started {
            self.started = true;
            line = line.strip_prefix('\u{feff}').unwrap_or(line);
        }
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(value);
                self.has_data = true;
            }
            "event" => self.event = (!value.is_empty()).then(|| value.to_owned()),
            "id" if !value.contains('\0') => self.last_id = (!value.is_empty()).then(|| value.to_owned()),
            _ => {}
        }
        None
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = self.event.take();
        if !self.has_data {
            return None;
        }
        self.has_data = false;
        Some(SseEvent { event, data: std::mem::take(&mut self.data), id: self.last_id.clone() })
    }
}
