//! Documents: files in, text out. One module per format ([`text`], [`markdown`], [`html`],
//! [`pdf`]); [`load`] reads a file and picks the format, [`walk`] expands folders.
//!
//! A [`Document`]'s `text` is what gets chunked: a chunk's byte range points into it. A file
//! that cannot give text is not an error of the whole run but a [`SkipReason`]: ingestion
//! skips it, says why, and indexes the rest.
//!
//! Text formats must be UTF-8 (a UTF-8 byte-order mark is stripped). A file that starts with
//! a UTF-16 byte-order mark is decoded as UTF-16, so Windows tools' "Unicode" text files are
//! read too; other encodings (Latin-1, Shift JIS…) are refused with the offset of the first
//! byte that is not UTF-8, never guessed at.

mod html;
mod markdown;
mod pdf;
mod text;
mod walk;

pub use walk::walk;

use serde::{Deserialize, Serialize};
use std::path::Path;

/// A format we extract text from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    Text,
    Markdown,
    Html,
    Pdf,
}

impl DocKind {
    /// The kind a file's extension names (case-insensitive), if any.
    pub fn from_extension(path: &Path) -> Option<DocKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" => Some(DocKind::Text),
            "md" | "markdown" => Some(DocKind::Markdown),
            "html" | "htm" => Some(DocKind::Html),
            "pdf" => Some(DocKind::Pdf),
            _ => None,
        }
    }

    /// The kind of a file: by its extension, else by a look at its first bytes — text
    /// ([`DocKind::sniff`]) with no extension or an unknown one is read as plain text
    /// (`README`, `notes.rst`, `main.rs`). `None` when it is neither, or cannot be read.
    pub fn from_path(path: &Path) -> Option<DocKind> {
        DocKind::from_extension(path).or_else(|| sniff_file(path).ok().flatten())
    }

    /// `Some(Text)` when `head` (a file's first bytes) reads as text: UTF-8 (a character cut
    /// at the end is fine) or UTF-16 with a byte-order mark, without NUL characters.
    pub fn sniff(head: &[u8]) -> Option<DocKind> {
        match decode_prefix(head) {
            Ok(s) if !s.contains('\0') => Some(DocKind::Text),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DocKind::Text => "text",
            DocKind::Markdown => "markdown",
            DocKind::Html => "html",
            DocKind::Pdf => "pdf",
        }
    }
}

impl std::fmt::Display for DocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How many leading bytes [`DocKind::from_path`] reads to tell text from binary.
pub const SNIFF_BYTES: usize = 8192;

/// A file's text, ready to be chunked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    pub kind: DocKind,
    /// Plain text, or Markdown (Markdown files as they are; HTML converted to Markdown-like
    /// text). Chunks' byte ranges point into it.
    pub text: String,
    /// Markdown's first `#` heading, HTML's `<title>` (or first `<h1>`), a PDF's Title entry.
    pub title: Option<String>,
}

/// Why a file gives no document. Ingestion skips such files with this as the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    #[error("empty: no text")]
    Empty,
    #[error("binary: not a text file (NUL bytes)")]
    Binary,
    #[error("not UTF-8: invalid byte at offset {offset} (convert the file to UTF-8)")]
    NotUtf8 { offset: usize },
    #[error("not valid UTF-16: unpaired surrogate at byte offset {offset}")]
    NotUtf16 { offset: usize },
    #[error("unsupported file type `{extension}` (text, Markdown, HTML and PDF are read)")]
    Unsupported { extension: String },
    #[error("PDF without a text layer (scanned? run OCR on it first)")]
    NoText,
    #[error("encrypted PDF: it needs a password")]
    Encrypted,
    #[error("unreadable: {0}")]
    Unreadable(String),
}

