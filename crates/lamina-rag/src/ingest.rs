//! Ingestion, written once for the command line and the server: files (or posted texts) in,
//! chunks with vectors stored in a collection out.
//!
//! Per source: read and extract ([`crate::document`]), hash the raw bytes (sha256), and if
//! the collection holds the source with the same hash, do nothing. Otherwise chunk it with
//! the collection's chunk size and overlap ([`crate::chunk`]), embed the chunks, and queue a
//! [`Change::Put`] that replaces whatever the source had. Queued changes are committed every
//! [`IngestOptions::batch_files`] sources or [`IngestOptions::batch_chunks`] chunks, each
//! commit holding whole sources only: a kill loses at most the batch in flight, and a rerun
//! finds the committed files unchanged and does not embed them again.
//!
//! A file that gives no text (empty, binary, not UTF-8, a PDF without text…) is skipped with
//! its reason, and the rest are indexed.

use crate::chunk::Chunker;
use crate::document::{self, DocKind, Document};
use crate::embed::{EmbedKind, TextEmbedder, TokenCounter};
use crate::search::check_embedder;
use crate::store::{Change, Store};
use crate::types::{CollectionSpec, Metadata, NewChunk, SourceRecord};
use crate::{RagError, Result};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Metadata keys ingestion sets on every source (they take precedence over the caller's).
pub const RESERVED_KEYS: [&str; 3] = ["kind", "title", "path"];

#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Added to every source's metadata (`--meta k=v`).
    pub metadata: Metadata,
    /// Commit after this many new or changed sources…
    pub batch_files: usize,
    /// …or once this many chunks are waiting, whichever comes first.
    pub batch_chunks: usize,
    /// Texts per call to the embedder.
    pub embed_batch: usize,
}

impl Default for IngestOptions {
    fn default() -> IngestOptions {
        IngestOptions { metadata: Metadata::new(), batch_files: 32, batch_chunks: 512, embed_batch: 32 }
    }
}

/// A text to index that is not a file (posted to the server).
#[derive(Debug, Clone)]
pub struct DocumentInput {
    /// The source key: unique in the collection, chosen by the caller.
    pub id: String,
    pub text: String,
    /// How to read `text` (default: plain text).
    pub kind: Option<DocKind>,
    pub metadata: Metadata,
}

/// What happened to each source, as it happens (for progress bars).
#[derive(Debug, Clone, PartialEq)]
pub enum IngestEvent {
    /// The paths expanded to this many candidate files (plus the skipped ones).
    Found {
        files: usize,
    },
    Skipped {
        path: PathBuf,
        reason: String,
    },
    /// Stored with the same content already.
    Unchanged {
        source: String,
    },
    /// Chunked and embedded; stored with the next commit.
    Embedded {
        source: String,
        chunks: usize,
        replaced: bool,
    },
    /// A batch is durable: `sources` sources with `chunks` chunks.
    Committed {
        sources: usize,
        chunks: usize,
    },
}

/// What an ingestion did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IngestReport {
    /// Sources new to the collection.
    pub added: usize,
    /// Sources whose content changed: their chunks were replaced.
    pub replaced: usize,
    pub unchanged: usize,
    /// Files (or document ids) not indexed, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
    /// Chunks stored.
    pub chunks: usize,
    /// Tokens in those chunks (the embedding model's).
    pub tokens: usize,
}

/// Indexes files and folders (recursively) into `store`.
pub fn add_paths(
    store: &mut dyn Store,
    embedder: &dyn TextEmbedder,
    counter: &dyn TokenCounter,
    paths: &[PathBuf],
    opts: &IngestOptions,
    progress: &mut dyn FnMut(IngestEvent),
) -> Result<IngestReport> {
    let mut ing = Ingester::new(store, embedder, counter, opts, progress)?;
    let found = document::walk(paths);
    (ing.progress)(IngestEvent::Found { files: found.iter().filter(|f| f.is_ok()).count() });
    for item in found {
        let path = match item {
            Ok(p) => p,
            Err((path, reason)) => {
                ing.skip(path, reason.to_string());
                continue;
            }
        };
        let key = match source_key(&path) {
            Ok(k) => k,
            Err(reason) => {
                ing.skip(path, reason);
                continue;
            }
        };
        let (bytes, doc) = match document::load(&path) {
            Ok(x) => x,
            Err(reason) => {
                ing.skip(path, reason.to_string());
                continue;
            }
        };
        let mut metadata = opts.metadata.clone();
        metadata.insert("path".into(), serde_json::Value::String(key.clone()));
        ing.index(key, &bytes, doc, metadata)?;
    }
    ing.finish()
}

