//! Which KV blocks are in use, by how many sequences, and which hold reusable prefixes.
//!
//! The pool hands out block ids of the model's [`lamina_model::PagedKv`]; it never touches
//! their contents. Each block has a reference count (the sequences whose block tables list
//! it) and, once it is full and computed, the [`BlockHash`] of its contents. A hashed
//! block is the automatic prefix cache: a new sequence whose prompt hashes to the same
//! chain takes the block instead of computing it again.
//!
//! A block whose last reference goes stays in the cache, *evictable*: it is reused only
//! when no never-used (or un-hashed) block is left, least recently released first
//! (vLLM's `BlockPool` and free-block queue). Sequences release their blocks last first,
//! so the end of a cached chain goes before its beginning — the beginning is what other
//! prompts are likeliest to share, and a chain is useless past its first missing block.
//!
//! A block can also be *pending*: its hash is known (a prompt's full block) but the
//! sequence that owns it has not computed it yet. Another prompt with the same block then
//! waits for it rather than computing a second copy, so concurrent requests with a common
//! system prompt hold it once.

use super::block_hash::BlockHash;
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};

pub type BlockId = u32;

#[derive(Debug, Clone, Default)]
struct Meta {
    refs: u32,
    hash: Option<BlockHash>,
    /// The contents behind `hash` are computed (false: pending).
    ready: bool,
    /// When the last reference went (the eviction order).
    released_at: u64,
}

/// What the prefix cache knows of a block hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A computed block with these contents.
    Ready(BlockId),
    /// A block with these contents is being computed by a running sequence.
    Pending,
    Miss,
}

#[derive(Debug)]
pub struct BlockPool {
    meta: Vec<Meta>,
    /// Free blocks with no cached contents, lowest id first (so the memory in use stays
    /// compact and the pages touched are few).
    empty: BinaryHeap<Reverse<BlockId>>,
    /// Free blocks with cached contents, least recently released first.
    evictable: BTreeSet<(u64, BlockId)>,
    index: HashMap<BlockHash, BlockId>,
    clock: u64,
    evictions: u64,
}

impl BlockPool {
    pub fn new(num_blocks: usize) -> Self {
        assert!(num_blocks < u32::MAX as usize, "{num_blocks} KV blocks");
        BlockPool {
            meta: vec![Meta::default(); num_blocks],
            empty: (0..num_blocks as BlockId).map(Reverse).collect(),
            evictable: BTreeSet::new(),
            index: HashMap::new(),
            clock: 0,
            evictions: 0,
        }
    }

    pub fn num_blocks(&self) -> usize {
        self.meta.len()
    }

    /// Blocks that can be allocated now (never used, or cached but unreferenced).
    pub fn free(&self) -> usize {
        self.empty.len() + self.evictable.len()
    }

    /// Blocks referenced by at least one sequence.
    pub fn used(&self) -> usize {
        self.num_blocks() - self.free()
    }

    /// Blocks holding cached (hashed, computed) contents, referenced or not.
    pub fn cached(&self) -> usize {
        self.index.values().filter(|&&b| self.meta[b as usize].ready).count()
    }

