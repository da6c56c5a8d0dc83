//! Nearest neighbours by cosine similarity over unit-length vectors (so by dot product).
//!
//! Exact search (every live vector scored) while the index is small; above
//! [`HnswParams::exact_threshold`] live vectors an HNSW graph ([`super::hnsw`]) answers.
//! Vectors sit in one contiguous `f32` array, row by row; removal is a tombstone (the graph
//! still routes through removed rows), and the rows are compacted once more are dead than
//! live.
//!
//! ## Why our own graph, not a crate
//! The guide prefers a maintained crate; we measured `hnsw_rs` 0.3.5 (M 32, ef_construction
//! 100, 20,000 normalised 384-d vectors) first. It holds **3,557 bytes a vector** (RSS delta)
//! where faiss holds ~1,808 and our target is at most faiss's; each link is an
//! `Arc<PointWithOrder>` (a heap cell with a copy of the distance) and each point keeps
//! sixteen `Vec` headers for its layers. Its serial build took 68 s for 20,000 vectors on the
//! (loaded) development machine, a rate that would miss faiss's 54 s for 70,000 by far; its
//! parallel insertion runs on rayon's global pool, which a library must not use; its
//! dot-product distance asserts `1 − dot ≥ 0` and panicked on a query that was itself
//! stored (rounding put the dot a hair above 1); and it persists to files of its own layout
//! rather than into our checksummed stream. Our graph stores exactly what faiss's
//! `IndexHNSWFlat` does — f32 vectors and u32 links, level 0 in one flat array — and builds in
//! deterministic parallel batches on scoped threads.
//!
//! ## Choices measured
//! `bench/index/run.sh` measures both (docs/benchmarks.md). Exact search against the graph,
//! one thread, 1,000 MiniLM queries, on the loaded 2-core development machine: 8,178 vs 7,102
//! queries/s at 1,000 vectors, 2,374 vs 5,217 at 2,000, 704 vs 3,260 at 5,000, 296 vs 2,325
//! at 10,000, 100 vs 1,919 at 20,000. The graph pays from ~1,500 vectors on; the threshold
//! sits at 5,000, where an exact query still costs about a millisecond (less than embedding
//! the query) and is exact, and where building the graph on the way (~0.5–1 ms a vector)
//! is not yet felt. Above it the scan's cost grows with every vector and the graph's barely.
//! Graph parameters, on 70,000 MiniLM vectors with 1,000 held-out queries, by dot products a
//! query at faiss's recall@10 (0.983 at M 32, efSearch 64, which computes 1,574): M 16 /
//! ef_construction 100 reaches 0.984 at ef_search 80 with 1,405 (0.985 when built over the
//! 8-bit copy, see [`hnsw::Sq8Rows`]); M 16 / 64 needs 1,567 (at ef_search 96), M 24 / 80
//! ~1,480, M 32 / 64 ~1,570. M 16 also holds the least: 1,680 bytes a vector against faiss's
//! 1,808. ef_search 80 is the smallest width at faiss's recall. Bulk insertions walk the
//! 8-bit copy, which halves the build time, so ef_construction 100 builds faster than faiss
//! at ef_construction 40 (docs/benchmarks.md, 2026-12-04).
//!
//! ## Filters
//! A filter is a predicate on ids. The graph search returns only accepted, live rows but
//! traverses all, so a filter that passes few rows would have it wander the whole graph. The
//! index samples the predicate first: when the estimated number of accepted rows is within
//! the exact threshold, an exact scan over the accepted rows answers (it is both cheaper and
//! exact); and if the graph returns fewer than `k`, the exact scan answers too.

use super::hnsw::{self, Graph, HnswParams, Rows as GraphRows, Scratch, NONE};
use super::persist::{Reader, Writer};
use super::simd;
use crate::types::ChunkId;
use crate::Result;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

pub use super::simd::dot;

