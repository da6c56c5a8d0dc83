//! A collection's contents in memory: sources, chunks, and the vector and keyword indexes
//! over them. The embedded store is this state plus a durable log it is replayed from; the
//! state applies a batch of [`Change`]s all or nothing (it checks the whole batch first).

use crate::index::{Bm25Index, VectorIndex};
use crate::store::Change;
use crate::types::{ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, NewChunk, SourceRecord};
use crate::{RagError, Result};
use std::collections::{BTreeMap, HashMap};

pub struct MemoryState {
    spec: CollectionSpec,
    sources: BTreeMap<String, (SourceRecord, Vec<ChunkId>)>,
    chunks: HashMap<ChunkId, ChunkRecord>,
    vectors: VectorIndex,
    keywords: Bm25Index,
    next_id: u64,
}

impl MemoryState {
    pub fn new(spec: CollectionSpec) -> MemoryState {
        let vectors = VectorIndex::new(spec.dimensions);
        MemoryState { spec, sources: BTreeMap::new(), chunks: HashMap::new(), vectors, keywords: Bm25Index::new(), next_id: 1 }
    }

    pub fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    /// The id the next stored chunk gets (ids are never reused).
    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    pub fn info(&self, stored_bytes: Option<u64>) -> CollectionInfo {
        CollectionInfo { spec: self.spec.clone(), sources: self.sources.len(), chunks: self.chunks.len(), stored_bytes, vector_index: self.vectors.describe() }
    }

    pub fn source(&self, source: &str) -> Option<SourceRecord> {
        self.sources.get(source).map(|s| s.0.clone())
    }

    pub fn sources(&self) -> Vec<SourceRecord> {
        self.sources.values().map(|s| s.0.clone()).collect()
    }

    /// Checks a batch without changing anything: vector lengths, finite values, keys.
    pub fn check(&self, changes: &[Change]) -> Result<()> {
        check_batch(&self.spec, changes)
    }

    /// Applies a checked batch; `check` first, or this panics on a wrong vector length.
    pub fn apply(&mut self, changes: Vec<Change>) {
        for c in changes {
            match c {
                Change::Remove { source } => self.remove(&source),
                Change::Put { mut source, chunks } => {
                    self.remove(&source.source);
                    source.chunks = chunks.len();
                    let mut ids = Vec::with_capacity(chunks.len());
                    // One batch into the vector index: the graph links it in one pass.
                    let new_ids: Vec<ChunkId> = (0..chunks.len() as u64).map(|i| ChunkId(self.next_id + i)).collect();
                    let flat: Vec<f32> = chunks.iter().flat_map(|c| c.vector.iter().copied()).collect();
                    let threads = self.vectors.params().threads;
                    self.vectors.insert_batch(&new_ids, &flat, threads);
                    for ch in chunks {
                        let id = ChunkId(self.next_id);
                        self.next_id += 1;
                        self.keywords.insert(id, &ch.text);
                        let rec = ChunkRecord {
                            id,
                            source: source.source.clone(),
                            text: ch.text,
                            byte_range: ch.byte_range,
                            heading: ch.heading,
                            metadata: source.metadata.clone(),
                        };
                        self.chunks.insert(id, rec);
                        ids.push(id);
                    }
                    self.sources.insert(source.source.clone(), (source, ids));
                }
            }
        }
    }

    /// Puts a source back with the chunk ids it had (loading a snapshot); ids to come start
    /// past them. The chunks' vectors are not indexed here: the loader builds or reads the
    /// whole vector index at once and hands it over with [`Self::set_vector_index`].
    pub fn restore_records(&mut self, source: SourceRecord, chunks: Vec<(ChunkId, NewChunk)>) {
        self.remove(&source.source);
        let mut ids = Vec::with_capacity(chunks.len());
        for (id, ch) in chunks {
            self.next_id = self.next_id.max(id.0 + 1);
            self.keywords.insert(id, &ch.text);
            let rec = ChunkRecord {
                id,
                source: source.source.clone(),
                text: ch.text,
                byte_range: ch.byte_range,
                heading: ch.heading,
                metadata: source.metadata.clone(),
            };
            self.chunks.insert(id, rec);
            ids.push(id);
        }
        self.sources.insert(source.source.clone(), (source, ids));
    }

