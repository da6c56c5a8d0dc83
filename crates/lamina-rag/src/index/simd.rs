//! The dot product, the one arithmetic kernel of vector search, chosen at run time: AVX-512F
//! or AVX2 + FMA where the processor has them (`is_x86_feature_detected!`), else a portable
//! loop with independent accumulators that the compiler vectorises for the baseline target.
//!
//! [`kernel`] returns the best path as a plain function pointer, so a search loop looks the
//! processor up once; [`dot`] is the same thing for a single call.

/// A dot-product implementation: `a` and `b` have the same length.
pub type DotFn = fn(&[f32], &[f32]) -> f32;

/// The fastest path this processor supports.
pub fn kernel() -> DotFn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512f") {
            return x86::dot_avx512;
        }
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return x86::dot_avx2;
        }
    }
    dot_scalar
}

/// Every path this processor can run, by name (for tests and `describe`).
pub fn kernels() -> Vec<(&'static str, DotFn)> {
    let mut out: Vec<(&'static str, DotFn)> = vec![("scalar", dot_scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            out.push(("avx2+fma", x86::dot_avx2));
        }
        if is_x86_feature_detected!("avx512f") {
            out.push(("avx512f", x86::dot_avx512));
        }
    }
    out
}

/// An 8-bit dot product (exact, in i32): `a` and `b` have the same length, below 2^17.
pub type DotI8Fn = fn(&[i8], &[i8]) -> i32;

/// The fastest 8-bit path this processor supports.
pub fn kernel_i8() -> DotI8Fn {
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx512bw") {
            return x86::dot_i8_avx512;
        }
        if is_x86_feature_detected!("avx2") {
            return x86::dot_i8_avx2;
        }
    }
    dot_i8_scalar
}

/// Every 8-bit path this processor can run, by name.
pub fn kernels_i8() -> Vec<(&'static str, DotI8Fn)> {
    let mut out: Vec<(&'static str, DotI8Fn)> = vec![("scalar", dot_i8_scalar)];
    #[cfg(target_arch = "x86_64")]
    {
        if is_x86_feature_detected!("avx2") {
            out.push(("avx2", x86::dot_i8_avx2));
        }
        if is_x86_feature_detected!("avx512bw") {
            out.push(("avx512bw", x86::dot_i8_avx512));
        }
    }
    out
}

/// Portable 8-bit dot product.
pub fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// The dot product by the fastest path.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    kernel()(a, b)
}

