//! Plain text: the file's characters as they are.

use super::{decode_text, DocKind, Document, SkipReason};

pub(super) fn extract(bytes: &[u8]) -> Result<Document, SkipReason> {
    Ok(Document { kind: DocKind::Text, text: decode_text(bytes)?, title: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_kept_as_it_is() {
        let doc = extract(b"  first line\r\n\nsecond\n").unwrap();
        assert_eq!(doc.text, "  first line\r\n\nsecond\n");
        assert_eq!(doc.kind, DocKind::Text);
        assert_eq!(doc.title, None);
    }
}
