//! Markdown: the file as it is (the chunker splits it along its headings); the title is its
//! first level-1 heading.

use super::{decode_text, DocKind, Document, SkipReason};
use pulldown_cmark::{Event, HeadingLevel, Parser, Tag, TagEnd};

pub(super) fn extract(bytes: &[u8]) -> Result<Document, SkipReason> {
    let text = decode_text(bytes)?;
    let title = first_h1(&text);
    Ok(Document { kind: DocKind::Markdown, text, title })
}

/// The text of the first `# heading` (ATX or setext), inline markup dropped.
fn first_h1(text: &str) -> Option<String> {
    let mut inside = false;
    let mut title = String::new();
    for event in Parser::new(text) {
        match event {
            Event::Start(Tag::Heading { level: HeadingLevel::H1, .. }) => inside = true,
            Event::End(TagEnd::Heading(HeadingLevel::H1)) => {
                let t = title.split_whitespace().collect::<Vec<_>>().join(" ");
                if !t.is_empty() {
                    return Some(t);
                }
                inside = false;
            }
            Event::Text(t) | Event::Code(t) if inside => title.push_str(&t),
            Event::SoftBreak | Event::HardBreak if inside => title.push(' '),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_is_kept_and_titled_by_its_first_h1() {
        let src = "Some intro.\n\n## Not this\n\n# The *real* `title`\n\ntext\n\n# Second\n";
        let doc = extract(src.as_bytes()).unwrap();
        assert_eq!(doc.text, src);
        assert_eq!(doc.kind, DocKind::Markdown);
        assert_eq!(doc.title.as_deref(), Some("The real title"));
        assert_eq!(extract(b"Setext title\n===\n\nbody").unwrap().title.as_deref(), Some("Setext title"));
        assert_eq!(extract(b"no heading here\n").unwrap().title, None);
    }
}
