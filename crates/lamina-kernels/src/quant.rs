//! Block-quantized formats (the GGML/GGUF layouts) and activation quantization.
//!
//! A quantized row is a sequence of blocks of 32 values. Weight formats follow the GGUF
//! specification byte for byte so that weights can be used straight from the file:
//!
//! | type | bytes | layout | value |
//! |---|---|---|---|
//! | Q4_0 | 18 | `d: f16, qs: [u8; 16]` | `d * (nibble - 8)` |
//! | Q4_1 | 20 | `d: f16, m: f16, qs: [u8; 16]` | `d * nibble + m` |
//! | Q5_0 | 22 | `d: f16, qh: u32, qs: [u8; 16]` | `d * (nibble + 16*bit - 16)` |
//! | Q5_1 | 24 | `d: f16, m: f16, qh: u32, qs: [u8; 16]` | `d * (nibble + 16*bit) + m` |
//! | Q8_0 | 34 | `d: f16, qs: [i8; 32]` | `d * q` |
//!
//! Nibble `j` of `qs` holds value `j` in its low half and value `j + 16` in its high half.
//!
//! K-quants are super-blocks of 256 values made of sub-blocks with their own small
//! integer scales (see [`BlockQ4K`], [`BlockQ5K`], [`BlockQ6K`]); they multiply against
//! [`BlockQ8K`] activations (one f32 scale per 256 values, plus sums of each 16 values so
//! that the weights' offsets cost one multiply per 16 values).
//!
//! Activations are quantized once per matrix product to 8 bits, as llama.cpp does:
//! [`BlockQ8_0`] for weights without an offset, [`BlockQ8_1`] (which also stores
//! `d * sum(q)`) for weights with an offset `m`, so that `sum(m * x)` costs one multiply.

use half::f16;

pub const QK: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ4_0 {
    pub d: f16,
    pub qs: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ4_1 {
    pub d: f16,
    pub m: f16,
    pub qs: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ5_0 {
    pub d: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BlockQ5_1 {
    pub d: f16,
    pub m: f16,
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_0 {
    pub d: f16,
    pub qs: [i8; 32],
}

impl Default for BlockQ8_0 {
    fn default() -> Self {
        BlockQ8_0 { d: f16::ZERO, qs: [0; 32] }
    }
}

/// 8-bit activation block that also carries `s = d * sum(qs)`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8_1 {
    pub d: f16,
    pub s: f16,
    pub qs: [i8; 32],
}

impl Default for BlockQ8_1 {
    fn default() -> Self {
        BlockQ8_1 { d: f16::ZERO, s: f16::ZERO, qs: [0; 32] }
    }
}

/// Values per K-quant super-block.
pub const QK_K: usize = 256;

/// Q4_K: 8 sub-blocks of 32 values, value `d * sc[j] * q - dmin * m[j]` with 4-bit `q` and
/// 6-bit `sc`, `m` packed in `scales` (see [`scale_min_k4`]). `qs` holds 4 chunks of 64
/// values: byte `l` of chunk `c` has value `64c + l` in its low nibble, `64c + 32 + l` in
/// its high one.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ4K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

/// Q5_K: Q4_K plus a fifth bit per value: value `64c + l` has bit `2c` of `qh[l]`, value
/// `64c + 32 + l` bit `2c + 1`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ5K {
    pub d: f16,
    pub dmin: f16,
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

/// Q6_K: 16 sub-blocks of 16 values, value `d * scales[k] * (q - 32)` with 6-bit `q`
/// (low 4 bits in `ql`, high 2 in `qh`; layout in [`q6_k_value`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: f16,
}

/// 8-bit activations for K-quant weights: `d * qs[k]`, `bsums[g]` = sum of `qs[16g..16g+16]`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BlockQ8K {
    pub d: f32,
    pub qs: [i8; 256],
    pub bsums: [i16; 16],
}

impl Default for BlockQ8K {
    fn default() -> Self {
        BlockQ8K { d: 0.0, qs: [0; 256], bsums: [0; 16] }
    }
}

const _: () = assert!(std::mem::size_of::<BlockQ4K>() == 144);
const _: () = assert!(std::mem::size_of::<BlockQ5K>() == 176);
const _: () = assert!(std::mem::size_of::<BlockQ6K>() == 210);
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == 292);
const _: () = assert!(std::mem::align_of::<BlockQ4K>() == 2 && std::mem::align_of::<BlockQ6K>() == 2);

