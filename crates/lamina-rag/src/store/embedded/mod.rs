//! The embedded store: a collection is a folder of files, its state held in memory.
//!
//! `<root>/<name>/` holds
//! - `spec.json` — the [`CollectionSpec`], written once at creation;
//! - `snapshot.bin` — the state at the last checkpoint ([`snapshot`]), if there was one;
//! - `vectors.idx` — the vector index (HNSW graph) saved with the snapshot, so opening a big
//!   collection does not rebuild it (rebuilt from the snapshot's vectors when missing, stale
//!   or damaged);
//! - `log-<generation>.bin` — every batch applied since, one checksummed record each ([`log`]);
//! - `lock` — the writer lock ([`lock`]).
//!
//! Opening reads the snapshot and replays the log into a [`MemoryState`]. [`Store::apply`]
//! checks the batch, appends it to the log as one record, fsyncs, and only then changes the
//! state: a kill at any moment leaves either the whole batch on disk or none of it (a torn
//! last record fails its length or checksum and is dropped on reopen). When the log outgrows
//! half the snapshot (and [`EmbeddedOptions::checkpoint_min_bytes`]), the state is written as
//! a new snapshot and the log starts again empty: reopening stays fast, and the chunks of
//! replaced or removed sources — which live only in the old log and snapshot — stop taking
//! space, so what the folder holds stays within a small multiple of the live data.
//!
//! One writer per collection: the first [`Store::apply`] takes the `lock` file's advisory
//! lock (another writer gets [`RagError::Locked`]) and holds it until the store is dropped;
//! an empty batch takes it without writing anything. Readers take no lock, so they open
//! while a writer works and see the batches committed when they opened.

mod catalog;
mod codec;
mod lock;
mod log;
mod snapshot;

pub use catalog::EmbeddedCatalog;

use crate::store::{Change, MemoryState, Store};
use crate::types::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, SourceRecord};
use crate::{RagError, Result};
use std::path::{Path, PathBuf};

/// Spec file name inside a collection's folder.
pub const SPEC_FILE: &str = "spec.json";

/// Tuning of the embedded store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddedOptions {
    /// The log is checkpointed into a new snapshot once it is bigger than this and than half
    /// the snapshot.
    pub checkpoint_min_bytes: u64,
    /// Threads for building the vector index's graph (on open, when it has to be rebuilt,
    /// and as a collection grows past the exact-search threshold).
    pub threads: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> EmbeddedOptions {
        EmbeddedOptions { checkpoint_min_bytes: 8 << 20, threads: 1 }
    }
}

/// What the store last read from or wrote to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DiskMark {
    generation: u64,
    /// The log file's length (0 when it does not exist).
    log_len: u64,
}

/// The writer's side: the lock and the open log.
struct Writer {
    _lock: lock::WriterLock,
    log: log::Writer,
}

/// One collection in a folder (see the module documentation).
pub struct EmbeddedStore {
    dir: PathBuf,
    state: MemoryState,
    options: EmbeddedOptions,
    mark: DiskMark,
    /// Where the valid records of the log end (less than `mark.log_len` after a torn tail).
    log_valid_len: u64,
    snapshot_bytes: u64,
    writer: Option<Writer>,
    vector_index_loaded: bool,
}

impl EmbeddedStore {
    /// Opens the collection in `dir` (read-only until the first [`Store::apply`]).
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<EmbeddedStore> {
        let spec = read_spec(dir)?;
        let loaded = load(dir, &spec, options)?;
        Ok(EmbeddedStore {
            dir: dir.to_path_buf(),
            state: loaded.state,
            options,
            mark: loaded.mark,
            log_valid_len: loaded.log_valid_len,
            snapshot_bytes: loaded.snapshot_bytes,
            writer: None,
            vector_index_loaded: loaded.vector_index_loaded,
        })
    }

