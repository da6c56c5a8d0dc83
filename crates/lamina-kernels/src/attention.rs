//! Attention of query heads over cached keys and values, read through a block table.
//!
//! The KV cache is paged (vLLM's PagedAttention, Kwon et al. 2023): a sequence's positions
//! live in fixed-size blocks that need not be adjacent, and [`KvRows`] says where each
//! block of one key/value head is. Inside a block one head's rows are contiguous, so every
//! kernel here walks *runs* of consecutive rows — one per block — with the same inner
//! loops as over a single buffer, and the SIMD path prefetches the next block's first rows
//! while it works through the current one.
//!
//! Two arithmetics over an f16 cache: f32 with a plain softmax (what the model uses), and
//! llama.cpp's one-query flash attention with an f16 accumulator, reproduced bit for bit
//! ([`attend_f16_stepwise`] is the reference recurrence).

use crate::matmul::Kernels;
use crate::ops::{exp_poly, f16_simd, softmax, softmax_weights};

/// The cached rows of one key/value head of one layer, for positions
/// `start..start + len` of one sequence.
///
/// Position `p` is row `p % block_size` of block `blocks[p / block_size]`; that row's
/// values start at element `blocks[..] * block_stride + (p % block_size) * stride` of `k`
/// (keys) and `v` (values), which share one layout.
#[derive(Clone, Copy, Debug)]
pub struct KvRows<'a, T> {
    pub k: &'a [T],
    pub v: &'a [T],
    /// Elements from one row to the next inside a block.
    pub stride: usize,
    /// Positions per block.
    pub block_size: usize,
    /// Elements from a block id to the next (block `b` starts at `b * block_stride`).
    pub block_stride: usize,
    /// The sequence's blocks in position order.
    pub blocks: &'a [u32],
    /// First position attended to (later than 0 under a sliding window).
    pub start: usize,
    /// Positions attended to.
    pub len: usize,
}

impl<'a, T> KvRows<'a, T> {
    /// The first `len` rows of `k` and `v`, `stride` elements apart (one block).
    pub fn contiguous(k: &'a [T], v: &'a [T], stride: usize, len: usize) -> Self {
        KvRows { k, v, stride, block_size: len.max(1), block_stride: 0, blocks: &[0], start: 0, len }
    }

    /// Runs of consecutive rows in position order: (element offset of the run's first row,
    /// rows in the run). Their lengths add up to `len`.
    pub fn runs(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let (bs, end) = (self.block_size, self.start + self.len);
        let (first, last) = (self.start / bs, if self.len == 0 { 0 } else { (end - 1) / bs + 1 });
        (first..last).map(move |b| {
            let (lo, hi) = ((b * bs).max(self.start), ((b + 1) * bs).min(end));
            (self.blocks[b] as usize * self.block_stride + (lo - b * bs) * self.stride, hi - lo)
        })
    }

    /// Element offsets of the rows, in position order.
    pub fn row_offsets(&self) -> impl Iterator<Item = usize> + '_ {
        let stride = self.stride;
        self.runs().flat_map(move |(off, n)| (0..n).map(move |i| off + i * stride))
    }

    /// Panics (with what is wrong) unless every row of `hd` values lies inside `k` and `v`:
    /// the SIMD kernels rely on it.
    fn check(&self, hd: usize) {
        assert!(self.block_size > 0, "KV rows: block size 0");
        if self.len == 0 {
            return;
        }
        let last = (self.start + self.len - 1) / self.block_size;
        assert!(last < self.blocks.len(), "KV rows: position {} needs block {last}, the table has {}", self.start + self.len - 1, self.blocks.len());
        for (off, n) in self.runs() {
            let end = off + (n - 1) * self.stride + hd;
            assert!(end <= self.k.len() && end <= self.v.len(), "KV rows: a run ends at element {end}, past the cache ({})", self.k.len().min(self.v.len()));
        }
    }
}

/// Causal attention of one query head (`q`: head_dim) over f32 `rows`; `scores`: scratch
/// of at least `rows.len`; `out`: head_dim. Keys and values are each read once, in order.
pub fn attend(kern: &Kernels, q: &[f32], rows: &KvRows<'_, f32>, scale: f32, scores: &mut [f32], out: &mut [f32]) {
    let (hd, len, stride) = (q.len(), rows.len, rows.stride);
    rows.check(hd);
    let scores = &mut scores[..len];
    let mut p = 0;
    for (off, n) in rows.runs() {
        let mut i = 0;
        while i < n {
            let c = (n - i).min(crate::dot::MAX_COLS);
            (kern.f32)(q, &rows.k[off + i * stride..], stride, &mut scores[p..p + c]);
            (i, p) = (i + c, p + c);
        }
    }
    for s in scores.iter_mut() {
        *s *= scale;
    }
    softmax(scores);
    out[..hd].fill(0.0);
    for (&w, off) in scores.iter().zip(rows.row_offsets()) {
        for (o, &x) in out.iter_mut().zip(&rows.v[off..off + hd]) {
            *o += w * x;
        }
    }
}

/// Query tokens per batch from which llama.cpp switches its CPU flash attention from the
/// one-query-at-a-time path (f16 accumulation) to the tiled path (f32 accumulation).
pub const GGML_FA_TILE_Q: usize = 64;

