//! Every SIMD kernel against its scalar twin on random data, including odd block counts
//! and every column count. Paths this CPU cannot run are printed as skipped.

use half::f16;
use lamina_kernels::dot::MAX_COLS;
use lamina_kernels::matmul::{matmul, Activations, Kernels, Weights};
use lamina_kernels::quant::*;
use lamina_kernels::{ActFormat, Isa, ThreadPool};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn f(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn random_blocks<T: Copy>(rng: &mut Rng, n: usize, fill: impl Fn(&mut Rng) -> T) -> Vec<T> {
    (0..n).map(|_| fill(rng)).collect()
}

fn q4_0(r: &mut Rng) -> BlockQ4_0 {
    BlockQ4_0 { d: f16::from_f32(r.f() * 0.1), qs: std::array::from_fn(|_| r.byte()) }
}
fn q4_1(r: &mut Rng) -> BlockQ4_1 {
    BlockQ4_1 { d: f16::from_f32(r.f() * 0.1), m: f16::from_f32(r.f() * 0.5), qs: std::array::from_fn(|_| r.byte()) }
}
fn q5_0(r: &mut Rng) -> BlockQ5_0 {
    BlockQ5_0 { d: f16::from_f32(r.f() * 0.1), qh: std::array::from_fn(|_| r.byte()), qs: std::array::from_fn(|_| r.byte()) }
}
fn q5_1(r: &mut Rng) -> BlockQ5_1 {
    BlockQ5_1 { d: f16::from_f32(r.f() * 0.1), m: f16::from_f32(r.f() * 0.5), qh: std::array::from_fn(|_| r.byte()), qs: std::array::from_fn(|_| r.byte()) }
}
fn q8_0(r: &mut Rng) -> BlockQ8_0 {
    BlockQ8_0 { d: f16::from_f32(r.f() * 0.1), qs: std::array::from_fn(|_| (r.byte() as i8).max(-127)) }
}
fn q8_1(r: &mut Rng) -> BlockQ8_1 {
    let qs: [i8; 32] = std::array::from_fn(|_| (r.byte() as i8).max(-127));
    let d = r.f() * 0.1;
    let s: i32 = qs.iter().map(|&v| v as i32).sum();
    BlockQ8_1 { d: f16::from_f32(d), s: f16::from_f32(d * s as f32), qs }
}

fn close(a: f32, b: f32, scale: f32) -> bool {
    (a - b).abs() <= 1e-4 * scale.max(1.0)
}

fn simd_paths() -> Vec<Kernels> {
    let mut v = Vec::new();
    for isa in Isa::all() {
        if isa == Isa::Scalar {
            continue;
        }
        match Kernels::new(isa) {
            Some(k) => v.push(k),
            None => eprintln!("SKIPPED: {} kernels (this CPU does not support them)", isa.name()),
        }
    }
    v
}

macro_rules! check_dot {
    ($name:ident, $wgen:ident, $xgen:ident, $field:ident) => {
        #[test]
        fn $name() {
            let scalar = Kernels::new(Isa::Scalar).unwrap();
            let mut rng = Rng(0x9E3779B97F4A7C15);
            for k in simd_paths() {
                for nb in [1usize, 2, 3, 7, 18, 48, 49] {
                    let w = random_blocks(&mut rng, nb, $wgen);
                    let stride = nb + 3; // rows of x are not adjacent: exercises the stride
                    let x = random_blocks(&mut rng, stride * MAX_COLS, $xgen);
                    for cols in 1..=MAX_COLS {
                        let mut want = vec![0.0; cols];
                        let mut got = vec![0.0; cols];
                        (scalar.$field)(&w, &x, stride, &mut want);
                        (k.$field)(&w, &x, stride, &mut got);
                        let scale: f32 = want.iter().map(|v| v.abs()).sum::<f32>() + nb as f32;
                        for c in 0..cols {
                            assert!(close(want[c], got[c], scale), "{} {} nb={nb} cols={cols}: {} vs {}", k.isa.name(), stringify!($field), want[c], got[c]);
                        }
                    }
                }
                eprintln!("checked {} {}", k.isa.name(), stringify!($field));
            }
        }
    };
}

check_dot!(q4_0_matches_scalar, q4_0, q8_0, q4_0);
check_dot!(q4_1_matches_scalar, q4_1, q8_1, q4_1);
check_dot!(q5_0_matches_scalar, q5_0, q8_0, q5_0);
check_dot!(q5_1_matches_scalar, q5_1, q8_1, q5_1);
check_dot!(q8_0_matches_scalar, q8_0, q8_0, q8_0);

#[test]
fn f32_matches_scalar_with_tails() {
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let mut rng = Rng(42);
    for k in simd_paths() {
        for len in [1usize, 5, 8, 9, 31, 64, 67] {
            let w: Vec<f32> = (0..len).map(|_| rng.f()).collect();
            let stride = len + 5;
            let x: Vec<f32> = (0..stride * MAX_COLS).map(|_| rng.f()).collect();
            for cols in 1..=MAX_COLS {
                let mut want = vec![0.0; cols];
                let mut got = vec![0.0; cols];
                (scalar.f32)(&w, &x, stride, &mut want);
                (k.f32)(&w, &x, stride, &mut got);
                for c in 0..cols {
                    assert!((want[c] - got[c]).abs() < 1e-5 * len as f32, "{len} {cols}");
                }
            }
        }
    }
}

/// Integer kernels equal the dot product of the dequantized values (an independent check
/// of the block layouts, not only SIMD against scalar).
#[test]
fn integer_dots_equal_dequantized_dots() {
    let mut rng = Rng(7);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let nb = 5;
    let x: Vec<f32> = (0..nb * 32).map(|_| rng.f()).collect();
    let mut x8 = vec![BlockQ8_0::default(); nb];
    quantize_q8_0(&x, &mut x8);
    let mut x81 = vec![BlockQ8_1::default(); nb];
    quantize_q8_1(&x, &mut x81);
    let mut xd = vec![0.0; nb * 32];
    dequantize_q8_0(&x8, &mut xd);
    let dot = |a: &[f32]| a.iter().zip(&xd).map(|(p, q)| p * q).sum::<f32>();
    let mut got = [0.0];

    let w = random_blocks(&mut rng, nb, q4_0);
    let mut wd = vec![0.0; nb * 32];
    dequantize_q4_0(&w, &mut wd);
    (scalar.q4_0)(&w, &x8, nb, &mut got);
    assert!((got[0] - dot(&wd)).abs() < 1e-3, "q4_0 {} {}", got[0], dot(&wd));

    let w = random_blocks(&mut rng, nb, q5_0);
    dequantize_q5_0(&w, &mut wd);
    (scalar.q5_0)(&w, &x8, nb, &mut got);
    assert!((got[0] - dot(&wd)).abs() < 1e-3, "q5_0");

    let w = random_blocks(&mut rng, nb, q8_0);
    dequantize_q8_0(&w, &mut wd);
    (scalar.q8_0)(&w, &x8, nb, &mut got);
    assert!((got[0] - dot(&wd)).abs() < 1e-3, "q8_0");

    // Offset formats use s = d*sum(q) stored as f16, so allow its rounding.
    let w = random_blocks(&mut rng, nb, q4_1);
    dequantize_q4_1(&w, &mut wd);
    (scalar.q4_1)(&w, &x81, nb, &mut got);
    assert!((got[0] - dot(&wd)).abs() < 2e-2, "q4_1 {} {}", got[0], dot(&wd));

    let w = random_blocks(&mut rng, nb, q5_1);
    dequantize_q5_1(&w, &mut wd);
    (scalar.q5_1)(&w, &x81, nb, &mut got);
    assert!((got[0] - dot(&wd)).abs() < 2e-2, "q5_1");
}

#[test]
fn threaded_matmul_equals_single_thread_scalar() {
    let mut rng = Rng(99);
    let rows = 37;
    let cols = 96;
    let n = 9;
    let w = random_blocks(&mut rng, rows * cols / 32, q4_1);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
    let mut acts = Activations::default();
    acts.prepare(&x, n, cols, &[ActFormat::Q8_1]);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let one = ThreadPool::new(1);
    let mut want = vec![0.0; n * rows];
    matmul(&one, &scalar, &x, &acts, Weights::Q4_1(&w), rows, &mut want);
    for threads in [2, 3] {
        let pool = ThreadPool::new(threads);
        let k = Kernels::best();
        let mut got = vec![0.0; n * rows];
        matmul(&pool, &k, &x, &acts, Weights::Q4_1(&w), rows, &mut got);
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-4 * a.abs().max(1.0));
        }
    }
    // Row r, token t equals the single dot product.
    let mut one_dot = [0.0];
    (scalar.q4_1)(&w[5 * 3..6 * 3], &acts.q8_1[4 * 3..], 3, &mut one_dot);
    assert_eq!(one_dot[0], want[4 * rows + 5]);
}