/// The 6-bit scale and min of sub-block `j` (0..8) of a Q4_K / Q5_K block: sub-blocks 0..4
/// keep them in the low 6 bits of bytes `j` and `j + 4`; sub-blocks 4..8 in the nibbles of
/// byte `j + 4` with their top 2 bits in the spare top bits of bytes `j - 4` and `j`.
#[inline]
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// All eight scales and mins of a Q4_K / Q5_K block, `[sc[0..8], m[0..8]]`: what
/// [`scale_min_k4`] gives, computed four at a time on 32-bit words (the kernels decode
/// every block once per activation tile, so this is on the hot path).
#[inline]
pub fn scales_mins_k4(q: &[u8; 12]) -> [u8; 16] {
    let w = |i: usize| u32::from_le_bytes([q[4 * i], q[4 * i + 1], q[4 * i + 2], q[4 * i + 3]]);
    let (a, b, c) = (w(0), w(1), w(2));
    const LOW6: u32 = 0x3F3F_3F3F;
    const LOW4: u32 = 0x0F0F_0F0F;
    const TOP2: u32 = 0x0303_0303;
    let words = [
        a & LOW6,                                     // scales 0..4
        (c & LOW4) | (((a >> 6) & TOP2) << 4),        // scales 4..8
        b & LOW6,                                     // mins 0..4
        ((c >> 4) & LOW4) | (((b >> 6) & TOP2) << 4), // mins 4..8
    ];
    let mut out = [0u8; 16];
    for (o, w) in out.chunks_exact_mut(4).zip(words) {
        o.copy_from_slice(&w.to_le_bytes());
    }
    out
}

/// Value `k` (0..256) of a Q6_K block as an unsigned 6-bit number (the weight is
/// `d * scales[k / 16] * (value - 32)`). Per half `h` of 128 values (`ql[64h..]`,
/// `qh[32h..]`), `l` in 0..32: values `l`, `l + 32`, `l + 64`, `l + 96` take the low
/// nibble of `ql[l]`, low of `ql[l + 32]`, high of `ql[l]`, high of `ql[l + 32]`, and
/// bits 0-1, 2-3, 4-5, 6-7 of `qh[l]`.
#[inline]
pub fn q6_k_value(b: &BlockQ6K, k: usize) -> i32 {
    let (h, r) = (k / 128, k % 128);
    let (quarter, l) = (r / 32, r % 32);
    let ql = b.ql[64 * h + l + 32 * (quarter % 2)];
    let nib = if quarter < 2 { ql & 0x0F } else { ql >> 4 };
    let hi = (b.qh[32 * h + l] >> (2 * quarter)) & 3;
    (nib | (hi << 4)) as i32
}

pub fn dequantize_q4_k(blocks: &[BlockQ4K], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (k, y) in ys.iter_mut().enumerate() {
            let (c, l) = (k / 64, k % 64);
            let q = if l < 32 { b.qs[32 * c + l] & 0x0F } else { b.qs[32 * c + l - 32] >> 4 };
            let (sc, m) = scale_min_k4(k / 32, &b.scales);
            *y = d * sc as f32 * q as f32 - dmin * m as f32;
        }
    }
}

pub fn dequantize_q5_k(blocks: &[BlockQ5K], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let (d, dmin) = (b.d.to_f32(), b.dmin.to_f32());
        for (k, y) in ys.iter_mut().enumerate() {
            let (c, l) = (k / 64, k % 64);
            let nib = if l < 32 { b.qs[32 * c + l] & 0x0F } else { b.qs[32 * c + l - 32] >> 4 };
            let bit = (b.qh[l % 32] >> (2 * c + l / 32)) & 1;
            let (sc, m) = scale_min_k4(k / 32, &b.scales);
            *y = d * sc as f32 * (nib | bit << 4) as f32 - dmin * m as f32;
        }
    }
}

pub fn dequantize_q6_k(blocks: &[BlockQ6K], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        let d = b.d.to_f32();
        for (k, y) in ys.iter_mut().enumerate() {
            *y = d * b.scales[k / 16] as f32 * (q6_k_value(b, k) - 32) as f32;
        }
    }
}

pub fn dequantize_q8_k(blocks: &[BlockQ8K], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK_K)) {
        for (y, &q) in ys.iter_mut().zip(&b.qs) {
            *y = b.d * q as f32;
        }
    }
}

