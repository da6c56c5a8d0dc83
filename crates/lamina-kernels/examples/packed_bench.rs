//! Times the packed (row-interleaved) kernels alone, one thread, hot caches, on the
//! shapes of SmolLM2-135M: GMAC/s per format and column count, to tell the kernel's own
//! speed apart from everything around it in a decode step.
//!
//! `cargo run --release -p lamina-kernels --example packed_bench [ROUNDS]`

use half::f16;
use lamina_kernels::packed::{ActScale, PackedMatrix, GROUP, PACKED_COLS};
use lamina_kernels::quant::*;
use lamina_kernels::Kernels;
use std::time::Instant;

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(200);
    let k = Kernels::best();
    println!("kernels: {}", k.isa.name());
    let mut s = 0x1234_5678u64;
    for &(rows, cols) in &[(64usize, 576usize), (256, 576), (1536, 576), (576, 1536), (4096, 576)] {
        let nb = cols / QK;
        let q41: Vec<BlockQ4_1> = (0..rows * nb)
            .map(|_| {
                let mut qs = [0u8; 16];
                qs.iter_mut().for_each(|b| *b = rng(&mut s) as u8);
                BlockQ4_1 { d: f16::from_f32(0.01), m: f16::from_f32(-0.05), qs }
            })
            .collect();
        let q80: Vec<BlockQ8_0> = (0..rows * nb)
            .map(|_| {
                let mut qs = [0i8; 32];
                qs.iter_mut().for_each(|b| *b = rng(&mut s) as i8);
                BlockQ8_0 { d: f16::from_f32(0.01), qs }
            })
            .collect();
        let q50: Vec<BlockQ5_0> = (0..rows * nb)
            .map(|_| {
                let mut qs = [0u8; 16];
                qs.iter_mut().for_each(|b| *b = rng(&mut s) as u8);
                BlockQ5_0 { d: f16::from_f32(0.01), qh: (rng(&mut s) as u32).to_le_bytes(), qs }
            })
            .collect();
        let mats = [
            ("q4_1", PackedMatrix::from_q4_1(&q41, rows, cols)),
            ("q5_0", PackedMatrix::from_q5_0(&q50, rows, cols)),
            ("q8_0", PackedMatrix::from_q8_0(&q80, rows, cols)),
        ];
        let x: Vec<f32> = (0..8 * cols).map(|_| (rng(&mut s) % 2000) as f32 / 1000.0 - 1.0).collect();
        let mut xq = vec![BlockQ8_1::default(); 8 * nb];
        let mut sc: Vec<ActScale> = vec![[0.0; 4]; 8 * nb];
        quantize_q8_1_scaled(&x, &mut xq, Some(&mut sc));
        for (name, m) in &mats {
            for &n in &[1usize, 4, 8] {
                let mut out = [[0.0f32; GROUP]; 8];
                let t = Instant::now();
                for _ in 0..rounds {
                    for g in 0..m.groups {
                        let mut c = 0;
                        while c < n {
                            let w = (n - c).min(PACKED_COLS);
                            (k.packed)(m, g, &xq[c * nb..], &sc[c * nb..], nb, &mut out[c..c + w]);
                            c += w;
                        }
                    }
                    std::hint::black_box(&out);
                }
                let secs = t.elapsed().as_secs_f64();
                let macs = (rounds * rows * cols * n) as f64;
                println!("{name} {rows:>5}x{cols:<5} cols {n}: {:>7.1} GMAC/s  {:>8.1} us/product", macs / secs / 1e9, secs / rounds as f64 * 1e6);
            }
        }
    }
}
