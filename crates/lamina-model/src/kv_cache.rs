//! Key/value cache for the inference path, one slot per sequence.
//!
//! A slot keeps all its layers' keys in one buffer and all values in another, laid out
//! `[layer][kv_head][position][head_dim]`, in memory advised for 2 MiB pages
//! ([`lamina_kernels::hugepage`]). Attention works on one key/value head at a time, and
//! with this layout it reads that head's rows as one contiguous stream. Both choices were
//! measured at eight decoding sequences, where the cache misses of attention's reads were
//! most of its time: the earlier position-major rows (`[pos][kv_dim]`, other heads' rows
//! in between) in one 4 KiB-page vector per layer missed the TLB and broke the hardware
//! prefetcher's streams at every page.
//!
//! Slots grow in chunks up to the context length instead of reserving the whole window up
//! front: SmolLM2's 8k window would otherwise cost 377 MB per sequence in f32. The engine
//! owns the cache and decides which slot a sequence uses; the model only reads and writes
//! the positions it is told to.
//!
//! Values are stored in f32 (the `transformers`-faithful path) or f16 (half the memory,
//! and llama.cpp's default cache type, which the native path follows).

use half::f16;
use lamina_kernels::hugepage::{HugeVec, Zeroable};

/// Positions added to a slot at a time when it grows.
const GROW: usize = 256;

/// Storage type of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    F16,
}

/// A slot's keys and values, each `[layer][kv_head][capacity][head_dim]`.
#[derive(Debug)]
enum KvStore {
    F32 { k: HugeVec<f32>, v: HugeVec<f32> },
    F16 { k: HugeVec<f16>, v: HugeVec<f16> },
}

/// The cached keys and values of one key/value head of one layer and slot, from position
/// 0 on, one `head_dim` row per position (rows beyond the slot's length are unspecified).
#[derive(Debug, Clone, Copy)]
pub enum KvHead<'a> {
    F32 { k: &'a [f32], v: &'a [f32] },
    F16 { k: &'a [f16], v: &'a [f16] },
}

#[derive(Debug)]
pub struct KvSlot {
    /// Positions filled (the sequence length the cache holds).
    pub len: usize,
    capacity: usize,
    store: KvStore,
}

#[derive(Debug)]
pub struct KvCache {
    pub num_layers: usize,
    /// Key/value heads and their size (`kv_dim = kv_heads * head_dim`).
    pub kv_heads: usize,
    pub head_dim: usize,
    pub kv_dim: usize,
    pub max_positions: usize,
    pub dtype: KvDtype,
    pub slots: Vec<KvSlot>,
}

/// `old` (rows of `hd` values, `capacity` rows per (layer, head) block) moved into a new
/// buffer of `cap` rows per block, keeping the first `keep` rows of each block.
fn regrow<T: Zeroable>(old: &HugeVec<T>, blocks: usize, hd: usize, capacity: usize, cap: usize, keep: usize) -> HugeVec<T> {
    let mut grown = HugeVec::zeroed_alone(blocks * cap * hd);
    for b in 0..blocks {
        grown[b * cap * hd..(b * cap + keep) * hd].copy_from_slice(&old[b * capacity * hd..(b * capacity + keep) * hd]);
    }
    grown
}

impl KvCache {
    pub fn new(num_layers: usize, kv_heads: usize, head_dim: usize, max_positions: usize, num_slots: usize, dtype: KvDtype) -> Self {
        let kv_dim = kv_heads * head_dim;
        let mut c = KvCache { num_layers, kv_heads, head_dim, kv_dim, max_positions, dtype, slots: Vec::new() };
        c.ensure_slots(num_slots);
        c
    }

    fn empty_store(&self) -> KvStore {
        match self.dtype {
            KvDtype::F32 => KvStore::F32 { k: HugeVec::zeroed(0), v: HugeVec::zeroed(0) },
            KvDtype::F16 => KvStore::F16 { k: HugeVec::zeroed(0), v: HugeVec::zeroed(0) },
        }
    }

    pub fn ensure_slots(&mut self, n: usize) {
        while self.slots.len() < n {
            let store = self.empty_store();
            self.slots.push(KvSlot { len: 0, capacity: 0, store });
        }
    }

    /// Makes room for positions `< upto` in `slot`. Growing moves every (layer, head)'s
    /// rows to their place in a larger buffer (once per `GROW` positions).
    pub fn reserve(&mut self, slot: usize, upto: usize) {
        let (blocks, hd) = (self.num_layers * self.kv_heads, self.head_dim);
        let max = self.max_positions;
        let s = &mut self.slots[slot];
        if upto <= s.capacity {
            return;
        }
        let cap = upto.div_ceil(GROW).saturating_mul(GROW).min(max).max(upto);
        let (old, keep) = (s.capacity, s.len.min(s.capacity));
        s.store = match &s.store {
            KvStore::F32 { k, v } => KvStore::F32 { k: regrow(k, blocks, hd, old, cap, keep), v: regrow(v, blocks, hd, old, cap, keep) },
            KvStore::F16 { k, v } => KvStore::F16 { k: regrow(k, blocks, hd, old, cap, keep), v: regrow(v, blocks, hd, old, cap, keep) },
        };
        s.capacity = cap;
    }

