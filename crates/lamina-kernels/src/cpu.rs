//! Which instruction-set paths this CPU can run, detected once at run time.
//!
//! The default build targets baseline x86-64 (no `target-cpu=native`), so the same binary
//! runs everywhere; each SIMD kernel is compiled with `#[target_feature]` and chosen here.

/// A family of kernels, from slowest to fastest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    /// Portable Rust, the reference every SIMD path is tested against.
    Scalar,
    /// AVX2 + FMA + F16C (Haswell, Zen 1 and later).
    Avx2,
    /// AVX2 plus 256-bit VNNI dot products (`vpdpbusd` from AVX-512 VNNI + VL: Zen 4/5, Ice Lake and later).
    Avx2Vnni,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx2Vnni => "avx2+vnni",
        }
    }

    /// Whether this CPU can execute the path.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Vnni => Isa::Avx2.supported() && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The fastest supported path, unless `LAMINA_ISA` (scalar, avx2, avx2+vnni) asks for
    /// a slower one (for testing and benchmarking the others).
    pub fn best() -> Isa {
        let all = [Isa::Avx2Vnni, Isa::Avx2, Isa::Scalar];
        if let Ok(want) = std::env::var("LAMINA_ISA") {
            if let Some(isa) = all.iter().find(|i| i.name() == want.trim()) {
                if isa.supported() {
                    return *isa;
                }
            }
        }
        all.into_iter().find(|i| i.supported()).unwrap_or(Isa::Scalar)
    }

    /// Every path, with whether this CPU supports it (for test and benchmark reports).
    pub fn all() -> [Isa; 3] {
        [Isa::Scalar, Isa::Avx2, Isa::Avx2Vnni]
    }
}
