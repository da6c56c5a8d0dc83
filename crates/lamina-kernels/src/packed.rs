//! Row-interleaved ("packed") weight layouts and their kernels.
//!
//! GGUF stores a matrix row by row, so a kernel working on one row per call has to convert
//! the activation scales, load the activation block and reduce the products once per row.
//! At load time the weights are rearranged into groups of [`GROUP`] = 8 rows: per (group,
//! block of 32 inputs) the 8 rows' scales sit together (`d: [f16; 8]`, and `m: [f16; 8]`
//! for Q4_1) and their quantized values are interleaved four at a time, so that one 256-bit
//! register holds 4 consecutive values of each of the 8 rows (32-bit lane `r` = row `r`).
//! Multiplying it by 4 activation bytes broadcast to every lane gives all 8 rows' partial
//! dot products in their own lanes, with no horizontal reduction at all; a block costs,
//! per activation column, 8 multiply-adds, one conversion and two or three FMAs for 8 rows.
//!
//! Byte layout of one (group, block):
//! - Q4 (`Q4_0`, `Q4_1`): 128 bytes, four 32-byte vectors `v_j`; byte `4r + t` of `v_j`
//!   holds row `r`'s value `8j + t` in its low nibble and value `8j + 4 + t` in its high one
//!   (so `v_j & 0xF` and `(v_j >> 4) & 0xF` are directly the operands of two products);
//! - Q5 (`Q5_0`, `Q5_1`): the 128 Q4 bytes of the low nibbles, then one 32-byte vector `h`
//!   of fifth bits: bit `2j` of byte `4r + t` is the fifth bit of the low-nibble value of
//!   byte `4r + t` of `v_j`, bit `2j + 1` that of its high-nibble value. One shift and one
//!   mask move either bit to position 4 of every byte at once (160 bytes per block: the
//!   5.5 bits per value of GGUF Q5, not the 8 of an unpacked byte layout);
//! - Q8_0: 256 bytes, eight 32-byte vectors; byte `4r + t` of vector `k` is row `r`'s value
//!   `4k + t`.
//!
//! Row counts that are not a multiple of 8 are padded with zero rows.
//!
//! Activations are Q8_1 blocks plus per-block f32 scales `[d, s, d*sum(q), -8*d*sum(q)]`
//! (see [`crate::quant::quantize_q8_1_scaled`]); Q4_0 (values `q - 8`) uses the last one to
//! remove the offset, Q5_0 (values `q - 16`) twice the last one, Q8_0 uses the sign trick
//! (`|w| * sign(x, w)`). Q4_1 and Q5_1 add `m * s`.

use crate::hugepage::{HugeVec, Zeroable};
use crate::quant::*;
use half::f16;

/// Rows per interleaved group.
pub const GROUP: usize = 8;

/// Per-block activation scales: `[d, s (as stored in the f16 block), d*sum(q), -8*d*sum(q)]`.
pub type ActScale = [f32; 4];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PackKind {
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
}

impl PackKind {
    /// Bytes of quantized values per (group, block).
    pub const fn qs_bytes(self) -> usize {
        match self {
            PackKind::Q4_0 | PackKind::Q4_1 => 128,
            PackKind::Q5_0 | PackKind::Q5_1 => 160,
            PackKind::Q8_0 => 256,
        }
    }

    /// Whether blocks carry a per-row offset `m` (value `d * q + m`).
    pub const fn affine(self) -> bool {
        matches!(self, PackKind::Q4_1 | PackKind::Q5_1)
    }

    /// Whether values have a fifth bit.
    pub const fn five_bit(self) -> bool {
        matches!(self, PackKind::Q5_0 | PackKind::Q5_1)
    }
}

#[repr(C, align(32))]
#[derive(Clone, Copy)]
struct Chunk([u8; 32]);
// SAFETY: 32 plain bytes.
unsafe impl Zeroable for Chunk {}

/// A weight matrix in the row-interleaved layout.
pub struct PackedMatrix {
    pub kind: PackKind,
    pub rows: usize,
    pub cols: usize,
    /// Blocks per row.
    pub nb: usize,
    /// Row groups (`rows.div_ceil(8)`).
    pub groups: usize,
    // In huge-page-advised memory (see `crate::hugepage`): the kernels stream these.
    qs: HugeVec<Chunk>,
    d: HugeVec<f16>,
    m: HugeVec<f16>,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix({:?}, {}x{})", self.kind, self.rows, self.cols)
    }
}

impl PackedMatrix {
    fn empty(kind: PackKind, rows: usize, cols: usize) -> PackedMatrix {
        assert!(cols.is_multiple_of(QK), "columns must be whole blocks");
        let nb = cols / QK;
        let groups = rows.div_ceil(GROUP);
        let chunks = groups * nb * kind.qs_bytes() / 32;
        let scales = groups * nb * GROUP;
        PackedMatrix {
            kind,
            rows,
            cols,
            nb,
            groups,
            qs: HugeVec::zeroed(chunks),
            d: HugeVec::zeroed(scales),
            m: HugeVec::zeroed(if kind.affine() { scales } else { 0 }),
        }
    }

