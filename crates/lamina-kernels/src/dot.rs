//! Dot products between one weight row and up to four activation rows.
//!
//! Processing several activation rows per weight row lets the kernel unpack each weight
//! block once and reuse it (prefill and batched decode); decode of one sequence uses one
//! column. Every kernel exists as a scalar reference and, on x86-64, as AVX2 and AVX2+VNNI
//! versions selected at run time; tests compare them on random data.
//!
//! Integer kernels follow llama.cpp's arithmetic: per block, an exact integer dot product
//! of the 4/8-bit weights with 8-bit activations, scaled by `d_w * d_x` in f32.

use crate::quant::*;

/// Most activation rows one kernel call handles.
pub const MAX_COLS: usize = 4;

/// `out[c] = dot(w, x[c*stride .. c*stride + w.len()])` for `c < out.len() <= 4`.
pub type DotFn<W, X> = fn(w: &[W], x: &[X], stride: usize, out: &mut [f32]);

#[inline]
fn nibbles(qs: &[u8; 16], j: usize) -> (i32, i32) {
    ((qs[j] & 0x0F) as i32, (qs[j] >> 4) as i32)
}

pub fn dot_q4_0_q8_0_scalar(w: &[BlockQ4_0], x: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        let mut sum = 0.0f32;
        for (bw, bx) in w.iter().zip(xs) {
            let mut isum = 0i32;
            for j in 0..16 {
                let (lo, hi) = nibbles(&bw.qs, j);
                isum += (lo - 8) * bx.qs[j] as i32 + (hi - 8) * bx.qs[j + 16] as i32;
            }
            sum += isum as f32 * (bw.d.to_f32() * bx.d.to_f32());
        }
        *o = sum;
    }
}

pub fn dot_q4_1_q8_1_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        let mut sum = 0.0f32;
        for (bw, bx) in w.iter().zip(xs) {
            let mut isum = 0i32;
            for j in 0..16 {
                let (lo, hi) = nibbles(&bw.qs, j);
                isum += lo * bx.qs[j] as i32 + hi * bx.qs[j + 16] as i32;
            }
            sum += isum as f32 * (bw.d.to_f32() * bx.d.to_f32()) + bw.m.to_f32() * bx.s.to_f32();
        }
        *o = sum;
    }
}

pub fn dot_q5_0_q8_0_scalar(w: &[BlockQ5_0], x: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        let mut sum = 0.0f32;
        for (bw, bx) in w.iter().zip(xs) {
            let qh = u32::from_le_bytes(bw.qh);
            let mut isum = 0i32;
            for j in 0..16 {
                let (lo, hi) = nibbles(&bw.qs, j);
                let lo = lo | (((qh >> j) & 1) << 4) as i32;
                let hi = hi | (((qh >> (j + 16)) & 1) << 4) as i32;
                isum += (lo - 16) * bx.qs[j] as i32 + (hi - 16) * bx.qs[j + 16] as i32;
            }
            sum += isum as f32 * (bw.d.to_f32() * bx.d.to_f32());
        }
        *o = sum;
    }
}

pub fn dot_q5_1_q8_1_scalar(w: &[BlockQ5_1], x: &[BlockQ8_1], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        let mut sum = 0.0f32;
        for (bw, bx) in w.iter().zip(xs) {
            let qh = u32::from_le_bytes(bw.qh);
            let mut isum = 0i32;
            for j in 0..16 {
                let (lo, hi) = nibbles(&bw.qs, j);
                let lo = lo | (((qh >> j) & 1) << 4) as i32;
                let hi = hi | (((qh >> (j + 16)) & 1) << 4) as i32;
                isum += lo * bx.qs[j] as i32 + hi * bx.qs[j + 16] as i32;
            }
            sum += isum as f32 * (bw.d.to_f32() * bx.d.to_f32()) + bw.m.to_f32() * bx.s.to_f32();
        }
        *o = sum;
    }
}

