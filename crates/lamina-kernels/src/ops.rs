//! Element-wise and row-wise operations of the transformer: normalisation, rotary
//! positions, softmax, activations (attention has a module of its own). They are small next to the
//! matrix products, so they are written as plain loops the compiler vectorises, fused where
//! that saves a pass over memory (SwiGLU, scale+softmax).

/// RMSNorm (Zhang & Sennrich 2019): `y = x / sqrt(mean(x²) + eps) * weight`, per row.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let scale = rms_scale(xr, eps);
        for ((y, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
            *y = v * scale * w;
        }
    }
}

/// [`rms_norm`] in place.
pub fn rms_norm_in_place(x: &mut [f32], weight: &[f32], eps: f32) {
    let d = weight.len();
    for xr in x.chunks_exact_mut(d) {
        let scale = rms_scale(xr, eps);
        for (v, &w) in xr.iter_mut().zip(weight) {
            *v = *v * scale * w;
        }
    }
}

/// `1 / sqrt(mean(x²) + eps)`: the sum of squares in f64, as ggml does; the scale in f32.
fn rms_scale(x: &[f32], eps: f32) -> f32 {
    let ss = (x.iter().map(|&v| (v * v) as f64).sum::<f64>() / x.len() as f64) as f32;
    1.0 / (ss + eps).sqrt()
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

/// Rotary position embedding on half-split dimensions: dimension `i` pairs with
/// `i + rope_dim/2` (the layout Gemma's weights are stored in, llama.cpp's "NeoX" rope).
pub fn rope_halves(v: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for h in 0..heads {
        let (lo, hi) = v[h * head_dim..h * head_dim + 2 * half].split_at_mut(half);
        for i in 0..half {
            let (a, b) = (lo[i], hi[i]);
            lo[i] = a * cos[i] - b * sin[i];
            hi[i] = a * sin[i] + b * cos[i];
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
        done = unsafe { simd::swiglu(gate, up) };
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
/// normal results; written so that the AVX2 version (`simd::exp8`) computes the same
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

/// The error function, |error| < 1.5e-7 (Abramowitz & Stegun 7.1.26, evaluated in f64).
pub fn erf(x: f32) -> f32 {
    let t = 1.0 / (1.0 + 0.327_591_1 * (x.abs() as f64));
    let poly = t * (0.254_829_592 + t * (-0.284_496_736 + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let y = 1.0 - poly * (-(x as f64) * (x as f64)).exp();
    (if x < 0.0 { -y } else { y }) as f32
}

/// GELU with the exact error function, `x·Φ(x)` (BERT's `gelu`), in place: eight at a
/// time with AVX2 when the CPU has it (the same approximation of erf in f32 arithmetic,
/// within 1e-6·max(1, |x|) of [`gelu_erf_scalar`]), else the scalar twin.
pub fn gelu_erf(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if f16_simd() {
        // SAFETY: AVX2/FMA detected.
        let done = unsafe { simd::gelu_erf(x) };
        gelu_erf_scalar(&mut x[done..]);
        return;
    }
    gelu_erf_scalar(x);
}

/// [`gelu_erf`]'s scalar twin, with [`erf`] computed in f64.
pub fn gelu_erf_scalar(x: &mut [f32]) {
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + erf(u * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// GELU, tanh approximation (as GPT-2 uses), in place.
pub fn gelu(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// GeGLU (Shazeer 2020): `gate = gelu_tanh(gate) * up`, in place in `gate`.
pub fn geglu(gate: &mut [f32], up: &[f32]) {
    assert_eq!(gate.len(), up.len(), "geglu: gate and up lengths");
    gelu(gate);
    for (g, &u) in gate.iter_mut().zip(up) {
        *g *= u;
    }
}

/// `acc += x`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Softmax numerators in place, `w[i] = exp(w[i] - max(w))`, returning their sum (AVX2
/// when the CPU has it; the same bits as [`softmax_weights_scalar`] either way).
pub fn softmax_weights(w: &mut [f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if f16_simd() {
        // SAFETY: AVX2/FMA detected.
        return unsafe { simd::softmax_weights(w) };
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

/// Whether the F16C+FMA versions of the f16 helpers can run here (checked once).
pub(crate) fn f16_simd() -> bool {
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

#[cfg(target_arch = "x86_64")]
pub(crate) mod simd {
    //! AVX2 + FMA versions of the exponential, SwiGLU and the softmax numerators.
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

    /// GELU (exact erf form) on the leading multiple of 8 values; returns how many it did.
    /// erf is Abramowitz & Stegun 7.1.26, as [`super::erf`], with [`exp8`] for exp(-z²).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn gelu_erf(x: &mut [f32]) -> usize {
        let n = x.len() / 8 * 8;
        let (one, half) = (_mm256_set1_ps(1.0), _mm256_set1_ps(0.5));
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
        let sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MIN));
        for i in (0..n).step_by(8) {
            let p = x.as_mut_ptr().add(i);
            let u = _mm256_loadu_ps(p);
            let z = _mm256_mul_ps(u, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
            let za = _mm256_and_ps(z, abs_mask);
            let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.327_591_1), za, one));
            let mut poly = _mm256_set1_ps(1.061_405_4);
            for c in [-1.453_152_1f32, 1.421_413_8, -0.284_496_72, 0.254_829_6] {
                poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
            }
            poly = _mm256_mul_ps(poly, t);
            let e = exp8(_mm256_mul_ps(_mm256_xor_ps(za, sign_mask), za));
            let y = _mm256_fnmadd_ps(poly, e, one);
            let erf = _mm256_or_ps(y, _mm256_and_ps(z, sign_mask));
            _mm256_storeu_ps(p, _mm256_mul_ps(_mm256_mul_ps(half, u), _mm256_add_ps(one, erf)));
        }
        n
    }

    /// Largest of eight lanes.
    #[inline(always)]
    unsafe fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half-split rotation is the adjacent-pair rotation of the same vector with its
    /// dimensions reordered (`i` and `i + half` side by side): each checks the other.
    #[test]
    fn half_split_rope_is_adjacent_pair_rope_on_reordered_dimensions() {
        let (heads, hd) = (3, 8);
        let half = hd / 2;
        let v: Vec<f32> = (0..heads * hd).map(|i| (i as f32 * 0.37).sin()).collect();
        let inv: Vec<f32> = (0..half).map(|i| 1.0 / 10_000f32.powf(2.0 * i as f32 / hd as f32)).collect();
        let (mut cos, mut sin) = (vec![0.0; half], vec![0.0; half]);
        rope_angles(17, &inv, &mut cos, &mut sin);
        let mut halves = v.clone();
        rope_halves(&mut halves, heads, hd, &cos, &sin);
        let pairs_of = |x: &[f32]| -> Vec<f32> { (0..heads).flat_map(|h| (0..half).flat_map(move |i| [x[h * hd + i], x[h * hd + half + i]])).collect() };
        let mut pairs = pairs_of(&v);
        rope_interleaved(&mut pairs, heads, hd, &cos, &sin);
        assert_eq!(pairs_of(&halves), pairs);
        assert_ne!(halves, v);
    }

    #[test]
    fn geglu_is_tanh_gelu_of_the_gate_times_up() {
        let mut g = vec![-2.0f32, -0.5, 0.0, 0.5, 3.0];
        let up = [2.0f32, -1.0, 5.0, 4.0, 0.5];
        let want: Vec<f32> = g
            .iter()
            .zip(&up)
            .map(|(&x, &u)| {
                let x = x as f64;
                (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()) * u as f64) as f32
            })
            .collect();
        geglu(&mut g, &up);
        for (a, b) in g.iter().zip(&want) {
            assert!((a - b).abs() < 1e-6, "{a} vs {b}");
        }
    }

    #[test]
    fn gelu_erf_simd_matches_its_scalar_twin() {
        let xs: Vec<f32> = (-4000..4000).map(|i| i as f32 * 0.0025).chain([-30.0, -9.5, 12.0, 40.0, f32::MIN_POSITIVE, -0.0]).collect();
        let mut fast = xs.clone();
        let mut slow = xs.clone();
        gelu_erf(&mut fast);
        gelu_erf_scalar(&mut slow);
        for ((x, a), b) in xs.iter().zip(&fast).zip(&slow) {
            assert!((a - b).abs() <= 1e-6 * x.abs().max(1.0), "gelu({x}): simd {a}, scalar {b}");
        }
    }

    /// `erf` against values from a table (Abramowitz & Stegun, table 7.1), and GELU's shape.
    #[test]
    fn erf_and_exact_gelu() {
        for (x, want) in [(0.0f32, 0.0f64), (0.1, 0.112_462_916), (0.5, 0.520_499_878), (1.0, 0.842_700_793), (2.0, 0.995_322_265), (-1.5, -0.966_105_146)] {
            assert!((erf(x) as f64 - want).abs() < 2e-7, "erf({x}) = {}", erf(x));
        }
        let mut g = [-3.0f32, -1.0, 0.0, 1.0, 3.0];
        gelu_erf(&mut g);
        // x·Φ(x) with Φ(1) = 0.841344746, Φ(3) = 0.998650102.
        for (&got, want) in g.iter().zip([-0.004_049_694f64, -0.158_655_254, 0.0, 0.841_344_746, 2.995_950_306]) {
            assert!((got as f64 - want).abs() < 1e-6, "{got} vs {want}");
        }
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
                unsafe { _mm256_storeu_ps(got.as_mut_ptr(), simd::exp8(_mm256_loadu_ps(c.as_ptr()))) };
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
                let sa = unsafe { simd::softmax_weights(&mut a) };
                let sb = softmax_weights_scalar(&mut b);
                assert_eq!(sa.to_bits(), sb.to_bits(), "softmax sum n={n}");
                assert_eq!(a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), b.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), "softmax n={n}");
            }
        } else {
            eprintln!("SKIPPED: AVX2 exp/SwiGLU/softmax (CPU lacks AVX2/FMA)");
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
}
