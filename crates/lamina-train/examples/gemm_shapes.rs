//! Speed of the `gemm` crate on the fused engine's own products, one thread, hot caches:
//! for each linear layer of the baby GPT (one data-parallel shard = 6 sequences × 64 =
//! 384 rows) the forward `Y = X·Wt`, the input gradient `dX = dY·Wtᵀ` and the weight
//! gradient `dWt += Xᵀ·dY`, each as laid out in the engine (variant 0) and as the
//! transposed problem `Yᵀ = Wtᵀ·Xᵀ` (variant 1), in GFLOP/s. Used to decide whether an own
//! GEMM or a different operand layout could pay off (docs/training.md).
//!
//!     cargo run --release -p lamina-train --example gemm_shapes
use lamina_train::fused::gemm::{matmul_serial, Mat, MatMut};
use std::time::Instant;

/// The same matrix viewed transposed.
fn transposed(m: MatMut) -> MatMut {
    MatMut { ptr: m.ptr, rows: m.cols, cols: m.rows, rs: m.cs, cs: m.rs }
}

fn main() {
    let n = 384;
    // (in, out): c_attn, attn c_proj, c_fc, mlp c_proj, the tied head (vocabulary 65).
    for &(i, o) in &[(128usize, 384usize), (128, 128), (128, 512), (512, 128), (128, 65)] {
        let x: Vec<f32> = (0..n * i).map(|k| (k % 7) as f32 * 0.1).collect();
        let w: Vec<f32> = (0..i * o).map(|k| (k % 5) as f32 * 0.1).collect();
        let dy: Vec<f32> = (0..n * o).map(|k| (k % 3) as f32 * 0.1).collect();
        let mut y = vec![0f32; n * o];
        let mut dx = vec![0f32; n * i];
        let mut dw = vec![0f32; i * o];
        let flops = 2.0 * (n * i * o) as f64;
        let reps = 300;
        for variant in 0..2 {
            let mut res = vec![];
            for (name, f) in [("fwd", 0), ("dx", 1), ("dw", 2)] {
                let t0 = Instant::now();
                for _ in 0..reps {
                    let (d, a, b, acc) = match f {
                        0 => (MatMut::rows_of(&mut y, n, o, o, 0), Mat::rows_of(&x, n, i, i, 0), Mat::rows_of(&w, i, o, o, 0), false),
                        1 => (MatMut::rows_of(&mut dx, n, i, i, 0), Mat::rows_of(&dy, n, o, o, 0), Mat::rows_of(&w, i, o, o, 0).t(), false),
                        _ => (MatMut::rows_of(&mut dw, i, o, o, 0), Mat::rows_of(&x, n, i, i, 0).t(), Mat::rows_of(&dy, n, o, o, 0), true),
                    };
                    // SAFETY: the views cover their own buffers; one thread.
                    unsafe {
                        if variant == 0 {
                            matmul_serial(d, a, b, acc)
                        } else {
                            matmul_serial(transposed(d), b.t(), a.t(), acc)
                        }
                    }
                }
                res.push(format!("{name} {:.1}", flops * reps as f64 / t0.elapsed().as_secs_f64() / 1e9));
            }
            println!("{n}×{i} → {o}, variant {variant}: {} GFLOP/s", res.join(", "));
        }
    }
}