/// Indexes texts given by the caller, each under its own id.
pub fn add_documents(
    store: &mut dyn Store,
    embedder: &dyn TextEmbedder,
    counter: &dyn TokenCounter,
    docs: Vec<DocumentInput>,
    opts: &IngestOptions,
    progress: &mut dyn FnMut(IngestEvent),
) -> Result<IngestReport> {
    let mut ids = HashSet::new();
    for d in &docs {
        if d.id.trim().is_empty() {
            return Err(RagError::InvalidInput("a document needs a non-empty id".into()));
        }
        if !ids.insert(d.id.as_str()) {
            return Err(RagError::InvalidInput(format!("the document id `{}` is given twice", d.id)));
        }
    }
    let mut ing = Ingester::new(store, embedder, counter, opts, progress)?;
    (ing.progress)(IngestEvent::Found { files: docs.len() });
    for d in docs {
        let doc = match document::extract(d.text.as_bytes(), d.kind.unwrap_or(DocKind::Text)) {
            Ok(doc) => doc,
            Err(reason) => {
                ing.skip(PathBuf::from(&d.id), reason.to_string());
                continue;
            }
        };
        let mut metadata = opts.metadata.clone();
        metadata.extend(d.metadata);
        ing.index(d.id, d.text.as_bytes(), doc, metadata)?;
    }
    ing.finish()
}

/// Removes the sources at `paths` from `store`, in one batch: a file's own source, and for
/// a folder every source under it. Paths need not exist any more (a deleted file's chunks
/// can still be removed). Returns the keys removed.
pub fn remove_paths(store: &mut dyn Store, paths: &[PathBuf]) -> Result<Vec<String>> {
    let keys: Vec<String> = store.sources()?.into_iter().map(|s| s.source).collect();
    let mut removed = Vec::new();
    for path in paths {
        let target = resolve_gone(path)?;
        let target = target.to_string_lossy().into_owned();
        let folder = format!("{}/", target.trim_end_matches('/'));
        for k in &keys {
            if (*k == target || k.starts_with(&folder)) && !removed.contains(k) {
                removed.push(k.clone());
            }
        }
    }
    if !removed.is_empty() {
        store.apply(removed.iter().map(|k| Change::Remove { source: k.clone() }).collect())?;
    }
    Ok(removed)
}

/// Refuses chunking settings the model cannot embed whole (its input is cut at
/// [`TextEmbedder::max_tokens`]) or the chunker cannot follow.
pub fn check_fit(spec: &CollectionSpec, embedder: &dyn TextEmbedder) -> Result<()> {
    if spec.chunk_tokens > embedder.max_tokens() {
        return Err(RagError::InvalidInput(format!(
            "chunks of {} tokens are longer than the {} tokens `{}` reads: their ends would not count (use --chunk-tokens {} or less)",
            spec.chunk_tokens,
            embedder.max_tokens(),
            embedder.model_id(),
            embedder.max_tokens()
        )));
    }
    if spec.chunk_tokens == 0 || spec.chunk_overlap >= spec.chunk_tokens {
        return Err(RagError::InvalidInput(format!(
            "the chunk overlap ({} tokens) must be smaller than the chunk size ({} tokens)",
            spec.chunk_overlap, spec.chunk_tokens
        )));
    }
    Ok(())
}

/// The canonical path of `path`, or for one that no longer exists, its canonical parent
/// joined with its name (else its absolute form): how it was keyed when it existed.
fn resolve_gone(path: &Path) -> Result<PathBuf> {
    if let Ok(p) = path.canonicalize() {
        return Ok(p);
    }
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
        if let Ok(p) = parent.canonicalize() {
            return Ok(p.join(name));
        }
    }
    std::path::absolute(path).map_err(|e| RagError::io(path.display(), e))
}

/// A file's key: its canonical absolute path.
fn source_key(path: &Path) -> std::result::Result<String, String> {
    let c = path.canonicalize().map_err(|e| format!("unreadable: {e}"))?;
    c.into_os_string().into_string().map_err(|p| format!("the path {} is not UTF-8", Path::new(&p).display()))
}

/// sha256, hex.
pub fn content_hash(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The work shared by both entry points: chunk, embed, queue, commit.
struct Ingester<'a> {
    store: &'a mut dyn Store,
    embedder: &'a dyn TextEmbedder,
    counter: &'a dyn TokenCounter,
    chunker: Chunker<'a>,
    opts: &'a IngestOptions,
    progress: &'a mut dyn FnMut(IngestEvent),
    report: IngestReport,
    pending: Vec<Change>,
    pending_chunks: usize,
    seen: HashSet<String>,
}

