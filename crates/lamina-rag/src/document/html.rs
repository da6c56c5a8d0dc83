//! HTML: converted to Markdown-like text — headings as `#` lines, paragraphs apart, list items
//! as `- ` lines, quotes as `> `, links and images by their text — so the chunker splits it
//! along its headings as it does Markdown. Scripts, styles, the `<head>` and navigation
//! (`<nav>`, `role="navigation"`, `hidden`) are dropped. The title is the `<title>`, else the
//! first `<h1>`.
//!
//! html2text does the layout: it sits on html5ever (the browser-grade parser of the Servo
//! project, so broken markup parses as a browser would) and handles whitespace, `<pre>`,
//! nested lists and tables. We give it our own decorator (no link footnotes, no emphasis
//! marks: the text is for embedding) and a width no line reaches, so paragraphs are not
//! wrapped.

use super::{decode_text, DocKind, Document, SkipReason};
use html2text::render::{TaggedLine, TextDecorator};
use html2text::{Element, Handle, RcDom};

type Config = html2text::config::Config<MarkdownText>;

/// Wider than any paragraph: html2text wraps at this width.
const WIDTH: usize = 1 << 20;

pub(super) fn extract(bytes: &[u8]) -> Result<Document, SkipReason> {
    let source = decode_text(bytes)?;
    let config = html2text::config::with_decorator(MarkdownText).no_table_borders().allow_width_overflow();
    let unreadable = |e: html2text::Error| SkipReason::Unreadable(format!("HTML: {e}"));
    let dom = config.parse_html(source.as_bytes()).map_err(unreadable)?;
    let title = find(&dom.document, "title").and_then(|n| inner_text(&config, &n)).or_else(|| find(&dom.document, "h1").and_then(|n| inner_text(&config, &n)));
    drop_navigation(&dom.document);
    let tree = config.dom_to_render_tree(&dom).map_err(unreadable)?;
    let rendered = config.render_to_string(tree, WIDTH).map_err(unreadable)?;
    Ok(Document { kind: DocKind::Html, text: tidy(&rendered), title })
}