pub fn dot_q8_0_q8_0_scalar(w: &[BlockQ8_0], x: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        let mut sum = 0.0f32;
        for (bw, bx) in w.iter().zip(xs) {
            let isum: i32 = bw.qs.iter().zip(&bx.qs).map(|(&a, &b)| a as i32 * b as i32).sum();
            sum += isum as f32 * (bw.d.to_f32() * bx.d.to_f32());
        }
        *o = sum;
    }
}

/// Sum over the 8 sub-blocks of a Q4_K / Q5_K block of `m[j] * sum(x in sub-block j)`,
/// from the activation block's sums of 16.
#[inline]
fn mins_dot(mn: &[u8], bx: &BlockQ8K) -> i32 {
    (0..8).map(|j| mn[j] as i32 * (bx.bsums[2 * j] as i32 + bx.bsums[2 * j + 1] as i32)).sum()
}

/// One Q4_K / Q5_K block against one Q8_K block: the exact integer sums
/// `sum_j sc[j] * dot(q_j, x_j)` and `sum_j m[j] * sum(x_j)` over the 8 sub-blocks
/// (`qh`: the fifth bits of Q5_K, bit `j` of `qh[l]` for value `32j + l`).
#[inline]
fn q45k_block_sums(scales: &[u8; 12], qs: &[u8; 128], qh: Option<&[u8; 32]>, bx: &BlockQ8K) -> (i32, i32) {
    let sm = scales_mins_k4(scales);
    let (sc, mn) = sm.split_at(8);
    let mut isum = 0i32;
    for (j, (&scale, xj)) in sc.iter().zip(bx.qs.chunks_exact(32)).enumerate() {
        let (chunk, high) = (j / 2, j % 2 == 1);
        let mut s = 0i32;
        for (l, &xv) in xj.iter().enumerate() {
            let byte = qs[32 * chunk + l];
            let nib = if high { byte >> 4 } else { byte & 0x0F };
            let q = nib | qh.map_or(0, |h| ((h[l] >> j) & 1) << 4);
            s += q as i32 * xv as i32;
        }
        isum += scale as i32 * s;
    }
    (isum, mins_dot(mn, bx))
}

/// Q4_K × Q8_K: per block `d_x * (d * isum - dmin * msum)` in f32 from the exact integer
/// sums of [`q45k_block_sums`], as llama.cpp.
pub fn dot_q4_k_q8_k_scalar(w: &[BlockQ4K], x: &[BlockQ8K], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        *o = w.iter().zip(xs).fold(0.0f32, |sum, (bw, bx)| {
            let (isum, msum) = q45k_block_sums(&bw.scales, &bw.qs, None, bx);
            sum + bx.d * (bw.d.to_f32() * isum as f32 - bw.dmin.to_f32() * msum as f32)
        });
    }
}

/// Q5_K × Q8_K (Q4_K with a fifth bit per value).
pub fn dot_q5_k_q8_k_scalar(w: &[BlockQ5K], x: &[BlockQ8K], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        *o = w.iter().zip(xs).fold(0.0f32, |sum, (bw, bx)| {
            let (isum, msum) = q45k_block_sums(&bw.scales, &bw.qs, Some(&bw.qh), bx);
            sum + bx.d * (bw.d.to_f32() * isum as f32 - bw.dmin.to_f32() * msum as f32)
        });
    }
}

/// Q6_K × Q8_K: per block the exact `sum_g sc[g] * dot(q_g - 32, x_g)` over the 16
/// sub-blocks of 16, times `d * d_x`.
pub fn dot_q6_k_q8_k_scalar(w: &[BlockQ6K], x: &[BlockQ8K], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        let mut sum = 0.0f32;
        for (bw, bx) in w.iter().zip(xs) {
            let mut isum = 0i32;
            for g in 0..16 {
                let s: i32 = (16 * g..16 * g + 16).map(|k| (q6_k_value(bw, k) - 32) * bx.qs[k] as i32).sum();
                isum += bw.scales[g] as i32 * s;
            }
            sum += bx.d * bw.d.to_f32() * isum as f32;
        }
        *o = sum;
    }
}

