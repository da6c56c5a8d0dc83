//! Key/value cache for the inference path, one slot per sequence.
//!
//! Each slot keeps, per layer, keys and values position-major (`[pos][kv_dim]`), so
//! attention streams both once in order. Slots grow in chunks up to the context length
//! instead of reserving the whole window up front: SmolLM2's 8k window would otherwise
//! cost 377 MB per sequence in f32. The engine owns the cache and decides which slot a
//! sequence uses; the model only reads and writes the positions it is told to.

/// Positions added to a slot at a time when it grows.
const GROW: usize = 256;

#[derive(Debug, Default)]
pub struct KvSlot {
    /// Positions filled (the sequence length the cache holds).
    pub len: usize,
    capacity: usize,
    /// `keys[layer]`: `capacity × kv_dim`.
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
}

#[derive(Debug)]
pub struct KvCache {
    pub num_layers: usize,
    pub kv_dim: usize,
    pub max_positions: usize,
    pub slots: Vec<KvSlot>,
}

impl KvCache {
    pub fn new(num_layers: usize, kv_dim: usize, max_positions: usize, num_slots: usize) -> Self {
        let mut c = KvCache { num_layers, kv_dim, max_positions, slots: Vec::new() };
        c.ensure_slots(num_slots);
        c
    }

    pub fn ensure_slots(&mut self, n: usize) {
        while self.slots.len() < n {
            self.slots.push(KvSlot {
                len: 0,
                capacity: 0,
                keys: vec![Vec::new(); self.num_layers],
                values: vec![Vec::new(); self.num_layers],
            });
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
        for l in 0..self.num_layers {
            s.keys[l].resize(cap * kv_dim, 0.0);
            s.values[l].resize(cap * kv_dim, 0.0);
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
        let s = &mut self.slots[slot];
        s.len = 0;
        s.capacity = 0;
        for l in 0..self.num_layers {
            s.keys[l] = Vec::new();
            s.values[l] = Vec::new();
        }
    }

    pub fn layer(&self, slot: usize, layer: usize) -> (&[f32], &[f32]) {
        let s = &self.slots[slot];
        (&s.keys[layer], &s.values[layer])
    }

    /// Raw pointers to a layer's key and value buffers, for writing from worker threads.
    pub(crate) fn layer_ptrs(&mut self, slot: usize, layer: usize) -> (*mut f32, *mut f32) {
        let s = &mut self.slots[slot];
        (s.keys[layer].as_mut_ptr(), s.values[layer].as_mut_ptr())
    }

    /// Bytes held by all slots.
    pub fn bytes(&self) -> usize {
        self.slots.iter().map(|s| s.capacity * self.kv_dim * 2 * self.num_layers * 4).sum()
    }
}