    /// Replaces the vector index with one holding exactly the stored chunks' vectors (read
    /// from disk or built); an index that does not match the chunks is refused.
    pub fn set_vector_index(&mut self, index: VectorIndex) -> std::result::Result<(), String> {
        if index.dims() != self.spec.dimensions {
            return Err(format!("{}-dimensional vectors in a {}-dimensional collection", index.dims(), self.spec.dimensions));
        }
        if index.len() != self.chunks.len() {
            return Err(format!("{} vectors for {} chunks", index.len(), self.chunks.len()));
        }
        if let Some(id) = self.chunks.keys().find(|id| index.vector(**id).is_none()) {
            return Err(format!("no vector for chunk {}", id.0));
        }
        self.vectors = index;
        Ok(())
    }

    /// Threads for the vector index's graph builds.
    pub fn set_threads(&mut self, threads: usize) {
        self.vectors.set_threads(threads);
    }

    /// The vector index (for saving it).
    pub fn vector_index(&self) -> &VectorIndex {
        &self.vectors
    }

    /// Raises the next id to at least `next` (ids of removed chunks are not handed out again).
    pub fn reserve_ids(&mut self, next: u64) {
        self.next_id = self.next_id.max(next);
    }

    /// Every source with its chunks' ids, ordered by key.
    pub fn source_chunks(&self) -> impl Iterator<Item = (&SourceRecord, &[ChunkId])> + '_ {
        self.sources.values().map(|(s, ids)| (s, ids.as_slice()))
    }

    /// A stored chunk and its vector.
    pub fn chunk(&self, id: ChunkId) -> Option<(&ChunkRecord, &[f32])> {
        Some((self.chunks.get(&id)?, self.vectors.vector(id)?))
    }

    fn remove(&mut self, source: &str) {
        if let Some((_, ids)) = self.sources.remove(source) {
            for id in ids {
                self.vectors.remove(id);
                self.keywords.remove(id);
                self.chunks.remove(&id);
            }
        }
    }

    fn accept<'a>(&'a self, filter: &'a Filter) -> impl Fn(ChunkId) -> bool + 'a {
        move |id| filter.is_empty() || self.chunks.get(&id).is_some_and(|c| filter.accepts(&c.source, &c.metadata))
    }

    pub fn vector_search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        if query.len() != self.spec.dimensions {
            return Err(RagError::InvalidInput(format!("a {}-dimensional query for a {}-dimensional collection", query.len(), self.spec.dimensions)));
        }
        Ok(self.vectors.search(query, k, &self.accept(filter)))
    }

    pub fn keyword_search(&self, query: &str, k: usize, filter: &Filter) -> Vec<(ChunkId, f32)> {
        self.keywords.search(query, k, &self.accept(filter))
    }

    pub fn chunks(&self, ids: &[ChunkId]) -> Vec<ChunkRecord> {
        ids.iter().filter_map(|id| self.chunks.get(id).cloned()).collect()
    }

    /// Every stored chunk (for rebuilding indexes and for compaction), in id order.
    pub fn all_chunks(&self) -> Vec<&ChunkRecord> {
        let mut v: Vec<_> = self.chunks.values().collect();
        v.sort_by_key(|c| c.id);
        v
    }
}

/// Checks a batch for a collection of `spec` without changing anything: vector lengths,
/// finite values, keys. Every back-end refuses the same batches.
pub fn check_batch(spec: &CollectionSpec, changes: &[Change]) -> Result<()> {
    for c in changes {
        if let Change::Put { source, chunks } = c {
            if source.source.is_empty() {
                return Err(RagError::InvalidInput("a source needs a non-empty key".into()));
            }
            for ch in chunks {
                if ch.vector.len() != spec.dimensions {
                    return Err(RagError::InvalidInput(format!(
                        "a chunk of `{}` has a {}-dimensional vector; collection `{}` holds {}",
                        source.source,
                        ch.vector.len(),
                        spec.name,
                        spec.dimensions
                    )));
                }
                if ch.vector.iter().any(|x| !x.is_finite()) {
                    return Err(RagError::InvalidInput(format!("a chunk of `{}` has a non-finite vector", source.source)));
                }
            }
        }
    }
    Ok(())
}

