//! Strided f32 matrix views and a matrix product split over our worker pool.
//!
//! The product itself is the `gemm` crate's (candle's CPU matmul backend, with runtime
//! AVX2/FMA dispatch). It is called single-threaded on one block of the output per worker
//! of [`ThreadPool`] (spinning workers, no rayon task per call): a training step runs ~50
//! products of a few hundred microseconds each, where per-call scheduling cost matters.
//! Views carry row and column strides, so transposed operands cost nothing.

use lamina_kernels::pool::ThreadPool;

/// A read-only view of a `rows × cols` f32 matrix: element `(i, j)` is at
/// `ptr + i·rs + j·cs`.
#[derive(Debug, Clone, Copy)]
pub struct Mat {
    pub ptr: *const f32,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

/// A writable view (same addressing as [`Mat`]).
#[derive(Debug, Clone, Copy)]
pub struct MatMut {
    pub ptr: *mut f32,
    pub rows: usize,
    pub cols: usize,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: views are plain addresses; the code that builds them guarantees the buffers
// outlive every use and that concurrent writers touch disjoint elements.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}
unsafe impl Send for MatMut {}
unsafe impl Sync for MatMut {}

impl Mat {
    /// Row-major `rows × cols` block starting at column `col0` of a buffer with row stride `ld`.
    pub fn rows_of(buf: &[f32], rows: usize, cols: usize, ld: usize, col0: usize) -> Mat {
        assert!(rows == 0 || (rows - 1) * ld + col0 + cols <= buf.len(), "matrix view out of bounds");
        Mat { ptr: buf[col0..].as_ptr(), rows, cols, rs: ld as isize, cs: 1 }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Mat {
        Mat { ptr: self.ptr, rows: self.cols, cols: self.rows, rs: self.cs, cs: self.rs }
    }

    fn block(self, r0: usize, rows: usize, c0: usize, cols: usize) -> Mat {
        // SAFETY: in bounds of the original view, which the constructor checked.
        let ptr = unsafe { self.ptr.offset(r0 as isize * self.rs + c0 as isize * self.cs) };
        Mat { ptr, rows, cols, rs: self.rs, cs: self.cs }
    }
}

impl MatMut {
    /// Row-major `rows × cols` block starting at column `col0` of a buffer with row stride `ld`.
    pub fn rows_of(buf: &mut [f32], rows: usize, cols: usize, ld: usize, col0: usize) -> MatMut {
        assert!(rows == 0 || (rows - 1) * ld + col0 + cols <= buf.len(), "matrix view out of bounds");
        MatMut { ptr: buf[col0..].as_mut_ptr(), rows, cols, rs: ld as isize, cs: 1 }
    }

    /// A view with the same layout as `m` at the same offset inside another buffer of the
    /// same shape (a weight's gradient has its weight's layout).
    ///
    /// # Safety
    /// `m` must point into the buffer starting at `base`, and `other_base` must start a
    /// buffer at least as long.
    pub unsafe fn like(m: Mat, base: *const f32, other_base: *mut f32) -> MatMut {
        let off = m.ptr.offset_from(base);
        MatMut { ptr: other_base.offset(off), rows: m.rows, cols: m.cols, rs: m.rs, cs: m.cs }
    }

    fn block(self, r0: usize, rows: usize, c0: usize, cols: usize) -> MatMut {
        // SAFETY: in bounds of the original view.
        let ptr = unsafe { self.ptr.offset(r0 as isize * self.rs + c0 as isize * self.cs) };
        MatMut { ptr, rows, cols, rs: self.rs, cs: self.cs }
    }
}

/// `dst = a · b` (or `dst += a · b` with `accumulate`), `a` m×k, `b` k×n, `dst` m×n.
/// The larger output dimension is split between the pool's threads.
pub fn matmul(pool: &ThreadPool, dst: MatMut, a: Mat, b: Mat, accumulate: bool) {
    assert!(a.rows == dst.rows && b.cols == dst.cols && a.cols == b.rows, "matmul shapes");
    let (m, n, k) = (dst.rows, dst.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    let threads = if m * n * k < 32 * 1024 { 1 } else { pool.threads() };
    let job = |i: usize, nt: usize| {
        let nt = nt.min(threads);
        if i >= nt {
            return;
        }
        let (d, aa, bb) = if m >= n {
            let r = ThreadPool::split(m, i, nt, 8);
            (dst.block(r.start, r.len(), 0, n), a.block(r.start, r.len(), 0, k), b)
        } else {
            let c = ThreadPool::split(n, i, nt, 8);
            (dst.block(0, m, c.start, c.len()), a, b.block(0, k, c.start, c.len()))
        };
        if d.rows == 0 || d.cols == 0 {
            return;
        }
        // SAFETY: the views are in bounds (checked at construction) and each thread writes
        // its own block of `dst`.
        unsafe { raw_gemm(d, aa, bb, accumulate) };
    };
    if threads == 1 {
        job(0, 1);
    } else {
        pool.run(&job);
    }
}

/// [`matmul`] on the calling thread only (for work already split between threads).
///
/// # Safety
/// All three views must be valid for their shapes and `d` must not alias `a` or `b`;
/// no other thread may write `d` meanwhile.
pub unsafe fn matmul_serial(d: MatMut, a: Mat, b: Mat, accumulate: bool) {
    assert!(a.rows == d.rows && b.cols == d.cols && a.cols == b.rows, "matmul shapes");
    if d.rows > 0 && d.cols > 0 {
        raw_gemm(d, a, b, accumulate);
    }
}

/// # Safety
/// All three views must be valid for their shapes and `d` must not alias `a` or `b`.
unsafe fn raw_gemm(d: MatMut, a: Mat, b: Mat, accumulate: bool) {
    if a.cols == 0 {
        if !accumulate {
            for i in 0..d.rows {
                for j in 0..d.cols {
                    *d.ptr.offset(i as isize * d.rs + j as isize * d.cs) = 0.0;
                }
            }
        }
        return;
    }
    gemm::gemm(
        d.rows,
        d.cols,
        a.cols,
        d.ptr,
        d.cs,
        d.rs,
        accumulate,
        a.ptr,
        a.cs,
        a.rs,
        b.ptr,
        b.cs,
        b.rs,
        1.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|l| a[i * k + l] as f64 * b[l * n + j] as f64).sum::<f64>() as f32;
            }
        }
        c
    }

    #[test]
    fn strided_products_match_naive() {
        let pool = ThreadPool::new(2);
        for &(m, k, n) in &[(1, 1, 1), (3, 5, 7), (70, 33, 9), (9, 40, 130), (200, 64, 100)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let want = naive(&a, &b, m, k, n);
            // Plain.
            let mut c = vec![0f32; m * n];
            matmul(&pool, MatMut::rows_of(&mut c, m, n, n, 0), Mat::rows_of(&a, m, k, k, 0), Mat::rows_of(&b, k, n, n, 0), false);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - y).abs() < 1e-4, "{m}x{k}x{n}: {x} vs {y}");
            }
            // Transposed operands and accumulation: c += (a^T)^T (b^T)^T.
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect(); // k × m
            let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect(); // n × k
            matmul(&pool, MatMut::rows_of(&mut c, m, n, n, 0), Mat::rows_of(&at, k, m, m, 0).t(), Mat::rows_of(&bt, n, k, k, 0).t(), true);
            for (x, y) in c.iter().zip(&want) {
                assert!((x - 2.0 * y).abs() < 2e-4, "{m}x{k}x{n} acc: {x} vs {}", 2.0 * y);
            }
        }
    }
}
