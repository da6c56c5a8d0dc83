//! CPU compute kernels for Lamina's inference path.
//!
//! - [`pool`]: a persistent worker pool with cheap per-op synchronisation;
//! - [`quant`]: GGUF block formats and 8-bit activation quantization;
//! - [`dot`]: quantized and f32 dot products, scalar reference plus AVX2 and AVX2+VNNI;
//! - [`hugepage`]: buffers for the repacked weights in memory advised for 2 MiB pages;
//! - [`packed`]: weights rearranged at load time into 8-row interleaved groups, and their kernels;
//! - [`matmul`]: multi-threaded, tiled matrix products built on the dot products;
//! - [`ops`]: norms, RoPE, softmax, activations;
//! - [`attention`]: attention over a paged (block-table) KV cache, f32 and f16.
//!
//! Every SIMD kernel has a scalar twin and a test comparing the two (see `tests/simd.rs`).

pub mod attention;
pub mod cpu;
pub mod dot;
pub mod hugepage;
pub mod matmul;
pub mod ops;
pub mod packed;
pub mod pool;
pub mod quant;

pub use cpu::Isa;
pub use matmul::{ActFormat, ActWriter, Activations, Kernels, MatmulJob, Weights};
pub use pool::ThreadPool;