/// An insertion of at least 1/BULK_FRACTION of the rows walks an 8-bit copy of them
/// ([`hnsw::Sq8Rows`]); smaller ones, where quantizing every row would cost more than the
/// walks save, walk the f32 rows.
const BULK_FRACTION: usize = 64;

/// Links the last `count` rows of `data` into `g`.
fn insert_rows(g: &mut Graph, data: &[f32], dims: usize, count: usize, params: &HnswParams, threads: usize) {
    let rows = data.len() / dims;
    if count * BULK_FRACTION >= rows {
        let sq8 = hnsw::Sq8Rows::new(data, dims, threads);
        g.insert(&sq8, count, params.ef_construction, params.seed, threads);
    } else {
        let view = GraphRows { data, dims, dot: simd::kernel() };
        g.insert(&view, count, params.ef_construction, params.seed, threads);
    }
}

/// Rows sampled to estimate how many rows a filter accepts.
const FILTER_SAMPLE: usize = 128;
/// Compaction waits until there are at least this many rows.
const COMPACT_MIN_ROWS: usize = 1024;

pub struct VectorIndex {
    dims: usize,
    params: HnswParams,
    /// Row `i` is `ids[i]`'s vector.
    ids: Vec<ChunkId>,
    data: Vec<f32>,
    /// One bit a row: set while the row is live.
    live: Vec<u64>,
    live_count: usize,
    lookup: Lookup,
    /// Covers every row once built (rows added later are linked in as they come).
    graph: Option<Graph>,
    /// Search state for single searches, one per concurrent searcher.
    scratch: Mutex<Vec<Scratch>>,
}

/// Finding an id's row. Ids usually arrive ascending (a store never reuses them), and then
/// a binary search over `ids` needs no memory of its own; the first id out of order builds
/// a map.
enum Lookup {
    Ascending,
    Map(HashMap<ChunkId, u32>),
}

const MAGIC: &[u8; 8] = b"LMVECIDX";
const VERSION: u32 = 1;

impl VectorIndex {
    pub fn new(dims: usize) -> VectorIndex {
        VectorIndex::with_params(dims, HnswParams::default())
    }

