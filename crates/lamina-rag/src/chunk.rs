//! Chunking: a document's text cut into pieces of at most `tokens` tokens, consecutive pieces
//! sharing up to `overlap` tokens, cut along the text's own structure.
//!
//! The splitting is text-splitter's: it cuts at the coarsest boundary that lets a piece fit
//! — for Markdown (and HTML, which [`crate::document`] turns into Markdown-like text) headings
//! first, then blocks, paragraphs, lines, sentences, words, graphemes; for plain text and
//! PDF blank-line paragraphs, lines, sentences, words, graphemes — and it sizes pieces with our
//! [`TokenCounter`] (the embedding model's own tokenizer in use), so a piece fits the model.
//!
//! Pieces are trimmed of surrounding whitespace, and each keeps its exact place:
//! `&doc.text[piece.byte_range] == piece.text`.
//!
//! The one case a piece can exceed `tokens`: a single grapheme (the smallest unit the splitter
//! keeps whole) that alone counts more tokens than that — only possible with a tiny budget,
//! e.g. `tokens = 1` and an emoji the tokenizer spells in several byte tokens. Such a
//! grapheme becomes a piece of its own, over budget; nothing is dropped or cut mid-character.

use crate::document::{DocKind, Document};
use crate::{RagError, Result, TokenCounter};
use pulldown_cmark::{Event, Parser, Tag, TagEnd};
use std::ops::Range;
use text_splitter::{ChunkConfig, ChunkSizer, MarkdownSplitter, TextSplitter};

/// A piece of a document, ready to embed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    pub text: String,
    /// Where the piece lies in [`Document::text`], in bytes.
    pub byte_range: Range<u64>,
    /// The Markdown headings above the piece's start, outermost first, joined by " > "
    /// ("Install > From source"); `None` for plain text and PDF, and before the first heading.
    pub heading: Option<String>,
}

/// text-splitter's view of our token counter.
#[derive(Clone, Copy)]
struct Tokens<'a>(&'a dyn TokenCounter);

impl ChunkSizer for Tokens<'_> {
    fn size(&self, chunk: &str) -> usize {
        self.0.count_tokens(chunk)
    }
}

/// Cuts documents into pieces of a collection's chunk size.
pub struct Chunker<'a> {
    text: TextSplitter<Tokens<'a>>,
    markdown: MarkdownSplitter<Tokens<'a>>,
}

impl<'a> Chunker<'a> {
    /// Pieces of at most `tokens` tokens of `counter`, sharing `overlap` tokens.
    pub fn new(counter: &'a dyn TokenCounter, tokens: usize, overlap: usize) -> Result<Chunker<'a>> {
        if tokens == 0 {
            return Err(RagError::InvalidInput("the chunk size must be at least 1 token".into()));
        }
        if overlap >= tokens {
            return Err(RagError::InvalidInput(format!("the chunk overlap ({overlap} tokens) must be smaller than the chunk size ({tokens} tokens)")));
        }
        let config =
            || ChunkConfig::new(tokens).with_sizer(Tokens(counter)).with_overlap(overlap).map_err(|e| RagError::InvalidInput(format!("chunking: {e}")));
        Ok(Chunker { text: TextSplitter::new(config()?), markdown: MarkdownSplitter::new(config()?) })
    }

    /// The document's pieces, in order.
    pub fn chunk(&self, doc: &Document) -> Vec<Piece> {
        let text = doc.text.as_str();
        match doc.kind {
            DocKind::Markdown | DocKind::Html => {
                let headings = Headings::of(text);
                self.markdown.chunk_indices(text).map(|(start, piece)| piece_at(start, piece, headings.path_at(start))).collect()
            }
            DocKind::Text | DocKind::Pdf => self.text.chunk_indices(text).map(|(start, piece)| piece_at(start, piece, None)).collect(),
        }
    }
}

fn piece_at(start: usize, text: &str, heading: Option<String>) -> Piece {
    Piece { text: text.to_string(), byte_range: start as u64..(start + text.len()) as u64, heading }
}

/// A Markdown text's headings, in order: where each starts, its level, its text.
struct Headings(Vec<(usize, usize, String)>);

impl Headings {
    fn of(text: &str) -> Headings {
        let mut headings = Vec::new();
        let mut current: Option<(usize, usize, String)> = None;
        for (event, range) in Parser::new(text).into_offset_iter() {
            match event {
                Event::Start(Tag::Heading { level, .. }) => current = Some((range.start, level as usize, String::new())),
                Event::End(TagEnd::Heading(_)) => {
                    if let Some((start, level, title)) = current.take() {
                        let title = title.split_whitespace().collect::<Vec<_>>().join(" ");
                        if !title.is_empty() {
                            headings.push((start, level, title));
                        }
                    }
                }
                Event::Text(t) | Event::Code(t) => {
                    if let Some((_, _, title)) = current.as_mut() {
                        title.push_str(&t);
                    }
                }
                Event::SoftBreak | Event::HardBreak => {
                    if let Some((_, _, title)) = current.as_mut() {
                        title.push(' ');
                    }
                }
                _ => {}
            }
        }
        Headings(headings)
    }

