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

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
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
        let shuf = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bytes = _mm256_shuffle_epi8(v, shuf);
        let sel = _mm256_set1_epi64x(0x8040201008040201u64 as i64);
        let hit = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, sel), sel);
        _mm256_and_si256(hit, _mm256_set1_epi8(0x10))
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

                macro_rules! by_cols {
                    ($name:ident, $inner:ident, $w:ty, $x:ty) => {
                        pub fn $name(w: &[$w], x: &[$x], stride: usize, out: &mut [f32]) {
                            let n = out.len();
                            assert!(n <= 4 && (n == 0 || (n - 1) * stride + w.len() <= x.len()));
                            // SAFETY: bounds checked above; the CPU feature was detected by the caller
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
                by_cols!(dot_q4_1_q8_1, q4_1_n, BlockQ4_1, BlockQ8_1);
                by_cols!(dot_q4_0_q8_0, q4_0_n, BlockQ4_0, BlockQ8_0);
                by_cols!(dot_q5_0_q8_0, q5_0_n, BlockQ5_0, BlockQ8_0);
                by_cols!(dot_q5_1_q8_1, q5_1_n, BlockQ5_1, BlockQ8_1);
                by_cols!(dot_q8_0_q8_0, q8_0_n, BlockQ8_0, BlockQ8_0);
            }
        };
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
