//! Content hashes of full KV blocks, chained to their parent block.
//!
//! A block's keys and values depend on every token before it, not only its own, so its
//! identity is the hash of (the parent block's hash, this block's token ids); the first
//! block's parent is a root derived from the model. Two sequences whose prompts agree on
//! the first `k` full blocks therefore get the same `k` hashes and can share those blocks
//! (vLLM's automatic prefix caching). SHA-256 truncated to 128 bits: a collision would
//! silently give one request another's context, so the hash must be a cryptographic one,
//! and at 32 tokens a block it costs well under a microsecond.

use sha2::{Digest, Sha256};

/// The identity of a full block's contents (including everything before it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockHash(pub u128);

impl BlockHash {
    /// The parent of a sequence's first block: distinct per model (weights and arithmetic)
    /// and block size, so that caches of different models never match.
    pub fn root(model_identity: &[u8], block_size: usize) -> BlockHash {
        let mut h = Sha256::new();
        h.update(b"lamina-kv-root\0");
        h.update((block_size as u64).to_le_bytes());
        h.update(model_identity);
        Self::from_digest(h)
    }

    /// The hash of a block holding `tokens` after the block with hash `parent`.
    pub fn chain(parent: BlockHash, tokens: &[u32]) -> BlockHash {
        let mut h = Sha256::new();
        h.update(parent.0.to_le_bytes());
        for t in tokens {
            h.update(t.to_le_bytes());
        }
        Self::from_digest(h)
    }

    /// `parent` made distinct by `salt` (a LoRA adapter's identity): chains from it never
    /// meet chains from `parent` itself.
    pub fn salted(parent: BlockHash, salt: &[u8]) -> BlockHash {
        let mut h = Sha256::new();
        h.update(b"lamina-kv-salt\0");
        h.update(parent.0.to_le_bytes());
        h.update(salt);
        Self::from_digest(h)
    }

    fn from_digest(h: Sha256) -> BlockHash {
        let d = h.finalize();
        BlockHash(u128::from_le_bytes(d[..16].try_into().expect("16 bytes")))
    }
}

/// The hashes of the full blocks of `tokens`, extending `hashes` (which already holds
/// those of the first `hashes.len()` blocks).
pub fn extend_chain(root: BlockHash, block_size: usize, tokens: &[u32], hashes: &mut Vec<BlockHash>) {
    let full = tokens.len() / block_size;
    while hashes.len() < full {
        let i = hashes.len();
        let parent = if i == 0 { root } else { hashes[i - 1] };
        hashes.push(BlockHash::chain(parent, &tokens[i * block_size..(i + 1) * block_size]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_prefixes_give_equal_chains_and_any_earlier_difference_changes_all_later_hashes() {
        let root = BlockHash::root(b"model", 4);
        let a: Vec<u32> = (0..14).collect();
        let mut b = a.clone();
        b[13] = 99; // inside the partial last block: no full block changes
        let (mut ha, mut hb) = (Vec::new(), Vec::new());
        extend_chain(root, 4, &a, &mut ha);
        extend_chain(root, 4, &b, &mut hb);
        assert_eq!(ha.len(), 3);
        assert_eq!(ha, hb);
        let mut c = a.clone();
        c[1] = 7; // first block differs, so every block after it differs too
        let mut hc = Vec::new();
        extend_chain(root, 4, &c, &mut hc);
        assert!(ha.iter().zip(&hc).all(|(x, y)| x != y));
        // The same tokens in a later block are not the same block.
        assert_ne!(BlockHash::chain(ha[0], &[0, 1, 2, 3]), ha[0]);
        // Other models and block sizes have other roots.
        assert_ne!(root, BlockHash::root(b"other", 4));
        assert_ne!(root, BlockHash::root(b"model", 8));
        // Extending an existing chain computes only the new blocks, the same way.
        let mut part = ha[..1].to_vec();
        extend_chain(root, 4, &a, &mut part);
        assert_eq!(part, ha);
    }
}