    /// Whether opening read the saved vector index (`false`: there was none to read, or it
    /// was rebuilt from the snapshot's vectors).
    pub fn vector_index_loaded(&self) -> bool {
        self.vector_index_loaded
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The in-memory state (for callers that want more than the [`Store`] trait gives).
    pub fn state(&self) -> &MemoryState {
        &self.state
    }

    /// Writes a snapshot now and empties the log (taking the writer lock if not yet held).
    pub fn compact(&mut self) -> Result<()> {
        self.ensure_writer()?;
        self.checkpoint()
    }

    fn corrupt(&self, reason: impl Into<String>) -> RagError {
        RagError::Corrupt { collection: self.state.spec().name.clone(), reason: reason.into() }
    }

    /// Takes the writer lock (once), catches up with what another writer committed since
    /// this store was opened, and opens the log for appending (cutting off a torn tail).
    fn ensure_writer(&mut self) -> Result<()> {
        if self.writer.is_some() {
            return Ok(());
        }
        let lock = lock::WriterLock::try_take(&self.dir, &self.state.spec().name)?;
        if current_mark(&self.dir).map_err(|e| self.corrupt(e))? != self.mark {
            let loaded = load(&self.dir, self.state.spec(), self.options)?;
            self.state = loaded.state;
            self.mark = loaded.mark;
            self.log_valid_len = loaded.log_valid_len;
            self.snapshot_bytes = loaded.snapshot_bytes;
        }
        remove_stale_files(&self.dir, self.mark.generation);
        let path = log::path(&self.dir, self.mark.generation);
        let io = |e| RagError::io(path.display(), e);
        let log = if self.log_valid_len < log::HEADER_LEN {
            log::Writer::create(&self.dir, self.mark.generation)
        } else {
            log::Writer::open(&path, self.log_valid_len)
        }
        .map_err(io)?;
        self.mark.log_len = log.len();
        self.log_valid_len = log.len();
        self.writer = Some(Writer { _lock: lock, log });
        Ok(())
    }

    /// Snapshot of the state as generation + 1, then a fresh log, then the old log removed.
    /// A crash between the steps leaves a snapshot and the log that follows it (a stale
    /// older log is removed by the next writer).
    fn checkpoint(&mut self) -> Result<()> {
        let next = self.mark.generation + 1;
        self.snapshot_bytes = snapshot::write(&self.dir, &self.state, next)?;
        // A cache beside the snapshot: if writing it fails, the next open rebuilds it.
        if let Err(e) = snapshot::write_index(&self.dir, self.state.vector_index(), next) {
            tracing::warn!("collection `{}`: saving the vector index: {e}", self.state.spec().name);
        }
        let old = log::path(&self.dir, self.mark.generation);
        let fresh = log::Writer::create(&self.dir, next).map_err(|e| RagError::io(log::path(&self.dir, next).display(), e))?;
        self.mark = DiskMark { generation: next, log_len: fresh.len() };
        self.log_valid_len = fresh.len();
        if let Some(w) = self.writer.as_mut() {
            w.log = fresh;
        }
        let _ = std::fs::remove_file(&old);
        let _ = log::sync_dir(&self.dir);
        Ok(())
    }

    fn maybe_checkpoint(&mut self) {
        let log_len = self.writer.as_ref().map_or(0, |w| w.log.len());
        if log_len > self.options.checkpoint_min_bytes.max(self.snapshot_bytes / 2) {
            // The batch is durable in the log already; a failed checkpoint only means a
            // longer log to replay, and the next batch tries again.
            if let Err(e) = self.checkpoint() {
                tracing::warn!("collection `{}`: checkpoint failed: {e}", self.state.spec().name);
            }
        }
    }
}

impl Store for EmbeddedStore {
    fn spec(&self) -> &CollectionSpec {
        self.state.spec()
    }

    fn info(&self) -> Result<CollectionInfo> {
        Ok(self.state.info(Some(folder_bytes(&self.dir))))
    }

    fn source(&self, source: &str) -> Result<Option<SourceRecord>> {
        Ok(self.state.source(source))
    }

    fn sources(&self) -> Result<Vec<SourceRecord>> {
        Ok(self.state.sources())
    }

    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        self.state.check(&changes)?;
        self.ensure_writer()?;
        if changes.is_empty() {
            return Ok(());
        }
        let mut e = codec::Encoder::default();
        e.batch(&changes);
        let w = self.writer.as_mut().expect("writer taken above");
        if let Err(err) = w.log.append(&e.buf) {
            // The log was cut back to its last whole record (or, failing that, the next
            // writer cuts it): reopen it before the next batch.
            let path = w.log.path().display().to_string();
            self.writer = None;
            self.mark.log_len = u64::MAX;
            return Err(RagError::io(format!("appending to {path}"), err));
        }
        self.mark.log_len = w.log.len();
        self.log_valid_len = w.log.len();
        self.state.apply(changes);
        self.maybe_checkpoint();
        Ok(())
    }

    fn vector_search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        self.state.vector_search(query, k, filter)
    }

    fn keyword_search(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        Ok(self.state.keyword_search(query, k, filter))
    }

    fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkRecord>> {
        Ok(self.state.chunks(ids))
    }
}

/// Reads `dir/spec.json`.
pub(crate) fn read_spec(dir: &Path) -> Result<CollectionSpec> {
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
    let path = dir.join(SPEC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => RagError::UnknownCollection(name.clone()),
        _ => RagError::io(path.display(), e),
    })?;
    let spec: CollectionSpec =
        serde_json::from_str(&text).map_err(|e| RagError::Corrupt { collection: name.clone(), reason: format!("{}: {e}", path.display()) })?;
    if spec.name != name {
        return Err(RagError::Corrupt { collection: name, reason: format!("{} names the collection `{}`", path.display(), spec.name) });
    }
    Ok(spec)
}