impl<'a> Ingester<'a> {
    fn new(
        store: &'a mut dyn Store,
        embedder: &'a dyn TextEmbedder,
        counter: &'a dyn TokenCounter,
        opts: &'a IngestOptions,
        progress: &'a mut dyn FnMut(IngestEvent),
    ) -> Result<Ingester<'a>> {
        check_embedder(store, embedder)?;
        let spec = store.spec().clone();
        check_fit(&spec, embedder)?;
        let chunker = Chunker::new(counter, spec.chunk_tokens, spec.chunk_overlap)?;
        // Claims the collection for writing before any work (the embedded store's writer
        // lock): a second writer is refused now, not after it has embedded everything.
        store.apply(Vec::new())?;
        Ok(Ingester {
            store,
            embedder,
            counter,
            chunker,
            opts,
            progress,
            report: IngestReport::default(),
            pending: Vec::new(),
            pending_chunks: 0,
            seen: HashSet::new(),
        })
    }

    fn skip(&mut self, path: PathBuf, reason: String) {
        (self.progress)(IngestEvent::Skipped { path: path.clone(), reason: reason.clone() });
        self.report.skipped.push((path, reason));
    }

    fn index(&mut self, key: String, bytes: &[u8], doc: Document, mut metadata: Metadata) -> Result<()> {
        if !self.seen.insert(key.clone()) {
            return Ok(());
        }
        let hash = content_hash(bytes);
        let existing = self.store.source(&key)?;
        if existing.as_ref().is_some_and(|s| s.content_hash == hash) {
            self.report.unchanged += 1;
            (self.progress)(IngestEvent::Unchanged { source: key });
            return Ok(());
        }
        metadata.insert("kind".into(), serde_json::Value::String(doc.kind.as_str().into()));
        match &doc.title {
            Some(t) => metadata.insert("title".into(), serde_json::Value::String(t.clone())),
            None => metadata.remove("title"),
        };
        let pieces = self.chunker.chunk(&doc);
        let mut chunks = Vec::with_capacity(pieces.len());
        for group in pieces.chunks(self.opts.embed_batch.max(1)) {
            let texts: Vec<&str> = group.iter().map(|p| p.text.as_str()).collect();
            let vectors = self.embedder.embed(&texts, EmbedKind::Passage)?;
            if vectors.len() != texts.len() {
                return Err(RagError::Embed(format!("{} vectors for {} texts", vectors.len(), texts.len())));
            }
            for (p, vector) in group.iter().zip(vectors) {
                self.report.tokens += self.counter.count_tokens(&p.text);
                chunks.push(NewChunk { text: p.text.clone(), byte_range: p.byte_range.clone(), heading: p.heading.clone(), vector });
            }
        }
        let replaced = existing.is_some();
        if replaced {
            self.report.replaced += 1;
        } else {
            self.report.added += 1;
        }
        self.report.chunks += chunks.len();
        (self.progress)(IngestEvent::Embedded { source: key.clone(), chunks: chunks.len(), replaced });
        self.pending_chunks += chunks.len();
        let record = SourceRecord { source: key, content_hash: hash, bytes: bytes.len() as u64, chunks: chunks.len(), added_at: now_secs(), metadata };
        self.pending.push(Change::Put { source: record, chunks });
        if self.pending.len() >= self.opts.batch_files.max(1) || self.pending_chunks >= self.opts.batch_chunks.max(1) {
            self.commit()?;
        }
        Ok(())
    }

    fn commit(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let (sources, chunks) = (batch.len(), std::mem::take(&mut self.pending_chunks));
        self.store.apply(batch)?;
        (self.progress)(IngestEvent::Committed { sources, chunks });
        Ok(())
    }

    fn finish(mut self) -> Result<IngestReport> {
        self.commit()?;
        Ok(self.report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryState;

    use crate::embed::WordCounter as Words;

    /// Two features a text is easy to tell by: its length and its count of `e`s.
    struct Shape;
    impl TextEmbedder for Shape {
        fn model_id(&self) -> &str {
            "shape"
        }
        fn dimensions(&self) -> usize {
            2
        }
        fn max_tokens(&self) -> usize {
            64
        }
        fn embed(&self, texts: &[&str], _: EmbedKind) -> Result<Vec<Vec<f32>>> {
            Ok(texts
                .iter()
                .map(|t| {
                    let v = [t.len() as f32 + 1.0, t.matches('e').count() as f32];
                    let n = (v[0] * v[0] + v[1] * v[1]).sqrt();
                    vec![v[0] / n, v[1] / n]
                })
                .collect())
        }
    }

    fn spec() -> CollectionSpec {
        CollectionSpec { chunk_tokens: 8, chunk_overlap: 2, ..CollectionSpec::new("t", "shape", 2) }
    }

    fn doc(id: &str, text: &str) -> DocumentInput {
        DocumentInput { id: id.into(), text: text.into(), kind: None, metadata: Metadata::new() }
    }

    #[test]
    fn documents_are_chunked_embedded_and_not_redone_when_unchanged() {
        let mut store = MemoryState::new(spec());
        let long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen";
        let mut events = Vec::new();
        let opts = IngestOptions { batch_files: 1, ..IngestOptions::default() };
        let r =
            add_documents(&mut store, &Shape, &Words, vec![doc("a", long), doc("b", "short note"), doc("c", "   ")], &opts, &mut |e| events.push(e)).unwrap();
        assert_eq!((r.added, r.replaced, r.unchanged), (2, 0, 0));
        assert_eq!(r.skipped, vec![(PathBuf::from("c"), "empty: no text".to_string())]);
        let a = store.source("a").unwrap();
        assert!(a.chunks >= 2, "15 words in chunks of 8: {}", a.chunks);
        assert_eq!(r.chunks, a.chunks + 1);
        assert_eq!(a.content_hash, content_hash(long.as_bytes()));
        assert_eq!(a.metadata.get("kind"), Some(&serde_json::json!("text")));
        assert_eq!(events.iter().filter(|e| matches!(e, IngestEvent::Committed { .. })).count(), 2, "a commit per source at batch_files 1");
        let r = add_documents(&mut store, &Shape, &Words, vec![doc("a", long), doc("b", "short note, changed")], &opts, &mut |_| {}).unwrap();
        assert_eq!((r.added, r.replaced, r.unchanged, r.chunks), (0, 1, 1, 1));
        assert_eq!(store.source("b").unwrap().content_hash, content_hash(b"short note, changed"));
        let e = add_documents(&mut store, &Shape, &Words, vec![doc("x", "a"), doc("x", "b")], &opts, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
    }

    #[test]
    fn another_models_collection_is_refused_before_any_work() {
        let mut store = MemoryState::new(CollectionSpec::new("t", "minilm", 384));
        let e = add_documents(&mut store, &Shape, &Words, vec![doc("a", "text")], &IngestOptions::default(), &mut |_| {}).unwrap_err();
        assert!(matches!(e, RagError::DimensionMismatch { expected: 384, got: 2, .. }), "{e}");
        let mut store = MemoryState::new(CollectionSpec { chunk_tokens: 100, ..spec() });
        let e = add_documents(&mut store, &Shape, &Words, vec![doc("a", "text")], &IngestOptions::default(), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("longer than the 64 tokens `shape` reads"), "{e}");
    }

    #[test]
    fn files_and_folders_are_indexed_and_removed_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(dir.path().join("a.md"), "# Title A\n\nSome text here.\n").unwrap();
        std::fs::write(sub.join("b.txt"), "Other words.\n").unwrap();
        std::fs::write(sub.join("empty.txt"), "").unwrap();
        let mut store = MemoryState::new(spec());
        let mut opts = IngestOptions::default();
        opts.metadata.insert("team".into(), serde_json::json!("docs"));
        let r = add_paths(&mut store, &Shape, &Words, &[dir.path().to_path_buf()], &opts, &mut |_| {}).unwrap();
        assert_eq!(r.added, 2);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].0.ends_with("empty.txt"));
        let key = dir.path().canonicalize().unwrap().join("a.md").to_string_lossy().into_owned();
        let a = store.source(&key).unwrap();
        assert_eq!(a.metadata.get("title"), Some(&serde_json::json!("Title A")));
        assert_eq!(a.metadata.get("team"), Some(&serde_json::json!("docs")));
        assert_eq!(a.metadata.get("path"), Some(&serde_json::json!(key)));
        let removed = remove_paths(&mut store, std::slice::from_ref(&sub)).unwrap();
        assert_eq!(removed.len(), 1);
        assert!(removed[0].ends_with("sub/b.txt"));
        // A file deleted from disk can still be removed by its path.
        std::fs::remove_file(dir.path().join("a.md")).unwrap();
        assert_eq!(remove_paths(&mut store, &[dir.path().join("a.md")]).unwrap(), vec![key]);
        assert!(store.sources().is_empty());
        assert!(remove_paths(&mut store, &[dir.path().join("nothing")]).unwrap().is_empty());
    }
}
