//! PDF: the text layer of every page, pages a blank line apart. pdf-extract (on lopdf, both
//! pure Rust) places the characters of each page's content streams and maps them through
//! the fonts' encodings and ToUnicode maps; lopdf decrypts files whose user password is
//! empty (most "protected" PDFs only restrict printing or copying).
//!
//! Refused, as skip reasons: a file that needs a password ([`SkipReason::Encrypted`]), one
//! whose pages carry no text (a scan: [`SkipReason::NoText`]) and a malformed one
//! ([`SkipReason::Unreadable`]). pdf-extract can panic on malformed input, so it runs under
//! `catch_unwind`: a bad file is a skip, never a crash (the panic's message is still printed
//! by the process's panic hook, which a library leaves alone).

use super::{DocKind, Document, SkipReason};
use pdf_extract::{Document as Pdf, Object};
use std::panic::{catch_unwind, AssertUnwindSafe};

pub(super) fn extract(bytes: &[u8]) -> Result<Document, SkipReason> {
    let pdf = guarded(|| Pdf::load_mem(bytes).map_err(|e| e.to_string()))?;
    // lopdf has decrypted it on loading if an empty password opens it.
    if pdf.is_encrypted() {
        return Err(SkipReason::Encrypted);
    }
    let mut text = String::new();
    for (page, _) in pdf.get_pages() {
        let page_text = guarded(|| {
            let mut out = String::new();
            pdf_extract::output_doc_page(&pdf, &mut pdf_extract::PlainTextOutput::new(&mut out), page).map_err(|e| format!("page {page}: {e}"))?;
            Ok(out)
        })?;
        push_page(&mut text, &page_text);
    }
    if text.is_empty() {
        return Err(SkipReason::NoText);
    }
    Ok(Document { kind: DocKind::Pdf, text, title: title(&pdf) })
}

/// Runs a step of the extractor, its errors and panics alike turned into `Unreadable`.
fn guarded<T>(step: impl FnOnce() -> Result<T, String>) -> Result<T, SkipReason> {
    match catch_unwind(AssertUnwindSafe(step)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(SkipReason::Unreadable(format!("malformed PDF: {e}"))),
        Err(panic) => {
            let what = panic.downcast_ref::<String>().map(String::as_str).or_else(|| panic.downcast_ref::<&str>().copied()).unwrap_or("the PDF reader failed");
            Err(SkipReason::Unreadable(format!("malformed PDF: {what}")))
        }
    }
}

/// Appends a page's lines, trailing spaces and runs of blank lines dropped; pages are
/// separated by one blank line (a paragraph break for the chunker).
fn push_page(text: &mut String, page: &str) {
    let mut blank = !text.is_empty();
    for line in page.lines().map(str::trim_end) {
        if line.trim().is_empty() {
            blank = !text.is_empty();
            continue;
        }
        if blank {
            text.push('\n');
            blank = false;
        }
        text.push_str(line);
        text.push('\n');
    }
}

/// The Info dictionary's Title, when there is a non-empty one.
fn title(pdf: &Pdf) -> Option<String> {
    let info = match pdf.trailer.get(b"Info").ok()? {
        Object::Reference(id) => pdf.get_dictionary(*id).ok()?,
        Object::Dictionary(d) => d,
        _ => return None,
    };
    let title = pdf_extract::decode_text_string(info.get(b"Title").ok()?).ok()?;
    let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
    (!title.is_empty()).then_some(title)
}