const _: () = assert!(std::mem::size_of::<BlockQ4_0>() == 18);
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == 20);
const _: () = assert!(std::mem::size_of::<BlockQ5_0>() == 22);
const _: () = assert!(std::mem::size_of::<BlockQ5_1>() == 24);
const _: () = assert!(std::mem::size_of::<BlockQ8_0>() == 34);
const _: () = assert!(std::mem::size_of::<BlockQ8_1>() == 36);

/// Rounding of 8-bit activations: half to even, as llama.cpp's x86 activation quantizers
/// do (`_mm256_round_ps(_MM_ROUND_NEAREST)`), so our 8-bit activations match its.
#[inline]
fn round_act(x: f32) -> i32 {
    x.round_ties_even() as i32
}

/// The activation scale's inverse as llama.cpp computes it: `127 / amax`, not `1 / d`
/// (the two differ in the last bit, which moves some values across a rounding tie).
#[inline]
fn inv_scale(amax: f32) -> f32 {
    if amax != 0.0 {
        127.0 / amax
    } else {
        0.0
    }
}

/// Scale of a block: the largest magnitude maps to ±127.
#[inline]
fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Quantizes `x` (length a multiple of 32) to Q8_0 blocks (AVX2 when the CPU has it;
/// the result is bit-identical to [`quantize_q8_0_scalar`]).
pub fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
    #[cfg(target_arch = "x86_64")]
    if simd_quantize() {
        // SAFETY: AVX2 presence checked by `simd_quantize`.
        unsafe { x86::quantize_q8_0(x, out) };
        return;
    }
    quantize_q8_0_scalar(x, out)
}

/// Quantizes `x` to Q8_1 blocks (Q8_0 plus `s = d * sum(q)`), AVX2 when available.
pub fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1]) {
    quantize_q8_1_scaled(x, out, None)
}

/// Like [`quantize_q8_1`], and also writes per block `[d, s, d * sum(q), -8 * d * sum(q)]` as f32
/// (`d`, `s` exactly the f16 values stored in the block, the third unrounded) so that
/// packed kernels do no f16 conversion per activation block.
pub fn quantize_q8_1_scaled(x: &[f32], out: &mut [BlockQ8_1], scales: Option<&mut [[f32; 4]]>) {
    debug_assert_eq!(x.len(), out.len() * QK);
    #[cfg(target_arch = "x86_64")]
    if simd_quantize() {
        // SAFETY: AVX2 presence checked by `simd_quantize`.
        unsafe { x86::quantize_q8_1(x, out, scales) };
        return;
    }
    quantize_q8_1_scalar(x, out, scales)
}

/// Quantizes `x` (length a multiple of 256) to Q8_K blocks as llama.cpp's
/// `quantize_row_q8_K` does (AVX2 when the CPU has it; bit-identical to
/// [`quantize_q8_k_scalar`]).
pub fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if simd_quantize() {
        // SAFETY: AVX2 presence checked by `simd_quantize`.
        unsafe { x86::quantize_q8_k(x, out) };
        return;
    }
    quantize_q8_k_scalar(x, out)
}

/// Q8_K quantization with an explicit path (see [`quantize_q8_0_isa`]).
pub fn quantize_q8_k_isa(isa: crate::cpu::Isa, x: &[f32], out: &mut [BlockQ8K]) {
    #[cfg(target_arch = "x86_64")]
    if isa >= crate::cpu::Isa::Avx2 && crate::cpu::Isa::Avx2.supported() {
        unsafe { x86::quantize_q8_k(x, out) };
        return;
    }
    let _ = isa;
    quantize_q8_k_scalar(x, out)
}

/// The scalar reference of [`quantize_q8_k`]. Unlike the 32-value formats, the scale keeps
/// the sign of the value of largest magnitude (the first one, if several): that value maps
/// to exactly -127 and `d = 1 / (-127 / max)` may be negative, as in llama.cpp. Rounding is
/// half to even (llama.cpp's `nearest_int`), values are capped at +127.
pub fn quantize_q8_k_scalar(x: &[f32], out: &mut [BlockQ8K]) {
    debug_assert_eq!(x.len(), out.len() * QK_K);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK_K)) {
        let mut amax = 0.0f32;
        let mut max = 0.0f32;
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            *b = BlockQ8K::default();
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(xs) {
            *q = round_act(iscale * v).min(127) as i8;
        }
        for (s, g) in b.bsums.iter_mut().zip(b.qs.chunks_exact(16)) {
            *s = g.iter().map(|&q| q as i16).sum();
        }
        b.d = 1.0 / iscale;
    }
}

