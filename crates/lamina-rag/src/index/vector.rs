//! Nearest neighbours by cosine similarity over unit-length vectors (so by dot product).
//!
//! Exact search: every live vector is scored. (An approximate graph index takes over above
//! a size threshold.)

use crate::types::ChunkId;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

pub struct VectorIndex {
    dims: usize,
    ids: Vec<ChunkId>,
    /// Row `i` is `ids[i]`'s vector.
    data: Vec<f32>,
    live: Vec<bool>,
    row: HashMap<ChunkId, usize>,
}

impl VectorIndex {
    pub fn new(dims: usize) -> VectorIndex {
        VectorIndex { dims, ids: Vec::new(), data: Vec::new(), live: Vec::new(), row: HashMap::new() }
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Live vectors.
    pub fn len(&self) -> usize {
        self.row.len()
    }

    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }

    /// The method in use, in words (for `lamina index info`).
    pub fn describe(&self) -> String {
        "exact".to_string()
    }

    /// Adds (or replaces) `id`'s vector. Panics on a wrong length: callers check dimensions
    /// at the collection's edge.
    pub fn insert(&mut self, id: ChunkId, v: &[f32]) {
        assert_eq!(v.len(), self.dims, "vector length");
        self.remove(id);
        self.row.insert(id, self.ids.len());
        self.ids.push(id);
        self.data.extend_from_slice(v);
        self.live.push(true);
    }

    /// `id`'s vector, while it is live.
    pub fn vector(&self, id: ChunkId) -> Option<&[f32]> {
        self.row.get(&id).map(|&r| &self.data[r * self.dims..(r + 1) * self.dims])
    }

    pub fn remove(&mut self, id: ChunkId) -> bool {
        match self.row.remove(&id) {
            Some(r) => {
                self.live[r] = false;
                true
            }
            None => false,
        }
    }

    /// The `k` best live vectors that `accept` lets through, best first.
    pub fn search(&self, q: &[f32], k: usize, accept: &dyn Fn(ChunkId) -> bool) -> Vec<(ChunkId, f32)> {
        assert_eq!(q.len(), self.dims, "query length");
        let mut heap = TopK::new(k);
        for (r, row) in self.data.chunks_exact(self.dims.max(1)).enumerate() {
            if self.live[r] && accept(self.ids[r]) {
                heap.push(self.ids[r], dot(q, row));
            }
        }
        heap.into_sorted()
    }
}

/// Dot product with independent accumulators, so the compiler vectorises it.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
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
    }

    #[test]
    fn dot_matches_a_plain_sum() {
        let a: Vec<f32> = (0..37).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..37).map(|i| 1.0 - i as f32 * 0.05).collect();
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - plain).abs() < 1e-4);
    }
}