    /// The path of headings in force at byte `at`: each heading at or before it, less those a
    /// later heading of the same or a higher level has closed.
    fn path_at(&self, at: usize) -> Option<String> {
        let mut path: Vec<(usize, &str)> = Vec::new();
        for (_, level, title) in self.0.iter().take_while(|(start, ..)| *start <= at) {
            while path.last().is_some_and(|(l, _)| *l >= *level) {
                path.pop();
            }
            path.push((*level, title));
        }
        (!path.is_empty()).then(|| path.iter().map(|(_, t)| *t).collect::<Vec<_>>().join(" > "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::embed::WordCounter as Words;

    fn doc(kind: DocKind, text: &str) -> Document {
        Document { kind, text: text.to_string(), title: None }
    }

    fn numbered(n: usize) -> String {
        (0..n).map(|i| format!("w{i}")).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn sizes_are_checked() {
        assert!(Chunker::new(&Words, 0, 0).is_err());
        let e = Chunker::new(&Words, 10, 10).err().unwrap().to_string();
        assert!(e.contains("overlap (10 tokens)") && e.contains("size (10 tokens)"), "{e}");
        assert!(Chunker::new(&Words, 10, 9).is_ok());
    }

    #[test]
    fn pieces_fit_slice_the_text_and_overlap() {
        let text = numbered(100);
        let pieces = Chunker::new(&Words, 10, 3).unwrap().chunk(&doc(DocKind::Text, &text));
        assert!(pieces.len() >= 100 / 7, "{}", pieces.len());
        for p in &pieces {
            assert_eq!(&text[p.byte_range.start as usize..p.byte_range.end as usize], p.text);
            assert!(Words.count_tokens(&p.text) <= 10, "{:?}", p.text);
            assert_eq!(p.heading, None);
        }
        for w in pieces.windows(2) {
            // Consecutive pieces share words: the second starts before the first ends.
            assert!(w[1].byte_range.start < w[0].byte_range.end, "{:?} then {:?}", w[0], w[1]);
            let last = w[0].text.split_whitespace().last().unwrap();
            assert!(w[1].text.split_whitespace().any(|x| x == last), "{:?} then {:?}", w[0].text, w[1].text);
        }
        // Every word is in some piece.
        assert!(pieces.first().unwrap().text.starts_with("w0 ") && pieces.last().unwrap().text.ends_with(" w99"));
    }

    #[test]
    fn paragraphs_are_kept_whole_where_they_fit() {
        let text = format!("{}\n\n{}\n\n{}", numbered(6), numbered(5), numbered(7));
        let pieces = Chunker::new(&Words, 8, 0).unwrap().chunk(&doc(DocKind::Text, &text));
        let texts: Vec<&str> = pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(texts, vec![numbered(6), numbered(5), numbered(7)]);
    }

    #[test]
    fn markdown_pieces_carry_their_heading_path() {
        let text = "Intro words here.\n\n# Guide\n\nguide text one two\n\n## Install\n\ninstall text a b c\n\n### From source\n\nsource text x y z\n\n## Use\n\nuse text p q r\n";
        // Heading marks count as words here: each section is 6-8 "tokens", two never fit in 8.
        let pieces = Chunker::new(&Words, 8, 0).unwrap().chunk(&doc(DocKind::Markdown, text));
        let got: Vec<(&str, Option<&str>)> = pieces.iter().map(|p| (p.text.as_str(), p.heading.as_deref())).collect();
        assert_eq!(
            got,
            vec![
                ("Intro words here.", None),
                ("# Guide\n\nguide text one two", Some("Guide")),
                ("## Install\n\ninstall text a b c", Some("Guide > Install")),
                ("### From source\n\nsource text x y z", Some("Guide > Install > From source")),
                ("## Use\n\nuse text p q r", Some("Guide > Use")),
            ]
        );
        for p in &pieces {
            assert_eq!(&text[p.byte_range.start as usize..p.byte_range.end as usize], p.text);
        }
    }

    #[test]
    fn heading_path_comes_from_above_a_piece_that_starts_mid_section() {
        let text = format!("# Top\n\n## Part\n\n{}\n", numbered(40));
        let pieces = Chunker::new(&Words, 10, 2).unwrap().chunk(&doc(DocKind::Markdown, &text));
        assert!(pieces.len() > 3);
        assert_eq!(pieces.last().unwrap().heading.as_deref(), Some("Top > Part"));
    }

    #[test]
    fn an_empty_document_has_no_pieces() {
        assert!(Chunker::new(&Words, 10, 2).unwrap().chunk(&doc(DocKind::Text, "")).is_empty());
    }
}