    fn qs_bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: Chunk is 32 plain bytes.
        unsafe { std::slice::from_raw_parts_mut(self.qs.as_mut_ptr() as *mut u8, self.qs.len() * 32) }
    }

    /// Quantized bytes of (group, block).
    #[inline]
    pub fn qs(&self, g: usize, i: usize) -> &[u8] {
        let n = self.kind.qs_bytes();
        // SAFETY: Chunk is 32 plain bytes.
        let all = unsafe { std::slice::from_raw_parts(self.qs.as_ptr() as *const u8, self.qs.len() * 32) };
        &all[(g * self.nb + i) * n..(g * self.nb + i + 1) * n]
    }

    #[inline]
    pub fn d(&self, g: usize, i: usize) -> &[f16] {
        &self.d[(g * self.nb + i) * GROUP..(g * self.nb + i + 1) * GROUP]
    }

    #[inline]
    pub fn m(&self, g: usize, i: usize) -> &[f16] {
        &self.m[(g * self.nb + i) * GROUP..(g * self.nb + i + 1) * GROUP]
    }

    /// Bytes held (for memory reports).
    pub fn bytes(&self) -> usize {
        self.qs.len() * 32 + (self.d.len() + self.m.len()) * 2
    }

    /// Packs 4- and 5-bit formats; `block(row, i)` gives `(d, m, qs, qh)` of a GGUF block
    /// (`qh` the 32 fifth bits, value `k` in bit `k`; ignored for Q4).
    fn pack_q4(kind: PackKind, rows: usize, cols: usize, block: impl Fn(usize, usize) -> (f16, f16, [u8; 16], u32)) -> PackedMatrix {
        let mut p = PackedMatrix::empty(kind, rows, cols);
        let nb = p.nb;
        let n = kind.qs_bytes();
        for g in 0..p.groups {
            for i in 0..nb {
                let base = (g * nb + i) * GROUP;
                let mut bytes = [0u8; 160];
                for r in 0..GROUP.min(rows - g * GROUP) {
                    let (d, m, qs, qh) = block(g * GROUP + r, i);
                    p.d[base + r] = d;
                    if kind.affine() {
                        p.m[base + r] = m;
                    }
                    let v = |k: usize| if k < 16 { qs[k] & 0x0F } else { qs[k - 16] >> 4 };
                    let h = |k: usize| ((qh >> k) & 1) as u8;
                    for j in 0..4 {
                        for t in 0..4 {
                            let (lo, hi) = (8 * j + t, 8 * j + 4 + t);
                            bytes[32 * j + 4 * r + t] = v(lo) | (v(hi) << 4);
                            bytes[128 + 4 * r + t] |= (h(lo) << (2 * j)) | (h(hi) << (2 * j + 1));
                        }
                    }
                }
                let off = (g * nb + i) * n;
                p.qs_bytes_mut()[off..off + n].copy_from_slice(&bytes[..n]);
            }
        }
        p
    }

    /// Packs `rows × cols` Q4_1 weights (row-major GGUF blocks).
    pub fn from_q4_1(src: &[BlockQ4_1], rows: usize, cols: usize) -> PackedMatrix {
        let nb = cols / QK;
        assert_eq!(src.len(), rows * nb, "Q4_1 block count");
        PackedMatrix::pack_q4(PackKind::Q4_1, rows, cols, |r, i| {
            let b = &src[r * nb + i];
            (b.d, b.m, b.qs, 0)
        })
    }

    /// Packs `rows × cols` Q4_0 weights.
    pub fn from_q4_0(src: &[BlockQ4_0], rows: usize, cols: usize) -> PackedMatrix {
        let nb = cols / QK;
        assert_eq!(src.len(), rows * nb, "Q4_0 block count");
        PackedMatrix::pack_q4(PackKind::Q4_0, rows, cols, |r, i| {
            let b = &src[r * nb + i];
            (b.d, f16::ZERO, b.qs, 0)
        })
    }

    /// Packs `rows × cols` Q5_0 weights.
    pub fn from_q5_0(src: &[BlockQ5_0], rows: usize, cols: usize) -> PackedMatrix {
        let nb = cols / QK;
        assert_eq!(src.len(), rows * nb, "Q5_0 block count");
        PackedMatrix::pack_q4(PackKind::Q5_0, rows, cols, |r, i| {
            let b = &src[r * nb + i];
            (b.d, f16::ZERO, b.qs, u32::from_le_bytes(b.qh))
        })
    }

    /// Packs `rows × cols` Q5_1 weights.
    pub fn from_q5_1(src: &[BlockQ5_1], rows: usize, cols: usize) -> PackedMatrix {
        let nb = cols / QK;
        assert_eq!(src.len(), rows * nb, "Q5_1 block count");
        PackedMatrix::pack_q4(PackKind::Q5_1, rows, cols, |r, i| {
            let b = &src[r * nb + i];
            (b.d, b.m, b.qs, u32::from_le_bytes(b.qh))
        })
    }

    /// Packs `rows × cols` Q8_0 weights.
    pub fn from_q8_0(src: &[BlockQ8_0], rows: usize, cols: usize) -> PackedMatrix {
        let nb = cols / QK;
        assert_eq!(src.len(), rows * nb, "Q8_0 block count");
        let mut p = PackedMatrix::empty(PackKind::Q8_0, rows, cols);
        for g in 0..p.groups {
            for i in 0..nb {
                let base = (g * nb + i) * GROUP;
                let mut bytes = [0u8; 256];
                for r in 0..GROUP.min(rows - g * GROUP) {
                    let b = &src[(g * GROUP + r) * nb + i];
                    p.d[base + r] = b.d;
                    for k in 0..8 {
                        for t in 0..4 {
                            bytes[32 * k + 4 * r + t] = b.qs[4 * k + t] as u8;
                        }
                    }
                }
                let off = (g * nb + i) * 256;
                p.qs_bytes_mut()[off..off + 256].copy_from_slice(&bytes);
            }
        }
        p
    }

    /// Quantized value `p` (0..32) of row `r` of (group, block) as the kernels see it:
    /// the unsigned nibble for Q4 formats, the unsigned 5-bit value for Q5 formats, the
    /// signed byte for Q8_0.
    #[inline]
    pub fn value(&self, q: &[u8], r: usize, p: usize) -> i32 {
        match self.kind {
            PackKind::Q4_0 | PackKind::Q4_1 | PackKind::Q5_0 | PackKind::Q5_1 => {
                let byte = q[32 * (p / 8) + 4 * r + p % 4];
                let high = p % 8 >= 4;
                let nib = (if high { byte >> 4 } else { byte & 0x0F }) as i32;
                if self.kind.five_bit() {
                    let bit = (q[128 + 4 * r + p % 4] >> (2 * (p / 8) + high as usize)) & 1;
                    nib | (bit as i32) << 4
                } else {
                    nib
                }
            }
            PackKind::Q8_0 => q[32 * (p / 4) + 4 * r + p % 4] as i8 as i32,
        }
    }

    /// Dequantizes row `r` into `out` (length `cols`), exactly as the GGUF dequantizers do.
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        assert!(r < self.rows && out.len() == self.cols);
        let (g, l) = (r / GROUP, r % GROUP);
        for i in 0..self.nb {
            let q = self.qs(g, i);
            let d = self.d(g, i)[l].to_f32();
            let ys = &mut out[i * QK..(i + 1) * QK];
            for (p, y) in ys.iter_mut().enumerate() {
                let v = self.value(q, l, p);
                *y = match self.kind {
                    PackKind::Q4_0 => (v - 8) as f32 * d,
                    PackKind::Q5_0 => (v - 16) as f32 * d,
                    PackKind::Q4_1 | PackKind::Q5_1 => v as f32 * d + self.m(g, i)[l].to_f32(),
                    PackKind::Q8_0 => v as f32 * d,
                };
            }
        }
    }
}

/// Most activation columns one packed-kernel call takes.
pub const PACKED_COLS: usize = 8;

/// `out[c][r] = dot(row 8g + r, activation column c)` for `c < out.len() <= PACKED_COLS`;
/// `x` and `sc` start at the first column, columns `stride` blocks apart.
pub type PackedFn = fn(w: &PackedMatrix, g: usize, x: &[BlockQ8_1], sc: &[ActScale], stride: usize, out: &mut [[f32; GROUP]]);

#[inline]
fn check(w: &PackedMatrix, g: usize, x: &[BlockQ8_1], sc: &[ActScale], stride: usize, n: usize) {
    assert!(g < w.groups && n <= PACKED_COLS, "packed kernel: group {g} of {}, {n} columns", w.groups);
    if n > 0 {
        let need = (n - 1) * stride + w.nb;
        assert!(need <= x.len() && need <= sc.len(), "packed kernel: activations too short");
    }
}