/// Trailing spaces off every line, runs of blank lines down to one, no blank start or end.
fn tidy(rendered: &str) -> String {
    let mut out = String::with_capacity(rendered.len());
    let mut blank = false;
    for line in rendered.lines().map(str::trim_end) {
        if line.is_empty() {
            blank = !out.is_empty();
            continue;
        }
        if blank {
            out.push('\n');
            blank = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

fn element_name(node: &Handle) -> Option<&str> {
    match &node.data {
        Element { name, .. } => Some(&name.local),
        _ => None,
    }
}

/// The first element named `name`, in document order. (Walks with a stack of its own, not
/// by recursion: pages nest deeper than a thread's stack allows.)
fn find(root: &Handle, name: &str) -> Option<Handle> {
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        if element_name(&node) == Some(name) {
            return Some(node);
        }
        stack.extend(node.children.borrow().iter().rev().cloned());
    }
    None
}

/// The text under an element, rendered as the page is and whitespace collapsed (html2text
/// keeps its DOM's text nodes private, so the element is rendered as a page of its own).
fn inner_text(config: &Config, node: &Handle) -> Option<String> {
    let sub = RcDom { document: node.clone(), ..Default::default() };
    let rendered = config.render_to_string(config.dom_to_render_tree(&sub).ok()?, WIDTH).ok()?;
    let rendered = rendered.trim_start();
    // A heading renders with its `#` mark.
    let rendered = if element_name(node) == Some("h1") { rendered.strip_prefix("# ").unwrap_or(rendered) } else { rendered };
    let text = rendered.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// Removes navigation and hidden elements from the tree.
fn drop_navigation(root: &Handle) {
    let mut stack = vec![root.clone()];
    while let Some(node) = stack.pop() {
        node.children.borrow_mut().retain(|c| !is_navigation(c));
        stack.extend(node.children.borrow().iter().cloned());
    }
}

fn is_navigation(node: &Handle) -> bool {
    let Element { name, attrs, .. } = &node.data else { return false };
    let attrs = attrs.borrow();
    let attr = |n: &str| attrs.iter().find(|a| &*a.name.local == n).map(|a| a.value.to_string());
    matches!(&*name.local, "nav" | "noscript" | "template") || attr("role").is_some_and(|r| r.eq_ignore_ascii_case("navigation")) || attr("hidden").is_some()
}

/// html2text's decorator for Markdown-like plain text.
#[derive(Clone, Debug)]
struct MarkdownText;

impl TextDecorator for MarkdownText {
    type Annotation = ();

    fn decorate_link_start(&mut self, _url: &str) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_link_end(&mut self) -> String {
        String::new()
    }
    fn decorate_em_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_em_end(&self) -> String {
        String::new()
    }
    fn decorate_strong_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strong_end(&self) -> String {
        String::new()
    }
    fn decorate_strikeout_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }
    fn decorate_code_start(&self) -> (String, ()) {
        (String::new(), ())
    }
    fn decorate_code_end(&self) -> String {
        String::new()
    }
    fn decorate_preformat_first(&self) {}
    fn decorate_preformat_cont(&self) {}
    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, ()) {
        (title.to_string(), ())
    }
    fn header_prefix(&self, level: usize) -> String {
        "#".repeat(level) + " "
    }
    fn quote_prefix(&self) -> String {
        "> ".to_string()
    }
    fn unordered_item_prefix(&self) -> String {
        "- ".to_string()
    }
    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }
    fn make_subblock_decorator(&self) -> Self {
        MarkdownText
    }
    fn decorate_superscript_start(&self) -> (String, ()) {
        ("^".to_string(), ())
    }
    fn decorate_superscript_end(&self) -> String {
        String::new()
    }
    fn finalise(&mut self, _urls: Vec<String>) -> Vec<TaggedLine<()>> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = r#"<!DOCTYPE html>
<html><head><title>  The   Guide </title><style>body { color: red }</style>
<script>var secret = "do not index";</script></head>
<body>
<nav><a href="/">Home</a> | <a href="/about">About</a></nav>
<div role="navigation">Menu entries</div>
<h1>Guide</h1>
<p>First <b>bold</b> paragraph with a <a href="https://example.com">link text</a>
spread over two lines.</p>
<h2>Install</h2>
<ul><li>one</li><li>two</li></ul>
<ol><li>first</li><li>second</li></ol>
<script>alert("also not");</script>
<p hidden>hidden words</p>
<p>Caf&eacute; &amp; cr&egrave;me &lt;3</p>
</body></html>"#;

    #[test]
    fn html_becomes_markdown_like_text() {
        let doc = extract(PAGE.as_bytes()).unwrap();
        assert_eq!(doc.kind, DocKind::Html);
        assert_eq!(doc.title.as_deref(), Some("The Guide"));
        let want = "# Guide\n\nFirst bold paragraph with a link text spread over two lines.\n\n## Install\n- one\n- two\n1. first\n2. second\n\nCaf\u{e9} & cr\u{e8}me <3\n";
        assert_eq!(doc.text, want);
        for dropped in ["secret", "alert", "color", "Home", "Menu", "hidden words", "https://"] {
            assert!(!doc.text.contains(dropped), "{dropped:?} in {:?}", doc.text);
        }
    }

    #[test]
    fn title_falls_back_to_the_first_h1() {
        let doc = extract(b"<p>intro</p><h1>Big <i>heading</i></h1><h1>other</h1>").unwrap();
        assert_eq!(doc.title.as_deref(), Some("Big heading"));
        assert_eq!(extract(b"<p>no title</p>").unwrap().title, None);
    }

    #[test]
    fn broken_markup_is_read_as_a_browser_would() {
        let doc = extract(b"<p>unclosed <b>bold <p>next</div></span>").unwrap();
        assert_eq!(doc.text, "unclosed bold\n\nnext\n");
    }

    #[test]
    fn deep_nesting_does_not_overflow_the_stack() {
        let page = "<div>".repeat(5000) + "deep" + &"</div>".repeat(5000);
        let doc = extract(page.as_bytes()).unwrap();
        assert_eq!(doc.text.trim(), "deep");
    }
}