pub fn dot_f32_scalar(w: &[f32], x: &[f32], stride: usize, out: &mut [f32]) {
    for (c, o) in out.iter_mut().enumerate() {
        let xs = &x[c * stride..c * stride + w.len()];
        // Eight partial sums, like the SIMD versions, to keep rounding comparable.
        let mut acc = [0.0f32; 8];
        let chunks = w.len() / 8;
        for i in 0..chunks {
            for k in 0..8 {
                acc[k] += w[i * 8 + k] * xs[i * 8 + k];
            }
        }
        let mut sum: f32 = acc.iter().sum();
        for i in chunks * 8..w.len() {
            sum += w[i] * xs[i];
        }
        *o = sum;
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! AVX2 (+ FMA, F16C) kernels, and the same kernels with `vpdpbusd` (VNNI) for the
    //! u8×i8 multiply-add.
    use super::super::quant::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn h2f(h: half::f16) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h.to_bits() as i32)))
    }

    /// Horizontal sum of eight lanes: (lo + hi), then pairs, then the last two.
    #[inline(always)]
    pub(crate) unsafe fn hsum(v: __m256) -> f32 {
        let lo = _mm256_castps256_ps128(v);
        let hi = _mm256_extractf128_ps(v, 1);
        let s = _mm_add_ps(lo, hi);
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// Unpacks 16 bytes of nibbles into 32 bytes: low nibbles first, then high nibbles.
    #[inline(always)]
    unsafe fn unpack_nibbles(qs: *const u8) -> __m256i {
        let q = _mm_loadu_si128(qs as *const __m128i);
        let m = _mm_set1_epi8(0x0F);
        let lo = _mm_and_si128(q, m);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m);
        _mm256_set_m128i(hi, lo)
    }

    /// Expands the 32 high bits of a Q5 block to bytes 0x10 / 0x00.
    #[inline(always)]
    unsafe fn expand_bits(qh: [u8; 4]) -> __m256i {
        let bits = u32::from_le_bytes(qh) as i32;
        let v = _mm256_set1_epi32(bits);
        let shuf = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
        let bytes = _mm256_shuffle_epi8(v, shuf);
        let sel = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let hit = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, sel), sel);
        _mm256_and_si256(hit, _mm256_set1_epi8(0x10))
    }

    /// The safe entry point `$name` of a kernel `$inner::<N>` for `N` = 1..=4 columns.
    macro_rules! by_cols {
        ($name:ident, $inner:ident, $w:ty, $x:ty) => {
            pub fn $name(w: &[$w], x: &[$x], stride: usize, out: &mut [f32]) {
                let n = out.len();
                assert!(n <= 4 && (n == 0 || (n - 1) * stride + w.len() <= x.len()));
                // SAFETY: bounds checked above; the CPU features were detected by the caller
                // (these functions are only handed out by `Kernels::new` for a supported Isa).
                unsafe {
                    match n {
                        1 => $inner::<1>(w, x, stride, out),
                        2 => $inner::<2>(w, x, stride, out),
                        3 => $inner::<3>(w, x, stride, out),
                        4 => $inner::<4>(w, x, stride, out),
                        _ => {}
                    }
                }
            }
        };
    }

    macro_rules! int_kernels {
        ($feat:literal, $madd:ident, $suffix:ident) => {
            pub mod $suffix {
                use super::*;

                /// u8 × i8 pairwise products summed into i32 lanes.
                #[inline(always)]
                unsafe fn dot_u8i8(a: __m256i, b: __m256i) -> __m256i {
                    $madd(a, b)
                }

                /// i8 × i8 via the sign trick: |a| × (b with a's sign).
                #[inline(always)]
                unsafe fn dot_i8i8(a: __m256i, b: __m256i) -> __m256i {
                    dot_u8i8(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a))
                }

                #[target_feature(enable = $feat)]
                unsafe fn q4_1_n<const N: usize>(w: &[BlockQ4_1], x: &[BlockQ8_1], stride: usize, out: &mut [f32]) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    let mut summ = [0.0f32; N];
                    for i in 0..w.len() {
                        let bw = w.get_unchecked(i);
                        let d = h2f(bw.d);
                        let m = h2f(bw.m);
                        let q = unpack_nibbles(bw.qs.as_ptr());
                        for c in 0..N {
                            let bx = x.get_unchecked(c * stride + i);
                            let y = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
                            let p = _mm256_cvtepi32_ps(dot_u8i8(q, y));
                            acc[c] = _mm256_fmadd_ps(p, _mm256_set1_ps(d * h2f(bx.d)), acc[c]);
                            summ[c] += m * h2f(bx.s);
                        }
                    }
                    for c in 0..N {
                        out[c] = hsum(acc[c]) + summ[c];
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn q4_0_n<const N: usize>(w: &[BlockQ4_0], x: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    let eight = _mm256_set1_epi8(8);
                    for i in 0..w.len() {
                        let bw = w.get_unchecked(i);
                        let d = h2f(bw.d);
                        let q = _mm256_sub_epi8(unpack_nibbles(bw.qs.as_ptr()), eight);
                        for c in 0..N {
                            let bx = x.get_unchecked(c * stride + i);
                            let y = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
                            let p = _mm256_cvtepi32_ps(dot_i8i8(q, y));
                            acc[c] = _mm256_fmadd_ps(p, _mm256_set1_ps(d * h2f(bx.d)), acc[c]);
                        }
                    }
                    for c in 0..N {
                        out[c] = hsum(acc[c]);
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn q5_0_n<const N: usize>(w: &[BlockQ5_0], x: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    let sixteen = _mm256_set1_epi8(16);
                    for i in 0..w.len() {
                        let bw = w.get_unchecked(i);
                        let d = h2f(bw.d);
                        let q = _mm256_or_si256(unpack_nibbles(bw.qs.as_ptr()), expand_bits(bw.qh));
                        let q = _mm256_sub_epi8(q, sixteen);
                        for c in 0..N {
                            let bx = x.get_unchecked(c * stride + i);
                            let y = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
                            let p = _mm256_cvtepi32_ps(dot_i8i8(q, y));
                            acc[c] = _mm256_fmadd_ps(p, _mm256_set1_ps(d * h2f(bx.d)), acc[c]);
                        }
                    }
                    for c in 0..N {
                        out[c] = hsum(acc[c]);
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn q5_1_n<const N: usize>(w: &[BlockQ5_1], x: &[BlockQ8_1], stride: usize, out: &mut [f32]) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    let mut summ = [0.0f32; N];
                    for i in 0..w.len() {
                        let bw = w.get_unchecked(i);
                        let d = h2f(bw.d);
                        let m = h2f(bw.m);
                        let q = _mm256_or_si256(unpack_nibbles(bw.qs.as_ptr()), expand_bits(bw.qh));
                        for c in 0..N {
                            let bx = x.get_unchecked(c * stride + i);
                            let y = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
                            let p = _mm256_cvtepi32_ps(dot_u8i8(q, y));
                            acc[c] = _mm256_fmadd_ps(p, _mm256_set1_ps(d * h2f(bx.d)), acc[c]);
                            summ[c] += m * h2f(bx.s);
                        }
                    }
                    for c in 0..N {
                        out[c] = hsum(acc[c]) + summ[c];
                    }
                }

                #[target_feature(enable = $feat)]
                unsafe fn q8_0_n<const N: usize>(w: &[BlockQ8_0], x: &[BlockQ8_0], stride: usize, out: &mut [f32]) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    for i in 0..w.len() {
                        let bw = w.get_unchecked(i);
                        let d = h2f(bw.d);
                        let q = _mm256_loadu_si256(bw.qs.as_ptr() as *const __m256i);
                        for c in 0..N {
                            let bx = x.get_unchecked(c * stride + i);
                            let y = _mm256_loadu_si256(bx.qs.as_ptr() as *const __m256i);
                            let p = _mm256_cvtepi32_ps(dot_i8i8(q, y));
                            acc[c] = _mm256_fmadd_ps(p, _mm256_set1_ps(d * h2f(bx.d)), acc[c]);
                        }
                    }
                    for c in 0..N {
                        out[c] = hsum(acc[c]);
                    }
                }

                by_cols!(dot_q4_1_q8_1, q4_1_n, BlockQ4_1, BlockQ8_1);
                by_cols!(dot_q4_0_q8_0, q4_0_n, BlockQ4_0, BlockQ8_0);
                by_cols!(dot_q5_0_q8_0, q5_0_n, BlockQ5_0, BlockQ8_0);
                by_cols!(dot_q5_1_q8_1, q5_1_n, BlockQ5_1, BlockQ8_1);
                by_cols!(dot_q8_0_q8_0, q8_0_n, BlockQ8_0, BlockQ8_0);
            }
        };
    }

    /// Moves bit `k` (0..8) of every byte to bit 4 (the other bits are left over; mask with
    /// 0x10). 16-bit shifts carry bits across bytes, but never into bit 4 for these counts.
    #[inline(always)]
    pub(crate) unsafe fn bit_to_4(h: __m256i, k: usize) -> __m256i {
        match k {
            0 => _mm256_slli_epi16(h, 4),
            1 => _mm256_slli_epi16(h, 3),
            2 => _mm256_slli_epi16(h, 2),
            3 => _mm256_slli_epi16(h, 1),
            4 => h,
            5 => _mm256_srli_epi16(h, 1),
            6 => _mm256_srli_epi16(h, 2),
            _ => _mm256_srli_epi16(h, 3),
        }
    }

    /// Splits 32 bytes of nibble pairs into their low and their high nibbles; with `FIVE`,
    /// adds as bit 4 bit `2j` (to the low) and bit `2j + 1` (to the high) of each byte of `h`.
    #[inline(always)]
    pub(crate) unsafe fn split_nibbles<const FIVE: bool>(v: __m256i, h: __m256i, j: usize) -> (__m256i, __m256i) {
        let mask = _mm256_set1_epi8(0x0F);
        let lo = _mm256_and_si256(v, mask);
        let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
        if !FIVE {
            return (lo, hi);
        }
        let bit4 = _mm256_set1_epi8(0x10);
        (_mm256_or_si256(lo, _mm256_and_si256(bit_to_4(h, 2 * j), bit4)), _mm256_or_si256(hi, _mm256_and_si256(bit_to_4(h, 2 * j + 1), bit4)))
    }

    pub mod kquant {
        //! K-quant × Q8_K kernels (AVX2). The per-sub-block scales are applied by a 16-bit
        //! multiply-add (`vpmaddwd`) of the `vpmaddubsw` products, so VNNI's `vpdpbusd`,
        //! which sums straight to 32 bits, has nothing to save here: the VNNI path uses
        //! these kernels too.
        use super::*;

        /// `out[c] = hsum(acc[c]) - hsum(sub[c])`.
        #[inline(always)]
        unsafe fn finish<const N: usize>(acc: &[__m256; N], sub: &[__m256; N], out: &mut [f32]) {
            for c in 0..N {
                out[c] = hsum(acc[c]) - hsum(sub[c]);
            }
        }

        /// One Q4_K / Q5_K block (`qh` read only when `FIVE`) against block `i` of `N`
        /// activation columns: adds `d * d_x * sum_j sc[j] * dot(q_j, x_j)` to `acc[c]` and
        /// `dmin * d_x * sum_j m[j] * sum(x_j)` to `sub[c]` (8 lanes each).
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn q45k_block<const N: usize, const FIVE: bool>(
            d: half::f16,
            dmin: half::f16,
            scales: &[u8; 12],
            qs: *const u8,
            qh: *const u8,
            x: &[BlockQ8K],
            i: usize,
            stride: usize,
            acc: &mut [__m256; N],
            sub: &mut [__m256; N],
        ) {
            let sc = scales_mins_k4(scales);
            // 16 × i16: lanes 2j and 2j+1 hold m[j] (byte 8 + j), matching bsums 2j and 2j+1.
            let dup = _mm_setr_epi8(8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14, 15, 15);
            let mins = _mm256_cvtepu8_epi16(_mm_shuffle_epi8(_mm_loadu_si128(sc.as_ptr() as *const __m128i), dup));
            let h = if FIVE { _mm256_loadu_si256(qh as *const __m256i) } else { _mm256_setzero_si256() };
            let mut sumi = [_mm256_setzero_si256(); N];
            for j in 0..4 {
                // 32 bytes: values 64j..64j+32 (low nibbles) and 64j+32..64j+64 (high).
                let v = _mm256_loadu_si256(qs.add(32 * j) as *const __m256i);
                let (lo, hi) = split_nibbles::<FIVE>(v, h, j);
                let sl = _mm256_set1_epi16(sc[2 * j] as i16);
                let sh = _mm256_set1_epi16(sc[2 * j + 1] as i16);
                for (c, si) in sumi.iter_mut().enumerate() {
                    let y = x.get_unchecked(c * stride + i).qs.as_ptr().add(64 * j);
                    let y0 = _mm256_loadu_si256(y as *const __m256i);
                    let y1 = _mm256_loadu_si256(y.add(32) as *const __m256i);
                    // Pair sums below 2·31·127, times a 6-bit scale: no overflow.
                    let p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, y0), sl);
                    let p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, y1), sh);
                    *si = _mm256_add_epi32(*si, _mm256_add_epi32(p0, p1));
                }
            }
            let (dw, mw) = (h2f(d), h2f(dmin));
            for c in 0..N {
                let bx = x.get_unchecked(c * stride + i);
                let bs = _mm256_loadu_si256(bx.bsums.as_ptr() as *const __m256i);
                let msum = _mm256_madd_epi16(bs, mins);
                acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi[c]), _mm256_set1_ps(dw * bx.d), acc[c]);
                sub[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(msum), _mm256_set1_ps(mw * bx.d), sub[c]);
            }
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn q4k_n<const N: usize>(w: &[BlockQ4K], x: &[BlockQ8K], stride: usize, out: &mut [f32]) {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut sub = [_mm256_setzero_ps(); N];
            for (i, b) in w.iter().enumerate() {
                let qs = b.qs.as_ptr();
                q45k_block::<N, false>(b.d, b.dmin, &b.scales, qs, qs, x, i, stride, &mut acc, &mut sub);
            }
            finish(&acc, &sub, out);
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn q5k_n<const N: usize>(w: &[BlockQ5K], x: &[BlockQ8K], stride: usize, out: &mut [f32]) {
            let mut acc = [_mm256_setzero_ps(); N];
            let mut sub = [_mm256_setzero_ps(); N];
            for (i, b) in w.iter().enumerate() {
                q45k_block::<N, true>(b.d, b.dmin, &b.scales, b.qs.as_ptr(), b.qh.as_ptr(), x, i, stride, &mut acc, &mut sub);
            }
            finish(&acc, &sub, out);
        }

        #[target_feature(enable = "avx2,fma,f16c")]
        unsafe fn q6k_n<const N: usize>(w: &[BlockQ6K], x: &[BlockQ8K], stride: usize, out: &mut [f32]) {
            let mut acc = [_mm256_setzero_ps(); N];
            let mask = _mm256_set1_epi8(0x0F);
            let m30 = _mm256_set1_epi8(0x30);
            // Per 32-bit lane: low 128 bits take its first i16, high 128 bits its second.
            let pick = _mm256_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3, 2, 3);
            for (i, b) in w.iter().enumerate() {
                // 16 × i16 sub-block scales; scales 2m and 2m+1 share 32-bit lane m.
                let sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.scales.as_ptr() as *const __m128i));
                let mut sumi = [_mm256_setzero_si256(); N];
                for h in 0..2 {
                    let qh = _mm256_loadu_si256(b.qh.as_ptr().add(32 * h) as *const __m256i);
                    let ql0 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * h) as *const __m256i);
                    let ql1 = _mm256_loadu_si256(b.ql.as_ptr().add(64 * h + 32) as *const __m256i);
                    // Quarter k: 32 values 128h + 32k.., bits 2k..2k+2 of qh to bits 4-5.
                    let q = [
                        _mm256_or_si256(_mm256_and_si256(ql0, mask), _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)),
                        _mm256_or_si256(_mm256_and_si256(ql1, mask), _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql0, 4), mask), _mm256_and_si256(qh, m30)),
                        _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(ql1, 4), mask), _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)),
                    ];
                    for (k, &qk) in q.iter().enumerate() {
                        // Scales 8h+2k (values 0..16 of the quarter) and 8h+2k+1 (16..32).
                        let lane = _mm256_permutevar8x32_epi32(sc16, _mm256_set1_epi32((4 * h + k) as i32));
                        let sv = _mm256_shuffle_epi8(lane, pick);
                        for (c, si) in sumi.iter_mut().enumerate() {
                            let y = x.get_unchecked(c * stride + i).qs.as_ptr().add(128 * h + 32 * k);
                            let p = _mm256_maddubs_epi16(qk, _mm256_loadu_si256(y as *const __m256i));
                            *si = _mm256_add_epi32(*si, _mm256_madd_epi16(p, sv));
                        }
                    }
                }
                let d = h2f(b.d);
                for c in 0..N {
                    let bx = x.get_unchecked(c * stride + i);
                    // The -32 offset of the values: 32 * sum_g sc[g] * sum(x_g).
                    let off = _mm256_madd_epi16(_mm256_loadu_si256(bx.bsums.as_ptr() as *const __m256i), sc16);
                    let t = _mm256_sub_epi32(sumi[c], _mm256_slli_epi32(off, 5));
                    acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(t), _mm256_set1_ps(d * bx.d), acc[c]);
                }
            }
            for c in 0..N {
                out[c] = hsum(acc[c]);
            }
        }

        by_cols!(dot_q4_k_q8_k, q4k_n, BlockQ4K, BlockQ8K);
        by_cols!(dot_q5_k_q8_k, q5k_n, BlockQ5K, BlockQ8K);
        by_cols!(dot_q6_k_q8_k, q6k_n, BlockQ6K, BlockQ8K);
    }

    #[inline(always)]
    unsafe fn madd_avx2(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), _mm256_set1_epi16(1))
    }

    #[inline(always)]
    unsafe fn madd_vnni(a: __m256i, b: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), a, b)
    }

    int_kernels!("avx2,fma,f16c", madd_avx2, avx2);
    int_kernels!("avx2,fma,f16c,avx512vnni,avx512vl", madd_vnni, vnni);

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::needless_range_loop)] // `c` indexes the accumulators and the columns of `x`
    unsafe fn f32_n<const N: usize>(w: &[f32], x: &[f32], stride: usize, out: &mut [f32]) {
        let n = w.len();
        let chunks = n / 8;
        let mut acc = [_mm256_setzero_ps(); N];
        for i in 0..chunks {
            let wv = _mm256_loadu_ps(w.as_ptr().add(i * 8));
            for c in 0..N {
                let xv = _mm256_loadu_ps(x.as_ptr().add(c * stride + i * 8));
                acc[c] = _mm256_fmadd_ps(wv, xv, acc[c]);
            }
        }
        for c in 0..N {
            let mut s = hsum(acc[c]);
            for i in chunks * 8..n {
                s += w[i] * x[c * stride + i];
            }
            out[c] = s;
        }
    }

    pub fn dot_f32(w: &[f32], x: &[f32], stride: usize, out: &mut [f32]) {
        let n = out.len();
        assert!(n <= 4 && (n == 0 || (n - 1) * stride + w.len() <= x.len()));
        // SAFETY: bounds checked above; only handed out when AVX2+FMA are present.
        unsafe {
            match n {
                1 => f32_n::<1>(w, x, stride, out),
                2 => f32_n::<2>(w, x, stride, out),
                3 => f32_n::<3>(w, x, stride, out),
                4 => f32_n::<4>(w, x, stride, out),
                _ => {}
            }
        }
    }
}