/// The scalar reference of the packed kernels (same arithmetic as the SIMD versions:
/// exact integer block sums, then `d_w * d_x` and the offset terms in f32).
pub fn packed_scalar(w: &PackedMatrix, g: usize, x: &[BlockQ8_1], sc: &[ActScale], stride: usize, out: &mut [[f32; GROUP]]) {
    check(w, g, x, sc, stride, out.len());
    for (c, o) in out.iter_mut().enumerate() {
        let mut acc = [0.0f32; GROUP];
        for i in 0..w.nb {
            let q = w.qs(g, i);
            let bx = &x[c * stride + i];
            let s = &sc[c * stride + i];
            let d = w.d(g, i);
            for (r, a) in acc.iter_mut().enumerate() {
                let mut isum = 0i32;
                for p in 0..QK {
                    isum += w.value(q, r, p) * bx.qs[p] as i32;
                }
                let dw = d[r].to_f32();
                *a += match w.kind {
                    PackKind::Q4_1 | PackKind::Q5_1 => isum as f32 * (dw * s[0]) + w.m(g, i)[r].to_f32() * s[1],
                    PackKind::Q4_0 => (isum as f32 * s[0] + s[3]) * dw,
                    PackKind::Q5_0 => (isum as f32 * s[0] + 2.0 * s[3]) * dw,
                    PackKind::Q8_0 => isum as f32 * s[0] * dw,
                };
            }
        }
        *o = acc;
    }
}

#[cfg(target_arch = "x86_64")]
pub mod x86 {
    //! AVX2 and AVX2+VNNI versions of the packed kernels.
    use super::*;
    use crate::dot::x86::split_nibbles;
    use std::arch::x86_64::*;

    /// How far ahead of the block being multiplied the weights are prefetched (bytes).
    const PREFETCH: usize = 1024;

