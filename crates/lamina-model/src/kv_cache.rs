//! Key/value cache for the inference path, one slot per sequence.
//!
//! Each slot keeps, per layer, keys and values position-major (`[pos][kv_dim]`), so
//! attention streams both once in order. Slots grow in chunks up to the context length
//! instead of reserving the whole window up front: SmolLM2's 8k window would otherwise
//! cost 377 MB per sequence in f32. The engine owns the cache and decides which slot a
//! sequence uses; the model only reads and writes the positions it is told to.
//!
//! Values are stored in f32 (the `transformers`-faithful path) or f16 (half the memory,
//! and llama.cpp's default cache type, which the native path follows).

use half::f16;

/// Positions added to a slot at a time when it grows.
const GROW: usize = 256;

/// Storage type of cached keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvDtype {
    F32,
    F16,
}

/// One layer's keys and values for one slot.
#[derive(Debug, Clone)]
pub enum KvLayer {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

#[derive(Debug)]
pub struct KvSlot {
    /// Positions filled (the sequence length the cache holds).
    pub len: usize,
    capacity: usize,
    layers: Vec<KvLayer>,
}

#[derive(Debug)]
pub struct KvCache {
    pub num_layers: usize,
    pub kv_dim: usize,
    pub max_positions: usize,
    pub dtype: KvDtype,
    pub slots: Vec<KvSlot>,
}

impl KvCache {
    pub fn new(num_layers: usize, kv_dim: usize, max_positions: usize, num_slots: usize, dtype: KvDtype) -> Self {
        let mut c = KvCache { num_layers, kv_dim, max_positions, dtype, slots: Vec::new() };
        c.ensure_slots(num_slots);
        c
    }

    fn empty_layer(&self) -> KvLayer {
        match self.dtype {
            KvDtype::F32 => KvLayer::F32 { k: Vec::new(), v: Vec::new() },
            KvDtype::F16 => KvLayer::F16 { k: Vec::new(), v: Vec::new() },
        }
    }

    pub fn ensure_slots(&mut self, n: usize) {
        while self.slots.len() < n {
            let layers = (0..self.num_layers).map(|_| self.empty_layer()).collect();
            self.slots.push(KvSlot { len: 0, capacity: 0, layers });
        }
    }

    /// Makes room for positions `< upto` in `slot`.
    pub fn reserve(&mut self, slot: usize, upto: usize) {
        let kv_dim = self.kv_dim;
        let max = self.max_positions;
        let s = &mut self.slots[slot];
        if upto <= s.capacity {
            return;
        }
        let cap = upto.div_ceil(GROW).saturating_mul(GROW).min(max).max(upto);
        for l in s.layers.iter_mut() {
            match l {
                KvLayer::F32 { k, v } => {
                    k.resize(cap * kv_dim, 0.0);
                    v.resize(cap * kv_dim, 0.0);
                }
                KvLayer::F16 { k, v } => {
                    k.resize(cap * kv_dim, f16::ZERO);
                    v.resize(cap * kv_dim, f16::ZERO);
                }
            }
        }
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
        let empty: Vec<KvLayer> = (0..self.num_layers).map(|_| self.empty_layer()).collect();
        let s = &mut self.slots[slot];
        s.len = 0;
        s.capacity = 0;
        s.layers = empty;
    }

    pub fn layer(&self, slot: usize, layer: usize) -> &KvLayer {
        &self.slots[slot].layers[layer]
    }

    /// Stores the key and value rows of position `pos` (`kv_dim` each).
    /// The position must have been reserved.
    pub fn write(&mut self, slot: usize, layer: usize, pos: usize, key: &[f32], value: &[f32]) {
        let d = self.kv_dim;
        match &mut self.slots[slot].layers[layer] {
            KvLayer::F32 { k, v } => {
                k[pos * d..(pos + 1) * d].copy_from_slice(key);
                v[pos * d..(pos + 1) * d].copy_from_slice(value);
            }
            KvLayer::F16 { k, v } => {
                use half::slice::HalfFloatSliceExt;
                k[pos * d..(pos + 1) * d].convert_from_f32_slice(key);
                v[pos * d..(pos + 1) * d].convert_from_f32_slice(value);
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
