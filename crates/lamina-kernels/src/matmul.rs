//! Matrix products `out = x · Wᵀ` between a weight matrix stored row by row (GGUF layout:
//! `rows` output features, each a row of `cols` inputs) and `n` activation rows.
//!
//! Work is split over output rows across the pool's threads; within a thread, activation
//! rows are taken in tiles of up to [`MAX_COLS`] ([`PACKED_COLS`] for packed weights) so that each unpacked weight block is
//! reused, and in panels of [`PANEL`] rows so that the activations a weight row meets stay
//! in L1/L2 cache.

use crate::cpu::Isa;
use crate::dot::{self, DotFn, MAX_COLS};
use crate::packed::{self, ActScale, PackedFn, PackedMatrix, GROUP, PACKED_COLS};
use crate::pool::ThreadPool;
use crate::quant::*;

/// Most products fused into one dispatch by [`matmul_many`].
pub const MAX_JOBS: usize = 4;

/// Work chunks per thread in a product (see [`matmul_many`]).
const CHUNKS_PER_THREAD: usize = 8;

/// Activation rows per cache panel.
const PANEL: usize = 64;

/// From this many activation rows on, f32 weights go through a blocked GEMM (the `gemm`
/// crate, single-threaded inside each of our pool's chunks) instead of the dot kernels.
const F32_GEMM_MIN_ROWS: usize = 16;