/// A document from bytes of a known kind.
pub fn extract(bytes: &[u8], kind: DocKind) -> Result<Document, SkipReason> {
    if bytes.is_empty() {
        return Err(SkipReason::Empty);
    }
    let doc = match kind {
        DocKind::Text => text::extract(bytes)?,
        DocKind::Markdown => markdown::extract(bytes)?,
        DocKind::Html => html::extract(bytes)?,
        DocKind::Pdf => pdf::extract(bytes)?,
    };
    if doc.text.trim().is_empty() {
        return Err(if kind == DocKind::Pdf { SkipReason::NoText } else { SkipReason::Empty });
    }
    Ok(doc)
}

/// Reads a file and extracts its document; the raw bytes come back too (ingestion hashes
/// them to tell an unchanged file).
pub fn load(path: &Path) -> Result<(Vec<u8>, Document), SkipReason> {
    let bytes = std::fs::read(path).map_err(|e| SkipReason::Unreadable(e.to_string()))?;
    let kind = match DocKind::from_extension(path).or_else(|| DocKind::sniff(&bytes[..bytes.len().min(SNIFF_BYTES)])) {
        Some(kind) => kind,
        None if bytes.is_empty() => return Err(SkipReason::Empty),
        None => return Err(not_text(path)),
    };
    let doc = extract(&bytes, kind)?;
    Ok((bytes, doc))
}

/// [`DocKind::sniff`] on a file's first [`SNIFF_BYTES`] bytes.
fn sniff_file(path: &Path) -> std::io::Result<Option<DocKind>> {
    use std::io::Read;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    std::fs::File::open(path)?.take(SNIFF_BYTES as u64).read_to_end(&mut head)?;
    Ok(DocKind::sniff(&head))
}