struct Loaded {
    state: MemoryState,
    mark: DiskMark,
    log_valid_len: u64,
    snapshot_bytes: u64,
    vector_index_loaded: bool,
}

/// Reads the snapshot and replays its log. A writer may checkpoint meanwhile (new snapshot,
/// new log, old log removed): then the log read is missing while a newer one exists, and
/// the read starts over.
fn load(dir: &Path, spec: &CollectionSpec, options: EmbeddedOptions) -> Result<Loaded> {
    let corrupt = |reason: String| RagError::Corrupt { collection: spec.name.clone(), reason };
    for _ in 0..8 {
        let (generation, mut state, vector_index_loaded) = match snapshot::read(dir, spec).map_err(corrupt)? {
            None => (0, MemoryState::new(spec.clone()), false),
            Some(snap) => {
                let mut state = snap.state;
                let saved = snapshot::read_index(dir, snap.generation).and_then(|ix| state.set_vector_index(ix));
                let loaded = match saved {
                    Ok(()) => true,
                    Err(why) => {
                        tracing::info!("collection `{}`: rebuilding the vector index ({why})", spec.name);
                        let params = crate::index::HnswParams { threads: options.threads.max(1), ..Default::default() };
                        let ix = crate::index::VectorIndex::build(spec.dimensions, params, &snap.ids, &snap.vectors, options.threads.max(1));
                        state.set_vector_index(ix).map_err(|e| corrupt(format!("{}: {e}", snapshot::path(dir).display())))?;
                        false
                    }
                };
                (snap.generation, state, loaded)
            }
        };
        state.set_threads(options.threads.max(1));
        let snapshot_bytes = std::fs::metadata(snapshot::path(dir)).map(|m| m.len()).unwrap_or(0);
        let path = log::path(dir, generation);
        let scan = log::read(&path, generation).map_err(corrupt)?;
        if scan.file_len == 0 && newer_log_exists(dir, generation) {
            continue;
        }
        for (i, rec) in scan.records.iter().enumerate() {
            let mut d = codec::Decoder::new(rec);
            let batch =
                d.batch(spec.dimensions).and_then(|b| d.finish().map(|_| b)).map_err(|e| corrupt(format!("{} record {}: {}", path.display(), i + 1, e.0)))?;
            state.check(&batch).map_err(|e| corrupt(format!("{} record {}: {e}", path.display(), i + 1)))?;
            state.apply(batch);
        }
        if let Some(why) = &scan.torn {
            tracing::info!("collection `{}`: dropped a torn log tail ({why}): a batch that was not committed", spec.name);
        }
        return Ok(Loaded { state, mark: DiskMark { generation, log_len: scan.file_len }, log_valid_len: scan.valid_len, snapshot_bytes, vector_index_loaded });
    }
    Err(corrupt("the collection kept changing while it was being read; try again".into()))
}

fn newer_log_exists(dir: &Path, generation: u64) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return false };
    entries.flatten().any(|e| e.file_name().to_str().and_then(log::generation_of).is_some_and(|g| g > generation))
}

/// The generation of the snapshot on disk and the length of its log, read cheaply.
fn current_mark(dir: &Path) -> std::result::Result<DiskMark, String> {
    use std::io::Read;
    let generation = match std::fs::File::open(snapshot::path(dir)) {
        Ok(mut f) => {
            let mut head = [0u8; 16];
            f.read_exact(&mut head).map_err(|e| format!("reading {}: {e}", snapshot::path(dir).display()))?;
            u64::from_le_bytes(head[8..].try_into().expect("8 bytes"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(format!("reading {}: {e}", snapshot::path(dir).display())),
    };
    let log_len = std::fs::metadata(log::path(dir, generation)).map(|m| m.len()).unwrap_or(0);
    Ok(DiskMark { generation, log_len })
}

/// Logs older than the snapshot and temporary files of interrupted snapshots: what a crash
/// in the middle of a checkpoint leaves behind.
fn remove_stale_files(dir: &Path, generation: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let stale_log = log::generation_of(name).is_some_and(|g| g < generation);
        if stale_log || name.starts_with("snapshot.bin.tmp-") || name.starts_with("vectors.idx.tmp-") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Bytes of the regular files in `dir`.
fn folder_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map(|it| it.flatten().filter_map(|e| e.metadata().ok()).filter(|m| m.is_file()).map(|m| m.len()).sum()).unwrap_or(0)
}
