//! Fusing ranked lists into one.
//!
//! - Reciprocal rank fusion (Cormack, Clarke & Büttcher, SIGIR 2009): a chunk's fused score is
//!   Σ wᵢ / (k₀ + rankᵢ) over the lists it appears in, rank 1-based. It needs no score
//!   calibration, but it throws away how far apart the scores are.
//! - A convex combination of scores normalised per list (Bruch, Gai & Ingber, "An Analysis of
//!   Fusion Functions for Hybrid Retrieval", TOIS 2023): each list's scores are mapped to
//!   [0, 1] by its own minimum and maximum, and a chunk scores α·vector + (1 − α)·keyword (0
//!   for a list it is not in). It keeps the margins, and is what hybrid search uses by default
//!   (docs/retrieval.md has the measurements).

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

/// `scores` mapped to [0, 1] by their minimum and maximum; all equal: all 1.
pub fn min_max(scores: &[f32]) -> Vec<f32> {
    let (lo, hi) = scores.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    scores.iter().map(|&x| if hi > lo { (x - lo) / (hi - lo) } else { 1.0 }).collect()
}

/// Fuses two lists (best first) by `alpha`·(first, min-max normalised) + (1 − `alpha`)·(second,
/// min-max normalised); best first, ties by smaller id. A list whose scores are all equal
/// maps them to 1.
pub fn convex_fusion(first: &[(ChunkId, f32)], second: &[(ChunkId, f32)], alpha: f32) -> Vec<Fused> {
    let mut by_id: HashMap<ChunkId, Fused> = HashMap::new();
    for (li, (list, w)) in [(first, alpha), (second, 1.0 - alpha)].into_iter().enumerate() {
        let norm = min_max(&list.iter().map(|x| x.1).collect::<Vec<_>>());
        for (r, (&(id, _), norm)) in list.iter().zip(norm).enumerate() {
            let e = by_id.entry(id).or_insert_with(|| Fused { id, score: 0.0, ranks: vec![None; 2] });
            e.score += w * norm;
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
    fn convex_fusion_weighs_normalised_scores() {
        // Vector 0.9, 0.7, 0.5 → 1, 0.5, 0; keyword 8, 2 → 1, 0.
        let v = [(ChunkId(1), 0.9), (ChunkId(2), 0.7), (ChunkId(3), 0.5)];
        let k = [(ChunkId(3), 8.0), (ChunkId(2), 2.0)];
        let f = convex_fusion(&v, &k, 0.75);
        let got: Vec<(u64, f32)> = f.iter().map(|x| (x.id.0, x.score)).collect();
        assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2, 3]);
        for (g, want) in got.iter().zip([0.75, 0.375, 0.25]) {
            assert!((g.1 - want).abs() < 1e-6, "{got:?}");
        }
        assert_eq!(f[2].ranks, vec![Some(3), Some(1)]);
        // More keyword weight: chunk 3 wins.
        assert_eq!(convex_fusion(&v, &k, 0.4)[0].id, ChunkId(3));
        // One item or equal scores: normalised to 1; an empty list adds nothing.
        let one = convex_fusion(&[(ChunkId(7), 0.3)], &[], 0.5);
        assert_eq!((one[0].id, one[0].score), (ChunkId(7), 0.5));
    }

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