/// Portable: sixteen independent accumulators, so the compiler vectorises the loop.
pub fn dot_scalar(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Safe to call only through [`super::kernel`]/[`super::kernels`], which hand it out after
    /// detecting AVX-512F.
    pub fn dot_avx512(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: handed out only where `avx512f` was detected; reads stay below `n`.
        unsafe { avx512(a.as_ptr(), b.as_ptr(), n) }
    }

    /// Safe to call only through [`super::kernel`]/[`super::kernels`], which hand it out after
    /// detecting AVX2 and FMA.
    pub fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: handed out only where `avx2` and `fma` were detected; reads stay below `n`.
        unsafe { avx2(a.as_ptr(), b.as_ptr(), n) }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn avx512(a: *const f32, b: *const f32, n: usize) -> f32 {
        let (mut s0, mut s1, mut s2, mut s3) = (_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps());
        let mut i = 0;
        while i + 64 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), s0);
            s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 16)), _mm512_loadu_ps(b.add(i + 16)), s1);
            s2 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 32)), _mm512_loadu_ps(b.add(i + 32)), s2);
            s3 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i + 48)), _mm512_loadu_ps(b.add(i + 48)), s3);
            i += 64;
        }
        while i + 16 <= n {
            s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a.add(i)), _mm512_loadu_ps(b.add(i)), s0);
            i += 16;
        }
        if i < n {
            // The last 1–15 lanes through a mask: masked-off lanes are not read.
            let m: __mmask16 = (1u16 << (n - i)) - 1;
            s1 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a.add(i)), _mm512_maskz_loadu_ps(m, b.add(i)), s1);
        }
        _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)))
    }

    /// Safe to call only through [`super::kernel_i8`]/[`super::kernels_i8`] (AVX-512BW detected).
    pub fn dot_i8_avx512(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        // SAFETY: handed out only where `avx512bw` was detected; reads stay below `n`.
        unsafe { i8_avx512(a.as_ptr(), b.as_ptr(), n) }
    }

    /// Safe to call only through [`super::kernel_i8`]/[`super::kernels_i8`] (AVX2 detected).
    pub fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
        let n = a.len().min(b.len());
        // SAFETY: handed out only where `avx2` was detected; reads stay below `n`.
        unsafe { i8_avx2(a.as_ptr(), b.as_ptr(), n) }
    }

    // Both widen 8-bit values to 16 bits and multiply-add pairs into i32 lanes
    // (`vpmaddwd`): exact, and no i16 sum can saturate.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn i8_avx512(a: *const i8, b: *const i8, n: usize) -> i32 {
        let (mut s0, mut s1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
        let mut i = 0;
        while i + 64 <= n {
            let a0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(a.add(i) as *const __m256i));
            let b0 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(b.add(i) as *const __m256i));
            let a1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(a.add(i + 32) as *const __m256i));
            let b1 = _mm512_cvtepi8_epi16(_mm256_loadu_si256(b.add(i + 32) as *const __m256i));
            s0 = _mm512_add_epi32(s0, _mm512_madd_epi16(a0, b0));
            s1 = _mm512_add_epi32(s1, _mm512_madd_epi16(a1, b1));
            i += 64;
        }
        let mut total = _mm512_reduce_add_epi32(_mm512_add_epi32(s0, s1));
        while i < n {
            total += *a.add(i) as i32 * *b.add(i) as i32;
            i += 1;
        }
        total
    }

    #[target_feature(enable = "avx2")]
    unsafe fn i8_avx2(a: *const i8, b: *const i8, n: usize) -> i32 {
        let (mut s0, mut s1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut i = 0;
        while i + 32 <= n {
            let a0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.add(i) as *const __m128i));
            let b0 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(i) as *const __m128i));
            let a1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(a.add(i + 16) as *const __m128i));
            let b1 = _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(i + 16) as *const __m128i));
            s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(a0, b0));
            s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(a1, b1));
            i += 32;
        }
        let s = _mm256_add_epi32(s0, s1);
        let h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0b01_00_11_10));
        let h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0b10_11_00_01));
        let mut total = _mm_cvtsi128_si32(h);
        while i < n {
            total += *a.add(i) as i32 * *b.add(i) as i32;
            i += 1;
        }
        total
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2(a: *const f32, b: *const f32, n: usize) -> f32 {
        let (mut s0, mut s1, mut s2, mut s3) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
        let mut i = 0;
        while i + 32 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 8)), _mm256_loadu_ps(b.add(i + 8)), s1);
            s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 16)), _mm256_loadu_ps(b.add(i + 16)), s2);
            s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i + 24)), _mm256_loadu_ps(b.add(i + 24)), s3);
            i += 32;
        }
        while i + 8 <= n {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), s0);
            i += 8;
        }
        let s = _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3));
        let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        let h = _mm_add_ss(h, _mm_shuffle_ps(h, h, 1));
        let mut total = _mm_cvtss_f32(h);
        while i < n {
            total += *a.add(i) * *b.add(i);
            i += 1;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_8_bit_path_on_this_processor_equals_the_integer_sum() {
        let paths = kernels_i8();
        eprintln!("8-bit dot paths here: {:?}", paths.iter().map(|p| p.0).collect::<Vec<_>>());
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 384, 385, 1000] {
            let a: Vec<i8> = (0..n).map(|i| ((i * 37 % 255) as i32 - 127) as i8).collect();
            let b: Vec<i8> = (0..n).map(|i| ((i * 53 % 251) as i32 - 125) as i8).collect();
            let want: i64 = a.iter().zip(&b).map(|(&x, &y)| x as i64 * y as i64).sum();
            for (name, f) in &paths {
                assert_eq!(f(&a, &b) as i64, want, "{name} n={n}");
            }
            // The extremes: every product 127·127 (or −127·127).
            let (hi, lo) = (vec![127i8; n], vec![-127i8; n]);
            for (name, f) in &paths {
                assert_eq!(f(&hi, &hi) as i64, 16_129 * n as i64, "{name} n={n}");
                assert_eq!(f(&hi, &lo) as i64, -16_129 * n as i64, "{name} n={n}");
            }
        }
    }

    #[test]
    fn every_path_on_this_processor_matches_a_plain_sum() {
        let paths = kernels();
        eprintln!("dot paths here: {:?}", paths.iter().map(|p| p.0).collect::<Vec<_>>());
        // Lengths around every block and tail size of each path.
        for n in [0, 1, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 384, 385, 1000] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 53 % 97) as f32 - 48.0) * 0.021).collect();
            let plain: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            for (name, f) in &paths {
                let got = f(&a, &b) as f64;
                assert!((got - plain).abs() <= 1e-4 * (1.0 + plain.abs()), "{name} n={n}: {got} vs {plain}");
            }
        }
    }
}
