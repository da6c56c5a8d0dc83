//! In-memory search structures the embedded store keeps beside its data: a vector index
//! ([`vector`]: exact below a size threshold, an HNSW graph ([`hnsw`]) above, on the
//! run-time-chosen dot product of [`simd`]), a BM25 keyword index ([`bm25`]), and
//! reciprocal-rank fusion ([`fusion`]). Both indexes save to and load from a versioned,
//! checksummed binary format ([`persist`]).

pub mod analyzer;
pub mod bm25;
pub mod fusion;
pub mod hnsw;
pub mod persist;
pub mod simd;
pub mod vector;

pub use analyzer::Analyzer;
pub use bm25::Bm25Index;
pub use fusion::{reciprocal_rank_fusion, Fused};
pub use hnsw::HnswParams;
pub use vector::VectorIndex;