/// Attention of one query head over an f16 cache, in one of two arithmetics.
///
/// With `f16_accumulate`, llama.cpp's CPU flash attention for batches of fewer than
/// [`GGML_FA_TILE_Q`] query tokens, reproduced step for step: the query is rounded to f16,
/// scores are f16·f16 dot products summed in f32, softmax is computed online (running max
/// `m`, running sum `s`), and the weighted sum of values is kept in an f16 vector that is
/// rescaled whenever the maximum grows. With AVX2/F16C this runs in three passes that give
/// bit for bit the numbers of the position-by-position recurrence
/// ([`attend_f16_stepwise`]): all scores first, then the running maximum and the
/// exponentials (eight at a time, [`exp_poly`]), then the value sum with the accumulator in
/// registers, rounded to f16 after every step as the stepwise version's store and reload
/// do. Those roundings (a conversion pair per 8 values per position and head) are most of
/// its cost.
///
/// Without it (what the model uses): f32 throughout and a plain softmax — all scores,
/// their maximum, the exponentials and their sum, then the weighted sum of the value rows
/// divided once ([`attend_f16_two_pass`] is the scalar version). More accurate than the f16
/// accumulator and, at 8 decoding sequences, 7 % more tokens per second end to end.
///
/// `scratch` needs [`attend_f16_scratch`]`(head_dim, len)` floats.
pub fn attend_f16(q: &[f32], rows: &KvRows<'_, half::f16>, scale: f32, f16_accumulate: bool, scratch: &mut [f32], out: &mut [f32]) {
    let hd = q.len();
    attend_f16_heads(q, hd, rows, scale, f16_accumulate, scratch, &mut out[..hd])
}

/// [`attend_f16`] for several query heads that share one key/value head (grouped-query
/// attention): `q` and `out` hold `q.len() / head_dim` heads back to back. Each head's
/// result is exactly [`attend_f16`]'s; the SIMD path converts each f16 key and value row
/// once for up to four heads instead of once per head (the conversions, not the
/// multiply-adds, bound this loop). `scratch` needs [`attend_f16_heads_scratch`] floats.
pub fn attend_f16_heads(q: &[f32], head_dim: usize, rows: &KvRows<'_, half::f16>, scale: f32, f16_accumulate: bool, scratch: &mut [f32], out: &mut [f32]) {
    let hd = head_dim;
    assert!(hd > 0 && q.len().is_multiple_of(hd) && out.len() == q.len(), "attention heads: {} values, head size {hd}, output {}", q.len(), out.len());
    rows.check(hd);
    let heads = q.len() / hd;
    #[cfg(target_arch = "x86_64")]
    if f16_simd() && hd.is_multiple_of(8) && rows.len > 0 && scratch.len() >= attend_f16_heads_scratch(heads, hd, rows.len) {
        // SAFETY: F16C/FMA/AVX2 were detected (`f16_simd`); rows checked above.
        unsafe { x86::attend(q, hd, rows, scale, f16_accumulate, scratch, out) };
        return;
    }
    for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        if f16_accumulate {
            attend_f16_stepwise(qh, rows, scale, true, scratch, oh)
        } else {
            attend_f16_two_pass(qh, rows, scale, scratch, oh)
        }
    }
}