    pub fn with_params(dims: usize, params: HnswParams) -> VectorIndex {
        let params = HnswParams { m: params.m.max(2), ef_construction: params.ef_construction.max(1), ef_search: params.ef_search.max(1), ..params };
        VectorIndex {
            dims,
            params,
            ids: Vec::new(),
            data: Vec::new(),
            live: Vec::new(),
            live_count: 0,
            lookup: Lookup::Ascending,
            graph: None,
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// An index over `vectors` (row-major, `ids.len()` rows), built on `threads` threads.
    pub fn build(dims: usize, params: HnswParams, ids: &[ChunkId], vectors: &[f32], threads: usize) -> VectorIndex {
        let mut ix = VectorIndex::with_params(dims, params);
        ix.insert_batch(ids, vectors, threads);
        ix
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn params(&self) -> &HnswParams {
        &self.params
    }

    /// Changes the query-time search width (the graph is unchanged).
    pub fn set_ef_search(&mut self, ef: usize) {
        self.params.ef_search = ef.max(1);
    }

    /// Changes the threads used by the builds the index starts itself.
    pub fn set_threads(&mut self, threads: usize) {
        self.params.threads = threads.max(1);
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.live_count
    }

    pub fn is_empty(&self) -> bool {
        self.live_count == 0
    }

    fn uses_graph(&self) -> bool {
        self.graph.is_some() && self.live_count > self.params.exact_threshold
    }

    /// The method in use, in words (for `lamina index info`).
    pub fn describe(&self) -> String {
        if self.uses_graph() {
            let p = &self.params;
            format!("hnsw (M {}, ef_construction {}, ef_search {})", p.m, p.ef_construction, p.ef_search)
        } else {
            "exact".to_string()
        }
    }

    /// Bytes the index holds: vectors, ids, tombstones, the id lookup and the graph
    /// (capacities, not lengths), plus the search scratch kept for reuse.
    pub fn memory_bytes(&self) -> usize {
        let lookup = match &self.lookup {
            Lookup::Ascending => 0,
            Lookup::Map(m) => m.capacity() * (std::mem::size_of::<(ChunkId, u32)>() + 1),
        };
        let scratch: usize = self.scratch.lock().map(|s| s.iter().map(Scratch::bytes).sum()).unwrap_or(0);
        self.data.capacity() * 4 + self.ids.capacity() * 8 + self.live.capacity() * 8 + lookup + self.graph.as_ref().map_or(0, Graph::bytes) + scratch
    }

    fn is_live(&self, r: usize) -> bool {
        self.live[r / 64] >> (r % 64) & 1 == 1
    }

    fn set_live(&mut self, r: usize, on: bool) {
        if r / 64 >= self.live.len() {
            self.live.resize(r / 64 + 1, 0);
        }
        if on {
            self.live[r / 64] |= 1 << (r % 64);
        } else {
            self.live[r / 64] &= !(1 << (r % 64));
        }
    }

    fn row_of(&self, id: ChunkId) -> Option<usize> {
        let r = match &self.lookup {
            Lookup::Ascending => self.ids.binary_search(&id).ok()?,
            Lookup::Map(m) => *m.get(&id)? as usize,
        };
        self.is_live(r).then_some(r)
    }

    /// Appends a row (the id must not be live).
    fn push_row(&mut self, id: ChunkId, v: &[f32]) {
        let r = self.ids.len();
        if matches!(self.lookup, Lookup::Ascending) && self.ids.last().is_some_and(|&last| last >= id) {
            let map = (0..r).filter(|&r| self.is_live(r)).map(|r| (self.ids[r], r as u32)).collect();
            self.lookup = Lookup::Map(map);
        }
        if let Lookup::Map(m) = &mut self.lookup {
            m.insert(id, r as u32);
        }
        self.ids.push(id);
        self.data.extend_from_slice(v);
        self.set_live(r, true);
        self.live_count += 1;
    }

    /// Adds (or replaces) `id`'s vector. Panics on a wrong length: callers check dimensions
    /// at the collection's edge.
    pub fn insert(&mut self, id: ChunkId, v: &[f32]) {
        self.insert_batch(&[id], v, self.params.threads);
    }

    /// Adds (or replaces) many vectors (`vectors` row-major, one row per id), linking them
    /// into the graph on `threads` threads. Panics on a wrong length, as [`Self::insert`].
    pub fn insert_batch(&mut self, ids: &[ChunkId], vectors: &[f32], threads: usize) {
        assert_eq!(vectors.len(), ids.len() * self.dims, "vector length");
        for &id in ids {
            self.remove_row(id);
        }
        hnsw::grow(&mut self.ids, ids.len());
        hnsw::grow(&mut self.data, vectors.len());
        for (&id, v) in ids.iter().zip(vectors.chunks_exact(self.dims.max(1))) {
            if self.row_of(id).is_some() {
                // The same id twice in one batch: the later vector wins.
                self.remove_row(id);
            }
            self.push_row(id, v);
        }
        self.maintain(threads);
    }

    /// `id`'s vector, while it is live.
    pub fn vector(&self, id: ChunkId) -> Option<&[f32]> {
        self.row_of(id).map(|r| &self.data[r * self.dims..(r + 1) * self.dims])
    }

    pub fn remove(&mut self, id: ChunkId) -> bool {
        let removed = self.remove_row(id);
        if removed {
            self.maintain(self.params.threads);
        }
        removed
    }

    fn remove_row(&mut self, id: ChunkId) -> bool {
        let Some(r) = self.row_of(id) else { return false };
        self.set_live(r, false);
        self.live_count -= 1;
        if let Lookup::Map(m) = &mut self.lookup {
            m.remove(&id);
        }
        true
    }

    /// Compacts when most rows are dead; builds or extends the graph when the index is
    /// past the exact threshold.
    fn maintain(&mut self, threads: usize) {
        let rows = self.ids.len();
        if rows >= COMPACT_MIN_ROWS && rows - self.live_count > self.live_count {
            self.compact();
        }
        let rows = self.ids.len();
        match &mut self.graph {
            Some(g) if g.nodes < rows => {
                let count = rows - g.nodes;
                insert_rows(g, &self.data, self.dims, count, &self.params, threads);
            }
            None if self.live_count > self.params.exact_threshold => {
                let mut g = Graph::new(self.params.m);
                insert_rows(&mut g, &self.data, self.dims, rows, &self.params, threads);
                self.graph = Some(g);
            }
            _ => {}
        }
    }

    /// Drops dead rows; the graph, if any, is rebuilt by [`Self::maintain`].
    fn compact(&mut self) {
        let keep: Vec<usize> = (0..self.ids.len()).filter(|&r| self.is_live(r)).collect();
        let mut ids = Vec::with_capacity(keep.len());
        let mut data = Vec::with_capacity(keep.len() * self.dims);
        for &r in &keep {
            ids.push(self.ids[r]);
            data.extend_from_slice(&self.data[r * self.dims..(r + 1) * self.dims]);
        }
        let n = ids.len();
        self.ids = ids;
        self.data = data;
        self.live = vec![0; n.div_ceil(64)];
        for r in 0..n {
            self.set_live(r, true);
        }
        self.lookup = lookup_for(&self.ids, &self.live).expect("live ids are unique");
        self.graph = None;
    }

    /// The `k` best live vectors that `accept` lets through, best first.
    pub fn search(&self, q: &[f32], k: usize, accept: &dyn Fn(ChunkId) -> bool) -> Vec<(ChunkId, f32)> {
        assert_eq!(q.len(), self.dims, "query length");
        if k == 0 || self.live_count == 0 {
            return Vec::new();
        }
        if !self.uses_graph() || self.accepted_estimate(accept) <= self.params.exact_threshold {
            return self.exact(q, k, accept);
        }
        let mut s = self.scratch.lock().ok().and_then(|mut p| p.pop()).unwrap_or_default();
        let got = self.graph_search(q, k, accept, &mut s);
        if let Ok(mut p) = self.scratch.lock() {
            p.push(s);
        }
        match got {
            Some(hits) => hits,
            None => self.exact(q, k, accept),
        }
    }

    /// Searches many queries (row-major, `dims` each) on `threads` threads, no filter.
    pub fn search_batch(&self, queries: &[f32], k: usize, threads: usize) -> Vec<Vec<(ChunkId, f32)>> {
        self.search_batch_counted(queries, k, threads).0
    }

    /// [`Self::search_batch`], also returning how many dot products it computed (a measure of
    /// the work per query that does not depend on the machine's load, for benchmarks).
    pub fn search_batch_counted(&self, queries: &[f32], k: usize, threads: usize) -> (Vec<Vec<(ChunkId, f32)>>, u64) {
        assert_eq!(queries.len() % self.dims.max(1), 0, "query length");
        let n = queries.len() / self.dims.max(1);
        let all = |_: ChunkId| true;
        let out = hnsw::parallel_map(n, threads, |i, s| {
            let q = &queries[i * self.dims..(i + 1) * self.dims];
            if k == 0 || self.live_count == 0 {
                return (Vec::new(), 0);
            }
            if !self.uses_graph() {
                return (self.exact(q, k, &all), self.live_count as u64);
            }
            let before = s.dots;
            let hits = self.graph_search(q, k, &all, s).unwrap_or_else(|| self.exact(q, k, &all));
            (hits, s.dots - before)
        });
        let dots = out.iter().map(|o| o.1).sum();
        (out.into_iter().map(|o| o.0).collect(), dots)
    }

    /// The graph's answer, or `None` when it found fewer than `k` (the caller scans).
    fn graph_search(&self, q: &[f32], k: usize, accept: &dyn Fn(ChunkId) -> bool, s: &mut Scratch) -> Option<Vec<(ChunkId, f32)>> {
        let g = self.graph.as_ref()?;
        let view = GraphRows { data: &self.data, dims: self.dims, dot: simd::kernel() };
        let ef = self.params.ef_search.max(k);
        let found = g.search(&view, q, ef, s, &|r| self.is_live(r as usize) && accept(self.ids[r as usize]));
        if found.len() < k.min(self.live_count) {
            return None;
        }
        Some(found.into_iter().take(k).map(|h| (self.ids[h.node as usize], h.sim)).collect())
    }

    /// How many live rows `accept` is estimated to pass, from an even sample of rows.
    fn accepted_estimate(&self, accept: &dyn Fn(ChunkId) -> bool) -> usize {
        let rows = self.ids.len();
        let step = (rows / FILTER_SAMPLE).max(1);
        let (mut seen, mut passed) = (0usize, 0usize);
        for r in (0..rows).step_by(step) {
            if self.is_live(r) {
                seen += 1;
                passed += accept(self.ids[r]) as usize;
            }
        }
        if seen == 0 {
            return self.live_count;
        }
        self.live_count * passed / seen
    }

    fn exact(&self, q: &[f32], k: usize, accept: &dyn Fn(ChunkId) -> bool) -> Vec<(ChunkId, f32)> {
        let dot = simd::kernel();
        let mut heap = TopK::new(k);
        for (r, row) in self.data.chunks_exact(self.dims.max(1)).enumerate() {
            if self.is_live(r) && accept(self.ids[r]) {
                heap.push(self.ids[r], dot(q, row));
            }
        }
        heap.into_sorted()
    }

    /// Writes the index (parameters, rows, tombstones and graph) in a versioned,
    /// checksummed binary format; [`Self::read_from`] reads it back.
    pub fn write_to(&self, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut out = Writer::new(w, MAGIC, VERSION)?;
        let p = &self.params;
        out.u32(self.dims as u32)?;
        out.u32(p.m as u32)?;
        out.u32(p.ef_construction as u32)?;
        out.u32(p.ef_search as u32)?;
        out.u64(p.exact_threshold as u64)?;
        out.u64(p.seed)?;
        out.len(self.ids.len())?;
        out.u64s(&self.ids.iter().map(|c| c.0).collect::<Vec<_>>())?;
        out.u64s(&self.live[..self.ids.len().div_ceil(64)])?;
        out.f32s(&self.data)?;
        match &self.graph {
            None => out.u8(0)?,
            Some(g) => {
                out.u8(1)?;
                out.len(g.nodes)?;
                out.u32(g.entry)?;
                out.u8(g.max_level as u8)?;
                out.u32s(&g.level0)?;
                let mut upper: Vec<(&u32, &Vec<u32>)> = g.upper.iter().collect();
                upper.sort_by_key(|e| *e.0);
                out.len(upper.len())?;
                for (node, links) in upper {
                    out.u32(*node)?;
                    out.u8((links.len() / g.m) as u8)?;
                    out.u32s(links)?;
                }
            }
        }
        out.finish()
    }

    /// Reads an index [`Self::write_to`] wrote. Damaged or truncated input is a
    /// [`crate::RagError::CorruptIndex`], never a panic. The builds it starts itself use
    /// one thread until [`Self::set_threads`].
    pub fn read_from(r: &mut dyn std::io::Read) -> Result<VectorIndex> {
        let (mut rd, version) = Reader::new(r, "vector", MAGIC)?;
        if version != VERSION {
            return Err(rd.corrupt(format!("it is format version {version}; this build reads version {VERSION}")));
        }
        let dims = rd.u32()? as usize;
        let m = rd.u32()? as usize;
        let ef_construction = rd.u32()? as usize;
        let ef_search = rd.u32()? as usize;
        let exact_threshold = rd.u64()? as usize;
        let seed = rd.u64()?;
        if dims == 0 || dims > 1 << 16 || !(2..=1024).contains(&m) || ef_construction == 0 || ef_search == 0 {
            return Err(rd.corrupt(format!("its parameters are out of range (dims {dims}, M {m})")));
        }
        let params = HnswParams { m, ef_construction, ef_search, exact_threshold, seed, threads: 1 };
        let rows = rd.len(u32::MAX as usize - 1, "row")?;
        let ids: Vec<ChunkId> = rd.u64s(rows)?.into_iter().map(ChunkId).collect();
        let live = rd.u64s(rows.div_ceil(64))?;
        let data = rd.f32s(rows * dims)?;
        let graph = match rd.u8()? {
            0 => None,
            1 => {
                let nodes = rd.len(rows, "graph node")?;
                let entry = rd.u32()?;
                let max_level = rd.u8()? as usize;
                if max_level > hnsw::MAX_LEVEL {
                    return Err(rd.corrupt(format!("its graph has {max_level} levels")));
                }
                let level0 = rd.u32s(nodes * 2 * m)?;
                let count = rd.len(nodes, "upper node")?;
                let mut upper = HashMap::new();
                for _ in 0..count {
                    let node = rd.u32()?;
                    let level = rd.u8()? as usize;
                    if level == 0 || level > max_level {
                        return Err(rd.corrupt(format!("graph node {node} has level {level}")));
                    }
                    if upper.insert(node, rd.u32s(level * m)?).is_some() {
                        return Err(rd.corrupt(format!("graph node {node} appears twice")));
                    }
                }
                Some(Graph { m, level0, upper, entry: if nodes == 0 { NONE } else { entry }, max_level, nodes })
            }
            f => return Err(rd.corrupt(format!("unknown graph flag {f}"))),
        };
        rd.finish()?;
        let bad = |reason: String| crate::RagError::CorruptIndex { index: "vector", reason };
        if let Some(g) = &graph {
            if g.nodes != rows {
                return Err(bad(format!("its graph covers {} of {rows} rows", g.nodes)));
            }
            g.check().map_err(bad)?;
        }
        let live_count = (0..rows).filter(|&r| live[r / 64] >> (r % 64) & 1 == 1).count();
        let lookup = lookup_for(&ids, &live).ok_or_else(|| bad("an id is live in two rows".into()))?;
        Ok(VectorIndex { dims, params, ids, data, live, live_count, lookup, graph, scratch: Mutex::new(Vec::new()) })
    }
}

/// The lookup for rows `ids` with liveness bits `live`; `None` if a live id repeats.
fn lookup_for(ids: &[ChunkId], live: &[u64]) -> Option<Lookup> {
    if ids.windows(2).all(|w| w[0] < w[1]) {
        return Some(Lookup::Ascending);
    }
    let mut map = HashMap::with_capacity(ids.len());
    for (r, id) in ids.iter().enumerate() {
        if live[r / 64] >> (r % 64) & 1 == 1 && map.insert(*id, r as u32).is_some() {
            return None;
        }
    }
    Some(Lookup::Map(map))
}

/// The `k` largest scores seen, with ties broken by the smaller id.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

#[derive(PartialEq)]
struct Entry(f32, ChunkId);
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    // Reversed: the heap's top is the worst entry kept.
    fn cmp(&self, o: &Self) -> Ordering {
        o.0.total_cmp(&self.0).then(self.1.cmp(&o.1))
    }
}

impl TopK {
    pub fn new(k: usize) -> TopK {
        TopK { k, heap: BinaryHeap::with_capacity(k + 1) }
    }

    pub fn push(&mut self, id: ChunkId, score: f32) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Entry(score, id));
        } else if let Some(worst) = self.heap.peek() {
            if Entry(score, id) < *worst {
                self.heap.pop();
                self.heap.push(Entry(score, id));
            }
        }
    }

    /// Best first.
    pub fn into_sorted(self) -> Vec<(ChunkId, f32)> {
        let mut v: Vec<Entry> = self.heap.into_vec();
        v.sort();
        v.into_iter().map(|Entry(s, id)| (id, s)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn exact_search_ranks_by_cosine_and_honours_removal_and_filters() {
        let mut ix = VectorIndex::new(3);
        ix.insert(ChunkId(1), &unit(&[1.0, 0.0, 0.0]));
        ix.insert(ChunkId(2), &unit(&[1.0, 1.0, 0.0]));
        ix.insert(ChunkId(3), &unit(&[0.0, 0.0, 1.0]));
        let q = unit(&[1.0, 0.2, 0.0]);
        let got = ix.search(&q, 2, &|_| true);
        assert_eq!(got.iter().map(|h| h.0).collect::<Vec<_>>(), vec![ChunkId(1), ChunkId(2)]);
        // cos([1,.2,0],[1,0,0]) = 1/sqrt(1.04)
        assert!((got[0].1 - 1.0 / 1.04f32.sqrt()).abs() < 1e-6);
        assert!(ix.remove(ChunkId(1)));
        assert_eq!(ix.search(&q, 1, &|_| true)[0].0, ChunkId(2));
        assert_eq!(ix.search(&q, 1, &|id| id != ChunkId(2))[0].0, ChunkId(3));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.describe(), "exact");
    }

    #[test]
    fn ids_out_of_order_and_replaced_ids_are_found() {
        let mut ix = VectorIndex::new(2);
        ix.insert(ChunkId(5), &[1.0, 0.0]);
        ix.insert(ChunkId(2), &[0.0, 1.0]);
        ix.insert(ChunkId(5), &[0.0, -1.0]);
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.search(&[0.0, -1.0], 1, &|_| true), vec![(ChunkId(5), 1.0)]);
        assert!(ix.remove(ChunkId(2)));
        assert!(!ix.remove(ChunkId(2)));
        assert_eq!(ix.search(&[0.0, 1.0], 5, &|_| true), vec![(ChunkId(5), -1.0)]);
    }

    #[test]
    fn an_exact_index_round_trips_through_its_format() {
        let mut ix = VectorIndex::new(3);
        for i in 0..50u64 {
            ix.insert(ChunkId(i * 3), &unit(&[i as f32, 1.0, (i % 7) as f32]));
        }
        ix.remove(ChunkId(9));
        ix.insert(ChunkId(1), &unit(&[0.0, 1.0, 0.0]));
        let mut bytes = Vec::new();
        ix.write_to(&mut bytes).unwrap();
        let back = VectorIndex::read_from(&mut &bytes[..]).unwrap();
        assert_eq!(back.len(), ix.len());
        assert_eq!(back.dims(), 3);
        for q in [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.9]] {
            let q = unit(&q);
            assert_eq!(back.search(&q, 10, &|_| true), ix.search(&q, 10, &|_| true));
        }
        let mut again = Vec::new();
        back.write_to(&mut again).unwrap();
        assert_eq!(again, bytes, "a reloaded index writes the same bytes");
        for cut in [0, 7, 11, 40, bytes.len() / 2, bytes.len() - 1] {
            assert!(matches!(VectorIndex::read_from(&mut &bytes[..cut]), Err(crate::RagError::CorruptIndex { .. })), "cut {cut}");
        }
        let mut flipped = bytes.clone();
        flipped[60] ^= 1;
        assert!(matches!(VectorIndex::read_from(&mut &flipped[..]), Err(crate::RagError::CorruptIndex { .. })));
    }

    /// Unit vectors around `clusters` random centres (a small seeded generator, so the
    /// test needs no crate).
    fn clustered(n: usize, dims: usize, clusters: usize, seed: u64) -> Vec<f32> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f32 / (1u64 << 53) as f32 - 0.5
        };
        let centres: Vec<f32> = (0..clusters * dims).map(|_| next()).collect();
        let mut out = Vec::with_capacity(n * dims);
        for i in 0..n {
            let c = &centres[(i % clusters) * dims..(i % clusters + 1) * dims];
            out.extend(unit(&c.iter().map(|v| v + 0.4 * next()).collect::<Vec<_>>()));
        }
        out
    }

    #[test]
    fn a_small_graph_finds_the_true_neighbours_and_is_the_same_on_any_thread_count() {
        let (n, dims) = (3000, 32);
        let data = clustered(n + 50, dims, 30, 11);
        let ids: Vec<ChunkId> = (0..n as u64).map(ChunkId).collect();
        let params = HnswParams { exact_threshold: 500, ..HnswParams::default() };
        let one = VectorIndex::build(dims, params, &ids, &data[..n * dims], 1);
        let two = VectorIndex::build(dims, params, &ids, &data[..n * dims], 2);
        assert!(one.describe().starts_with("hnsw"), "{}", one.describe());
        let (mut a, mut b) = (Vec::new(), Vec::new());
        one.write_to(&mut a).unwrap();
        two.write_to(&mut b).unwrap();
        assert!(a == b, "the graph depends on the thread count");
        let mut found = 0;
        for qi in 0..50 {
            let q = &data[(n + qi) * dims..(n + qi + 1) * dims];
            let truth: Vec<ChunkId> = one.exact(q, 10, &|_| true).into_iter().map(|h| h.0).collect();
            let got = one.search(q, 10, &|_| true);
            found += got.iter().filter(|h| truth.contains(&h.0)).count();
        }
        assert!(found as f64 / 500.0 >= 0.95, "recall@10 {}", found as f64 / 500.0);
        let back = VectorIndex::read_from(&mut &a[..]).unwrap();
        let q = &data[n * dims..(n + 1) * dims];
        assert_eq!(back.search(q, 10, &|_| true), one.search(q, 10, &|_| true));
    }

    #[test]
    fn one_at_a_time_inserts_cross_the_threshold_and_removals_compact() {
        let (n, dims) = (2500, 16);
        let data = clustered(n, dims, 20, 5);
        let params = HnswParams { exact_threshold: 1000, ..HnswParams::default() };
        let mut ix = VectorIndex::with_params(dims, params);
        for i in 0..n {
            ix.insert(ChunkId(i as u64), &data[i * dims..(i + 1) * dims]);
            if i == 999 {
                assert_eq!(ix.describe(), "exact");
            }
        }
        assert!(ix.describe().starts_with("hnsw"));
        // Growth one row at a time keeps the slack small: vectors + ids within 1/8 + a row.
        let floor = n * (dims * 4 + 8);
        assert!(ix.memory_bytes() < floor + floor / 8 + ix.graph.as_ref().unwrap().bytes() + 4096, "{} bytes", ix.memory_bytes());
        let check = |ix: &VectorIndex, keep: &dyn Fn(u64) -> bool| {
            let mut hit = 0;
            for qi in 0..40 {
                let q = &data[qi * 61 * dims..(qi * 61 + 1) * dims];
                let truth: Vec<ChunkId> = ix.exact(q, 10, &|_| true).into_iter().map(|h| h.0).collect();
                let got = ix.search(q, 10, &|_| true);
                assert!(got.iter().all(|h| keep(h.0 .0)));
                hit += got.iter().filter(|h| truth.contains(&h.0)).count();
            }
            hit as f64 / 400.0
        };
        assert!(check(&ix, &|_| true) >= 0.95);
        // Remove three rows in four: once more are dead than live the rows are compacted;
        // 625 stay, under the threshold, so exact search answers.
        for i in 0..n as u64 {
            if i % 4 != 0 {
                assert!(ix.remove(ChunkId(i)));
            }
        }
        assert_eq!(ix.len(), 625);
        assert!(ix.ids.len() < n, "compacted");
        assert_eq!(ix.describe(), "exact");
        assert_eq!(check(&ix, &|id| id % 4 == 0), 1.0);
    }
}