    macro_rules! packed_kernels {
        ($feat:literal, $suffix:ident, $acc16:ident, $fin16:ident, $fin16w:ident, $acc32:ident, $asm4:literal, $q8_offset:literal) => {
            pub mod $suffix {
                use super::*;

                /// Q4_0 / Q4_1 / Q5_0 / Q5_1 × Q8_1 for `N` columns (`AFFINE`: a `m` per row
                /// instead of a fixed offset; `FIVE`: a fifth bit per value).
                #[target_feature(enable = $feat)]
                #[allow(clippy::too_many_arguments)]
                unsafe fn q4_n<const N: usize, const AFFINE: bool, const FIVE: bool>(
                    qs: *const u8,
                    d: *const f16,
                    m: *const f16,
                    nb: usize,
                    x: *const BlockQ8_1,
                    sc: *const ActScale,
                    stride: usize,
                    out: *mut [f32; GROUP],
                ) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    let mut acc2 = [_mm256_setzero_ps(); N];
                    let bytes = if FIVE { 160 } else { 128 };
                    for i in 0..nb {
                        let q = qs.add(i * bytes);
                        // The weights stream through once per product: fetch ahead (this
                        // also runs on into the next group, which is stored right after).
                        _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH) as *const i8);
                        _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH + 64) as *const i8);
                        if FIVE {
                            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH + 128) as *const i8);
                        }
                        let h = if FIVE { _mm256_load_si256(q.add(128) as *const __m256i) } else { _mm256_setzero_si256() };
                        let mut s = [_mm256_setzero_si256(); N];
                        let mut s2 = [_mm256_setzero_si256(); N];
                        for j in 0..4 {
                            let v = _mm256_load_si256(q.add(32 * j) as *const __m256i);
                            // Bits 2j and 2j+1 of each byte of `h` are the fifth bits.
                            let (lo, hi) = split_nibbles::<FIVE>(v, h, j);
                            for c in 0..N {
                                let xq = (*x.add(c * stride + i)).qs.as_ptr() as *const i32;
                                s[c] = $acc16(s[c], lo, _mm256_set1_epi32(xq.add(2 * j).read_unaligned()));
                                // 4-bit products all go to one accumulator (sixteen per i16 lane
                                // stay below 2^15, see `acc16_avx2`): four registers fewer, so
                                // the f32 accumulators of four columns are not spilled to the
                                // stack every block. 5-bit ones need the second accumulator.
                                let hx = _mm256_set1_epi32(xq.add(2 * j + 1).read_unaligned());
                                if FIVE {
                                    s2[c] = $acc16(s2[c], hi, hx);
                                } else {
                                    s[c] = $acc16(s[c], hi, hx);
                                }
                            }
                        }
                        let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.add(i * GROUP) as *const __m128i));
                        if AFFINE {
                            let mw = _mm256_cvtph_ps(_mm_loadu_si128(m.add(i * GROUP) as *const __m128i));
                            for c in 0..N {
                                let k = &*sc.add(c * stride + i);
                                let p = _mm256_cvtepi32_ps(if FIVE { $fin16w(s[c], s2[c]) } else { $fin16(s[c], _mm256_setzero_si256()) });
                                if $asm4 {
                                    // The rounding order of the four-column assembly.
                                    acc[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(k[1]), acc[c]);
                                    acc[c] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw, _mm256_set1_ps(k[0])), acc[c]);
                                } else {
                                    acc[c] = _mm256_fmadd_ps(p, _mm256_mul_ps(dw, _mm256_set1_ps(k[0])), acc[c]);
                                    acc2[c] = _mm256_fmadd_ps(mw, _mm256_set1_ps(k[1]), acc2[c]);
                                }
                            }
                        } else {
                            for c in 0..N {
                                let k = &*sc.add(c * stride + i);
                                let p = _mm256_cvtepi32_ps(if FIVE { $fin16w(s[c], s2[c]) } else { $fin16(s[c], _mm256_setzero_si256()) });
                                // The offset of the values (8, or 16 for Q5_0) times d_x * sum(q_x).
                                let off = if FIVE { 2.0 * k[3] } else { k[3] };
                                let t = _mm256_fmadd_ps(p, _mm256_set1_ps(k[0]), _mm256_set1_ps(off));
                                if $asm4 || i % 2 == 0 {
                                    acc[c] = _mm256_fmadd_ps(t, dw, acc[c]);
                                } else {
                                    acc2[c] = _mm256_fmadd_ps(t, dw, acc2[c]);
                                }
                            }
                        }
                    }
                    for c in 0..N {
                        _mm256_storeu_ps(out.add(c) as *mut f32, _mm256_add_ps(acc[c], acc2[c]));
                    }
                }

                /// Q8_0 × Q8_1 for `N` columns (sign trick: `|w| · sign(x, w)`).
                #[target_feature(enable = $feat)]
                unsafe fn q8_n<const N: usize>(
                    qs: *const u8,
                    d: *const f16,
                    nb: usize,
                    x: *const BlockQ8_1,
                    sc: *const ActScale,
                    stride: usize,
                    out: *mut [f32; GROUP],
                ) {
                    let mut acc = [_mm256_setzero_ps(); N];
                    let mut acc2 = [_mm256_setzero_ps(); N];
                    for i in 0..nb {
                        let q = qs.add(i * 256);
                        for l in 0..4 {
                            _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH + 64 * l) as *const i8);
                        }
                        let mut s = [_mm256_setzero_si256(); N];
                        let mut s2 = [_mm256_setzero_si256(); N];
                        for k in 0..8 {
                            let w = _mm256_load_si256(q.add(32 * k) as *const __m256i);
                            let aw = _mm256_sign_epi8(w, w);
                            for c in 0..N {
                                let xq = (*x.add(c * stride + i)).qs.as_ptr() as *const i32;
                                let xv = _mm256_sign_epi8(_mm256_set1_epi32(xq.add(k).read_unaligned()), w);
                                if k % 2 == 0 {
                                    s[c] = $acc32(s[c], aw, xv);
                                } else {
                                    s2[c] = $acc32(s2[c], aw, xv);
                                }
                            }
                        }
                        let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.add(i * GROUP) as *const __m128i));
                        for c in 0..N {
                            let k = &*sc.add(c * stride + i);
                            let p = _mm256_cvtepi32_ps(_mm256_add_epi32(s[c], s2[c]));
                            if $asm4 {
                                // The rounding order of the four-column assembly.
                                acc[c] = _mm256_fmadd_ps(p, _mm256_mul_ps(_mm256_set1_ps(k[0]), dw), acc[c]);
                                continue;
                            }
                            let t = _mm256_mul_ps(p, _mm256_set1_ps(k[0]));
                            if i % 2 == 0 {
                                acc[c] = _mm256_fmadd_ps(t, dw, acc[c]);
                            } else {
                                acc2[c] = _mm256_fmadd_ps(t, dw, acc2[c]);
                            }
                        }
                    }
                    for c in 0..N {
                        _mm256_storeu_ps(out.add(c) as *mut f32, _mm256_add_ps(acc[c], acc2[c]));
                    }
                }

                /// The packed kernel for this path (see [`PackedFn`]). Columns past four go
                /// to a second call of at most four (Q8_0 on the VNNI path takes four to
                /// eight at once, in `q8_offset_kernel`): each column's bits are the same
                /// either way.
                pub fn packed(w: &PackedMatrix, g: usize, x: &[BlockQ8_1], sc: &[ActScale], stride: usize, out: &mut [[f32; GROUP]]) {
                    let n = out.len();
                    check(w, g, x, sc, stride, n);
                    if $q8_offset && w.kind == PackKind::Q8_0 && n >= 4 {
                        // SAFETY: as below.
                        unsafe { q8_offset_kernel(w, g, x.as_ptr(), sc.as_ptr(), stride, out) };
                        return;
                    }
                    if n > 4 {
                        let (head, tail) = out.split_at_mut(4);
                        packed(w, g, x, sc, stride, head);
                        packed(w, g, &x[4 * stride..], &sc[4 * stride..], stride, tail);
                        return;
                    }
                    let nb = w.nb;
                    let qs = w.qs.as_ptr() as *const u8;
                    let qs = unsafe { qs.add(g * nb * w.kind.qs_bytes()) };
                    let d = unsafe { w.d.as_ptr().add(g * nb * GROUP) };
                    let xp = x.as_ptr();
                    let sp = sc.as_ptr();
                    let o = out.as_mut_ptr();
                    // SAFETY: bounds checked by `check`; the CPU features were detected by the
                    // caller (`Kernels::new` hands these out only for a supported Isa).
                    unsafe {
                        macro_rules! q4 {
                            ($affine:literal, $five:literal) => {{
                                let m = if $affine { w.m.as_ptr().add(g * nb * GROUP) } else { d };
                                match n {
                                    1 => q4_n::<1, $affine, $five>(qs, d, m, nb, xp, sp, stride, o),
                                    2 => q4_n::<2, $affine, $five>(qs, d, m, nb, xp, sp, stride, o),
                                    3 => q4_n::<3, $affine, $five>(qs, d, m, nb, xp, sp, stride, o),
                                    4 if $asm4 && nb > 0 => asm::q4_4::<$affine, $five>(qs, d, m, nb, xp, sp, stride, o),
                                    4 => q4_n::<4, $affine, $five>(qs, d, m, nb, xp, sp, stride, o),
                                    _ => {}
                                }
                            }};
                        }
                        match w.kind {
                            PackKind::Q4_0 => q4!(false, false),
                            PackKind::Q4_1 => q4!(true, false),
                            PackKind::Q5_0 => q4!(false, true),
                            PackKind::Q5_1 => q4!(true, true),
                            PackKind::Q8_0 => match n {
                                1 => q8_n::<1>(qs, d, nb, xp, sp, stride, o),
                                2 => q8_n::<2>(qs, d, nb, xp, sp, stride, o),
                                3 => q8_n::<3>(qs, d, nb, xp, sp, stride, o),
                                4 if $asm4 && nb > 0 => asm::q8_4(qs, d, nb, xp, sp, stride, o),
                                4 => q8_n::<4>(qs, d, nb, xp, sp, stride, o),
                                _ => {}
                            },
                        }
                    }
                }
            }
        };
    }

    // AVX2: u8×i8 products summed pairwise into i16 (`vpmaddubsw`). For 4-bit weights the
    // sixteen products of a block that land in one i16 stay below 16·15·128 < 2^15, so they
    // are summed in i16 and widened once; for 5-bit weights each half (eight products, below
    // 8·31·128 < 2^15) is widened separately; 8-bit products widen every step.
    #[inline(always)]
    unsafe fn acc16_avx2(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, x))
    }
    #[inline(always)]
    unsafe fn fin16_avx2(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_add_epi16(a, b), _mm256_set1_epi16(1))
    }
    #[inline(always)]
    unsafe fn fin16w_avx2(a: __m256i, b: __m256i) -> __m256i {
        let one = _mm256_set1_epi16(1);
        _mm256_add_epi32(_mm256_madd_epi16(a, one), _mm256_madd_epi16(b, one))
    }
    #[inline(always)]
    unsafe fn acc32_avx2(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1)))
    }

    // VNNI: `vpdpbusd` accumulates u8×i8 products straight into i32 lanes.
    #[inline(always)]
    unsafe fn acc_vnni(acc: __m256i, w: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, w, x)
    }
    #[inline(always)]
    unsafe fn fin_vnni(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    /// Four-column AVX2 kernels for Q4_0, Q4_1, Q5_0, Q5_1 and Q8_0, scheduled by hand.
    ///
    /// Why assembly: at four columns (batched decode, prefill) the intrinsic versions above
    /// run ~10 cycles per (column, block) where the same instruction mix, in registers,
    /// runs in ~8: the compiler hoists all four weight vectors and their split halves to
    /// the top of the block and spills accumulators to the stack to make room, and the
    /// reloads compete with the activation broadcasts for the two 256-bit load slots per
    /// cycle. Here every value has a fixed register (measured: Q4_1 at 4 columns 91-93
    /// GMAC/s per core against 77-80, `examples/packed_bench.rs`). The arithmetic is that
    /// of the intrinsic kernels (exact integer block sums, then the f32 scales), so the
    /// same scalar-twin tests cover them, and the AVX2 intrinsics round in this code's
    /// order (one accumulator per column, offset term first): a column's result is the
    /// same bits whether it is computed alone or with three others, so greedy output does
    /// not depend on batching (`tests/simd.rs` checks the bits).
    ///
    /// Registers: ymm0-3 the four columns' block sums, ymm4-7 their f32 accumulators,
    /// ymm8/ymm9 the weight operands, ymm10/ymm11 broadcast activations and scale
    /// temporaries, ymm12/ymm13 the block's weight scales `d`/`m`, ymm14 sixteen i16 ones
    /// (for `vpmaddwd`), ymm15 the nibble mask. Column `c`'s activation block is at
    /// `x + c * xs` (`xs3 = 3 * xs`), its scales at `s + c * ss`.
    mod asm {
        use super::*;

        /// The `asm!` of a four-column kernel: the template pieces in brackets, then the
        /// operands every kernel shares (weights `{q}`, scales `{d}`, activations `{x}` with
        /// column stride `{xs}`, activation scales `{s}` with stride `{ss}`, block count
        /// `{n}`, output `{o}`; all 16 vector registers clobbered), then any extra operands.
        macro_rules! four_column_asm {
            ([$($tmpl:expr),* $(,)?] ($qs:expr, $d:expr, $x:expr, $xs:expr, $sc:expr, $ss:expr, $nb:expr, $out:expr) $($extra:tt)*) => {
                std::arch::asm!(
                    $($tmpl),*,
                    q = inout(reg) $qs => _,
                    d = inout(reg) $d => _,
                    x = inout(reg) $x => _,
                    xs = in(reg) $xs,
                    xs3 = in(reg) 3 * $xs,
                    s = inout(reg) $sc => _,
                    ss = in(reg) $ss,
                    ss3 = in(reg) 3 * $ss,
                    n = inout(reg) $nb => _,
                    o = in(reg) $out,
                    $($extra)*
                    out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
                    out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
                    out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
                    out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
                    options(nostack),
                )
            };
        }

        /// Products of the split weight vector (ymm8 low nibbles, ymm9 high) with one
        /// column's activation bytes at offsets `$lo`/`$hi` of its block, added to `$s`.
        macro_rules! q4_column {
            ($x:literal, $s:literal, $lo:literal, $hi:literal) => {
                concat!(
                    "vpbroadcastd ymm10, dword ptr [", $x, " + ", $lo, "]\n",
                    "vpmaddubsw ymm10, ymm8, ymm10\n",
                    "vpaddw ", $s, ", ", $s, ", ymm10\n",
                    q4_column!(high $x, $s, $hi),
                )
            };
            // The first products of a block start the sum instead of adding to it.
            (first $x:literal, $s:literal, $lo:literal, $hi:literal) => {
                concat!(
                    "vpbroadcastd ymm10, dword ptr [", $x, " + ", $lo, "]\n",
                    "vpmaddubsw ", $s, ", ymm8, ymm10\n",
                    q4_column!(high $x, $s, $hi),
                )
            };
            // The high-nibble products, added to the sum.
            (high $x:literal, $s:literal, $hi:literal) => {
                concat!(
                    "vpbroadcastd ymm11, dword ptr [", $x, " + ", $hi, "]\n",
                    "vpmaddubsw ymm11, ymm9, ymm11\n",
                    "vpaddw ", $s, ", ", $s, ", ymm11\n",
                )
            };
        }

        /// The split weight vector (ymm8/ymm9) times activation bytes `$lo`/`$hi` of all four
        /// columns, into their sums ymm0-3.
        macro_rules! four_columns {
            ($($first:ident)? $lo:literal, $hi:literal) => {
                concat!(
                    q4_column!($($first)? "{x}", "ymm0", $lo, $hi),
                    q4_column!($($first)? "{x} + {xs}", "ymm1", $lo, $hi),
                    q4_column!($($first)? "{x} + 2*{xs}", "ymm2", $lo, $hi),
                    q4_column!($($first)? "{x} + {xs3}", "ymm3", $lo, $hi),
                )
            };
        }

        /// Weight vector `j` of a Q4 block (bytes `$w..$w + 32`): split into nibbles and
        /// multiplied with activation values `8j..8j+4` (`$lo`) and `8j+4..8j+8` (`$hi`)
        /// of all four columns (offsets include the 4-byte `d`/`s` header of a Q8_1 block).
        macro_rules! q4_vector {
            ($($first:ident)? $w:literal, $lo:literal, $hi:literal) => {
                concat!(
                    "vmovdqa ymm8, ymmword ptr [{q} + ", $w, "]\n",
                    "vpsrlw ymm9, ymm8, 4\n",
                    "vpand ymm8, ymm8, ymm15\n",
                    "vpand ymm9, ymm9, ymm15\n",
                    four_columns!($($first)? $lo, $hi),
                )
            };
        }

        /// A block's i16 sums (pairs summed into i32 lanes by `vpmaddwd` with ones) as f32.
        macro_rules! widen {
            ($sum:literal) => {
                concat!("vpmaddwd ", $sum, ", ", $sum, ", ymm14\n", "vcvtdq2ps ", $sum, ", ", $sum, "\n")
            };
        }

        /// Q4_1 block end for one column: `acc += m * s_x + (sum as f32) * (d * d_x)`.
        macro_rules! q4_1_finish {
            ($s:literal, $sum:literal, $acc:literal) => {
                concat!(
                    widen!($sum),
                    "vbroadcastss ymm10, dword ptr [",
                    $s,
                    " + 4]\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ymm13, ymm10\n",
                    "vbroadcastss ymm11, dword ptr [",
                    $s,
                    "]\n",
                    "vmulps ymm11, ymm11, ymm12\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ",
                    $sum,
                    ", ymm11\n",
                )
            };
        }

        /// Q4_0 block end for one column: `acc += ((sum as f32) * d_x - 8 * d_x * sum(q_x)) * d`.
        macro_rules! q4_0_finish {
            ($s:literal, $sum:literal, $acc:literal) => {
                concat!(
                    widen!($sum),
                    "vbroadcastss ymm10, dword ptr [",
                    $s,
                    "]\n",
                    "vbroadcastss ymm11, dword ptr [",
                    $s,
                    " + 12]\n",
                    "vfmadd213ps ",
                    $sum,
                    ", ymm10, ymm11\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ",
                    $sum,
                    ", ymm12\n",
                )
            };
        }

        /// Set-up shared by all kernels: ymm14 = i16 ones, ymm15 = 0x0F bytes, zero sums
        /// and accumulators.
        macro_rules! prologue {
            () => {
                concat!(
                    "vpcmpeqb ymm14, ymm14, ymm14\n",
                    "vpsrlw ymm15, ymm14, 12\n",
                    "vpackuswb ymm15, ymm15, ymm15\n",
                    "vpsrlw ymm14, ymm14, 15\n",
                    "vxorps ymm4, ymm4, ymm4\n",
                    "vxorps ymm5, ymm5, ymm5\n",
                    "vxorps ymm6, ymm6, ymm6\n",
                    "vxorps ymm7, ymm7, ymm7\n",
                )
            };
        }

        /// Clears the block sums at the start of a block.
        macro_rules! clear_sums {
            () => {
                "vpxor xmm0, xmm0, xmm0\nvpxor xmm1, xmm1, xmm1\nvpxor xmm2, xmm2, xmm2\nvpxor xmm3, xmm3, xmm3\n"
            };
        }

        /// A block's end for the four columns: `$finish` with each column's scales, its block
        /// sum (`$t0`..`$t3`) and its f32 accumulator (ymm4-7).
        macro_rules! finish_columns {
            ($finish:ident, $t0:literal, $t1:literal, $t2:literal, $t3:literal) => {
                concat!(
                    $finish!("{s}", $t0, "ymm4"),
                    $finish!("{s} + {ss}", $t1, "ymm5"),
                    $finish!("{s} + 2*{ss}", $t2, "ymm6"),
                    $finish!("{s} + {ss3}", $t3, "ymm7"),
                )
            };
        }

        /// Moves every pointer to the next block (`$bytes` of weights; `$next_m` steps the
        /// offsets of affine formats) and loops while blocks remain.
        macro_rules! next_block {
            ($bytes:literal, $next_m:literal) => {
                concat!("add {q}, ", $bytes, "\n", "add {d}, 16\n", $next_m, "\n", "add {x}, 36\n", "add {s}, 16\n", "dec {n}\n", "jnz 2b\n",)
            };
        }

        /// Stores the four accumulators to `out` and clears the upper halves of the vector
        /// registers: without `vzeroupper`, the SSE code that runs next (libm's `expf` in
        /// SwiGLU, measured) pays a state-transition penalty on every instruction, and
        /// a step of batched decode ran 3x slower.
        macro_rules! epilogue {
            () => {
                concat!(
                    "vmovups ymmword ptr [{o}], ymm4\n",
                    "vmovups ymmword ptr [{o} + 32], ymm5\n",
                    "vmovups ymmword ptr [{o} + 64], ymm6\n",
                    "vmovups ymmword ptr [{o} + 96], ymm7\n",
                    "vzeroupper\n",
                )
            };
        }

        /// Constants the Q5 kernels read from memory (they have no register to spare):
        /// the nibble mask, the fifth-bit mask and sixteen i16 ones.
        #[repr(C, align(32))]
        struct Q5Consts([u8; 32], [u8; 32], [i16; 16]);
        static Q5_CONSTS: Q5Consts = Q5Consts([0x0F; 32], [0x10; 32], [1; 16]);

        /// Weight vector `j` of a Q5 block (low/high nibbles at `$w`, fifth bits in the
        /// vector at byte 128 of the block): the 5-bit values of its two halves built in
        /// ymm8/ymm9 (`$sl`/`$sh` move fifth bit `2j`/`2j + 1` of each byte to bit 4), then
        /// multiplied with activation values `$lo`/`$hi` of all four columns.
        macro_rules! q5_vector {
            ($($first:ident)? $w:literal, $lo:literal, $hi:literal, $sl:literal, $sh:literal) => {
                concat!(
                    "vmovdqa ymm8, ymmword ptr [{q} + ", $w, "]\n",
                    "vpsrlw ymm9, ymm8, 4\n",
                    "vpand ymm8, ymm8, ymmword ptr [{k}]\n",
                    "vpand ymm9, ymm9, ymmword ptr [{k}]\n",
                    "vmovdqa ymm10, ymmword ptr [{q} + 128]\n",
                    $sl, "\n",
                    "vpand ymm10, ymm10, ymmword ptr [{k} + 32]\n",
                    "vpor ymm8, ymm8, ymm10\n",
                    "vmovdqa ymm11, ymmword ptr [{q} + 128]\n",
                    $sh, "\n",
                    "vpand ymm11, ymm11, ymmword ptr [{k} + 32]\n",
                    "vpor ymm9, ymm9, ymm11\n",
                    four_columns!($($first)? $lo, $hi),
                )
            };
        }

        /// Q5_0 block end for one column (block sum as f32 in `$t`, `d` in ymm8):
        /// `acc += ((t as f32) * d_x - 16 * d_x * sum(q_x)) * d`.
        macro_rules! q5_0_finish {
            ($s:literal, $t:literal, $acc:literal) => {
                concat!(
                    "vbroadcastss ymm10, dword ptr [",
                    $s,
                    "]\n",
                    "vbroadcastss ymm11, dword ptr [",
                    $s,
                    " + 12]\n",
                    "vaddps ymm11, ymm11, ymm11\n",
                    "vfmadd213ps ",
                    $t,
                    ", ymm10, ymm11\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ",
                    $t,
                    ", ymm8\n",
                )
            };
        }

        /// Q5_1 block end for one column (`d` in ymm8, `m` in ymm9):
        /// `acc += m * s_x + (t as f32) * (d * d_x)`.
        macro_rules! q5_1_finish {
            ($s:literal, $t:literal, $acc:literal) => {
                concat!(
                    "vbroadcastss ymm10, dword ptr [",
                    $s,
                    " + 4]\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ymm9, ymm10\n",
                    "vbroadcastss ymm11, dword ptr [",
                    $s,
                    "]\n",
                    "vmulps ymm11, ymm11, ymm8\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ",
                    $t,
                    ", ymm11\n",
                )
            };
        }

        /// Q4_0 / Q5_0 (`AFFINE = false`) or Q4_1 / Q5_1 (`FIVE`) × Q8_1, four columns (see
        /// [`PackedFn`]; `nb > 0`).
        ///
        /// A 5-bit product pair reaches 2·31·128, so an i16 lane holds the sums of two weight
        /// vectors, not four: each half block is widened to i32 (ymm12-15, one per column)
        /// before the next starts in ymm0-3. With those four registers taken, the masks and
        /// ones come from memory (`Q5_CONSTS`) and the fifth bits are reloaded per vector.
        #[target_feature(enable = "avx2,fma,f16c")]
        #[allow(clippy::too_many_arguments)]
        pub unsafe fn q4_4<const AFFINE: bool, const FIVE: bool>(
            qs: *const u8,
            d: *const f16,
            m: *const f16,
            nb: usize,
            x: *const BlockQ8_1,
            sc: *const ActScale,
            stride: usize,
            out: *mut [f32; GROUP],
        ) {
            debug_assert!(nb > 0);
            let xs = stride * std::mem::size_of::<BlockQ8_1>();
            let ss = stride * std::mem::size_of::<ActScale>();
            macro_rules! body {
                ($finish:ident, $load_m:literal, $next_m:literal) => {
                    four_column_asm!(
                        [
                        prologue!(),
                        "2:",
                        // The weights stream through once per product (see `PREFETCH`).
                        "prefetcht0 [{q} + 1024]",
                        "prefetcht0 [{q} + 1088]",
                        q4_vector!(first "0", "4", "8"),
                        q4_vector!("32", "12", "16"),
                        q4_vector!("64", "20", "24"),
                        q4_vector!("96", "28", "32"),
                        "vcvtph2ps ymm12, xmmword ptr [{d}]",
                        $load_m,
                        finish_columns!($finish, "ymm0", "ymm1", "ymm2", "ymm3"),
                        next_block!("128", $next_m),
                        epilogue!(),
                        ]
                        (qs, d, x, xs, sc, ss, nb, out)
                        m = inout(reg) m => _,
                    )
                };
            }
            if FIVE {
                let k = &Q5_CONSTS as *const Q5Consts as *const u8;
                macro_rules! body5 {
                    ($finish:ident, $load_m:literal, $next_m:literal) => {
                        four_column_asm!(
                            [
                            "vxorps ymm4, ymm4, ymm4",
                            "vxorps ymm5, ymm5, ymm5",
                            "vxorps ymm6, ymm6, ymm6",
                            "vxorps ymm7, ymm7, ymm7",
                            "2:",
                            "prefetcht0 [{q} + 1024]",
                            "prefetcht0 [{q} + 1088]",
                            "prefetcht0 [{q} + 1152]",
                            q5_vector!(first "0", "4", "8", "vpsllw ymm10, ymm10, 4", "vpsllw ymm11, ymm11, 3"),
                            q5_vector!("32", "12", "16", "vpsllw ymm10, ymm10, 2", "vpsllw ymm11, ymm11, 1"),
                            "vpmaddwd ymm12, ymm0, ymmword ptr [{k} + 64]",
                            "vpmaddwd ymm13, ymm1, ymmword ptr [{k} + 64]",
                            "vpmaddwd ymm14, ymm2, ymmword ptr [{k} + 64]",
                            "vpmaddwd ymm15, ymm3, ymmword ptr [{k} + 64]",
                            q5_vector!(first "64", "20", "24", "", "vpsrlw ymm11, ymm11, 1"),
                            q5_vector!("96", "28", "32", "vpsrlw ymm10, ymm10, 2", "vpsrlw ymm11, ymm11, 3"),
                            "vpmaddwd ymm0, ymm0, ymmword ptr [{k} + 64]",
                            "vpmaddwd ymm1, ymm1, ymmword ptr [{k} + 64]",
                            "vpmaddwd ymm2, ymm2, ymmword ptr [{k} + 64]",
                            "vpmaddwd ymm3, ymm3, ymmword ptr [{k} + 64]",
                            "vpaddd ymm12, ymm12, ymm0",
                            "vpaddd ymm13, ymm13, ymm1",
                            "vpaddd ymm14, ymm14, ymm2",
                            "vpaddd ymm15, ymm15, ymm3",
                            "vcvtdq2ps ymm12, ymm12",
                            "vcvtdq2ps ymm13, ymm13",
                            "vcvtdq2ps ymm14, ymm14",
                            "vcvtdq2ps ymm15, ymm15",
                            "vcvtph2ps ymm8, xmmword ptr [{d}]",
                            $load_m,
                            finish_columns!($finish, "ymm12", "ymm13", "ymm14", "ymm15"),
                            next_block!("160", $next_m),
                            epilogue!(),
                            ]
                            (qs, d, x, xs, sc, ss, nb, out)
                            m = inout(reg) m => _,
                            k = in(reg) k,
                        )
                    };
                }
                if AFFINE {
                    body5!(q5_1_finish, "vcvtph2ps ymm9, xmmword ptr [{m}]", "add {m}, 16");
                } else {
                    body5!(q5_0_finish, "/* {m} */", "");
                }
            } else if AFFINE {
                body!(q4_1_finish, "vcvtph2ps ymm13, xmmword ptr [{m}]", "add {m}, 16");
            } else {
                // `{m}` must appear in the template: an unused operand is an error.
                body!(q4_0_finish, "/* {m} */", "");
            }
        }

        /// One 4-byte slice `$k` of a Q8_0 weight vector (ymm8, its absolute values in
        /// ymm9) times one column's activations (sign trick: `|w| · sign(x, w)`), added
        /// to the column's i32 sums `$s`. Columns alternate between ymm10 and ymm11.
        macro_rules! q8_column {
            ($x:literal, $s:literal, $t:literal, $off:literal) => {
                concat!(
                    "vpbroadcastd ",
                    $t,
                    ", dword ptr [",
                    $x,
                    " + ",
                    $off,
                    "]\n",
                    "vpsignb ",
                    $t,
                    ", ",
                    $t,
                    ", ymm8\n",
                    "vpmaddubsw ",
                    $t,
                    ", ymm9, ",
                    $t,
                    "\n",
                    "vpmaddwd ",
                    $t,
                    ", ",
                    $t,
                    ", ymm14\n",
                    "vpaddd ",
                    $s,
                    ", ",
                    $s,
                    ", ",
                    $t,
                    "\n",
                )
            };
        }

        /// Weight vector `k` of a Q8_0 block (bytes `$w..$w + 32`, values `4k..4k+4` of
        /// each row) times activation bytes at `$off` of all four columns.
        macro_rules! q8_vector {
            ($w:literal, $off:literal) => {
                concat!(
                    "vmovdqa ymm8, ymmword ptr [{q} + ",
                    $w,
                    "]\n",
                    "vpsignb ymm9, ymm8, ymm8\n",
                    q8_column!("{x}", "ymm0", "ymm10", $off),
                    q8_column!("{x} + {xs}", "ymm1", "ymm11", $off),
                    q8_column!("{x} + 2*{xs}", "ymm2", "ymm10", $off),
                    q8_column!("{x} + {xs3}", "ymm3", "ymm11", $off),
                )
            };
        }

        /// Q8_0 block end for one column: `acc += (sum as f32) * (d * d_x)`.
        macro_rules! q8_finish {
            ($s:literal, $sum:literal, $acc:literal) => {
                concat!(
                    "vcvtdq2ps ",
                    $sum,
                    ", ",
                    $sum,
                    "\n",
                    "vbroadcastss ymm10, dword ptr [",
                    $s,
                    "]\n",
                    "vmulps ymm10, ymm10, ymm12\n",
                    "vfmadd231ps ",
                    $acc,
                    ", ",
                    $sum,
                    ", ymm10\n",
                )
            };
        }

        /// Q8_0 × Q8_1, four columns (see [`PackedFn`]; `nb > 0`).
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn q8_4(qs: *const u8, d: *const f16, nb: usize, x: *const BlockQ8_1, sc: *const ActScale, stride: usize, out: *mut [f32; GROUP]) {
            debug_assert!(nb > 0);
            let xs = stride * std::mem::size_of::<BlockQ8_1>();
            let ss = stride * std::mem::size_of::<ActScale>();
            four_column_asm!([
                prologue!(),
                "2:",
                "prefetcht0 [{q} + 1024]",
                "prefetcht0 [{q} + 1088]",
                "prefetcht0 [{q} + 1152]",
                "prefetcht0 [{q} + 1216]",
                clear_sums!(),
                q8_vector!("0", "4"),
                q8_vector!("32", "8"),
                q8_vector!("64", "12"),
                q8_vector!("96", "16"),
                q8_vector!("128", "20"),
                q8_vector!("160", "24"),
                q8_vector!("192", "28"),
                q8_vector!("224", "32"),
                "vcvtph2ps ymm12, xmmword ptr [{d}]",
                finish_columns!(q8_finish, "ymm0", "ymm1", "ymm2", "ymm3"),
                next_block!("256", ""),
                epilogue!(),
            ](qs, d, x, xs, sc, ss, nb, out))
        }
    }

    // The last argument: whether four columns of the packed types use the hand-scheduled
    // AVX2 kernels of `asm` (the VNNI path keeps its intrinsics: `vpdpbusd` needs no
    // i16 stage, so it has registers to spare).
    // And whether Q8_0 goes through `q8_offset_kernel` (VNNI only: `vpdpbusd` sums into i32
    // with no i16 stage to saturate).
    packed_kernels!("avx2,fma,f16c", avx2, acc16_avx2, fin16_avx2, fin16w_avx2, acc32_avx2, true, false);
    packed_kernels!("avx2,fma,f16c,avx512vnni,avx512vl", vnni, acc_vnni, fin_vnni, fin_vnni, acc_vnni, false, true);

    /// Q8_0 × Q8_1 on the VNNI path for four to [`PACKED_COLS`] columns a call, without
    /// the sign trick. `vpdpbusd` multiplies unsigned by signed bytes; flipping each weight
    /// byte's top bit turns `w` into the unsigned `w + 128`, so the integer block sum is
    /// `I = Σ (w + 128)·x = dot + 128·Σx`, and with the activation scale `d` and
    /// `sx = d·Σx` (the block's third [`ActScale`]) `fma(I, d, −128·sx)` is `d·dot`
    /// rounded once: `I` is below 2^24 and `d·Σx` has at most 23 significant bits (an f16
    /// scale times a sum below 2^12), so both are exact in f32 and the result has the bits
    /// of `(dot as f32) * d`. Per weight vector one XOR is shared by every column, and each
    /// column costs one `vpdpbusd` whose activation bytes are broadcast from memory (where
    /// the sign trick spent a broadcast, a `vpsignb` and the `vpdpbusd`), which is what
    /// makes eight columns a call pay (32 vector registers with AVX-512VL). The f32 sums
    /// are those of `q8_n` (the same `t`, even and odd blocks in two accumulators added at
    /// the end), so a column has the same bits here as in the one-to-three-column kernel
    /// (`q8_n`, which stays faster alone: measured in `examples/packed_bench.rs`).
    ///
    /// # Safety
    /// The CPU has the features of the VNNI path; `check` passed for these arguments.
    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn q8_offset_kernel(w: &PackedMatrix, g: usize, x: *const BlockQ8_1, sc: *const ActScale, stride: usize, out: &mut [[f32; GROUP]]) {
        let nb = w.nb;
        let qs = (w.qs.as_ptr() as *const u8).add(g * nb * w.kind.qs_bytes());
        let d = w.d.as_ptr().add(g * nb * GROUP);
        let o = out.as_mut_ptr();
        match out.len() {
            4 => q8_offset_n::<4>(qs, d, nb, x, sc, stride, o),
            5 => q8_offset_n::<5>(qs, d, nb, x, sc, stride, o),
            6 => q8_offset_n::<6>(qs, d, nb, x, sc, stride, o),
            7 => q8_offset_n::<7>(qs, d, nb, x, sc, stride, o),
            8 => q8_offset_n::<8>(qs, d, nb, x, sc, stride, o),
            _ => {}
        }
    }

    #[target_feature(enable = "avx2,fma,f16c,avx512vnni,avx512vl")]
    unsafe fn q8_offset_n<const N: usize>(
        qs: *const u8,
        d: *const f16,
        nb: usize,
        x: *const BlockQ8_1,
        sc: *const ActScale,
        stride: usize,
        out: *mut [f32; GROUP],
    ) {
        let flip = _mm256_set1_epi8(-128);
        let minus128 = _mm256_set1_ps(-128.0);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut acc2 = [_mm256_setzero_ps(); N];
        for i in 0..nb {
            let q = qs.add(i * 256);
            for l in 0..4 {
                _mm_prefetch::<_MM_HINT_T0>(q.wrapping_add(PREFETCH + 64 * l) as *const i8);
            }
            // Up to six columns the integer sums run in two chains a column (even and odd
            // steps), so that enough `vpdpbusd`s are independent to cover their latency
            // (past six the registers run out, and the columns are enough chains);
            // integer sums are exact in any order.
            let mut s = [_mm256_setzero_si256(); N];
            let mut s2 = [_mm256_setzero_si256(); N];
            for k in 0..8 {
                let wu = _mm256_xor_si256(_mm256_load_si256(q.add(32 * k) as *const __m256i), flip);
                for c in 0..N {
                    let xq = (*x.add(c * stride + i)).qs.as_ptr() as *const i32;
                    let xv = _mm256_set1_epi32(xq.add(k).read_unaligned());
                    if N <= 6 && k % 2 == 1 {
                        s2[c] = _mm256_dpbusd_epi32(s2[c], wu, xv);
                    } else {
                        s[c] = _mm256_dpbusd_epi32(s[c], wu, xv);
                    }
                }
            }
            let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.add(i * GROUP) as *const __m128i));
            for c in 0..N {
                let k = &*sc.add(c * stride + i);
                let sum = _mm256_add_epi32(s[c], s2[c]);
                let off = _mm256_mul_ps(_mm256_set1_ps(k[2]), minus128);
                let t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_set1_ps(k[0]), off);
                if i % 2 == 0 {
                    acc[c] = _mm256_fmadd_ps(t, dw, acc[c]);
                } else {
                    acc2[c] = _mm256_fmadd_ps(t, dw, acc2[c]);
                }
            }
        }
        for c in 0..N {
            _mm256_storeu_ps(out.add(c) as *mut f32, _mm256_add_ps(acc[c], acc2[c]));
        }
    }
}