/// Whether the quantizers use AVX2 (`LAMINA_ISA=scalar` turns it off).
#[cfg(target_arch = "x86_64")]
fn simd_quantize() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| crate::cpu::Isa::best() >= crate::cpu::Isa::Avx2)
}

/// Q8_0 quantization with an explicit path: `Isa::Scalar` or a SIMD one (scalar when the
/// CPU lacks it). For tests and benchmarks.
pub fn quantize_q8_0_isa(isa: crate::cpu::Isa, x: &[f32], out: &mut [BlockQ8_0]) {
    #[cfg(target_arch = "x86_64")]
    if isa >= crate::cpu::Isa::Avx2 && crate::cpu::Isa::Avx2.supported() {
        unsafe { x86::quantize_q8_0(x, out) };
        return;
    }
    let _ = isa;
    quantize_q8_0_scalar(x, out)
}

/// Q8_1 quantization with an explicit path (see [`quantize_q8_0_isa`]).
pub fn quantize_q8_1_isa(isa: crate::cpu::Isa, x: &[f32], out: &mut [BlockQ8_1], scales: Option<&mut [[f32; 4]]>) {
    #[cfg(target_arch = "x86_64")]
    if isa >= crate::cpu::Isa::Avx2 && crate::cpu::Isa::Avx2.supported() {
        unsafe { x86::quantize_q8_1(x, out, scales) };
        return;
    }
    let _ = isa;
    quantize_q8_1_scalar(x, out, scales)
}

/// The scalar reference of [`quantize_q8_0`].
pub fn quantize_q8_0_scalar(x: &[f32], out: &mut [BlockQ8_0]) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let amax = absmax(xs);
        let d = amax / 127.0;
        let id = inv_scale(amax);
        b.d = f16::from_f32(d);
        for (q, v) in b.qs.iter_mut().zip(xs) {
            *q = round_act(v * id) as i8;
        }
    }
}

/// The scalar reference of [`quantize_q8_1_scaled`].
pub fn quantize_q8_1_scalar(x: &[f32], out: &mut [BlockQ8_1], mut scales: Option<&mut [[f32; 4]]>) {
    debug_assert_eq!(x.len(), out.len() * QK);
    for (i, (b, xs)) in out.iter_mut().zip(x.chunks_exact(QK)).enumerate() {
        let amax = absmax(xs);
        let d = amax / 127.0;
        let id = inv_scale(amax);
        let mut sum = 0i32;
        for (q, v) in b.qs.iter_mut().zip(xs) {
            let r = round_act(v * id);
            *q = r as i8;
            sum += r;
        }
        finish_q8_1(b, d, sum, scales.as_deref_mut().map(|s| &mut s[i]));
    }
}