/// An in-memory collection: lost when dropped. Evaluations and tests use it; the embedded
/// store wraps the same state with a durable log.
impl crate::store::Store for MemoryState {
    fn spec(&self) -> &CollectionSpec {
        &self.spec
    }
    fn info(&self) -> Result<CollectionInfo> {
        Ok(MemoryState::info(self, None))
    }
    fn source(&self, source: &str) -> Result<Option<SourceRecord>> {
        Ok(MemoryState::source(self, source))
    }
    fn sources(&self) -> Result<Vec<SourceRecord>> {
        Ok(MemoryState::sources(self))
    }
    fn apply(&mut self, changes: Vec<Change>) -> Result<()> {
        self.check(&changes)?;
        MemoryState::apply(self, changes);
        Ok(())
    }
    fn vector_search(&self, query: &[f32], k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        MemoryState::vector_search(self, query, k, filter)
    }
    fn keyword_search(&self, query: &str, k: usize, filter: &Filter) -> Result<Vec<(ChunkId, f32)>> {
        Ok(MemoryState::keyword_search(self, query, k, filter))
    }
    fn chunks(&self, ids: &[ChunkId]) -> Result<Vec<ChunkRecord>> {
        Ok(MemoryState::chunks(self, ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(key: &str) -> SourceRecord {
        SourceRecord { source: key.into(), content_hash: "h".into(), bytes: 1, chunks: 0, added_at: 0, metadata: Default::default() }
    }

    fn chunk(text: &str, v: [f32; 2]) -> NewChunk {
        NewChunk { text: text.into(), byte_range: 0..text.len() as u64, heading: None, vector: v.to_vec() }
    }

    #[test]
    fn put_replaces_a_source_and_remove_drops_it() {
        let mut s = MemoryState::new(CollectionSpec::new("t", "m", 2));
        let batch = vec![Change::Put { source: src("a"), chunks: vec![chunk("red apple", [1.0, 0.0]), chunk("green pear", [0.0, 1.0])] }];
        s.check(&batch).unwrap();
        s.apply(batch);
        assert_eq!(s.info(None).chunks, 2);
        assert_eq!(s.source("a").unwrap().chunks, 2);
        s.apply(vec![Change::Put { source: src("a"), chunks: vec![chunk("blue plum", [1.0, 0.0])] }]);
        assert_eq!(s.info(None).chunks, 1);
        let hit = s.vector_search(&[1.0, 0.0], 5, &Filter::default()).unwrap();
        assert_eq!(hit.len(), 1);
        assert_eq!(s.chunks(&[hit[0].0])[0].text, "blue plum");
        assert!(s.keyword_search("apple", 5, &Filter::default()).is_empty());
        assert_eq!(s.next_id(), 4, "ids are not reused");
        s.apply(vec![Change::Remove { source: "a".into() }]);
        assert_eq!(s.info(None).chunks, 0);
        assert!(s.source("a").is_none());
    }

    #[test]
    fn a_bad_batch_is_refused_whole() {
        let s = MemoryState::new(CollectionSpec::new("t", "m", 2));
        let batch = vec![
            Change::Put { source: src("a"), chunks: vec![chunk("ok", [1.0, 0.0])] },
            Change::Put { source: src("b"), chunks: vec![NewChunk { vector: vec![1.0], ..chunk("short", [0.0, 0.0]) }] },
        ];
        assert!(matches!(s.check(&batch), Err(RagError::InvalidInput(_))));
        let nan = vec![Change::Put { source: src("c"), chunks: vec![chunk("nan", [f32::NAN, 0.0])] }];
        assert!(s.check(&nan).is_err());
    }
}
