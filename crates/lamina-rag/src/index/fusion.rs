//! Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): a chunk's fused score is
//! Σ wᵢ / (k₀ + rankᵢ) over the lists it appears in, rank 1-based. It needs no score
//! calibration between cosine similarity and BM25, which is why hybrid search uses it.

use crate::types::ChunkId;
use std::collections::HashMap;

/// k₀ of the paper.
pub const RRF_K: f32 = 60.0;

/// A fused result: the score and the chunk's 1-based rank in each input list.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    pub id: ChunkId,
    pub score: f32,
    pub ranks: Vec<Option<usize>>,
}

/// Fuses ranked lists (best first) with a weight each; best first, ties by smaller id.
pub fn reciprocal_rank_fusion(lists: &[(&[(ChunkId, f32)], f32)], k0: f32) -> Vec<Fused> {
    let mut by_id: HashMap<ChunkId, Fused> = HashMap::new();
    for (li, (list, w)) in lists.iter().enumerate() {
        for (r, (id, _)) in list.iter().enumerate() {
            let e = by_id.entry(*id).or_insert_with(|| Fused { id: *id, score: 0.0, ranks: vec![None; lists.len()] });
            e.score += w / (k0 + (r + 1) as f32);
            e.ranks[li] = Some(r + 1);
        }
    }
    let mut out: Vec<Fused> = by_id.into_values().collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.id.cmp(&b.id)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_adds_reciprocal_ranks() {
        let a = [(ChunkId(1), 0.9), (ChunkId(2), 0.8)];
        let b = [(ChunkId(2), 7.0), (ChunkId(3), 5.0)];
        let f = reciprocal_rank_fusion(&[(&a, 1.0), (&b, 1.0)], 60.0);
        assert_eq!(f[0].id, ChunkId(2));
        assert!((f[0].score - (1.0 / 62.0 + 1.0 / 61.0)).abs() < 1e-7);
        assert_eq!(f[0].ranks, vec![Some(2), Some(1)]);
        // 1 and 3 tie at 1/61: the smaller id first.
        assert_eq!((f[1].id, f[2].id), (ChunkId(1), ChunkId(3)));
    }
}
