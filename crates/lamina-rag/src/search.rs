//! One search over any [`Store`]: embed the query, ask the store's vector and/or keyword
//! side, fuse (hybrid), and fetch the chunks. Written once for every back-end.

use crate::embed::{EmbedKind, TextEmbedder};
use crate::index::fusion::{convex_fusion, reciprocal_rank_fusion, RRF_K};
use crate::store::Store;
use crate::types::{Filter, Hit, SearchMode};
use crate::{RagError, Result};
use std::collections::HashMap;

#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub k: usize,
    pub mode: SearchMode,
    pub filter: Filter,
    /// How many results each side contributes to hybrid fusion (default: max(4k, 50)).
    pub candidates: Option<usize>,
    /// How hybrid search weighs its two lists.
    pub fusion: Fusion,
}

/// How hybrid search fuses its vector and keyword lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion: Σ weight / (k0 + rank).
    Rrf { vector_weight: f32, keyword_weight: f32, k0: f32 },
    /// `vector_weight`·(cosine, min-max normalised) + (1 − `vector_weight`)·(BM25, min-max normalised).
    Convex { vector_weight: f32 },
}

/// The default fusion's vector weight, chosen on the tuning half of the Alpaca evaluation
/// (docs/retrieval.md).
pub const DEFAULT_VECTOR_WEIGHT: f32 = 0.7;

impl Default for Fusion {
    fn default() -> Fusion {
        Fusion::Convex { vector_weight: DEFAULT_VECTOR_WEIGHT }
    }
}

impl Fusion {
    /// Reciprocal rank fusion with the paper's k0 and equal weights.
    pub const RRF: Fusion = Fusion::Rrf { vector_weight: 1.0, keyword_weight: 1.0, k0: RRF_K };
}

impl SearchRequest {
    pub fn new(query: &str, k: usize, mode: SearchMode) -> SearchRequest {
        SearchRequest { query: query.to_string(), k, mode, filter: Filter::default(), candidates: None, fusion: Fusion::default() }
    }
}

/// (id, score, similarity, vector rank, keyword rank)
type Ranked = (crate::ChunkId, f32, Option<f32>, Option<usize>, Option<usize>);

/// Refuses an embedder whose vectors are not the collection's.
pub fn check_embedder(store: &dyn Store, embedder: &dyn TextEmbedder) -> Result<()> {
    let spec = store.spec();
    if spec.embedding_model != embedder.model_id() || spec.dimensions != embedder.dimensions() {
        return Err(RagError::DimensionMismatch {
            collection: spec.name.clone(),
            model: spec.embedding_model.clone(),
            expected: spec.dimensions,
            got_model: embedder.model_id().to_string(),
            got: embedder.dimensions(),
        });
    }
    Ok(())
}

/// Searches `store` for `req`, best first.
pub fn search(store: &dyn Store, embedder: &dyn TextEmbedder, req: &SearchRequest) -> Result<Vec<Hit>> {
    if req.query.trim().is_empty() {
        return Err(RagError::InvalidInput("the query is empty".into()));
    }
    if req.k == 0 {
        return Ok(Vec::new());
    }
    let vector = |n: usize| -> Result<Vec<(crate::ChunkId, f32)>> {
        check_embedder(store, embedder)?;
        let q = embedder.embed(&[req.query.as_str()], EmbedKind::Query)?.pop().ok_or_else(|| RagError::Embed("no vector returned".into()))?;
        store.vector_search(&q, n, &req.filter)
    };
    let ranked: Vec<Ranked> = match req.mode {
        SearchMode::Vector => vector(req.k)?.into_iter().enumerate().map(|(r, (id, s))| (id, s, Some(s), Some(r + 1), None)).collect(),
        SearchMode::Keyword => {
            store.keyword_search(&req.query, req.k, &req.filter)?.into_iter().enumerate().map(|(r, (id, s))| (id, s, None, None, Some(r + 1))).collect()
        }
        SearchMode::Hybrid => {
            let n = req.candidates.unwrap_or((4 * req.k).max(50));
            let v = vector(n)?;
            let kw = store.keyword_search(&req.query, n, &req.filter)?;
            let sim: HashMap<_, _> = v.iter().copied().collect();
            let fused = match req.fusion {
                Fusion::Rrf { vector_weight, keyword_weight, k0 } => reciprocal_rank_fusion(&[(&v, vector_weight), (&kw, keyword_weight)], k0),
                Fusion::Convex { vector_weight } => convex_fusion(&v, &kw, vector_weight),
            };
            fused.into_iter().take(req.k).map(|f| (f.id, f.score, sim.get(&f.id).copied(), f.ranks[0], f.ranks[1])).collect()
        }
    };
    let ids: Vec<_> = ranked.iter().map(|r| r.0).collect();
    let mut records: HashMap<_, _> = store.chunks(&ids)?.into_iter().map(|c| (c.id, c)).collect();
    Ok(ranked
        .into_iter()
        .filter_map(|(id, score, similarity, vector_rank, keyword_rank)| {
            records.remove(&id).map(|chunk| Hit { chunk, score, similarity, vector_rank, keyword_rank, rerank_score: None })
        })
        .collect())
}
