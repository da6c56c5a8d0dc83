//! In-memory search structures the embedded store keeps beside its data: a vector index
//! ([`vector`]), a BM25 keyword index ([`bm25`]), and reciprocal-rank fusion ([`fusion`]).

pub mod analyzer;
pub mod bm25;
pub mod fusion;
pub mod vector;

pub use analyzer::Analyzer;
pub use bm25::Bm25Index;
pub use fusion::{reciprocal_rank_fusion, Fused};
pub use vector::VectorIndex;