    /// Forgets everything after the first `len` positions of `slot` (used to reuse a
    /// cached prefix, or to drop a sequence by truncating to 0).
    pub fn truncate(&mut self, slot: usize, len: usize) {
        let s = &mut self.slots[slot];
        s.len = s.len.min(len);
    }

    /// Frees a slot's memory.
    pub fn release(&mut self, slot: usize) {
        let empty = self.empty_store();
        let s = &mut self.slots[slot];
        s.len = 0;
        s.capacity = 0;
        s.store = empty;
    }

    /// Keys and values of key/value head `head` of `layer` in `slot`.
    pub fn head(&self, slot: usize, layer: usize, head: usize) -> KvHead<'_> {
        assert!(layer < self.num_layers && head < self.kv_heads, "KV layer {layer} head {head} out of range");
        let s = &self.slots[slot];
        let n = s.capacity * self.head_dim;
        let b = layer * self.kv_heads + head;
        let r = b * n..(b + 1) * n;
        match &s.store {
            KvStore::F32 { k, v } => KvHead::F32 { k: &k[r.clone()], v: &v[r] },
            KvStore::F16 { k, v } => KvHead::F16 { k: &k[r.clone()], v: &v[r] },
        }
    }

    /// Stores the key and value rows of position `pos` (`kv_dim` each, heads side by side
    /// as the projections produce them). The position must have been reserved.
    pub fn write(&mut self, slot: usize, layer: usize, pos: usize, key: &[f32], value: &[f32]) {
        assert!(key.len() == self.kv_dim && value.len() == self.kv_dim, "KV row of {} values, expected {}", key.len(), self.kv_dim);
        let (hd, heads) = (self.head_dim, self.kv_heads);
        let s = &mut self.slots[slot];
        assert!(pos < s.capacity, "KV position {pos} not reserved (capacity {})", s.capacity);
        let cap = s.capacity;
        for (h, (kh, vh)) in key.chunks_exact(hd).zip(value.chunks_exact(hd)).enumerate() {
            let row = (layer * heads + h) * cap + pos;
            let at = row * hd..(row + 1) * hd;
            match &mut s.store {
                KvStore::F32 { k, v } => {
                    k[at.clone()].copy_from_slice(kh);
                    v[at].copy_from_slice(vh);
                }
                KvStore::F16 { k, v } => {
                    use half::slice::HalfFloatSliceExt;
                    k[at.clone()].convert_from_f32_slice(kh);
                    v[at].convert_from_f32_slice(vh);
                }
            }
        }
    }

    /// Bytes held by all slots.
    pub fn bytes(&self) -> usize {
        let elem = match self.dtype {
            KvDtype::F32 => 4,
            KvDtype::F16 => 2,
        };
        self.slots.iter().map(|s| s.capacity * self.kv_dim * 2 * self.num_layers * elem).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A distinct value for every (layer, head, position, dim).
    fn value(l: usize, h: usize, p: usize, d: usize) -> f32 {
        (l * 1000 + h * 100 + p) as f32 + d as f32 / 16.0
    }

    #[test]
    fn rows_survive_growth_and_read_back_per_head() {
        for dtype in [KvDtype::F32, KvDtype::F16] {
            let (layers, heads, hd) = (3, 2, 8);
            let mut kv = KvCache::new(layers, heads, hd, 1000, 2, dtype);
            // Past one growth step, so earlier rows must move with the buffer.
            let n = GROW + 10;
            for p in 0..n {
                kv.reserve(1, p + 1);
                for l in 0..layers {
                    let key: Vec<f32> = (0..heads * hd).map(|i| value(l, i / hd, p, i % hd)).collect();
                    let val: Vec<f32> = key.iter().map(|x| -x).collect();
                    kv.write(1, l, p, &key, &val);
                }
                kv.slots[1].len = p + 1;
            }
            for l in 0..layers {
                for h in 0..heads {
                    let (k, v): (Vec<f32>, Vec<f32>) = match kv.head(1, l, h) {
                        KvHead::F32 { k, v } => (k.to_vec(), v.to_vec()),
                        KvHead::F16 { k, v } => (k.iter().map(|x| x.to_f32()).collect(), v.iter().map(|x| x.to_f32()).collect()),
                    };
                    for p in [0, 1, GROW - 1, GROW, n - 1] {
                        for d in 0..hd {
                            let want = value(l, h, p, d);
                            let tol = if dtype == KvDtype::F16 { want.abs() / 1024.0 } else { 0.0 };
                            assert!((k[p * hd + d] - want).abs() <= tol, "{dtype:?} key l{l} h{h} p{p} d{d}: {} vs {want}", k[p * hd + d]);
                            assert!((v[p * hd + d] + want).abs() <= tol, "{dtype:?} value l{l} h{h} p{p} d{d}");
                        }
                    }
                }
            }
            assert_eq!(kv.slots[0].len, 0);
            assert_eq!(kv.bytes(), 2 * GROW * heads * hd * 2 * layers * if dtype == KvDtype::F16 { 2 } else { 4 });
            kv.release(1);
            assert_eq!(kv.bytes(), 0);
        }
    }
}