    /// Cached blocks reused for other contents since the pool was made.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn refs(&self, block: BlockId) -> u32 {
        self.meta[block as usize].refs
    }

    /// A block for new contents, with one reference; `None` when every block is in use.
    /// Never-used blocks go first; then the least recently released cached one, whose
    /// cached contents are forgotten.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let id = match self.empty.pop() {
            Some(Reverse(id)) => id,
            None => {
                let first = *self.evictable.iter().next()?;
                self.evictable.remove(&first);
                let id = first.1;
                if let Some(h) = self.meta[id as usize].hash.take() {
                    self.index.remove(&h);
                }
                self.evictions += 1;
                id
            }
        };
        let m = &mut self.meta[id as usize];
        debug_assert_eq!(m.refs, 0);
        *m = Meta { refs: 1, ..Meta::default() };
        Some(id)
    }

    /// What the cache holds for `hash`.
    pub fn lookup(&self, hash: &BlockHash) -> Lookup {
        match self.index.get(hash) {
            Some(&b) if self.meta[b as usize].ready => Lookup::Ready(b),
            Some(_) => Lookup::Pending,
            None => Lookup::Miss,
        }
    }

    /// Whether taking `block` (a [`Lookup::Ready`] hit) would use up a free block: true
    /// when no sequence references it now.
    pub fn is_free(&self, block: BlockId) -> bool {
        self.meta[block as usize].refs == 0
    }

    /// Adds a reference to a cached block (a prefix-cache hit).
    pub fn acquire(&mut self, block: BlockId) {
        let m = &mut self.meta[block as usize];
        if m.refs == 0 {
            self.evictable.remove(&(m.released_at, block));
        }
        m.refs += 1;
    }

    /// Announces that `block` (allocated by the caller) will hold the contents `hash` once
    /// computed; until [`mark_ready`](Self::mark_ready), lookups of `hash` say
    /// [`Lookup::Pending`]. Nothing happens if another block already has that hash.
    pub fn reserve(&mut self, block: BlockId, hash: BlockHash) {
        if self.index.contains_key(&hash) {
            return;
        }
        self.index.insert(hash, block);
        let m = &mut self.meta[block as usize];
        (m.hash, m.ready) = (Some(hash), false);
    }

    /// `block` is full and computed, with contents `hash`: from now on it serves lookups.
    /// A block whose contents another block already caches stays a private copy.
    pub fn mark_ready(&mut self, block: BlockId, hash: BlockHash) {
        let m = &self.meta[block as usize];
        if m.hash == Some(hash) {
            self.meta[block as usize].ready = true;
            return;
        }
        if self.index.contains_key(&hash) {
            return;
        }
        self.index.insert(hash, block);
        let m = &mut self.meta[block as usize];
        (m.hash, m.ready) = (Some(hash), true);
    }

    /// Drops one reference. A block nobody references any more stays cached (evictable)
    /// if its contents are computed and hashed, and is freed outright otherwise (a pending
    /// block whose sequence went away is no use to anyone).
    pub fn release(&mut self, block: BlockId) {
        self.clock += 1;
        let clock = self.clock;
        let m = &mut self.meta[block as usize];
        assert!(m.refs > 0, "KV block {block} released more often than taken");
        m.refs -= 1;
        if m.refs > 0 {
            return;
        }
        m.released_at = clock;
        match (m.hash, m.ready) {
            (Some(_), true) => {
                self.evictable.insert((clock, block));
            }
            (hash, _) => {
                if let Some(h) = hash {
                    self.index.remove(&h);
                }
                m.hash = None;
                self.empty.push(Reverse(block));
            }
        }
    }

    /// Releases a block table, last block first (see the module notes).
    pub fn release_all(&mut self, blocks: &[BlockId]) {
        for &b in blocks.iter().rev() {
            self.release(b);
        }
    }

    /// Forgets every unreferenced cached block.
    pub fn clear_cache(&mut self) {
        for (_, b) in std::mem::take(&mut self.evictable) {
            if let Some(h) = self.meta[b as usize].hash.take() {
                self.index.remove(&h);
            }
            self.empty.push(Reverse(b));
        }
    }

    /// Every block holding computed cached contents, with its hash: those in use first,
    /// then the unreferenced ones most recently released first (the order in which a
    /// saved cache is worth keeping).
    pub fn ready_blocks(&self) -> Vec<(BlockId, BlockHash)> {
        let in_use = self.meta.iter().enumerate().filter(|(_, m)| m.refs > 0 && m.ready).filter_map(|(b, m)| Some((b as BlockId, m.hash?)));
        let free = self.evictable.iter().rev().filter_map(|&(_, b)| Some((b, self.meta[b as usize].hash?)));
        in_use.chain(free).collect()
    }

    /// Places restored contents: takes a never-used block for `hash` and caches it,
    /// unreferenced, as if released at `age` (larger: more recent; the pool's clock moves
    /// past it). Returns the block to fill, or `None` when the hash is already cached or no
    /// never-used block is left.
    pub fn restore(&mut self, hash: BlockHash, age: u64) -> Option<BlockId> {
        if self.index.contains_key(&hash) {
            return None;
        }
        let Reverse(id) = self.empty.pop()?;
        self.index.insert(hash, id);
        self.clock = self.clock.max(age);
        self.meta[id as usize] = Meta { refs: 0, hash: Some(hash), ready: true, released_at: age };
        self.evictable.insert((age, id));
        Some(id)
    }

    /// Checks the pool's internal invariants (tests and debug builds).
    pub fn check_invariants(&self) {
        let mut free = vec![false; self.meta.len()];
        for &Reverse(b) in &self.empty {
            assert!(!free[b as usize], "block {b} twice in the free lists");
            free[b as usize] = true;
            let m = &self.meta[b as usize];
            assert!(m.refs == 0 && m.hash.is_none(), "empty block {b}: {m:?}");
        }
        for &(t, b) in &self.evictable {
            assert!(!free[b as usize], "block {b} twice in the free lists");
            free[b as usize] = true;
            let m = &self.meta[b as usize];
            assert!(m.refs == 0 && m.hash.is_some() && m.ready && m.released_at == t, "evictable block {b}: {m:?}");
        }
        for (b, m) in self.meta.iter().enumerate() {
            assert!(free[b] || m.refs > 0, "block {b} is neither free nor referenced");
            if let Some(h) = m.hash {
                assert_eq!(self.index.get(&h), Some(&(b as BlockId)), "block {b}'s hash is not indexed to it");
            }
        }
        for (h, &b) in &self.index {
            assert_eq!(self.meta[b as usize].hash, Some(*h), "index entry for block {b}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: u128) -> BlockHash {
        BlockHash(x)
    }

    #[test]
    fn allocation_prefers_unused_blocks_and_evicts_least_recently_released() {
        let mut p = BlockPool::new(4);
        let a: Vec<BlockId> = (0..4).map(|_| p.allocate().unwrap()).collect();
        assert_eq!(a, vec![0, 1, 2, 3]);
        assert_eq!(p.allocate(), None);
        for (i, &b) in a.iter().enumerate() {
            p.mark_ready(b, h(i as u128));
        }
        // A table released last block first: 3, 2 go in that order; then 0 alone.
        p.release_all(&[2, 3]);
        p.release(0);
        p.check_invariants();
        assert_eq!((p.free(), p.used(), p.cached()), (3, 1, 4));
        assert_eq!(p.lookup(&h(2)), Lookup::Ready(2));
        // Out of never-used blocks: evict in release order, 3 first, then 2, then 0.
        assert_eq!(p.allocate(), Some(3));
        assert_eq!(p.lookup(&h(3)), Lookup::Miss);
        assert_eq!(p.allocate(), Some(2));
        assert_eq!(p.evictions(), 2);
        assert_eq!(p.lookup(&h(0)), Lookup::Ready(0));
        p.check_invariants();
    }

    #[test]
    fn shared_blocks_live_while_referenced_and_hits_leave_the_free_list() {
        let mut p = BlockPool::new(3);
        let b = p.allocate().unwrap();
        p.mark_ready(b, h(7));
        p.acquire(b); // a second sequence shares it
        assert_eq!(p.refs(b), 2);
        p.release(b);
        assert_eq!((p.free(), p.refs(b)), (2, 1));
        p.release(b);
        assert_eq!(p.free(), 3);
        assert!(p.is_free(b));
        // A hit on the cached, unreferenced block takes it off the free list.
        assert_eq!(p.lookup(&h(7)), Lookup::Ready(b));
        p.acquire(b);
        assert_eq!(p.free(), 2);
        // The other blocks are allocated without evicting it.
        assert!(p.allocate().is_some() && p.allocate().is_some());
        assert_eq!(p.allocate(), None);
        assert_eq!(p.lookup(&h(7)), Lookup::Ready(b));
        p.check_invariants();
    }

    #[test]
    fn pending_blocks_are_waited_for_and_dropped_with_their_sequence() {
        let mut p = BlockPool::new(2);
        let b = p.allocate().unwrap();
        p.reserve(b, h(1));
        assert_eq!(p.lookup(&h(1)), Lookup::Pending);
        assert_eq!(p.cached(), 0);
        // The sequence is cancelled before computing it: the hash goes with it.
        p.release(b);
        assert_eq!(p.lookup(&h(1)), Lookup::Miss);
        p.check_invariants();
        let b = p.allocate().unwrap();
        p.reserve(b, h(1));
        p.mark_ready(b, h(1));
        assert_eq!(p.lookup(&h(1)), Lookup::Ready(b));
        // A second block computed with the same contents stays private.
        let c = p.allocate().unwrap();
        p.mark_ready(c, h(1));
        p.release(c);
        assert_eq!(p.lookup(&h(1)), Lookup::Ready(b));
        assert_eq!(p.free(), 1);
        p.check_invariants();
    }

    #[test]
    fn clear_and_restore() {
        let mut p = BlockPool::new(3);
        let b = p.allocate().unwrap();
        p.mark_ready(b, h(5));
        p.release(b);
        let held = p.allocate().unwrap();
        p.mark_ready(held, h(6));
        // In use first, then the free cached ones.
        assert_eq!(p.ready_blocks(), vec![(held, h(6)), (b, h(5))]);
        p.release(held);
        p.clear_cache();
        assert_eq!((p.lookup(&h(5)), p.free()), (Lookup::Miss, 3));
        // Restored blocks are evicted oldest first, and after any later release.
        let r1 = p.restore(h(9), 2).unwrap();
        let r2 = p.restore(h(8), 1).unwrap();
        assert_eq!(p.restore(h(9), 3), None);
        assert_eq!(p.lookup(&h(9)), Lookup::Ready(r1));
        assert_eq!(p.free(), 3);
        assert_eq!(p.ready_blocks(), vec![(r1, h(9)), (r2, h(8))]);
        let fresh = p.allocate().unwrap();
        assert!(fresh != r1 && fresh != r2);
        assert_eq!(p.allocate(), Some(r2));
        p.check_invariants();
    }
}