/// The reason for a file whose kind is not known and whose bytes are not text.
fn not_text(path: &Path) -> SkipReason {
    match path.extension() {
        Some(ext) => SkipReason::Unsupported { extension: ext.to_string_lossy().into_owned() },
        None => SkipReason::Binary,
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";
const UTF16LE_BOM: &[u8] = b"\xFF\xFE";
const UTF16BE_BOM: &[u8] = b"\xFE\xFF";

/// A text format's bytes as a string: UTF-8 (BOM stripped) or UTF-16 with a BOM; NUL
/// characters mean binary.
pub(crate) fn decode_text(bytes: &[u8]) -> Result<String, SkipReason> {
    let text = decode(bytes, false)?;
    if text.contains('\0') {
        return Err(SkipReason::Binary);
    }
    Ok(text)
}

/// Like [`decode_text`] on a file's first bytes: a character cut at the end is no error.
fn decode_prefix(head: &[u8]) -> Result<String, SkipReason> {
    decode(head, true)
}

fn decode(bytes: &[u8], prefix: bool) -> Result<String, SkipReason> {
    if let Some(rest) = bytes.strip_prefix(UTF16LE_BOM) {
        return decode_utf16(rest, u16::from_le_bytes, prefix);
    }
    if let Some(rest) = bytes.strip_prefix(UTF16BE_BOM) {
        return decode_utf16(rest, u16::from_be_bytes, prefix);
    }
    let (skip, body) = match bytes.strip_prefix(UTF8_BOM) {
        Some(rest) => (UTF8_BOM.len(), rest),
        None => (0, bytes),
    };
    match std::str::from_utf8(body) {
        Ok(s) => Ok(s.to_string()),
        // A multi-byte character cut by the end of a prefix.
        Err(e) if prefix && e.error_len().is_none() => Ok(String::from_utf8_lossy(&body[..e.valid_up_to()]).into_owned()),
        Err(e) => {
            // A file of NULs and stray bytes is binary rather than mis-encoded text.
            if body.contains(&0) {
                Err(SkipReason::Binary)
            } else {
                Err(SkipReason::NotUtf8 { offset: skip + e.valid_up_to() })
            }
        }
    }
}

fn decode_utf16(body: &[u8], unit: fn([u8; 2]) -> u16, prefix: bool) -> Result<String, SkipReason> {
    let units = body.chunks_exact(2).map(|p| unit([p[0], p[1]]));
    let mut out = String::with_capacity(body.len() / 2);
    let mut offset = 2; // past the BOM
    for c in char::decode_utf16(units) {
        match c {
            Ok(c) => {
                out.push(c);
                offset += 2 * c.len_utf16();
            }
            // An unpaired surrogate at the very end of a prefix may be half of a pair.
            Err(_) if prefix && offset + 2 >= body.len() + 2 => break,
            Err(_) => return Err(SkipReason::NotUtf16 { offset }),
        }
    }
    if body.len() % 2 == 1 && !prefix {
        return Err(SkipReason::NotUtf16 { offset: body.len() + 1 });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_by_extension() {
        for (name, kind) in [
            ("a.txt", Some(DocKind::Text)),
            ("a.TEXT", Some(DocKind::Text)),
            ("a.md", Some(DocKind::Markdown)),
            ("a.Markdown", Some(DocKind::Markdown)),
            ("a.html", Some(DocKind::Html)),
            ("a.HTM", Some(DocKind::Html)),
            ("a.pdf", Some(DocKind::Pdf)),
            ("a.png", None),
            ("README", None),
        ] {
            assert_eq!(DocKind::from_extension(Path::new(name)), kind, "{name}");
        }
        assert_eq!(serde_json::to_string(&DocKind::Markdown).unwrap(), "\"markdown\"");
        assert_eq!(DocKind::Pdf.as_str(), "pdf");
    }

    #[test]
    fn sniffing_tells_text_from_binary() {
        assert_eq!(DocKind::sniff(b"plain words\n"), Some(DocKind::Text));
        assert_eq!(DocKind::sniff("caf\u{e9}".as_bytes()), Some(DocKind::Text));
        // "é" cut after its first byte by the end of the sniffed prefix: still text.
        assert_eq!(DocKind::sniff(b"caf\xC3"), Some(DocKind::Text));
        assert_eq!(DocKind::sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"), None);
        assert_eq!(DocKind::sniff(b"ab\0cd"), None);
        assert_eq!(DocKind::sniff(b"caf\xE9 au lait"), None);
    }

    #[test]
    fn utf8_bom_is_stripped_and_bad_bytes_are_located() {
        assert_eq!(decode_text(b"\xEF\xBB\xBFhello").unwrap(), "hello");
        // Offsets count from the file's first byte, BOM included.
        assert_eq!(decode_text(b"\xEF\xBB\xBFab\xFFcd"), Err(SkipReason::NotUtf8 { offset: 5 }));
        assert_eq!(decode_text(b"caf\xE9"), Err(SkipReason::NotUtf8 { offset: 3 }));
        assert_eq!(decode_text(b"a\0b"), Err(SkipReason::Binary));
        assert_eq!(decode_text(b"\0\0\xFF\xD8"), Err(SkipReason::Binary));
    }

    #[test]
    fn utf16_with_a_bom_is_decoded() {
        let le: Vec<u8> = b"\xFF\xFE".iter().copied().chain("h\u{e9}llo \u{1F600}".encode_utf16().flat_map(u16::to_le_bytes)).collect();
        assert_eq!(decode_text(&le).unwrap(), "h\u{e9}llo \u{1F600}");
        let be: Vec<u8> = b"\xFE\xFF".iter().copied().chain("hi".encode_utf16().flat_map(u16::to_be_bytes)).collect();
        assert_eq!(decode_text(&be).unwrap(), "hi");
        // 'a', then a lone low surrogate: the bad unit is at byte 4.
        assert_eq!(decode_text(b"\xFF\xFEa\0\x00\xDCb\0"), Err(SkipReason::NotUtf16 { offset: 4 }));
        // A byte left over after 'a': at offset 4.
        assert_eq!(decode_text(b"\xFF\xFEa\0b"), Err(SkipReason::NotUtf16 { offset: 4 }));
    }

    #[test]
    fn empty_and_whitespace_are_empty() {
        assert_eq!(extract(b"", DocKind::Text), Err(SkipReason::Empty));
        assert_eq!(extract(b" \n\t\r\n", DocKind::Markdown), Err(SkipReason::Empty));
        assert_eq!(extract(b"<html><body>  </body></html>", DocKind::Html), Err(SkipReason::Empty));
    }
}
