//! Element-wise and row-wise operations of the transformer: normalisation, rotary
//! positions, softmax, activations, attention over a KV cache. They are small next to the
//! matrix products, so they are written as plain loops the compiler vectorises, fused where
//! that saves a pass over memory (SwiGLU, scale+softmax).

use crate::matmul::Kernels;

/// RMSNorm (Zhang & Sennrich 2019): `y = x / sqrt(mean(x²) + eps) * weight`, per row.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        // Sum of squares in f64, as ggml does; the scale itself in f32.
        let ss = (xr.iter().map(|&v| (v * v) as f64).sum::<f64>() / d as f64) as f32;
        let scale = 1.0 / (ss + eps).sqrt();
        for ((y, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
            *y = v * scale * w;
        }
    }
}

/// LayerNorm (Ba et al. 2016) with weight and bias, per row.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean: f32 = xr.iter().sum::<f32>() / d as f32;
        let var: f32 = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for (((y, &v), &w), &b) in yr.iter_mut().zip(xr).zip(weight).zip(bias) {
            *y = (v - mean) * scale * w + b;
        }
    }
}

/// Rotary position embedding (Su et al. 2021) applied in place to one vector of `heads`
/// heads of `head_dim`, rotating adjacent pairs `(2i, 2i+1)` of the first `rope_dim`
/// dimensions — the GGUF/llama.cpp layout (Hugging Face's "rotate_half" layout is
/// converted to it when weights are loaded).
pub fn rope_interleaved(v: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for h in 0..heads {
        let x = &mut v[h * head_dim..(h + 1) * head_dim];
        for i in 0..half {
            let (a, b) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = a * cos[i] - b * sin[i];
            x[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

/// Fills `cos`/`sin` (length `inv_freq.len()`) for position `pos`.
pub fn rope_angles(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let theta = pos as f32 * f;
        let (sn, cs) = theta.sin_cos();
        *c = cs;
        *s = sn;
    }
}

/// In-place softmax of one row; returns nothing, leaves a probability vector.
pub fn softmax(x: &mut [f32]) {
    let sum = softmax_weights(x);
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SwiGLU (Shazeer 2020): `gate = silu(gate) * up`, in place in `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "swiglu: gate and up lengths");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if f16_simd() {
        // SAFETY: AVX2/FMA detected; lengths checked above.
        done = unsafe { f16x86::swiglu(gate, up) };
    }
    swiglu_scalar(&mut gate[done..], &up[done..]);
}

/// [`swiglu`] without SIMD: the scalar twin of the vector version (same [`exp_poly`],
/// same operation order, so the same bits).
pub fn swiglu_scalar(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        *g = v / (1.0 + exp_poly(-v)) * u;
    }
}

/// Bounds of [`exp_poly`]'s argument: below `EXP_MIN` the result is 0 (the true value is
/// under the smallest normal f32), above `EXP_MAX` it is +inf (2^127 is the largest
/// power of two the exponent trick builds).
const EXP_MIN: f32 = -87.336_55;
const EXP_MAX: f32 = 88.376_26;
/// ln 2 split in a part exact in few bits and the rest (Cody-Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// Minimax polynomial for `(e^r - 1 - r) / r^2` on |r| <= ln2/2 (the coefficients of
/// Cephes' `expf`), highest degree first.
#[allow(clippy::excessive_precision)] // Cephes' coefficients, as published
const EXP_POLY: [f32; 6] = [1.987_569_1e-4, 1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 1.666_666_5e-1, 5.000_000_1e-1];

/// `e^x` by range reduction and a degree-7 polynomial, within 2 ulp of the true value for
/// normal results; written so that the AVX2 version (`f16x86::exp8`) computes the same
/// operations (every `mul_add` an FMA there) and so gives the same bits. libm's `expf`
/// is a call per value that cannot be vectorised: in SwiGLU and the attention softmax it
/// was ~6% of a decode step.
#[inline]
pub fn exp_poly(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_MIN {
        return 0.0;
    }
    if x > EXP_MAX {
        return f32::INFINITY;
    }
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_POLY[0];
    for &c in &EXP_POLY[1..] {
        p = p.mul_add(r, c);
    }
    let r2 = r * r;
    let y = p.mul_add(r2, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// GELU, tanh approximation (as GPT-2 uses), in place.
pub fn gelu(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// `acc += x`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Causal attention of one query head over `len` cached positions.
///
/// `q`: (head_dim); `k`, `v`: the cache of one layer, position-major with row stride
/// `kv_stride` floats, already offset to this head's kv group; `scores`: scratch of at
/// least `len`; `out`: (head_dim). Keys and values are each read once, in order.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kern: &Kernels,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_stride: usize,
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let scores = &mut scores[..len];
    let mut p = 0;
    while p < len {
        let c = (len - p).min(crate::dot::MAX_COLS);
        (kern.f32)(q, &k[p * kv_stride..], kv_stride, &mut scores[p..p + c]);
        p += c;
    }
    for s in scores.iter_mut() {
        *s *= scale;
    }
    softmax(scores);
    out[..hd].fill(0.0);
    for (i, &w) in scores.iter().enumerate() {
        let vr = &v[i * kv_stride..i * kv_stride + hd];
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += w * x;
        }
    }
}

/// Query tokens per batch from which llama.cpp switches its CPU flash attention from the
/// one-query-at-a-time path (f16 accumulation) to the tiled path (f32 accumulation).
pub const GGML_FA_TILE_Q: usize = 64;

/// Attention over an f16 KV cache, in one of two arithmetics.
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
/// `k`, `v`: `len` rows of stride `kv_stride` (f16), offset to the head's group.
/// `scratch` needs [`attend_f16_scratch`]`(head_dim, len)` floats.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16(
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    kv_stride: usize,
    len: usize,
    scale: f32,
    f16_accumulate: bool,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    attend_f16_heads(q, hd, k, v, kv_stride, len, scale, f16_accumulate, scratch, &mut out[..hd])
}

/// [`attend_f16`] for several query heads that share one key/value head (grouped-query
/// attention): `q` and `out` hold `q.len() / head_dim` heads back to back. Each head's
/// result is exactly [`attend_f16`]'s; the SIMD path converts each f16 key and value row
/// once for up to four heads instead of once per head (the conversions, not the
/// multiply-adds, bound this loop). `scratch` needs [`attend_f16_heads_scratch`] floats.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16_heads(
    q: &[f32],
    head_dim: usize,
    k: &[half::f16],
    v: &[half::f16],
    kv_stride: usize,
    len: usize,
    scale: f32,
    f16_accumulate: bool,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let hd = head_dim;
    assert!(hd > 0 && q.len().is_multiple_of(hd) && out.len() == q.len(), "attention heads: {} values, head size {hd}, output {}", q.len(), out.len());
    let heads = q.len() / hd;
    #[cfg(target_arch = "x86_64")]
    if f16_simd() && hd.is_multiple_of(8) && len > 0 && scratch.len() >= attend_f16_heads_scratch(heads, hd, len) {
        assert!(k.len() >= (len - 1) * kv_stride + hd && v.len() >= (len - 1) * kv_stride + hd, "KV rows out of range");
        // SAFETY: F16C/FMA/AVX2 were detected (`f16_simd`); lengths checked above.
        unsafe { f16x86::attend(q, hd, k, v, kv_stride, len, scale, f16_accumulate, scratch, out) };
        return;
    }
    for (qh, oh) in q.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
        if f16_accumulate {
            attend_f16_stepwise(qh, k, v, kv_stride, len, scale, true, scratch, oh)
        } else {
            attend_f16_two_pass(qh, k, v, kv_stride, len, scale, scratch, oh)
        }
    }
}

/// Attention over an f16 KV cache with f32 arithmetic and a plain softmax: all scores,
/// their maximum, the exponentials ([`exp_poly`]) and their sum, then the weighted sum of
/// value rows, divided once. The scalar counterpart of the SIMD path for
/// `f16_accumulate == false` (equal up to summation order). `scratch` needs `len` floats.
#[allow(clippy::too_many_arguments)]
pub fn attend_f16_two_pass(q: &[f32], k: &[half::f16], v: &[half::f16], kv_stride: usize, len: usize, scale: f32, scratch: &mut [f32], out: &mut [f32]) {
    let hd = q.len();
    let w = &mut scratch[..len];
    for (i, wi) in w.iter_mut().enumerate() {
        let krow = &k[i * kv_stride..i * kv_stride + hd];
        *wi = q.iter().zip(krow).map(|(&a, &b)| a * b.to_f32()).sum::<f32>() * scale;
    }
    let sum = softmax_weights(w);
    out.fill(0.0);
    for (i, &wi) in w.iter().enumerate() {
        for (o, x) in out.iter_mut().zip(&v[i * kv_stride..i * kv_stride + hd]) {
            *o += wi * x.to_f32();
        }
    }
    let inv = if sum == 0.0 { 0.0 } else { 1.0 / sum };
    for o in out.iter_mut() {
        *o *= inv;
    }
}

/// Softmax numerators in place, `w[i] = exp(w[i] - max(w))`, returning their sum (AVX2
/// when the CPU has it; the same bits as [`softmax_weights_scalar`] either way).
pub fn softmax_weights(w: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f16_simd() {
        // SAFETY: AVX2/FMA detected.
        return unsafe { f16x86::softmax_weights(w) };
    }
    softmax_weights_scalar(w)
}

/// [`softmax_weights`] without SIMD: sums kept in eight lanes and folded in the AVX2
/// version's order, so both give the same bits.
pub fn softmax_weights_scalar(w: &mut [f32]) -> f32 {
    let m = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let n8 = w.len() / 8 * 8;
    let mut lanes = [0.0f32; 8];
    for chunk in w[..n8].chunks_exact_mut(8) {
        for (l, x) in lanes.iter_mut().zip(chunk.iter_mut()) {
            *x = exp_poly(*x - m);
            *l += *x;
        }
    }
    // The AVX2 horizontal sum: halves, then pairs, then the last two.
    let h: [f32; 4] = std::array::from_fn(|i| lanes[i] + lanes[i + 4]);
    let mut sum = (h[0] + h[2]) + (h[1] + h[3]);
    for x in w[n8..].iter_mut() {
        *x = exp_poly(*x - m);
        sum += *x;
    }
    sum
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
#[allow(clippy::too_many_arguments)]
pub fn attend_f16_stepwise(
    q: &[f32],
    k: &[half::f16],
    v: &[half::f16],
    kv_stride: usize,
    len: usize,
    scale: f32,
    f16_accumulate: bool,
    scratch: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
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
    for i in 0..len {
        let krow = &k[i * kv_stride..i * kv_stride + hd];
        let vrow = &v[i * kv_stride..i * kv_stride + hd];
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

/// Whether the F16C+FMA versions of the f16 helpers can run here (checked once).
fn f16_simd() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        use std::sync::OnceLock;
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| crate::cpu::Isa::Avx2.supported() && crate::cpu::Isa::best() != crate::cpu::Isa::Scalar)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `Σ a[i] * b[i]` with f16 `b`, summed in f32.
pub fn dot_f32_f16(simd: bool, a: &[f32], b: &[half::f16]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if simd && a.len().is_multiple_of(8) {
        // SAFETY: `simd` is only true when AVX2, FMA and F16C were detected.
        return unsafe { f16x86::dot(a, b) };
    }
    let _ = simd;
    a.iter().zip(b).map(|(x, y)| x * y.to_f32()).sum()
}

/// `acc = f16(acc * s)` element-wise.
pub fn scale_f16(simd: bool, acc: &mut [half::f16], s: f32) {
    #[cfg(target_arch = "x86_64")]
    if simd && acc.len().is_multiple_of(8) {
        // SAFETY: see `dot_f32_f16`.
        return unsafe { f16x86::scale(acc, s) };
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
        return unsafe { f16x86::mad(acc, v, s) };
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
        return unsafe { f16x86::mad_f32(acc, v, s) };
    }
    let _ = simd;
    for (a, x) in acc.iter_mut().zip(v) {
        *a += x.to_f32() * s;
    }
}

#[cfg(target_arch = "x86_64")]
mod f16x86 {
    //! F16C + FMA versions of the f16 attention helpers (lengths are multiples of 8).
    use std::arch::x86_64::*;

    // The quantized kernels' horizontal sum: the same operation order as [`dot`], so per
    // head and position the scores below equal `dot`'s bit for bit.
    use crate::dot::x86::hsum;

    /// Eight [`super::exp_poly`]s at once (the same operations, so the same bits).
    #[inline(always)]
    pub unsafe fn exp8(x: __m256) -> __m256 {
        use super::{EXP_MAX, EXP_MIN, EXP_POLY, LN2_HI, LN2_LO};
        let xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_MIN)), _mm256_set1_ps(EXP_MAX));
        let n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(std::f32::consts::LOG2_E)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_HI), xc);
        let r = _mm256_fmadd_ps(n, _mm256_set1_ps(-LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_POLY[0]);
        for &c in &EXP_POLY[1..] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let r2 = _mm256_mul_ps(r, r);
        let y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
        let e = _mm256_mul_ps(y, pow2);
        // Out of range: 0 below, +inf above; NaN stays NaN.
        let e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_cmp_ps(x, _mm256_set1_ps(EXP_MIN), _CMP_LT_OQ));
        let e = _mm256_blendv_ps(e, _mm256_set1_ps(f32::INFINITY), _mm256_cmp_ps(x, _mm256_set1_ps(EXP_MAX), _CMP_GT_OQ));
        _mm256_blendv_ps(e, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q))
    }

    /// SwiGLU on the leading multiple of 8 values; returns how many it did.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn swiglu(gate: &mut [f32], up: &[f32]) -> usize {
        let n = gate.len() / 8 * 8;
        let one = _mm256_set1_ps(1.0);
        let neg = _mm256_set1_ps(-0.0);
        for i in (0..n).step_by(8) {
            let g = gate.as_mut_ptr().add(i);
            let v = _mm256_loadu_ps(g);
            let e = exp8(_mm256_xor_ps(v, neg));
            let y = _mm256_mul_ps(_mm256_div_ps(v, _mm256_add_ps(one, e)), _mm256_loadu_ps(up.as_ptr().add(i)));
            _mm256_storeu_ps(g, y);
        }
        n
    }

    /// Softmax numerators in place: `w[i] = exp(w[i] - max)`; returns their sum (the
    /// scalar twin is [`super::softmax_weights_scalar`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn softmax_weights(w: &mut [f32]) -> f32 {
        let n = w.len();
        let n8 = n / 8 * 8;
        let p = w.as_mut_ptr();
        let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
        for i in (0..n8).step_by(8) {
            mv = _mm256_max_ps(mv, _mm256_loadu_ps(p.add(i)));
        }
        let mut m = hmax(mv);
        for i in n8..n {
            m = m.max(*p.add(i));
        }
        let mb = _mm256_set1_ps(m);
        let mut sv = _mm256_setzero_ps();
        for i in (0..n8).step_by(8) {
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), mb));
            _mm256_storeu_ps(p.add(i), e);
            sv = _mm256_add_ps(sv, e);
        }
        let mut sum = hsum(sv);
        for i in n8..n {
            let e = super::exp_poly(*p.add(i) - m);
            *p.add(i) = e;
            sum += e;
        }
        sum
    }

    /// Largest of eight lanes.
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }

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

    /// f32 → f16 → f32 (round to nearest even), what a store to and load from the f16
    /// accumulator does.
    #[inline(always)]
    unsafe fn round16(x: __m256) -> __m256 {
        _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT))
    }

    /// Scores of `H` heads (queries `q`, `hd` apart) against positions `i..i + P` (rows
    /// `stride` apart from `k`), each key vector converted once for all heads; per head
    /// and position the arithmetic of [`dot_inline`]. Writes `w[h * wstride + i + p]`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scores<const H: usize, const P: usize>(
        q: *const f32,
        hd: usize,
        k: *const half::f16,
        v: *const half::f16,
        stride: usize,
        i: usize,
        scale: f32,
        w: *mut f32,
        wstride: usize,
    ) {
        let mut acc = [[_mm256_setzero_ps(); P]; H];
        // The cache rows are spread over the KV cache (one row per position, the other
        // heads' in between) and read once per step, so they come from L3 or memory:
        // fetch a few positions ahead.
        // The value rows are fetched here too, for the value pass.
        for p in 0..P {
            let ahead = k.wrapping_add((i + p + AHEAD) * stride) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(2 * hd - 1));
            let ahead = v.wrapping_add((i + p + AHEAD) * stride) as *const i8;
            _mm_prefetch::<_MM_HINT_T1>(ahead);
            _mm_prefetch::<_MM_HINT_T1>(ahead.wrapping_add(2 * hd - 1));
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
    /// `w`/`ms` + `h * wstride`; its sums go to `out + h * hd + d0`.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn values<const H: usize, const D: usize, const F16: bool, const RESCALE: bool>(
        v: *const half::f16,
        stride: usize,
        len: usize,
        d0: usize,
        w: *const f32,
        ms: *const f32,
        wstride: usize,
        hd: usize,
        out: *mut f32,
    ) {
        let mut acc = [[_mm256_setzero_ps(); D]; H];
        for i in 0..len {
            // See `scores`: the first pass over the rows brings them in, later ones (the
            // next dimensions) find them in cache.
            let ahead = v.wrapping_add((i + AHEAD) * stride + d0) as *const i8;
            _mm_prefetch::<_MM_HINT_T0>(ahead);
            _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(16 * D - 1));
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
        for (h, ah) in acc.iter().enumerate() {
            for (j, a) in ah.iter().enumerate() {
                _mm256_storeu_ps(out.add(h * hd + d0 + 8 * j), *a);
            }
        }
    }

    /// The three-pass [`super::attend_f16_heads`] (`hd` a multiple of 8, `len > 0`,
    /// scratch of `attend_f16_heads_scratch`, K/V rows in range: checked by the caller).
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn attend(
        q: &[f32],
        hd: usize,
        k: &[half::f16],
        v: &[half::f16],
        stride: usize,
        len: usize,
        scale: f32,
        f16_accumulate: bool,
        scratch: &mut [f32],
        out: &mut [f32],
    ) {
        let nh = q.len() / hd;
        let (qr, rest) = scratch.split_at_mut(nh * hd);
        let (w, rest) = rest.split_at_mut(nh * len);
        let ms = &mut rest[..nh * len];
        // The queries as the f16 dot product sees them.
        for i in (0..nh * hd).step_by(8) {
            let x = _mm256_loadu_ps(q.as_ptr().add(i));
            _mm256_storeu_ps(qr.as_mut_ptr().add(i), if f16_accumulate { round16(x) } else { x });
        }
        let (kp, vp) = (k.as_ptr(), v.as_ptr());
        // The cache rows of this head come from memory (a decode step streams ~100 MB of
        // weights through the caches between two visits of a layer), and the passes below
        // only prefetch `AHEAD` positions in front of themselves: fetch the first rows now,
        // so the first positions do not each wait a full memory latency.
        prefetch_rows(kp, vp, stride, len.min(AHEAD), hd);
        let mut sums = [0.0f32; 4];
        let mut h0 = 0;
        while h0 < nh {
            // Up to four heads per pass: their accumulators (and a few loaded vectors) fill
            // the sixteen registers.
            let hn = (nh - h0).min(4);
            let (qh, wh, mh, oh) = (qr.as_ptr().add(h0 * hd), w.as_mut_ptr().add(h0 * len), ms.as_mut_ptr().add(h0 * len), out.as_mut_ptr().add(h0 * hd));
            // Pass 1 (scores) for these heads, then pass 2, then pass 3.
            macro_rules! run {
                ($h:literal, $p:literal, $d:literal) => {{
                    let mut i = 0;
                    while i + $p <= len {
                        scores::<$h, $p>(qh, hd, kp, vp, stride, i, scale, wh, len);
                        i += $p;
                    }
                    while i < len {
                        scores::<$h, 1>(qh, hd, kp, vp, stride, i, scale, wh, len);
                        i += 1;
                    }
                    for (h, sum) in sums[..$h].iter_mut().enumerate() {
                        let w = std::slice::from_raw_parts_mut(wh.add(h * len), len);
                        *sum = if f16_accumulate {
                            softmax_factors(w, std::slice::from_raw_parts_mut(mh.add(h * len), len))
                        } else {
                            softmax_weights(w)
                        };
                    }
                    let nv = hd / 8;
                    let mut j = 0;
                    while j + $d <= nv {
                        if f16_accumulate {
                            values::<$h, $d, true, true>(vp, stride, len, 8 * j, wh, mh, len, hd, oh);
                        } else {
                            values::<$h, $d, false, false>(vp, stride, len, 8 * j, wh, mh, len, hd, oh);
                        }
                        j += $d;
                    }
                    while j < nv {
                        if f16_accumulate {
                            values::<$h, 1, true, true>(vp, stride, len, 8 * j, wh, mh, len, hd, oh);
                        } else {
                            values::<$h, 1, false, false>(vp, stride, len, 8 * j, wh, mh, len, hd, oh);
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
        attend(&kern, &q, &k, &v, stride, len, 0.25, &mut scores, &mut want);
        for acc16 in [false, true] {
            let mut scratch = vec![0.0; 3 * hd];
            let mut got = vec![0.0; hd];
            attend_f16(&q, &k16, &v16, stride, len, 0.25, acc16, &mut scratch, &mut got);
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
                    let k16: Vec<half::f16> =
                        (0..len * stride).map(|i| half::f16::from_f32(rnd() * (1.0 + (i / stride) as f32 * 0.05))).collect();
                    let v16: Vec<half::f16> = (0..len * stride).map(|_| half::f16::from_f32(rnd() * 3.0)).collect();
                    let kv = (len - 1) * stride + hd;
                    {
                        let mut s1 = vec![0.0; 3 * hd];
                        let mut want = vec![0.0; hd];
                        attend_f16_stepwise(&q, &k16[..kv], &v16[..kv], stride, len, 0.125, true, &mut s1, &mut want);
                        let mut s2 = vec![0.0; attend_f16_scratch(hd, len)];
                        let mut got = vec![0.0; hd];
                        attend_f16(&q, &k16[..kv], &v16[..kv], stride, len, 0.125, true, &mut s2, &mut got);
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
                        attend_f16_two_pass(&q, &k16[..kv], &v16[..kv], stride, len, 0.125, &mut s1, &mut scalar);
                        let mut got = vec![0.0; hd];
                        attend_f16(&q, &k16[..kv], &v16[..kv], stride, len, 0.125, false, &mut s1, &mut got);
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
                                attend_f16(qh, &k16[..kv], &v16[..kv], stride, len, 0.125, acc16, &mut s1, oh);
                            }
                            let mut s2 = vec![0.0; attend_f16_heads_scratch(heads, hd, len)];
                            let mut got = vec![0.0; heads * hd];
                            attend_f16_heads(&qs, hd, &k16[..kv], &v16[..kv], stride, len, 0.125, acc16, &mut s2, &mut got);
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

    /// `exp_poly` against f64 `exp`: within 2 ulp over the whole normal range, 0 below
    /// and +inf above it; the AVX2 version gives the same bits (and NaN for NaN).
    #[test]
    fn exp_poly_is_accurate_and_simd_matches() {
        let mut worst = 0.0f64;
        let mut x = -87.3f32;
        while x < 88.3 {
            let got = exp_poly(x) as f64;
            let want = (x as f64).exp();
            let ulp = (want as f32).abs() as f64 * f32::EPSILON as f64;
            worst = worst.max((got - want).abs() / ulp);
            x += 0.0137;
        }
        assert!(worst <= 2.0, "exp_poly off by {worst} ulp");
        assert_eq!(exp_poly(-100.0), 0.0);
        assert_eq!(exp_poly(100.0), f32::INFINITY);
        assert_eq!(exp_poly(0.0), 1.0);
        assert!(exp_poly(f32::NAN).is_nan());
        #[cfg(target_arch = "x86_64")]
        if f16_simd() {
            use std::arch::x86_64::*;
            let mut xs: Vec<f32> = (0..4000).map(|i| -95.0 + i as f32 * 0.0471).collect();
            xs.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, EXP_MIN, EXP_MAX, 1e-30]);
            while !xs.len().is_multiple_of(8) {
                xs.push(0.5);
            }
            for c in xs.chunks_exact(8) {
                let mut got = [0.0f32; 8];
                // SAFETY: AVX2/FMA detected.
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), f16x86::exp8(_mm256_loadu_ps(c.as_ptr()))) };
                for (&x, g) in c.iter().zip(got) {
                    let w = exp_poly(x);
                    assert!(g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()), "exp8({x}) = {g}, exp_poly = {w}");
                }
            }
            // SwiGLU and the softmax numerators: vector and scalar versions agree bit for bit
            // (lengths with tails).
            for n in [1usize, 7, 8, 9, 64, 77] {
                let g: Vec<f32> = (0..n).map(|i| ((i as f32) * 1.7).sin() * 12.0).collect();
                let u: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.3).cos()).collect();
                let mut a = g.clone();
                swiglu(&mut a, &u);
                let mut b = g.clone();
                swiglu_scalar(&mut b, &u);
                assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "swiglu n={n}");
                for (i, (&gv, &uv)) in g.iter().zip(&u).enumerate() {
                    let want = gv as f64 / (1.0 + (-gv as f64).exp()) * uv as f64;
                    assert!((a[i] as f64 - want).abs() <= 1e-6 * (1.0 + want.abs()), "swiglu {gv}: {} vs {want}", a[i]);
                }
                let mut a = g.clone();
                let mut b = g.clone();
                // SAFETY: AVX2/FMA detected.
                let sa = unsafe { f16x86::softmax_weights(&mut a) };
                let sb = softmax_weights_scalar(&mut b);
                assert_eq!(sa.to_bits(), sb.to_bits(), "softmax sum n={n}");
                assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "softmax n={n}");
            }
        } else {
            eprintln!("SKIPPED: AVX2 exp/SwiGLU/softmax (CPU lacks AVX2/FMA)");
        }
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
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0 && x[2] > x[1]);
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let inv = [1.0, 0.1, 0.01];
        let (mut c, mut s) = ([0.0; 3], [0.0; 3]);
        rope_angles(0, &inv, &mut c, &mut s);
        let mut v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope_interleaved(&mut v, 1, 6, &c, &s);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        rope_angles(7, &inv, &mut c, &mut s);
        rope_interleaved(&mut v, 1, 6, &c, &s);
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 91.0).abs() < 1e-3);
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
        attend(&kern, &q, &k, &v, stride, len, 0.5, &mut scores, &mut out);
        let mut s: Vec<f32> = (0..len).map(|p| (0..hd).map(|d| q[d] * k[p * stride + d]).sum::<f32>() * 0.5).collect();
        softmax(&mut s);
        for d in 0..hd {
            let want: f32 = (0..len).map(|p| s[p] * v[p * stride + d]).sum();
            assert!((out[d] - want).abs() < 1e-5);
        }
    }
}