#[inline]
fn finish_q8_1(b: &mut BlockQ8_1, d: f32, sum: i32, scale: Option<&mut [f32; 4]>) {
    b.d = f16::from_f32(d);
    b.s = f16::from_f32(sum as f32 * d);
    if let Some(sc) = scale {
        let d32 = b.d.to_f32();
        let sx = d32 * sum as f32;
        *sc = [d32, b.s.to_f32(), sx, -8.0 * sx];
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;
    use std::arch::x86_64::*;

    /// Quantizes one block of 32 values: returns `d` (unrounded) and the four vectors of
    /// rounded integers, with the scalar code's exact arithmetic (`v * (127/amax)` rounded
    /// half to even).
    #[inline(always)]
    unsafe fn block(xs: *const f32) -> (f32, [__m256i; 4]) {
        let sign = _mm256_set1_ps(-0.0);
        let v = [_mm256_loadu_ps(xs), _mm256_loadu_ps(xs.add(8)), _mm256_loadu_ps(xs.add(16)), _mm256_loadu_ps(xs.add(24))];
        // Explicit element-wise code, no `array::map`: closures do not inherit the caller's
        // target features, so the intrinsics inside would become out-of-line calls.
        let a = [_mm256_andnot_ps(sign, v[0]), _mm256_andnot_ps(sign, v[1]), _mm256_andnot_ps(sign, v[2]), _mm256_andnot_ps(sign, v[3])];
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m1 = _mm_max_ss(m2, _mm_movehdup_ps(m2));
        let amax = _mm_cvtss_f32(m1);
        let d = amax / 127.0;
        let id = inv_scale(amax);
        let vid = _mm256_set1_ps(id);
        const RN: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
        let q = [
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[0], vid), RN)),
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[1], vid), RN)),
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[2], vid), RN)),
            _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[3], vid), RN)),
        ];
        (d, q)
    }

    #[inline(always)]
    unsafe fn store(q: &[__m256i; 4], dst: *mut i8) {
        let p01 = _mm256_packs_epi32(q[0], q[1]);
        let p23 = _mm256_packs_epi32(q[2], q[3]);
        let b = _mm256_packs_epi16(p01, p23);
        let b = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(dst as *mut __m256i, b);
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_0(x: &[f32], out: &mut [BlockQ8_0]) {
        assert!(x.len() >= out.len() * QK);
        for (i, b) in out.iter_mut().enumerate() {
            let (d, q) = block(x.as_ptr().add(i * QK));
            b.d = f16::from_f32(d);
            store(&q, b.qs.as_mut_ptr());
        }
    }

    /// Q8_K: the scalar code's arithmetic on 8 lanes. The value of largest magnitude is
    /// found as the first lane equal to the maximum of `|x|` (the scalar loop's strict `>`
    /// keeps the first one too), so the sign of the scale matches bit for bit.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_k(x: &[f32], out: &mut [BlockQ8K]) {
        assert!(x.len() >= out.len() * QK_K);
        let sign = _mm256_set1_ps(-0.0);
        for (i, b) in out.iter_mut().enumerate() {
            let xs = x.as_ptr().add(i * QK_K);
            let mut m = _mm256_setzero_ps();
            for k in 0..32 {
                m = _mm256_max_ps(m, _mm256_andnot_ps(sign, _mm256_loadu_ps(xs.add(8 * k))));
            }
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
            if amax == 0.0 {
                *b = BlockQ8K::default();
                continue;
            }
            let va = _mm256_set1_ps(amax);
            let mut first = QK_K;
            for k in 0..32 {
                let a = _mm256_andnot_ps(sign, _mm256_loadu_ps(xs.add(8 * k)));
                let hit = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_EQ_OQ>(a, va));
                if hit != 0 {
                    first = 8 * k + hit.trailing_zeros() as usize;
                    break;
                }
            }
            let iscale = -127.0 / *xs.add(first);
            let vis = _mm256_set1_ps(iscale);
            let cap = _mm256_set1_epi32(127);
            let ones = _mm256_set1_epi16(1);
            for k in 0..8 {
                let q: [__m256i; 4] = std::array::from_fn(|t| {
                    let y = _mm256_mul_ps(_mm256_loadu_ps(xs.add(32 * k + 8 * t)), vis);
                    let r = _mm256_cvtps_epi32(_mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
                    _mm256_min_epi32(r, cap)
                });
                store(&q, b.qs.as_mut_ptr().add(32 * k));
                // Sums of 16: lanes 0-1 and 2-3 of the 32-bit vectors, pairwise.
                let p01 = _mm256_packs_epi32(q[0], q[1]); // i16: x0..3 x8..11 | x4..7 x12..15
                let p23 = _mm256_packs_epi32(q[2], q[3]);
                let s01 = _mm256_madd_epi16(p01, ones);
                let s23 = _mm256_madd_epi16(p23, ones);
                let s = _mm256_hadd_epi32(s01, s23);
                let s = _mm256_hadd_epi32(s, s);
                // lanes: [g0a g1a g0a g1a | g0b g1b g0b g1b] where a/b are the 128-bit halves.
                let lo = _mm256_castsi256_si128(s);
                let hi = _mm256_extracti128_si256(s, 1);
                let t = _mm_add_epi32(lo, hi);
                b.bsums[2 * k] = _mm_cvtsi128_si32(t) as i16;
                b.bsums[2 * k + 1] = _mm_extract_epi32::<1>(t) as i16;
            }
            b.d = 1.0 / iscale;
        }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize_q8_1(x: &[f32], out: &mut [BlockQ8_1], mut scales: Option<&mut [[f32; 4]]>) {
        assert!(x.len() >= out.len() * QK);
        if let Some(s) = &scales {
            assert!(s.len() >= out.len());
        }
        for (i, b) in out.iter_mut().enumerate() {
            let (d, q) = block(x.as_ptr().add(i * QK));
            store(&q, b.qs.as_mut_ptr());
            let s = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let s = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
            let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
            let sum = _mm_cvtsi128_si32(s);
            finish_q8_1(b, d, sum, scales.as_deref_mut().map(|s| s.get_unchecked_mut(i)));
        }
    }
}