/// Many activation rows against f32 weights take the blocked-GEMM path: fused with another
/// matrix, threaded, with odd shapes, it equals the single-thread scalar dot products.
#[test]
fn f32_gemm_path_equals_scalar_dots() {
    use lamina_kernels::matmul::{matmul_many, MatmulJob};
    let mut rng = Rng(7);
    let (cols, n) = (100, 45);
    let (ra, rb) = (37, 12);
    let wa: Vec<f32> = (0..ra * cols).map(|_| rng.f()).collect();
    let wb: Vec<f32> = (0..rb * cols).map(|_| rng.f()).collect();
    let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
    let mut acts = Activations::default();
    acts.prepare(&x, n, cols, &[ActFormat::F32]);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let one = ThreadPool::new(1);
    let (mut ea, mut eb) = (vec![0.0; n * ra], vec![0.0; n * rb]);
    matmul(&one, &scalar, &x, &acts, Weights::F32(&wa), ra, &mut ea);
    matmul(&one, &scalar, &x, &acts, Weights::F32(&wb), rb, &mut eb);
    // The scalar path is the plain definition.
    let plain: f32 = (0..cols).map(|c| x[3 * cols + c] * wa[5 * cols + c]).sum();
    assert!((ea[3 * ra + 5] - plain).abs() < 1e-4);
    for k in simd_paths() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            let (mut ga, mut gb) = (vec![f32::NAN; n * ra], vec![f32::NAN; n * rb]);
            matmul_many(
                &pool,
                &k,
                &x,
                &acts,
                &mut [MatmulJob { weights: Weights::F32(&wa), rows: ra, out: &mut ga }, MatmulJob { weights: Weights::F32(&wb), rows: rb, out: &mut gb }],
            );
            for (want, got) in [(&ea, &ga), (&eb, &gb)] {
                for (a, b) in want.iter().zip(got.iter()) {
                    assert!((a - b).abs() < 1e-4 * a.abs().max(1.0), "{:?} x{threads}: {a} vs {b}", k.isa);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Packed (row-interleaved) weights.

use lamina_kernels::packed::{packed_scalar, ActScale, PackKind, PackedMatrix, GROUP, PACKED_COLS};

fn packed_paths() -> Vec<Kernels> {
    simd_paths()
}

/// Random weights of `kind` packed, plus the same weights as GGUF blocks.
fn random_packed(rng: &mut Rng, kind: PackKind, rows: usize, nb: usize) -> (PackedMatrix, Weights<'static>) {
    let cols = nb * 32;
    match kind {
        PackKind::Q4_0 => {
            let w: &'static [BlockQ4_0] = Box::leak(random_blocks(rng, rows * nb, q4_0).into_boxed_slice());
            (PackedMatrix::from_q4_0(w, rows, cols), Weights::Q4_0(w))
        }
        PackKind::Q4_1 => {
            let w: &'static [BlockQ4_1] = Box::leak(random_blocks(rng, rows * nb, q4_1).into_boxed_slice());
            (PackedMatrix::from_q4_1(w, rows, cols), Weights::Q4_1(w))
        }
        PackKind::Q5_0 => {
            let w: &'static [BlockQ5_0] = Box::leak(random_blocks(rng, rows * nb, q5_0).into_boxed_slice());
            (PackedMatrix::from_q5_0(w, rows, cols), Weights::Q5_0(w))
        }
        PackKind::Q5_1 => {
            let w: &'static [BlockQ5_1] = Box::leak(random_blocks(rng, rows * nb, q5_1).into_boxed_slice());
            (PackedMatrix::from_q5_1(w, rows, cols), Weights::Q5_1(w))
        }
        PackKind::Q8_0 => {
            let w: &'static [BlockQ8_0] = Box::leak(random_blocks(rng, rows * nb, q8_0).into_boxed_slice());
            (PackedMatrix::from_q8_0(w, rows, cols), Weights::Q8_0(w))
        }
    }
}

/// Quantized activations (`n` columns of `nb` blocks) with matching f32 scales.
fn random_acts(rng: &mut Rng, n: usize, nb: usize) -> (Vec<BlockQ8_1>, Vec<ActScale>) {
    let x: Vec<f32> = (0..n * nb * 32).map(|_| rng.f() * 3.0).collect();
    let mut q = vec![BlockQ8_1::default(); n * nb];
    let mut s = vec![[0.0; 4]; n * nb];
    quantize_q8_1_scaled(&x, &mut q, Some(&mut s));
    (q, s)
}

const KINDS: [PackKind; 5] = [PackKind::Q4_0, PackKind::Q4_1, PackKind::Q5_0, PackKind::Q5_1, PackKind::Q8_0];

#[test]
fn packed_kernels_match_scalar_twin() {
    let mut rng = Rng(0xA5A5_1234_5678_9ABC);
    let paths = packed_paths();
    for kind in KINDS {
        for nb in [1usize, 2, 3, 7, 18, 49] {
            for rows in [1usize, 7, 8, 13, 24] {
                let (pm, _) = random_packed(&mut rng, kind, rows, nb);
                let stride = nb + 3;
                let (x, sc) = random_acts(&mut rng, PACKED_COLS, stride);
                for k in &paths {
                    for g in 0..pm.groups {
                        let mut alone = [[0.0f32; GROUP]; PACKED_COLS];
                        for (c, out) in alone.iter_mut().enumerate() {
                            (k.packed)(&pm, g, &x[c * stride..], &sc[c * stride..], stride, std::slice::from_mut(out));
                        }
                        for cols in 1..=PACKED_COLS {
                            let mut want = vec![[0.0f32; GROUP]; cols];
                            let mut got = vec![[0.0f32; GROUP]; cols];
                            packed_scalar(&pm, g, &x, &sc, stride, &mut want);
                            (k.packed)(&pm, g, &x, &sc, stride, &mut got);
                            // Batch invariance: a column's result does not depend on how
                            // many columns share the call (greedy serving relies on it).
                            for c in 0..cols {
                                assert_eq!(
                                    got[c].map(f32::to_bits),
                                    alone[c].map(f32::to_bits),
                                    "{} {kind:?} nb={nb} rows={rows} g={g}: column {c} of {cols} differs from the column alone",
                                    k.isa.name()
                                );
                            }
                            for c in 0..cols {
                                for r in 0..GROUP {
                                    let (a, b) = (want[c][r], got[c][r]);
                                    assert!(
                                        (a - b).abs() <= 1e-5 * (a.abs() + nb as f32),
                                        "{} {kind:?} nb={nb} rows={rows} g={g} cols={cols} r={r}: {a} vs {b}",
                                        k.isa.name()
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        for k in &paths {
            eprintln!("checked packed {kind:?} on {}", k.isa.name());
        }
    }
}

/// The packed scalar kernel equals the GGUF-layout scalar kernel row by row (an
/// independent check of the interleaving), and padded rows of a tail group are zero.
#[test]
#[allow(clippy::needless_range_loop)] // `r` is a row of the group and of `got`
fn packed_scalar_equals_unpacked_scalar() {
    let mut rng = Rng(31337);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    for kind in KINDS {
        for (rows, nb) in [(13usize, 5usize), (8, 1), (3, 18)] {
            let (pm, w) = random_packed(&mut rng, kind, rows, nb);
            let (x, sc) = random_acts(&mut rng, 3, nb);
            let mut x0 = vec![BlockQ8_0::default(); x.len()];
            for (a, b) in x0.iter_mut().zip(&x) {
                *a = BlockQ8_0 { d: b.d, qs: b.qs };
            }
            for g in 0..pm.groups {
                let mut got = vec![[0.0f32; GROUP]; 3];
                packed_scalar(&pm, g, &x, &sc, nb, &mut got);
                for r in 0..GROUP {
                    let row = g * GROUP + r;
                    let mut want = [0.0f32; 3];
                    if row < rows {
                        let span = row * nb..(row + 1) * nb;
                        match w {
                            Weights::Q4_0(b) => (scalar.q4_0)(&b[span], &x0, nb, &mut want),
                            Weights::Q4_1(b) => (scalar.q4_1)(&b[span], &x, nb, &mut want),
                            Weights::Q5_0(b) => (scalar.q5_0)(&b[span], &x0, nb, &mut want),
                            Weights::Q5_1(b) => (scalar.q5_1)(&b[span], &x, nb, &mut want),
                            Weights::Q8_0(b) => (scalar.q8_0)(&b[span], &x0, nb, &mut want),
                            _ => unreachable!(),
                        }
                    }
                    for c in 0..3 {
                        let (a, b) = (want[c], got[c][r]);
                        assert!((a - b).abs() <= 1e-4 * a.abs().max(1.0), "{kind:?} rows={rows} row={row} c={c}: {a} vs {b}");
                    }
                }
            }
            // Dequantized rows are the GGUF ones.
            let mut a = vec![0.0; nb * 32];
            let mut b = vec![0.0; nb * 32];
            for row in 0..rows {
                pm.row_f32(row, &mut a);
                let span = row * nb..(row + 1) * nb;
                match w {
                    Weights::Q4_0(bl) => dequantize_q4_0(&bl[span], &mut b),
                    Weights::Q4_1(bl) => dequantize_q4_1(&bl[span], &mut b),
                    Weights::Q5_0(bl) => dequantize_q5_0(&bl[span], &mut b),
                    Weights::Q5_1(bl) => dequantize_q5_1(&bl[span], &mut b),
                    Weights::Q8_0(bl) => dequantize_q8_0(&bl[span], &mut b),
                    _ => unreachable!(),
                }
                assert_eq!(a, b, "{kind:?} row {row}");
            }
        }
    }
}

/// End to end: a threaded matmul over packed weights with the best kernels equals the
/// single-thread scalar matmul over the GGUF-layout weights, within 1e-4 relative.
#[test]
fn packed_matmul_equals_unpacked_scalar_matmul() {
    let mut rng = Rng(2024);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let one = ThreadPool::new(1);
    let mut paths = packed_paths();
    paths.push(scalar);
    for kind in KINDS {
        for (rows, cols, n) in [(37usize, 96usize, 9usize), (64, 576, 1), (20, 32, 5), (8, 64, 70)] {
            let (pm, w) = random_packed(&mut rng, kind, rows, cols / 32);
            let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
            let mut acts = Activations::default();
            acts.prepare(&x, n, cols, &[w.act_format(), ActFormat::Q8_1]);
            let mut want = vec![0.0; n * rows];
            matmul(&one, &scalar, &x, &acts, w, rows, &mut want);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1.0);
            for k in &paths {
                for threads in [1, 2, 3] {
                    let pool = ThreadPool::new(threads);
                    let mut got = vec![f32::NAN; n * rows];
                    matmul(&pool, k, &x, &acts, Weights::Packed(&pm), rows, &mut got);
                    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                        assert!(
                            (a - b).abs() <= 1e-4 * a.abs().max(1e-2 * scale),
                            "{} {kind:?} {rows}x{cols} n={n} t={threads} at {i}: {a} vs {b}",
                            k.isa.name()
                        );
                    }
                }
            }
        }
    }
}

/// Fused products of packed matrices whose row counts are not multiples of 8 (groups then
/// straddle thread ranges and job boundaries) still write every output exactly once.
#[test]
fn packed_matmul_many_with_row_tails() {
    use lamina_kernels::matmul::{matmul_many, MatmulJob};
    let mut rng = Rng(77);
    let k = Kernels::best();
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let (cols, n) = (64, 3);
    let (a, wa) = random_packed(&mut rng, PackKind::Q4_1, 13, 2);
    let (b, wb) = random_packed(&mut rng, PackKind::Q8_0, 21, 2);
    let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
    let mut acts = Activations::default();
    acts.prepare(&x, n, cols, &[ActFormat::Q8_0, ActFormat::Q8_1]);
    for threads in [1, 2, 3, 4] {
        let pool = ThreadPool::new(threads);
        let (mut oa, mut ob) = (vec![f32::NAN; n * 13], vec![f32::NAN; n * 21]);
        matmul_many(
            &pool,
            &k,
            &x,
            &acts,
            &mut [MatmulJob { weights: Weights::Packed(&a), rows: 13, out: &mut oa }, MatmulJob { weights: Weights::Packed(&b), rows: 21, out: &mut ob }],
        );
        let (mut ea, mut eb) = (vec![0.0; n * 13], vec![0.0; n * 21]);
        matmul(&ThreadPool::new(1), &scalar, &x, &acts, wa, 13, &mut ea);
        matmul(&ThreadPool::new(1), &scalar, &x, &acts, wb, 21, &mut eb);
        for (w, g) in ea.iter().chain(&eb).zip(oa.iter().chain(&ob)) {
            assert!((w - g).abs() <= 1e-4 * w.abs().max(1.0), "threads={threads}: {w} vs {g}");
        }
    }
}

/// The AVX2 activation quantizers are bit-identical to the scalar ones, ties included.
#[test]
fn simd_quantizers_are_bit_identical() {
    if !Isa::Avx2.supported() {
        eprintln!("SKIPPED: avx2 quantizers (this CPU does not support them)");
        return;
    }
    let mut rng = Rng(5);
    for nb in [1usize, 2, 7, 48] {
        let mut x: Vec<f32> = (0..nb * 32).map(|_| rng.f() * 10.0).collect();
        // Exact ties: a block whose largest magnitude is 127 has d = 1 and id = 1.
        let ties = [127.0, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 126.5, -126.5, 0.0, -0.0, 3.4999998, -7.5000005];
        x[..ties.len()].copy_from_slice(&ties);
        if nb > 1 {
            x[32..64].fill(0.0); // an all-zero block (d = 0)
        }
        let mut a0 = vec![BlockQ8_0::default(); nb];
        let mut b0 = vec![BlockQ8_0::default(); nb];
        quantize_q8_0_isa(Isa::Scalar, &x, &mut a0);
        quantize_q8_0_isa(Isa::Avx2, &x, &mut b0);
        let mut a1 = vec![BlockQ8_1::default(); nb];
        let mut b1 = vec![BlockQ8_1::default(); nb];
        let mut sa = vec![[0.0f32; 4]; nb];
        let mut sb = vec![[0.0f32; 4]; nb];
        quantize_q8_1_isa(Isa::Scalar, &x, &mut a1, Some(&mut sa));
        quantize_q8_1_isa(Isa::Avx2, &x, &mut b1, Some(&mut sb));
        for i in 0..nb {
            assert_eq!(a0[i].qs, b0[i].qs, "q8_0 block {i}");
            assert_eq!(a0[i].d.to_bits(), b0[i].d.to_bits());
            assert_eq!(a1[i].qs, b1[i].qs, "q8_1 block {i}");
            assert_eq!(a1[i].qs, a0[i].qs);
            assert_eq!((a1[i].d.to_bits(), a1[i].s.to_bits()), (b1[i].d.to_bits(), b1[i].s.to_bits()));
            assert_eq!(sa[i].map(f32::to_bits), sb[i].map(f32::to_bits));
        }
        // d = 1 for the first block: ties go to the even neighbour (llama.cpp's rounding).
        assert_eq!(&a0[0].qs[..9], &[127, 0, 0, 2, -2, 2, -2, 126, -126]);
    }
}

/// Packed 5-bit kernels at the extremes of their i16 partial sums (every value 31, every
/// activation ±127) equal the scalar twin: the halves are widened before they are added.
#[test]
fn packed_q5_extremes_do_not_overflow() {
    let (rows, nb) = (8, 3);
    let full = |_: &mut Rng| BlockQ5_1 { d: f16::from_f32(0.5), m: f16::from_f32(-1.0), qh: [0xFF; 4], qs: [0xFF; 16] };
    let full0 = |_: &mut Rng| BlockQ5_0 { d: f16::from_f32(0.5), qh: [0xFF; 4], qs: [0xFF; 16] };
    let mut rng = Rng(1);
    let w1 = random_blocks(&mut rng, rows * nb, full);
    let w0 = random_blocks(&mut rng, rows * nb, full0);
    let pms = [PackedMatrix::from_q5_1(&w1, rows, nb * 32), PackedMatrix::from_q5_0(&w0, rows, nb * 32)];
    for sign in [1.0f32, -1.0] {
        let x = vec![sign; 4 * nb * 32];
        let mut q = vec![BlockQ8_1::default(); 4 * nb];
        let mut sc = vec![[0.0; 4]; 4 * nb];
        quantize_q8_1_scaled(&x, &mut q, Some(&mut sc));
        for pm in &pms {
            let mut want = vec![[0.0f32; GROUP]; 4];
            packed_scalar(pm, 0, &q, &sc, nb, &mut want);
            // Q5_1: 96 values of 31 * 0.5 - 1; Q5_0: 96 values of (31 - 16) * 0.5.
            let exact = if pm.kind == PackKind::Q5_1 { 96.0 * 14.5 } else { 96.0 * 7.5 } * sign;
            assert!((want[0][0] - exact).abs() < 1e-2 * exact.abs(), "{:?} {} vs {exact}", pm.kind, want[0][0]);
            for k in packed_paths() {
                let mut got = vec![[0.0f32; GROUP]; 4];
                (k.packed)(pm, 0, &q, &sc, nb, &mut got);
                for c in 0..4 {
                    for r in 0..GROUP {
                        assert!((want[c][r] - got[c][r]).abs() <= 1e-5 * want[c][r].abs(), "{} {:?}", k.isa.name(), pm.kind);
                    }
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// K-quants against Q8_K activations.

fn q4k(r: &mut Rng) -> BlockQ4K {
    BlockQ4K {
        d: f16::from_f32(r.f() * 0.01),
        dmin: f16::from_f32(r.f() * 0.01),
        scales: std::array::from_fn(|_| r.byte()),
        qs: std::array::from_fn(|_| r.byte()),
    }
}
fn q5k(r: &mut Rng) -> BlockQ5K {
    BlockQ5K {
        d: f16::from_f32(r.f() * 0.01),
        dmin: f16::from_f32(r.f() * 0.01),
        scales: std::array::from_fn(|_| r.byte()),
        qh: std::array::from_fn(|_| r.byte()),
        qs: std::array::from_fn(|_| r.byte()),
    }
}
fn q6k(r: &mut Rng) -> BlockQ6K {
    BlockQ6K {
        ql: std::array::from_fn(|_| r.byte()),
        qh: std::array::from_fn(|_| r.byte()),
        scales: std::array::from_fn(|_| r.byte() as i8),
        d: f16::from_f32(r.f() * 0.01),
    }
}
fn q8k(r: &mut Rng) -> BlockQ8K {
    let qs: [i8; 256] = std::array::from_fn(|_| (r.byte() as i8).max(-127));
    let bsums = std::array::from_fn(|g| qs[16 * g..16 * g + 16].iter().map(|&q| q as i16).sum());
    BlockQ8K { d: r.f() * 0.1, qs, bsums }
}

check_dot!(q4_k_matches_scalar, q4k, q8k, q4_k);
check_dot!(q5_k_matches_scalar, q5k, q8k, q5_k);
check_dot!(q6_k_matches_scalar, q6k, q8k, q6_k);

/// The scalar K-quant dots equal an f64 dot of the dequantized weights and activations
/// (independent of the kernels' integer arithmetic), to f32 rounding.
#[test]
fn k_quant_dots_equal_dequantized_dots() {
    let mut rng = Rng(0xC0FFEE);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    for nb in [1usize, 2, 6] {
        let x: Vec<f32> = (0..nb * 256).map(|_| rng.f() * 2.0).collect();
        let mut xq = vec![BlockQ8K::default(); nb];
        quantize_q8_k_scalar(&x, &mut xq);
        let mut xd = vec![0.0; nb * 256];
        dequantize_q8_k(&xq, &mut xd);
        let mut wd = vec![0.0; nb * 256];
        let mut got = [0.0f32];
        let check = |name: &str, wd: &[f32], got: f32| {
            let want: f64 = wd.iter().zip(&xd).map(|(&a, &b)| a as f64 * b as f64).sum();
            let mag: f64 = wd.iter().zip(&xd).map(|(&a, &b)| (a as f64 * b as f64).abs()).sum();
            assert!((got as f64 - want).abs() <= 1e-5 * mag + 1e-6, "{name} nb={nb}: {got} vs {want} (magnitude {mag})");
        };
        let w = random_blocks(&mut rng, nb, q4k);
        dequantize_q4_k(&w, &mut wd);
        (scalar.q4_k)(&w, &xq, nb, &mut got);
        check("q4_k", &wd, got[0]);
        let w = random_blocks(&mut rng, nb, q5k);
        dequantize_q5_k(&w, &mut wd);
        (scalar.q5_k)(&w, &xq, nb, &mut got);
        check("q5_k", &wd, got[0]);
        let w = random_blocks(&mut rng, nb, q6k);
        dequantize_q6_k(&w, &mut wd);
        (scalar.q6_k)(&w, &xq, nb, &mut got);
        check("q6_k", &wd, got[0]);
    }
}

/// K-quant matrices through the threaded `matmul` (Q8_K activations prepared by
/// `Activations::prepare`) equal the single-thread scalar product, for odd row counts.
#[test]
fn k_quant_matmul_matches_scalar() {
    let mut rng = Rng(4242);
    let scalar = Kernels::new(Isa::Scalar).unwrap();
    let one = ThreadPool::new(1);
    let mut paths = simd_paths();
    paths.push(Kernels::new(Isa::Scalar).unwrap());
    for (rows, cols, n) in [(13usize, 256usize, 1usize), (37, 768, 9), (6, 1536, 70)] {
        let x: Vec<f32> = (0..n * cols).map(|_| rng.f()).collect();
        let mut acts = Activations::default();
        acts.prepare(&x, n, cols, &[ActFormat::Q8_0, ActFormat::Q8K]);
        let w4 = random_blocks(&mut rng, rows * cols / 256, q4k);
        let w5 = random_blocks(&mut rng, rows * cols / 256, q5k);
        let w6 = random_blocks(&mut rng, rows * cols / 256, q6k);
        for w in [Weights::Q4K(&w4), Weights::Q5K(&w5), Weights::Q6K(&w6)] {
            assert_eq!(w.act_format(), ActFormat::Q8K);
            let mut want = vec![0.0; n * rows];
            matmul(&one, &scalar, &x, &acts, w, rows, &mut want);
            let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
            for k in &paths {
                for threads in [1, 2, 3] {
                    let mut got = vec![f32::NAN; n * rows];
                    matmul(&ThreadPool::new(threads), k, &x, &acts, w, rows, &mut got);
                    for (i, (a, b)) in want.iter().zip(&got).enumerate() {
                        assert!((a - b).abs() <= 1e-4 * scale, "{} {w:?} {rows}x{cols} n={n} t={threads} at {i}: {a} vs {b}", k.isa.name());
                    }
                }
            }
        }
    }
}

/// Q8_K quantization against values worked out by hand: the value of largest magnitude
/// maps to -127 with a scale of its sign, ties round to even, sums of 16 are exact.
#[test]
fn q8_k_scalar_quantization_known_values() {
    // Largest magnitude 127, negative: iscale = -127 / -127 = 1, d = 1.
    let mut x = vec![0.0f32; 256];
    let head = [-127.0, 0.5, 1.5, 2.5, -2.5, 3.5, 126.5, -0.5, 100.0, 127.0];
    x[..head.len()].copy_from_slice(&head);
    x[16] = 7.0;
    x[255] = -3.0;
    let mut q = [BlockQ8K::default()];
    quantize_q8_k_scalar(&x, &mut q);
    assert_eq!(q[0].d, 1.0);
    // 127.0 (index 9) has the same magnitude as the first -127.0, which decides the sign.
    assert_eq!(&q[0].qs[..10], &[-127, 0, 2, 2, -2, 4, 126, 0, 100, 127]);
    assert_eq!(q[0].bsums[0], -127 + 2 + 2 - 2 + 4 + 126 + 100 + 127);
    assert_eq!(q[0].bsums[1], 7);
    assert_eq!(q[0].bsums[15], -3);
    // Largest magnitude positive: the scale is negative and that value maps to -127.
    let x: Vec<f32> = (0..256).map(|k| (k as f32 - 127.0) / 64.0).collect(); // max 128/64 = 2 at k = 255
    quantize_q8_k_scalar(&x, &mut q);
    let iscale = -127.0f32 / 2.0;
    assert_eq!(q[0].d, 1.0 / iscale);
    assert!(q[0].d < 0.0);
    assert_eq!(q[0].qs[255], -127);
    assert_eq!(q[0].qs[127], 0);
    for (k, &v) in x.iter().enumerate() {
        assert_eq!(q[0].qs[k] as i32, (v * iscale).round_ties_even() as i32, "value {k}");
        assert!((q[0].d * q[0].qs[k] as f32 - v).abs() <= 0.5 * q[0].d.abs() + 1e-6);
    }
    for g in 0..16 {
        assert_eq!(q[0].bsums[g] as i32, q[0].qs[16 * g..16 * g + 16].iter().map(|&v| v as i32).sum::<i32>());
    }
    // An all-zero block has d = 0 and zero values.
    quantize_q8_k_scalar(&[0.0; 256], &mut q);
    assert_eq!((q[0].d, q[0].qs, q[0].bsums), (0.0, [0; 256], [0; 16]));
}

/// The AVX2 Q8_K quantizer is bit-identical to the scalar one (scale sign, ties, zero
/// blocks, the first of equal magnitudes deciding the sign).
#[test]
fn simd_q8_k_quantizer_is_bit_identical() {
    if !Isa::Avx2.supported() {
        eprintln!("SKIPPED: avx2 Q8_K quantizer (this CPU does not support it)");
        return;
    }
    let mut rng = Rng(11);
    for nb in [1usize, 2, 3, 8] {
        let mut x: Vec<f32> = (0..nb * 256).map(|_| rng.f() * 5.0).collect();
        x[3] = 127.0;
        x[200] = -127.0; // same magnitude later: the first (positive) one decides
        for (i, v) in [0.5f32, -0.5, 1.5, -1.5, 2.5, 126.5, -126.5].iter().enumerate() {
            x[10 + i] = *v;
        }
        if nb > 1 {
            x[256..512].fill(0.0);
        }
        if nb > 2 {
            x[600] = -50.0; // negative maximum in the third block
            x[700] = 50.0;
        }
        let mut a = vec![BlockQ8K::default(); nb];
        let mut b = vec![BlockQ8K::default(); nb];
        quantize_q8_k_isa(Isa::Scalar, &x, &mut a);
        quantize_q8_k_isa(Isa::Avx2, &x, &mut b);
        for i in 0..nb {
            assert_eq!(a[i].d.to_bits(), b[i].d.to_bits(), "block {i} d");
            assert_eq!(a[i].qs, b[i].qs, "block {i} qs");
            assert_eq!(a[i].bsums, b[i].bsums, "block {i} bsums");
        }
        assert_eq!(a[0].d, -1.0);
        assert_eq!(a[0].qs[3], -127);
        assert_eq!(a[0].qs[200], 127);
    }
}

/// The word-at-a-time decoding of Q4_K / Q5_K scales and mins equals the per-sub-block
/// reference on random bytes.
#[test]
fn k4_scales_word_decoding_matches_reference() {
    let mut rng = Rng(3);
    for _ in 0..1000 {
        let q: [u8; 12] = std::array::from_fn(|_| rng.byte());
        let fast = scales_mins_k4(&q);
        for j in 0..8 {
            assert_eq!((fast[j], fast[8 + j]), scale_min_k4(j, &q), "{q:?} sub-block {j}");
        }
    }
}
