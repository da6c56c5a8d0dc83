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
    BlockQ5_1 {
        d: f16::from_f32(r.f() * 0.1),
        m: f16::from_f32(r.f() * 0.5),
        qh: std::array::from_fn(|_| r.byte()),
        qs: std::array::from_fn(|_| r.byte()),
    }
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
                            assert!(close(want[c], got[c], scale), "{} {} nb={nb} cols={cols}: {} vs {}",
                                k.isa.name(), stringify!($field), want[c], got[c]);
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