/// Borrowed weight data of one matrix, by storage type.
#[derive(Clone, Copy, Debug)]
pub enum Weights<'a> {
    F32(&'a [f32]),
    Q4_0(&'a [BlockQ4_0]),
    Q4_1(&'a [BlockQ4_1]),
    Q5_0(&'a [BlockQ5_0]),
    Q5_1(&'a [BlockQ5_1]),
    Q8_0(&'a [BlockQ8_0]),
    /// K-quants, rows of whole 256-value super-blocks, used in place.
    Q4K(&'a [BlockQ4K]),
    Q5K(&'a [BlockQ5K]),
    Q6K(&'a [BlockQ6K]),
    /// Q4_0, Q4_1, Q5_0, Q5_1 or Q8_0 rearranged at load time (see [`crate::packed`]).
    Packed(&'a PackedMatrix),
}

/// Which 8-bit activation format a weight type multiplies against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActFormat {
    F32,
    Q8_0,
    Q8_1,
    /// One f32 scale per 256 values (K-quant weights; widths must be multiples of 256).
    Q8K,
}

impl Weights<'_> {
    pub fn act_format(&self) -> ActFormat {
        match self {
            Weights::F32(_) => ActFormat::F32,
            Weights::Q4_0(_) | Weights::Q5_0(_) | Weights::Q8_0(_) => ActFormat::Q8_0,
            Weights::Q4_1(_) | Weights::Q5_1(_) | Weights::Packed(_) => ActFormat::Q8_1,
            Weights::Q4K(_) | Weights::Q5K(_) | Weights::Q6K(_) => ActFormat::Q8K,
        }
    }
}

/// The dot-product kernels of one instruction-set path.
#[derive(Clone, Copy, Debug)]
pub struct Kernels {
    pub isa: Isa,
    pub f32: DotFn<f32, f32>,
    pub q4_0: DotFn<BlockQ4_0, BlockQ8_0>,
    pub q4_1: DotFn<BlockQ4_1, BlockQ8_1>,
    pub q5_0: DotFn<BlockQ5_0, BlockQ8_0>,
    pub q5_1: DotFn<BlockQ5_1, BlockQ8_1>,
    pub q8_0: DotFn<BlockQ8_0, BlockQ8_0>,
    pub q4_k: DotFn<BlockQ4K, BlockQ8K>,
    pub q5_k: DotFn<BlockQ5K, BlockQ8K>,
    pub q6_k: DotFn<BlockQ6K, BlockQ8K>,
    /// Kernel for [`Weights::Packed`] (every packed type).
    pub packed: PackedFn,
}

impl Kernels {
    /// The kernels for `isa`, or `None` when this CPU cannot run them.
    pub fn new(isa: Isa) -> Option<Kernels> {
        if !isa.supported() {
            return None;
        }
        let scalar = Kernels {
            isa: Isa::Scalar,
            f32: dot::dot_f32_scalar,
            q4_0: dot::dot_q4_0_q8_0_scalar,
            q4_1: dot::dot_q4_1_q8_1_scalar,
            q5_0: dot::dot_q5_0_q8_0_scalar,
            q5_1: dot::dot_q5_1_q8_1_scalar,
            q8_0: dot::dot_q8_0_q8_0_scalar,
            q4_k: dot::dot_q4_k_q8_k_scalar,
            q5_k: dot::dot_q5_k_q8_k_scalar,
            q6_k: dot::dot_q6_k_q8_k_scalar,
            packed: packed::packed_scalar,
        };
        Some(match isa {
            Isa::Scalar => scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Kernels {
                isa,
                f32: dot::x86::dot_f32,
                q4_0: dot::x86::avx2::dot_q4_0_q8_0,
                q4_1: dot::x86::avx2::dot_q4_1_q8_1,
                q5_0: dot::x86::avx2::dot_q5_0_q8_0,
                q5_1: dot::x86::avx2::dot_q5_1_q8_1,
                q8_0: dot::x86::avx2::dot_q8_0_q8_0,
                q4_k: dot::x86::kquant::dot_q4_k_q8_k,
                q5_k: dot::x86::kquant::dot_q5_k_q8_k,
                q6_k: dot::x86::kquant::dot_q6_k_q8_k,
                packed: packed::x86::avx2::packed,
            },
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Vnni => Kernels {
                isa,
                f32: dot::x86::dot_f32,
                q4_0: dot::x86::vnni::dot_q4_0_q8_0,
                q4_1: dot::x86::vnni::dot_q4_1_q8_1,
                q5_0: dot::x86::vnni::dot_q5_0_q8_0,
                q5_1: dot::x86::vnni::dot_q5_1_q8_1,
                q8_0: dot::x86::vnni::dot_q8_0_q8_0,
                q4_k: dot::x86::kquant::dot_q4_k_q8_k,
                q5_k: dot::x86::kquant::dot_q5_k_q8_k,
                q6_k: dot::x86::kquant::dot_q6_k_q8_k,
                packed: packed::x86::vnni::packed,
            },
            #[cfg(not(target_arch = "x86_64"))]
            _ => return None,
        })
    }

    /// The fastest kernels this CPU supports.
    pub fn best() -> Kernels {
        Kernels::new(Isa::best()).unwrap_or_else(|| Kernels::new(Isa::Scalar).expect("scalar is always supported"))
    }
}

/// Activations of `n` rows of width `cols`, in the formats the weights need.
/// Buffers are reused between calls; `prepare` only quantizes the formats asked for.
#[derive(Default, Debug)]
pub struct Activations {
    pub n: usize,
    pub cols: usize,
    pub q8_0: Vec<BlockQ8_0>,
    pub q8_1: Vec<BlockQ8_1>,
    /// Per Q8_1 block, its scales as f32 (see [`crate::packed::ActScale`]).
    pub q8_1_scales: Vec<ActScale>,
    pub q8_k: Vec<BlockQ8K>,
    has_q8_0: bool,
    has_q8_1: bool,
    has_q8_k: bool,
}

impl Activations {
    /// Records `x` (`n × cols`, row-major) and quantizes it to `formats` (f32 is read from `x` directly).
    pub fn prepare(&mut self, x: &[f32], n: usize, cols: usize, formats: &[ActFormat]) {
        debug_assert_eq!(x.len(), n * cols);
        let w = self.reserve(n, cols, formats);
        // SAFETY: one writer, all rows, nothing else borrows the buffers meanwhile.
        unsafe { w.quantize_rows(x, 0..n) };
    }

    /// Sizes the buffers for `n × cols` activations in `formats` and records them as
    /// prepared, without quantizing anything: the returned writer fills them row range by
    /// row range, from several threads at once if wanted (each row's blocks are
    /// quantized independently, so the result equals [`Activations::prepare`]'s).
    pub fn reserve(&mut self, n: usize, cols: usize, formats: &[ActFormat]) -> ActWriter {
        self.n = n;
        self.cols = cols;
        self.has_q8_0 = formats.contains(&ActFormat::Q8_0);
        self.has_q8_1 = formats.contains(&ActFormat::Q8_1);
        self.has_q8_k = formats.contains(&ActFormat::Q8K);
        let blocks = n * cols / QK;
        if self.has_q8_0 && self.q8_0.len() < blocks {
            self.q8_0.resize(blocks, BlockQ8_0::default());
        }
        if self.has_q8_1 && self.q8_1.len() < blocks {
            self.q8_1.resize(blocks, BlockQ8_1::default());
            self.q8_1_scales.resize(blocks, [0.0; 4]);
        }
        if self.has_q8_k {
            assert!(cols.is_multiple_of(QK_K), "Q8_K activations need widths that are multiples of {QK_K}, not {cols}");
            let kblocks = n * cols / QK_K;
            if self.q8_k.len() < kblocks {
                self.q8_k.resize(kblocks, BlockQ8K::default());
            }
        }
        ActWriter {
            cols,
            n,
            q8_0: self.has_q8_0.then_some(self.q8_0.as_mut_ptr()),
            q8_1: self.has_q8_1.then_some((self.q8_1.as_mut_ptr(), self.q8_1_scales.as_mut_ptr())),
            q8_k: self.has_q8_k.then_some(self.q8_k.as_mut_ptr()),
        }
    }
}

/// Fills the buffers of an [`Activations`] row range by row range (see
/// [`Activations::reserve`]); valid until the `Activations` is next used.
#[derive(Clone, Copy)]
pub struct ActWriter {
    cols: usize,
    n: usize,
    q8_0: Option<*mut BlockQ8_0>,
    q8_1: Option<(*mut BlockQ8_1, *mut ActScale)>,
    q8_k: Option<*mut BlockQ8K>,
}
// SAFETY: a writer only hands out disjoint row ranges to callers who promise (the unsafe
// `quantize_rows` contract) that no two threads write the same rows.
unsafe impl Send for ActWriter {}
unsafe impl Sync for ActWriter {}

impl ActWriter {
    /// Quantizes `x` (rows `rows` of the activations, `rows.len() × cols` values) into
    /// every format reserved.
    ///
    /// # Safety
    /// The `Activations` this writer came from must be alive and not otherwise used until
    /// all writes are done, and no two concurrent calls may cover the same rows.
    pub unsafe fn quantize_rows(&self, x: &[f32], rows: std::ops::Range<usize>) {
        assert!(rows.end <= self.n && x.len() == rows.len() * self.cols, "activation rows out of range");
        let (b0, nb) = (rows.start * self.cols / QK, rows.len() * self.cols / QK);
        if let Some(p) = self.q8_0 {
            quantize_q8_0(x, std::slice::from_raw_parts_mut(p.add(b0), nb));
        }
        if let Some((p, s)) = self.q8_1 {
            quantize_q8_1_scaled(x, std::slice::from_raw_parts_mut(p.add(b0), nb), Some(std::slice::from_raw_parts_mut(s.add(b0), nb)));
        }
        if let Some(p) = self.q8_k {
            let (k0, kb) = (rows.start * self.cols / QK_K, rows.len() * self.cols / QK_K);
            quantize_q8_k(x, std::slice::from_raw_parts_mut(p.add(k0), kb));
        }
    }
}

/// A raw pointer that may be shared with the pool's threads; each thread writes only
/// the output elements of its own rows.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

/// One matrix of a fused product: its weights, its output buffer (`n × rows`, row-major)
/// and row count.
pub struct MatmulJob<'a> {
    pub weights: Weights<'a>,
    pub rows: usize,
    pub out: &'a mut [f32],
}

/// Computes several products that share the same input activations in one pool dispatch
/// (e.g. Q, K and V; gate and up), so threads synchronise once instead of once per matrix.
///
/// `x` is the f32 input (`n × cols`), `acts` its quantized forms (from [`Activations::prepare`]).
pub fn matmul_many(pool: &ThreadPool, k: &Kernels, x: &[f32], acts: &Activations, jobs: &mut [MatmulJob<'_>]) {
    let n = acts.n;
    let cols = acts.cols;
    let total_rows: usize = jobs.iter().map(|j| j.rows).sum();
    for j in jobs.iter() {
        assert!(j.out.len() >= n * j.rows, "output buffer too small");
    }
    // A fixed-size table instead of a Vec: no allocation on the per-token path.
    assert!(jobs.len() <= MAX_JOBS, "at most {MAX_JOBS} fused products");
    let mut outs: [Option<(Weights<'_>, usize, SharedOut)>; MAX_JOBS] = [None; MAX_JOBS];
    for (slot, j) in outs.iter_mut().zip(jobs.iter_mut()) {
        *slot = Some((j.weights, j.rows, SharedOut(j.out.as_mut_ptr())));
    }
    // Packed matrices compute whole groups of 8 rows; splitting on group boundaries keeps
    // a group on one thread (every job's row count is a multiple of 8 in practice, so job
    // boundaries are group boundaries too; if not, a straddling group is computed twice).
    let align = if outs.iter().flatten().any(|(w, _, _)| matches!(w, Weights::Packed(_))) { GROUP } else { 4 };
    // Chunks of whole `align`-row units taken by the threads as they go (see
    // `ThreadPool::run_chunks`): about eight per thread, so that a thread slowed down by
    // the machine costs a chunk's time at the end instead of half the product's.
    let units = total_rows.div_ceil(align);
    let chunk = units.div_ceil(pool.threads() * CHUNKS_PER_THREAD);
    pool.run_chunks(units, chunk, &|_, u| {
        let range = u.start * align..(u.end * align).min(total_rows);
        // Walk the jobs to find which rows of which matrix fall in this chunk.
        let mut base = 0;
        for &(w, rows, out) in outs.iter().flatten() {
            let lo = range.start.max(base);
            let hi = range.end.min(base + rows);
            if lo < hi {
                rows_product(k, w, cols, x, acts, n, lo - base..hi - base, rows, out);
            }
            base += rows;
        }
    });
}

/// Single-matrix convenience wrapper of [`matmul_many`].
pub fn matmul(pool: &ThreadPool, k: &Kernels, x: &[f32], acts: &Activations, weights: Weights<'_>, rows: usize, out: &mut [f32]) {
    matmul_many(pool, k, x, acts, &mut [MatmulJob { weights, rows, out }]);
}

#[allow(clippy::too_many_arguments)]
fn rows_product(
    k: &Kernels,
    w: Weights<'_>,
    cols: usize,
    x: &[f32],
    acts: &Activations,
    n: usize,
    rows: std::ops::Range<usize>,
    stride_out: usize,
    out: SharedOut,
) {
    let nb = cols / QK;
    if let Weights::Packed(pm) = w {
        assert_eq!(pm.cols, cols, "packed matrix width");
        let mut tmp = [[0.0f32; GROUP]; PACKED_COLS];
        let (xq, sc) = (&acts.q8_1[..n * nb], &acts.q8_1_scales[..n * nb]);
        let g0 = rows.start / GROUP;
        let g1 = rows.end.div_ceil(GROUP);
        let mut p0 = 0;
        while p0 < n {
            let p1 = (p0 + PANEL).min(n);
            for g in g0..g1 {
                let r0 = (g * GROUP).max(rows.start);
                let r1 = ((g + 1) * GROUP).min(rows.end);
                let mut t = p0;
                while t < p1 {
                    let c = (p1 - t).min(PACKED_COLS);
                    (k.packed)(pm, g, &xq[t * nb..], &sc[t * nb..], nb, &mut tmp[..c]);
                    for (i, o) in tmp[..c].iter().enumerate() {
                        // SAFETY: (t+i) < n and r0..r1 < stride_out; each row belongs to one
                        // thread. Whole groups (nearly all) are one 32-byte copy: element by
                        // element, these stores cost as much as a fifth of the kernels at 8 columns.
                        unsafe {
                            let dst = out.0.add((t + i) * stride_out + r0);
                            if r1 - r0 == GROUP {
                                (dst as *mut [f32; GROUP]).write_unaligned(*o);
                            } else {
                                std::ptr::copy_nonoverlapping(o.as_ptr().add(r0 - g * GROUP), dst, r1 - r0);
                            }
                        }
                    }
                    t += c;
                }
            }
            p0 = p1;
        }
        return;
    }
    let mut tmp = [0.0f32; MAX_COLS];
    macro_rules! run {
        ($blocks:expr, $acts:expr, $f:expr, $per_row:expr) => {{
            let blocks = $blocks;
            let a = $acts;
            let per_row = $per_row;
            let mut p0 = 0;
            while p0 < n {
                let p1 = (p0 + PANEL).min(n);
                for r in rows.clone() {
                    let wr = &blocks[r * per_row..(r + 1) * per_row];
                    let mut t = p0;
                    while t < p1 {
                        let c = (p1 - t).min(MAX_COLS);
                        ($f)(wr, &a[t * per_row..], per_row, &mut tmp[..c]);
                        for i in 0..c {
                            // SAFETY: (t+i) < n and r < stride_out; each row belongs to one thread.
                            unsafe { *out.0.add((t + i) * stride_out + r) = tmp[i] };
                        }
                        t += c;
                    }
                }
                p0 = p1;
            }
        }};
    }
    match w {
        // Many activation rows against f32 weights (prefill, encoders): a blocked GEMM
        // reuses each loaded weight across a register tile of rows, where the dot kernels
        // reload it for every 4 columns.
        Weights::F32(b) if n >= F32_GEMM_MIN_ROWS && k.isa != crate::cpu::Isa::Scalar => {
            assert!(b.len() >= rows.end * cols && x.len() >= n * cols, "f32 matmul operands too small");
            // SAFETY: the operands are in bounds (checked above); the destination is this
            // thread's own columns `rows` of the `n × stride_out` output, which overlaps neither input.
            unsafe {
                gemm::gemm(
                    n,
                    rows.len(),
                    cols,
                    out.0.add(rows.start),
                    1,
                    stride_out as isize,
                    false,
                    x.as_ptr(),
                    1,
                    cols as isize,
                    b.as_ptr().add(rows.start * cols),
                    cols as isize,
                    1,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                )
            }
        }
        Weights::F32(b) => run!(b, x, k.f32, cols),
        Weights::Q4_0(b) => run!(b, &acts.q8_0[..], k.q4_0, nb),
        Weights::Q4_1(b) => run!(b, &acts.q8_1[..], k.q4_1, nb),
        Weights::Q5_0(b) => run!(b, &acts.q8_0[..], k.q5_0, nb),
        Weights::Q5_1(b) => run!(b, &acts.q8_1[..], k.q5_1, nb),
        Weights::Q8_0(b) => run!(b, &acts.q8_0[..], k.q8_0, nb),
        Weights::Q4K(b) => run!(b, &acts.q8_k[..], k.q4_k, cols / QK_K),
        Weights::Q5K(b) => run!(b, &acts.q8_k[..], k.q5_k, cols / QK_K),
        Weights::Q6K(b) => run!(b, &acts.q8_k[..], k.q6_k, cols / QK_K),
        Weights::Packed(_) => unreachable!("handled above"),
    }
}