pub fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for j in 0..16 {
            ys[j] = ((b.qs[j] & 0x0F) as i32 - 8) as f32 * d;
            ys[j + 16] = ((b.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }
}

pub fn dequantize_q4_1(blocks: &[BlockQ4_1], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        for j in 0..16 {
            ys[j] = (b.qs[j] & 0x0F) as f32 * d + m;
            ys[j + 16] = (b.qs[j] >> 4) as f32 * d + m;
        }
    }
}

pub fn dequantize_q5_0(blocks: &[BlockQ5_0], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            ys[j] = (((b.qs[j] & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
            ys[j + 16] = (((b.qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

pub fn dequantize_q5_1(blocks: &[BlockQ5_1], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        let m = b.m.to_f32();
        let qh = u32::from_le_bytes(b.qh);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            ys[j] = ((b.qs[j] & 0x0F) as u32 | h0) as f32 * d + m;
            ys[j + 16] = ((b.qs[j] >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

pub fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, ys) in blocks.iter().zip(out.chunks_exact_mut(QK)) {
        let d = b.d.to_f32();
        for (y, &q) in ys.iter_mut().zip(&b.qs) {
            *y = q as f32 * d;
        }
    }
}

/// Quantizes weights to Q4_0 (the GGML reference rounding: the value of largest
/// magnitude maps to -8, scale `d = max / -8`).
pub fn quantize_q4_0(x: &[f32], out: &mut [BlockQ4_0]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let mut max = 0.0f32;
        let mut amax = 0.0f32;
        for &v in xs {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        for j in 0..16 {
            let q0 = ((xs[j] * id + 8.5) as i32).min(15) as u8;
            let q1 = ((xs[j + 16] * id + 8.5) as i32).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Quantizes weights to Q4_1 (min/max affine, 16 levels).
pub fn quantize_q4_1(x: &[f32], out: &mut [BlockQ4_1]) {
    for (b, xs) in out.iter_mut().zip(x.chunks_exact(QK)) {
        let min = xs.iter().copied().fold(f32::INFINITY, f32::min);
        let max = xs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        b.d = f16::from_f32(d);
        b.m = f16::from_f32(min);
        for j in 0..16 {
            let q0 = (((xs[j] - min) * id + 0.5) as i32).min(15) as u8;
            let q1 = (((xs[j + 16] - min) * id + 0.5) as i32).min(15) as u8;
            b.qs[j] = q0 | (q1 << 4);
        }
    }
}

/// Reinterprets raw bytes as a slice of blocks.
///
/// # Safety-relevant contract
/// Returns `None` when the length is not a whole number of blocks or the pointer is not
/// aligned for `T` (all block types here have alignment 2).
pub fn cast_blocks<T: Copy>(bytes: &[u8]) -> Option<&[T]> {
    let size = std::mem::size_of::<T>();
    if !bytes.len().is_multiple_of(size) || !(bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<T>()) {
        return None;
    }
    // SAFETY: length and alignment checked; every bit pattern is a valid block.
    Some(unsafe { std::slice::from_raw_parts(bytes.as_ptr() as *const T, bytes.len() / size) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn q8_round_trip_error_is_bounded() {
        let x = data(256, 1);
        let mut q = vec![BlockQ8_0::default(); 8];
        quantize_q8_0(&x, &mut q);
        let mut y = vec![0.0; 256];
        dequantize_q8_0(&q, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 1.0 / 127.0 + 1e-3, "{a} {b}");
        }
        let mut q1 = vec![BlockQ8_1::default(); 8];
        quantize_q8_1(&x, &mut q1);
        for (b, xs) in q1.iter().zip(x.chunks(32)) {
            let s: i32 = b.qs.iter().map(|&v| v as i32).sum();
            assert!((b.s.to_f32() - s as f32 * b.d.to_f32()).abs() < 1e-2);
            let _ = xs;
        }
    }

    #[test]
    fn q4_round_trip_error_is_bounded() {
        let x = data(320, 7);
        let mut q = vec![BlockQ4_1::default(); 10];
        quantize_q4_1(&x, &mut q);
        let mut y = vec![0.0; 320];
        dequantize_q4_1(&q, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 2.0 / 15.0 * 0.51 + 2e-3, "{a} {b}");
        }
        let mut q0 = vec![BlockQ4_0::default(); 10];
        quantize_q4_0(&x, &mut q0);
        dequantize_q4_0(&q0, &mut y);
        for (a, b) in x.iter().zip(&y) {
            assert!((a - b).abs() <= 0.15, "{a} {b}");
        }
    }
}