/// Attention over an f16 cache with f32 arithmetic and a plain softmax: all scores,
/// their maximum, the exponentials ([`exp_poly`]) and their sum, then the weighted sum of
/// value rows, divided once. The scalar counterpart of the SIMD path for
/// `f16_accumulate == false` (equal up to summation order). `scratch` needs `len` floats.
pub fn attend_f16_two_pass(q: &[f32], rows: &KvRows<'_, half::f16>, scale: f32, scratch: &mut [f32], out: &mut [f32]) {
    let hd = q.len();
    rows.check(hd);
    let w = &mut scratch[..rows.len];
    for (wi, off) in w.iter_mut().zip(rows.row_offsets()) {
        *wi = q.iter().zip(&rows.k[off..off + hd]).map(|(&a, &b)| a * b.to_f32()).sum::<f32>() * scale;
    }
    let sum = softmax_weights(w);
    out.fill(0.0);
    for (&wi, off) in w.iter().zip(rows.row_offsets()) {
        for (o, x) in out.iter_mut().zip(&rows.v[off..off + hd]) {
            *o += wi * x.to_f32();
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Floats of scratch [`attend_f16`] needs for a head of `head_dim` over `len` positions.
pub fn attend_f16_scratch(head_dim: usize, len: usize) -> usize {
    attend_f16_heads_scratch(1, head_dim, len)
}

/// Floats of scratch [`attend_f16_heads`] needs for `heads` heads of `head_dim`.
pub fn attend_f16_heads_scratch(heads: usize, head_dim: usize, len: usize) -> usize {
    (3 * head_dim).max(heads * (head_dim + 2 * len))
}

/// [`attend_f16`] one position at a time, as llama.cpp's one-query flash attention loop
/// is written: the reference for the three-pass version and the path without F16C.
/// `scratch` needs `3 * head_dim` floats.
pub fn attend_f16_stepwise(q: &[f32], rows: &KvRows<'_, half::f16>, scale: f32, f16_accumulate: bool, scratch: &mut [f32], out: &mut [f32]) {
    let hd = q.len();
    rows.check(hd);
    let (qr, rest) = scratch.split_at_mut(hd);
    let (acc, rest) = rest.split_at_mut(hd);
    let acc16: &mut [half::f16] = {
        // The f16 accumulator lives in the third scratch vector (hd f16 take hd/2 floats).
        let tail = &mut rest[..hd];
        // SAFETY: f16 has alignment 2 ≤ 4 and the region holds 2*hd f16 values.
        unsafe { std::slice::from_raw_parts_mut(tail.as_mut_ptr() as *mut half::f16, hd) }
    };
    let f16c = f16_simd();
    if f16_accumulate {
        for (d, &x) in qr.iter_mut().zip(q) {
            *d = half::f16::from_f32(x).to_f32();
        }
        acc16.fill(half::f16::ZERO);
    } else {
        qr.copy_from_slice(q);
        acc.fill(0.0);
    }
    let mut m = f32::NEG_INFINITY;
    let mut sum = 0.0f32;
    for off in rows.row_offsets() {
        let krow = &rows.k[off..off + hd];
        let vrow = &rows.v[off..off + hd];
        let s = dot_f32_f16(f16c, qr, krow) * scale;
        let (mut ms, mut vs) = (1.0f32, 1.0f32);
        if s > m {
            let old = m;
            m = s;
            ms = exp_poly(old - m);
            if f16_accumulate {
                scale_f16(f16c, acc16, ms);
            } else {
                for a in acc.iter_mut() {
                    *a *= ms;
                }
            }
        } else {
            vs = exp_poly(s - m);
        }
        if f16_accumulate {
            mad_f16(f16c, acc16, vrow, vs);
        } else {
            mad_f32_f16(f16c, acc, vrow, vs);
        }
        sum = sum * ms + vs;
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    if f16_accumulate {
        for (o, a) in out.iter_mut().zip(acc16.iter()) {
            *o = a.to_f32() * inv;
        }
    } else {
        for (o, &a) in out.iter_mut().zip(acc.iter()) {
            *o = a * inv;
        }
    }
}

/// `Σ a[i] * b[i]` with f16 `b`, summed in f32.
pub fn dot_f32_f16(simd: bool, a: &[f32], b: &[half::f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd && a.len().is_multiple_of(8) {
        // SAFETY: `simd` is only true when AVX2, FMA and F16C were detected.
        return unsafe { x86::dot(a, b) };
    }
    let _ = simd;
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// `acc = f16(acc * s)` element-wise.
pub fn scale_f16(simd: bool, acc: &mut [half::f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd && acc.len().is_multiple_of(8) {
        // SAFETY: see `dot_f32_f16`.
        return unsafe { x86::scale(acc, s) };
    }
    let _ = simd;
    for a in acc.iter_mut() {
        *a = half::f16::from_f32(a.to_f32() * s);
    }
}

/// `acc = f16(acc + v * s)` element-wise (llama.cpp's `ggml_vec_mad_f16`).
pub fn mad_f16(simd: bool, acc: &mut [half::f16], v: &[half::f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd && acc.len().is_multiple_of(8) {
        // SAFETY: see `dot_f32_f16`.
        return unsafe { x86::mad(acc, v, s) };
    }
    let _ = simd;
    for (a, x) in acc.iter_mut().zip(v) {
        *a = half::f16::from_f32(a.to_f32() + x.to_f32() * s);
    }
}

/// `acc += v * s` with an f32 accumulator.
pub fn mad_f32_f16(simd: bool, acc: &mut [f32], v: &[half::f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd && acc.len().is_multiple_of(8) {
        // SAFETY: see `dot_f32_f16`.
        return unsafe { x86::mad_f32(acc, v, s) };
    }
    let _ = simd;
    for (a, x) in acc.iter_mut().zip(v) {
        *a += x.to_f32() * s;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! F16C + FMA versions of the attention passes and the f16 helpers (lengths are
    //! multiples of 8).
    use super::KvRows;
    use crate::dot::x86::hsum;
    use crate::ops::simd::exp8;
    use crate::ops::softmax_weights;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn load8(p: *const half::f16) -> __m256 {
        _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
    }

    #[inline(always)]
    unsafe fn store8(p: *mut half::f16, v: __m256) {
        _mm_storeu_si128(p as *mut __m128i, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn dot(a: &[f32], b: &[half::f16]) -> f32 {
        let mut acc = _mm256_setzero_ps();
        for i in (0..a.len()).step_by(8) {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.as_ptr().add(i)), load8(b.as_ptr().add(i)), acc);
        }
        let lo = _mm256_castps256_ps128(acc);
        let hi = _mm256_extractf128_ps(acc, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scale(acc: &mut [half::f16], s: f32) {
        let sv = _mm256_set1_ps(s);
        for i in (0..acc.len()).step_by(8) {
            let p = acc.as_mut_ptr().add(i);
            store8(p, _mm256_mul_ps(load8(p), sv));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn mad(acc: &mut [half::f16], v: &[half::f16], s: f32) {
        let sv = _mm256_set1_ps(s);
        for i in (0..acc.len()).step_by(8) {
            let p = acc.as_mut_ptr().add(i);
            store8(p, _mm256_fmadd_ps(load8(v.as_ptr().add(i)), sv, load8(p)));
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn mad_f32(acc: &mut [f32], v: &[half::f16], s: f32) {
        let sv = _mm256_set1_ps(s);
        for i in (0..acc.len()).step_by(8) {
            let p = acc.as_mut_ptr().add(i);
            _mm256_storeu_ps(p, _mm256_fmadd_ps(load8(v.as_ptr().add(i)), sv, _mm256_loadu_ps(p)));
        }
    }

    /// Positions ahead that the attention passes prefetch.
    const AHEAD: usize = 24;

    /// Prefetches the first `rows` key rows (to L1) and value rows (to L2) of a head.
    #[inline(always)]
    unsafe fn prefetch_rows(k: *const half::f16, v: *const half::f16, stride: usize, rows: usize, hd: usize) {
        for i in 0..rows {
            let kr = k.wrapping_add(i * stride) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(kr);
            _mm_prefetch::<_MM_HINT_T0>(kr.wrapping_add(2 * hd - 1));
            let vr = v.wrapping_add(i * stride) as *const i8;
            _mm_prefetch::<_MM_HINT_T1>(vr);
            _mm_prefetch::<_MM_HINT_T1>(vr.wrapping_add(2 * hd - 1));
        }
    }

    /// Where the `p` rows from position `a` of a run (at element `off`, `n` rows) start,
    /// relative to the run's first row: inside the run, or in the `next` run, or `None`
    /// when they reach past both.
    #[inline(always)]
    fn ahead_of(off: usize, n: usize, next: Option<(usize, usize)>, a: usize, p: usize, stride: usize) -> Option<isize> {
        if a + p <= n {
            return Some((a * stride) as isize);
        }
        let (noff, nn) = next?;
        let j = a.checked_sub(n)?;
        (j + p <= nn).then(|| noff as isize - off as isize + (j * stride) as isize)
    }

    /// f32 → f16 → f32 (round to nearest even), what a store to and load from the f16
    /// accumulator does.
    #[inline(always)]
    unsafe fn round16(x: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT))
    }

    /// Scores of `H` heads (queries `q`, `hd` apart) against positions `i..i + P` of a run
    /// (rows `stride` apart from `k`), each key vector converted once for all heads; per
    /// head and position the arithmetic of [`dot`]. Writes `w[h * wstride + i + p]`.
    /// `ahead`: where the rows `AHEAD` positions on start in `k` and `v` (as element
    /// offsets from the run's rows; `None` past the end), to prefetch.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores<const H: usize, const P: usize>(
        q: *const f32,
        hd: usize,
        k: *const half::f16,
        v: *const half::f16,
        stride: usize,
        ahead: Option<isize>,
        i: usize,
        scale: f32,
        w: *mut f32,
        wstride: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); P]; H];
        // The cache rows are read once per step, so they come from L3 or memory: fetch a
        // few positions ahead, following the sequence into its next block. The value rows
        // are fetched here too, for the value pass.
        if let Some(a) = ahead {
            for p in 0..P {
                let ka = k.wrapping_offset(a).wrapping_add(p * stride) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(ka);
                _mm_prefetch::<_MM_HINT_T0>(ka.wrapping_add(2 * hd - 1));
                let va = v.wrapping_offset(a).wrapping_add(p * stride) as *const i8;
                _mm_prefetch::<_MM_HINT_T1>(va);
                _mm_prefetch::<_MM_HINT_T1>(va.wrapping_add(2 * hd - 1));
            }
        }
        let mut d = 0;
        while d < hd {
            let mut kv = [_mm256_setzero_ps(); P];
            for (p, x) in kv.iter_mut().enumerate() {
                *x = load8(k.add((i + p) * stride + d));
            }
            for (h, ah) in acc.iter_mut().enumerate() {
                let qv = _mm256_loadu_ps(q.add(h * hd + d));
                for (a, x) in ah.iter_mut().zip(kv) {
                    *a = _mm256_fmadd_ps(qv, x, *a);
                }
            }
            d += 8;
        }
        for (h, ah) in acc.iter().enumerate() {
            for (p, a) in ah.iter().enumerate() {
                *w.add(h * wstride + i + p) = hsum(*a) * scale;
            }
        }
    }

    /// The value pass of `H` heads for `D` vectors of 8 dimensions from `d0`: per position,
    /// per head, `acc = acc * ms[i]` where that head's maximum grew, then
    /// `acc = fma(v_i, w[i], acc)`, rounded to f16 after each operation when `F16`; each
    /// value vector converted once for all heads. Head `h`'s weights and factors are at
    /// `w`/`ms` + `h * wstride`, position by position over the runs of `rows`; its sums go
    /// to `out + h * hd + d0`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn values<const H: usize, const D: usize, const F16: bool, const RESCALE: bool>(
        rows: &KvRows<'_, half::f16>,
        d0: usize,
        w: *const f32,
        ms: *const f32,
        wstride: usize,
        hd: usize,
        out: *mut f32,
    ) {
        let (vp, stride) = (rows.v.as_ptr(), rows.stride);
        let mut acc = [[_mm256_setzero_ps(); D]; H];
        let mut base = 0;
        let mut runs = rows.runs().peekable();
        while let Some((off, n)) = runs.next() {
            let next = runs.peek().copied();
            let v = vp.add(off);
            let (w, ms) = (w.add(base), ms.add(base));
            for i in 0..n {
                // See `scores`: the first pass over the rows brings them in, later ones (the
                // next dimensions) find them in cache.
                if let Some(a) = ahead_of(off, n, next, i + AHEAD, 1, stride) {
                    let ahead = v.wrapping_offset(a).wrapping_add(d0) as *const i8;
                    _mm_prefetch::<_MM_HINT_T0>(ahead);
                    _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16 * D - 1));
                }
                let mut x = [_mm256_setzero_ps(); D];
                for (j, xv) in x.iter_mut().enumerate() {
                    *xv = load8(v.add(i * stride + d0 + 8 * j));
                }
                for (h, ah) in acc.iter_mut().enumerate() {
                    let m = if RESCALE { *ms.add(h * wstride + i) } else { 1.0 };
                    if m != 1.0 {
                        // Scaling an f16-rounded value by exactly 1 changes nothing, so skipping
                        // those steps matches the stepwise loop, which rescales on every new maximum.
                        let mv = _mm256_set1_ps(m);
                        for a in ah.iter_mut() {
                            *a = _mm256_mul_ps(*a, mv);
                            if F16 {
                                *a = round16(*a);
                            }
                        }
                    }
                    let sv = _mm256_set1_ps(*w.add(h * wstride + i));
                    for (a, xv) in ah.iter_mut().zip(x) {
                        *a = _mm256_fmadd_ps(xv, sv, *a);
                        if F16 {
                            *a = round16(*a);
                        }
                    }
                }
            }
            base += n;
        }
        for (h, ah) in acc.iter().enumerate() {
            for (j, a) in ah.iter().enumerate() {
                _mm256_storeu_ps(out.add(h * hd + d0 + 8 * j), *a);
            }
        }
    }

    /// The three-pass [`super::attend_f16_heads`] (`hd` a multiple of 8, `rows.len > 0`,
    /// scratch of `attend_f16_heads_scratch`, rows in range: checked by the caller).
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend(q: &[f32], hd: usize, rows: &KvRows<'_, half::f16>, scale: f32, f16_accumulate: bool, scratch: &mut [f32], out: &mut [f32]) {
        let (len, stride) = (rows.len, rows.stride);
        let nh = q.len() / hd;
        let (qr, rest) = scratch.split_at_mut(nh * hd);
        let (w, rest) = rest.split_at_mut(nh * len);
        let ms = &mut rest[..nh * len];
        // The queries as the f16 dot product sees them.
        for i in (0..nh * hd).step_by(8) {
            let x = _mm256_loadu_ps(q.as_ptr().add(i));
            _mm256_storeu_ps(qr.as_mut_ptr().add(i), if f16_accumulate { round16(x) } else { x });
        }
        let (kp, vp) = (rows.k.as_ptr(), rows.v.as_ptr());
        // The cache rows of this head come from memory (a decode step streams ~100 MB of
        // weights through the caches between two visits of a layer), and the passes below
        // only prefetch `AHEAD` positions in front of themselves: fetch the first rows now,
        // so the first positions do not each wait a full memory latency.
        if let Some((off, n)) = rows.runs().next() {
            prefetch_rows(kp.add(off), vp.add(off), stride, n.min(AHEAD), hd);
        }
        let mut sums = [0.0f32; 4];
        let mut h0 = 0;
        while h0 < nh {
            // Up to four heads per pass: their accumulators (and a few loaded vectors) fill
            // the sixteen registers.
            let hn = (nh - h0).min(4);
            let (qh, wh, mh, oh) = (qr.as_ptr().add(h0 * hd), w.as_mut_ptr().add(h0 * len), ms.as_mut_ptr().add(h0 * len), out.as_mut_ptr().add(h0 * hd));
            // Pass 1 (scores) for these heads, run by run, then pass 2, then pass 3.
            macro_rules! run {
                ($h:literal, $p:literal, $d:literal) => {{
                    let mut base = 0;
                    let mut runs = rows.runs().peekable();
                    while let Some((off, n)) = runs.next() {
                        let next = runs.peek().copied();
                        let (kr, vr, wr) = (kp.add(off), vp.add(off), wh.add(base));
                        let mut i = 0;
                        while i + $p <= n {
                            scores::<$h, $p>(qh, hd, kr, vr, stride, ahead_of(off, n, next, i + AHEAD, $p, stride), i, scale, wr, len);
                            i += $p;
                        }
                        while i < n {
                            scores::<$h, 1>(qh, hd, kr, vr, stride, ahead_of(off, n, next, i + AHEAD, 1, stride), i, scale, wr, len);
                            i += 1;
                        }
                        base += n;
                    }
                    for (h, sum) in sums[..$h].iter_mut().enumerate() {
                        let w = std::slice::from_raw_parts_mut(wh.add(h * len), len);
                        *sum = if f16_accumulate { softmax_factors(w, std::slice::from_raw_parts_mut(mh.add(h * len), len)) } else { softmax_weights(w) };
                    }
                    let nv = hd / 8;
                    let mut j = 0;
                    while j + $d <= nv {
                        if f16_accumulate {
                            values::<$h, $d, true, true>(rows, 8 * j, wh, mh, len, hd, oh);
                        } else {
                            values::<$h, $d, false, false>(rows, 8 * j, wh, mh, len, hd, oh);
                        }
                        j += $d;
                    }
                    while j < nv {
                        if f16_accumulate {
                            values::<$h, 1, true, true>(rows, 8 * j, wh, mh, len, hd, oh);
                        } else {
                            values::<$h, 1, false, false>(rows, 8 * j, wh, mh, len, hd, oh);
                        }
                        j += 1;
                    }
                }};
            }
            match hn {
                1 => run!(1, 4, 8),
                2 => run!(2, 4, 4),
                3 => run!(3, 2, 2),
                _ => run!(4, 2, 2),
            }
            for (h, &sum) in sums[..hn].iter().enumerate() {
                let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
                for o in out[(h0 + h) * hd..(h0 + h + 1) * hd].iter_mut() {
                    *o *= inv;
                }
            }
            h0 += hn;
        }
    }

    /// Pass 2 of [`attend`] for one head: the online softmax's running maximum and sum in
    /// the stepwise order. On entry `w` holds the scores; on return, per position, `w` the
    /// weight of its value row and `ms` the factor the accumulator is rescaled by first
    /// (1 when the maximum holds). Returns the sum of the weights.
    ///
    /// The recurrence needs one exponential per position, of `s - max` or, where the
    /// maximum grows, of `old max - new max`: the running maximum (a cheap scalar scan)
    /// fixes every argument first, then the exponentials run eight at a time, then the
    /// sum is accumulated in the stepwise order.
    #[inline(always)]
    unsafe fn softmax_factors(w: &mut [f32], ms: &mut [f32]) -> f32 {
        let n = w.len();
        let mut m = f32::NEG_INFINITY;
        for (wi, mi) in w.iter_mut().zip(ms.iter_mut()) {
            let s = *wi;
            if s > m {
                // New maximum: the exponential is the rescale factor (flag 0).
                *wi = m - s;
                *mi = 0.0;
                m = s;
            } else {
                *wi = s - m;
                *mi = 1.0;
            }
        }
        let n8 = n / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        for i in (0..n8).step_by(8) {
            let e = exp8(_mm256_loadu_ps(w.as_ptr().add(i)));
            let grew = _mm256_cmp_ps(_mm256_loadu_ps(ms.as_ptr().add(i)), _mm256_setzero_ps(), _CMP_EQ_OQ);
            _mm256_storeu_ps(ms.as_mut_ptr().add(i), _mm256_blendv_ps(one, e, grew));
            _mm256_storeu_ps(w.as_mut_ptr().add(i), _mm256_blendv_ps(e, one, grew));
        }
        for i in n8..n {
            let e = super::exp_poly(w[i]);
            if ms[i] == 0.0 {
                (w[i], ms[i]) = (1.0, e);
            } else {
                w[i] = e;
            }
        }
        let mut sum = 0.0f32;
        for (&wi, &mi) in w.iter().zip(ms.iter()) {
            sum = sum * mi + wi;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_attention_is_close_to_f32_attention() {
        let kern = Kernels::new(crate::cpu::Isa::Scalar).unwrap();
        let (hd, len, stride) = (16, 23, 32);
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let k: Vec<f32> = (0..len * stride).map(|i| (i as f32 * 0.13).cos()).collect();
        let v: Vec<f32> = (0..len * stride).map(|i| (i as f32 * 0.07).sin()).collect();
        let k16: Vec<half::f16> = k.iter().map(|&x| half::f16::from_f32(x)).collect();
        let v16: Vec<half::f16> = v.iter().map(|&x| half::f16::from_f32(x)).collect();
        let mut scores = vec![0.0; len];
        let mut want = vec![0.0; hd];
        attend(&kern, &q, &KvRows::contiguous(&k, &v, stride, len), 0.25, &mut scores, &mut want);
        for acc16 in [false, true] {
            let mut scratch = vec![0.0; 3 * hd];
            let mut got = vec![0.0; hd];
            attend_f16(&q, &KvRows::contiguous(&k16, &v16, stride, len), 0.25, acc16, &mut scratch, &mut got);
            for d in 0..hd {
                // f16 storage has ~3 significant digits; f16 accumulation adds a little more.
                assert!((got[d] - want[d]).abs() < 3e-3, "{acc16} {d}: {} vs {}", got[d], want[d]);
            }
        }
    }

    /// The three-pass SIMD attention gives the stepwise recurrence's numbers bit for bit,
    /// for head sizes with and without a tail of fewer than 64 dimensions, lengths from 1,
    /// both accumulators, scores that set new maxima late (rescaling) and early.
    #[test]
    fn three_pass_attention_equals_stepwise() {
        if !f16_simd() {
            eprintln!("SKIPPED: three-pass f16 attention (CPU lacks AVX2/F16C)");
            return;
        }
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        for &hd in &[8usize, 24, 64, 72, 128, 136] {
            for &len in &[1usize, 2, 3, 17, 64, 131] {
                let stride = hd * 3 + 8;
                for &amp in &[0.5f32, 4.0, 30.0] {
                    let q: Vec<f32> = (0..hd).map(|_| rnd() * amp).collect();
                    // Later keys larger on average, so the maximum keeps growing.
                    let k16: Vec<half::f16> = (0..len * stride).map(|i| half::f16::from_f32(rnd() * (1.0 + (i / stride) as f32 * 0.05))).collect();
                    let v16: Vec<half::f16> = (0..len * stride).map(|_| half::f16::from_f32(rnd() * 3.0)).collect();
                    let kv = (len - 1) * stride + hd;
                    {
                        let mut s1 = vec![0.0; 3 * hd];
                        let mut want = vec![0.0; hd];
                        attend_f16_stepwise(&q, &KvRows::contiguous(&k16[..kv], &v16[..kv], stride, len), 0.125, true, &mut s1, &mut want);
                        let mut s2 = vec![0.0; attend_f16_scratch(hd, len)];
                        let mut got = vec![0.0; hd];
                        attend_f16(&q, &KvRows::contiguous(&k16[..kv], &v16[..kv], stride, len), 0.125, true, &mut s2, &mut got);
                        for d in 0..hd {
                            assert_eq!(got[d].to_bits(), want[d].to_bits(), "hd {hd} len {len} amp {amp} dim {d}: {} vs {}", got[d], want[d]);
                        }
                    }
                    // f32 accumulation: the SIMD path and the scalar two-pass version
                    // against an f64 evaluation, within what f32 scores can be off by.
                    {
                        let (want, tol) = attention_f64(&q, &k16[..kv], &v16[..kv], stride, len, 0.125);
                        let mut s1 = vec![0.0; attend_f16_scratch(hd, len)];
                        let mut scalar = vec![0.0; hd];
                        attend_f16_two_pass(&q, &KvRows::contiguous(&k16[..kv], &v16[..kv], stride, len), 0.125, &mut s1, &mut scalar);
                        let mut got = vec![0.0; hd];
                        attend_f16(&q, &KvRows::contiguous(&k16[..kv], &v16[..kv], stride, len), 0.125, false, &mut s1, &mut got);
                        for d in 0..hd {
                            for (name, x) in [("simd", got[d]), ("scalar", scalar[d])] {
                                assert!((x as f64 - want[d]).abs() <= tol, "{name}: hd {hd} len {len} amp {amp} dim {d}: {x} vs {} (tol {tol})", want[d]);
                            }
                        }
                    }
                    // Several query heads over the same keys and values (1 to 9: every
                    // chunking into passes of up to four heads, with remainders).
                    for heads in 1..=9usize {
                        let qs: Vec<f32> = (0..heads * hd).map(|_| rnd() * amp).collect();
                        for acc16 in [false, true] {
                            // Per head, the single-head SIMD path (itself checked above).
                            let mut want = vec![0.0; heads * hd];
                            let mut s1 = vec![0.0; attend_f16_scratch(hd, len)];
                            for (qh, oh) in qs.chunks_exact(hd).zip(want.chunks_exact_mut(hd)) {
                                attend_f16(qh, &KvRows::contiguous(&k16[..kv], &v16[..kv], stride, len), 0.125, acc16, &mut s1, oh);
                            }
                            let mut s2 = vec![0.0; attend_f16_heads_scratch(heads, hd, len)];
                            let mut got = vec![0.0; heads * hd];
                            attend_f16_heads(&qs, hd, &KvRows::contiguous(&k16[..kv], &v16[..kv], stride, len), 0.125, acc16, &mut s2, &mut got);
                            for d in 0..heads * hd {
                                assert_eq!(got[d].to_bits(), want[d].to_bits(), "{heads} heads, hd {hd} len {len} amp {amp} f16 {acc16} value {d}");
                            }
                        }
                    }
                }
            }
        }
    }

    /// Attention in f64 over f16 keys and values, and a bound on how far an f32 evaluation
    /// may be from it: each score's rounding is at most ~`hd` ulps of the sum of its
    /// terms' magnitudes, which moves weights (relatively) and so the output, made of values
    /// up to `max |v|`, by about twice that.
    fn attention_f64(q: &[f32], k: &[half::f16], v: &[half::f16], stride: usize, len: usize, scale: f32) -> (Vec<f64>, f64) {
        let hd = q.len();
        let mut s = vec![0.0f64; len];
        let mut mag = 0.0f64;
        for (i, si) in s.iter_mut().enumerate() {
            let row = &k[i * stride..i * stride + hd];
            *si = q.iter().zip(row).map(|(&a, b)| a as f64 * b.to_f64()).sum::<f64>() * scale as f64;
            mag = mag.max(q.iter().zip(row).map(|(&a, b)| (a as f64 * b.to_f64()).abs()).sum::<f64>() * scale as f64);
        }
        let m = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let w: Vec<f64> = s.iter().map(|&x| (x - m).exp()).collect();
        let sum: f64 = w.iter().sum();
        let mut out = vec![0.0f64; hd];
        let mut vmax = 0.0f64;
        for (i, &wi) in w.iter().enumerate() {
            for (o, x) in out.iter_mut().zip(&v[i * stride..i * stride + hd]) {
                *o += wi * x.to_f64() / sum;
                vmax = vmax.max(x.to_f64().abs());
            }
        }
        let eps = f32::EPSILON as f64;
        (out, 4.0 * vmax * (hd as f64 * eps * (mag + 1.0) + len as f64 * eps) + 1e-6)
    }

    #[test]
    fn f16_helpers_simd_match_scalar() {
        if !f16_simd() {
            eprintln!("SKIPPED: F16C attention helpers (CPU lacks AVX2/F16C)");
            return;
        }
        let a: Vec<f32> = (0..64).map(|i| (i as f32 * 0.29).sin()).collect();
        let b: Vec<half::f16> = (0..64).map(|i| half::f16::from_f32((i as f32 * 0.11).cos())).collect();
        assert!((dot_f32_f16(true, &a, &b) - dot_f32_f16(false, &a, &b)).abs() < 1e-4);
        let mut x1 = b.clone();
        let mut x2 = b.clone();
        mad_f16(true, &mut x1, &b, 0.37);
        mad_f16(false, &mut x2, &b, 0.37);
        scale_f16(true, &mut x1, 0.61);
        scale_f16(false, &mut x2, 0.61);
        // fma vs separate multiply-add may differ by one f16 rounding step.
        for (p, q) in x1.iter().zip(&x2) {
            assert!((p.to_f32() - q.to_f32()).abs() <= 2e-3 * q.to_f32().abs().max(1.0));
        }
        let mut f1 = a.clone();
        let mut f2 = a.clone();
        mad_f32_f16(true, &mut f1, &b, 0.5);
        mad_f32_f16(false, &mut f2, &b, 0.5);
        for (p, q) in f1.iter().zip(&f2) {
            assert!((p - q).abs() < 1e-6);
        }
    }

    #[test]
    fn attention_matches_naive() {
        let kern = Kernels::new(crate::cpu::Isa::Scalar).unwrap();
        let hd = 8;
        let len = 7;
        let stride = 16;
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.3).sin()).collect();
        let k: Vec<f32> = (0..len * stride).map(|i| (i as f32 * 0.17).cos()).collect();
        let v: Vec<f32> = (0..len * stride).map(|i| (i as f32 * 0.11).sin()).collect();
        let mut scores = vec![0.0; len];
        let mut out = vec![0.0; hd];
        attend(&kern, &q, &KvRows::contiguous(&k, &v, stride, len), 0.5, &mut scores, &mut out);
        let mut s: Vec<f32> = (0..len).map(|p| (0..hd).map(|d| q[d] * k[p * stride + d]).sum::<f32>() * 0.5).collect();
        softmax(&mut s);
        for d in 0..hd {
            let want: f32 = (0..len).map(|p| s[p] * v[p * stride + d]).sum();
            assert!((out[d] - want).abs() < 1e-5);
        }
    }

    /// Rows scattered over blocks in any order (the paged cache) give bit for bit the
    /// results of the same rows in one buffer, on every path: the SIMD kernel for 1–5
    /// heads with both accumulators, the scalar two-pass and stepwise versions, and f32.
    /// Block sizes that do and do not divide the run lengths, windows that start and end
    /// inside a block, a single position.
    #[test]
    fn paged_rows_equal_contiguous_rows() {
        let kern = Kernels::best();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let hd = 64;
        for &bs in &[1usize, 3, 16, 32] {
            for &(start, len) in &[(0usize, 1usize), (0, 40), (5, 70), (31, 2), (17, 100)] {
                let positions = start + len;
                let nblocks = positions.div_ceil(bs);
                // Physical blocks in a scrambled order, with room for other data between
                // them (as other layers' and heads' rows are in the pool).
                let ids: Vec<u32> = (0..nblocks as u32).map(|b| (nblocks as u32 - 1 - b) * 2 + 1).collect();
                let block_stride = bs * hd + 40;
                let total = (2 * nblocks + 1) * block_stride;
                let mut k = vec![0.0f32; total];
                let mut v = vec![0.0f32; total];
                let mut kc = vec![0.0f32; len * hd];
                let mut vc = vec![0.0f32; len * hd];
                for p in 0..positions {
                    let at = ids[p / bs] as usize * block_stride + (p % bs) * hd;
                    for d in 0..hd {
                        let (x, y) = (rnd() * (1.0 + p as f32 * 0.03), rnd() * 2.0);
                        // f16-representable, so the f32 and f16 caches hold the same numbers.
                        let (x, y) = (half::f16::from_f32(x).to_f32(), half::f16::from_f32(y).to_f32());
                        (k[at + d], v[at + d]) = (x, y);
                        if p >= start {
                            (kc[(p - start) * hd + d], vc[(p - start) * hd + d]) = (x, y);
                        }
                    }
                }
                let paged = KvRows { k: &k[..], v: &v[..], stride: hd, block_size: bs, block_stride, blocks: &ids, start, len };
                assert_eq!(paged.runs().map(|r| r.1).sum::<usize>(), len);
                let flat = KvRows::contiguous(&kc[..], &vc[..], hd, len);
                let (k16, v16): (Vec<half::f16>, Vec<half::f16>) =
                    (k.iter().map(|&x| half::f16::from_f32(x)).collect(), v.iter().map(|&x| half::f16::from_f32(x)).collect());
                let (kc16, vc16): (Vec<half::f16>, Vec<half::f16>) =
                    (kc.iter().map(|&x| half::f16::from_f32(x)).collect(), vc.iter().map(|&x| half::f16::from_f32(x)).collect());
                let paged16 = KvRows { k: &k16[..], v: &v16[..], stride: hd, block_size: bs, block_stride, blocks: &ids, start, len };
                let flat16 = KvRows::contiguous(&kc16[..], &vc16[..], hd, len);
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                let case = format!("block {bs}, positions {start}..{positions}");
                for heads in 1..=5usize {
                    let q: Vec<f32> = (0..heads * hd).map(|_| rnd() * 3.0).collect();
                    for acc16 in [false, true] {
                        let mut sc = vec![0.0; attend_f16_heads_scratch(heads, hd, len)];
                        let (mut a, mut b) = (vec![0.0; heads * hd], vec![0.0; heads * hd]);
                        attend_f16_heads(&q, hd, &paged16, 0.125, acc16, &mut sc, &mut a);
                        attend_f16_heads(&q, hd, &flat16, 0.125, acc16, &mut sc, &mut b);
                        assert_eq!(bits(&a), bits(&b), "{case}, {heads} heads, f16 accumulator {acc16}");
                    }
                }
                let q: Vec<f32> = (0..hd).map(|_| rnd() * 3.0).collect();
                let mut sc = vec![0.0; attend_f16_scratch(hd, len).max(len)];
                let (mut a, mut b) = (vec![0.0; hd], vec![0.0; hd]);
                attend_f16_two_pass(&q, &paged16, 0.125, &mut sc, &mut a);
                attend_f16_two_pass(&q, &flat16, 0.125, &mut sc, &mut b);
                assert_eq!(bits(&a), bits(&b), "{case}, two-pass");
                attend_f16_stepwise(&q, &paged16, 0.125, true, &mut sc, &mut a);
                attend_f16_stepwise(&q, &flat16, 0.125, true, &mut sc, &mut b);
                assert_eq!(bits(&a), bits(&b), "{case}, stepwise");
                attend(&kern, &q, &paged, 0.125, &mut sc, &mut a);
                attend(&kern, &q, &flat, 0.125, &mut sc, &mut b);
                assert_eq!(bits(&a), bits(&b), "{case}, f32");
            }
        }
    }

    #[test]
    #[should_panic(expected = "needs block")]
    fn rows_past_the_block_table_are_refused() {
        let k = [half::f16::ZERO; 64];
        let rows = KvRows { k: &k[..], v: &k[..], stride: 8, block_size: 4, block_stride: 32, blocks: &[0], start: 0, len: 5 };
        let mut sc = vec![0.0; attend_f16_scratch(8, 5)];
        let mut out = vec![0.0; 8];
        attend_f16(&[0.5; 8], &rows, 1.0, false, &mut sc, &mut out);
    }
}
