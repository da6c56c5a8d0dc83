//! Row kernels of the fused training step: forward and backward of the norms, RoPE,
//! activations, causal attention and cross-entropy, plus AdamW over flat buffers.
//!
//! Every kernel is written once as plain Rust over slices and compiled twice by
//! [`kernels!`]: for the baseline x86-64 target (the scalar twin) and with AVX2 + FMA
//! enabled, where LLVM vectorises the same loops with 256-bit registers. Rust never fuses
//! `a * b + c` on its own, so both builds round identically and the tests can demand
//! bit-equality between them. Helpers called from the kernels are `#[inline(always)]` so
//! that they are compiled with the caller's target features.
//!
//! Reductions use eight independent accumulators ([`dot`], [`sum`]) so they vectorise
//! without reassociation by the compiler; transcendental functions use [`exp`], a
//! branch-free polynomial that vectorises (libm's `expf`/`tanhf` do not).
//!
//! Shapes: `rows` tokens, `c` hidden size, `f` MLP width, `t` sequence length,
//! `hd` head dimension, `v` vocabulary.

use lamina_kernels::cpu::Isa;

/// Generates, for each kernel, a dispatching `pub fn name(isa, args…)` plus its scalar
/// body and an AVX2 + FMA instantiation of the same body.
macro_rules! kernels {
    ($($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block)*) => {
        $(
            $(#[$m])*
            #[allow(clippy::too_many_arguments)]
            pub fn $name(isa: Isa, $($arg: $ty),*) $(-> $ret)? {
                #[inline(always)]
                #[allow(clippy::too_many_arguments)]
                fn body($($arg: $ty),*) $(-> $ret)? $body
                #[cfg(target_arch = "x86_64")]
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match isa {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: callers pass an `Isa` that `Isa::supported` accepted.
                    Isa::Avx2 | Isa::Avx2Vnni => unsafe { avx2($($arg),*) },
                    _ => body($($arg),*),
                }
            }
        )*
    };
}

/// `e^x` to about 2 ulp for `x` in [-87, 88] (clamped outside, so softmax of `-inf`
/// gives ~1e-38, not 0, which is harmless next to the row maximum's 1).
///
/// Range reduction `x = n ln2 + r` with `n` rounded by the 1.5·2^23 trick (the integer
/// lands in the low mantissa bits, no float→int conversion), Cody–Waite split of ln 2,
/// then a degree-7 Taylor polynomial on |r| ≤ ln2/2 (truncation error < 5e-9).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    const LN2_HI: f32 = 0.693_359_4; // 355/512: n * LN2_HI is exact for |n| < 2^15
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x < -87.0 { -87.0 } else { x };
    let x = if x > 88.0 { 88.0 } else { x };
    let t = x * std::f32::consts::LOG2_E + MAGIC;
    let n = t - MAGIC;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    p * f32::from_bits(((ni + 127) << 23) as u32)
}

/// `tanh` from [`exp`]: `1 - 2 / (e^{2u} + 1)` (absolute error ~1e-7, enough for GELU).
#[inline(always)]
pub fn tanh(u: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * u) + 1.0)
}

/// Logistic sigmoid from [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// Dot product with eight independent partial sums (vectorises without fast-math).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let b = &b[..a.len()];
    let mut acc = [0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let (at, bt) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for (x, y) in at.iter().zip(bt) {
        tail += x * y;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Sum with eight independent partial sums.
#[inline(always)]
pub fn sum(a: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ch = a.chunks_exact(8);
    let tail: f32 = ch.remainder().iter().sum();
    for x in ch {
        for l in 0..8 {
            acc[l] += x[l];
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// Maximum with eight independent lanes (`-inf` for an empty slice).
#[inline(always)]
pub fn max(a: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let ch = a.chunks_exact(8);
    let mut tail = f32::NEG_INFINITY;
    for &x in ch.remainder() {
        tail = if x > tail { x } else { tail };
    }
    for x in ch {
        for l in 0..8 {
            acc[l] = if x[l] > acc[l] { x[l] } else { acc[l] };
        }
    }
    acc.iter().fold(tail, |m, &x| if x > m { x } else { m })
}

/// `x ← e^(x - m)` element-wise (a map, so it vectorises; sum separately with [`sum`]).
#[inline(always)]
fn exp_shifted(x: &mut [f32], m: f32) {
    for v in x.iter_mut() {
        *v = exp(*v - m);
    }
}

/// Sum of `(x - mu)^2`.
#[inline(always)]
fn sum_sq_centered(a: &[f32], mu: f32) -> f32 {
    let mut acc = [0f32; 8];
    let ch = a.chunks_exact(8);
    let mut tail = 0f32;
    for x in ch.remainder() {
        tail += (x - mu) * (x - mu);
    }
    for x in ch {
        for l in 0..8 {
            let d = x[l] - mu;
            acc[l] += d * d;
        }
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

const GELU_K: f32 = 0.797_884_6; // sqrt(2/pi)
const GELU_C: f32 = 0.044_715;

/// Shape of one attention problem: rows of the fused `qkv` buffer hold
/// `[q (nh·hd) | k (nkv·hd) | v (nkv·hd)]` with row stride `ld`.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Sequence length.
    pub t: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
    /// Row stride of `qkv` and `dqkv`.
    pub ld: usize,
    /// `1 / sqrt(hd)`.
    pub scale: f32,
    /// Sliding window (keys with `i - j < window` are visible); 0 = none.
    pub window: usize,
}

impl AttnShape {
    /// First visible key of query `i`.
    #[inline(always)]
    pub fn lo(&self, i: usize) -> usize {
        if self.window > 0 && i + 1 > self.window {
            i + 1 - self.window
        } else {
            0
        }
    }
}

kernels! {
    /// LayerNorm (`rms = false`, biased variance like torch) or RMSNorm (`rms = true`) of
    /// each row of `x` (rows × c) with weight `w` (c) and optional bias; saves each row's
    /// mean (0 for RMSNorm) and `1/sqrt(var + eps)` for the backward pass.
    pub fn norm_fwd(x: &[f32], w: &[f32], b: Option<&[f32]>, rms: bool, eps: f32, out: &mut [f32], mean: &mut [f32], rstd: &mut [f32]) {
        let c = w.len();
        for (r, (xr, or)) in x.chunks_exact(c).zip(out.chunks_exact_mut(c)).enumerate() {
            let mu = if rms { 0.0 } else { sum(xr) / c as f32 };
            let var = sum_sq_centered(xr, mu) / c as f32;
            let rs = 1.0 / (var + eps).sqrt();
            mean[r] = mu;
            rstd[r] = rs;
            match b {
                Some(b) => {
                    for i in 0..c {
                        or[i] = (xr[i] - mu) * rs * w[i] + b[i];
                    }
                }
                None => {
                    for i in 0..c {
                        or[i] = (xr[i] - mu) * rs * w[i];
                    }
                }
            }
        }
    }

    /// Input gradient of [`norm_fwd`], added to `dx`:
    /// `dx += rstd · (dn - mean(dn) - n · mean(dn·n))` with `n` the normalised row and
    /// `dn = dout · w` (the `mean(dn)` term is absent for RMSNorm).
    pub fn norm_bwd_dx(dout: &[f32], x: &[f32], w: &[f32], mean: &[f32], rstd: &[f32], rms: bool, dx: &mut [f32], scratch: &mut [f32]) {
        let c = w.len();
        let dn = &mut scratch[..c];
        for (r, ((dr, xr), dxr)) in dout.chunks_exact(c).zip(x.chunks_exact(c)).zip(dx.chunks_exact_mut(c)).enumerate() {
            let (mu, rs) = (mean[r], rstd[r]);
            for i in 0..c {
                dn[i] = dr[i] * w[i];
            }
            let m1 = if rms { 0.0 } else { sum(dn) / c as f32 };
            let mut acc = [0f32; 8];
            let mut tail = 0f32;
            let full = c / 8 * 8;
            for j in (0..full).step_by(8) {
                for l in 0..8 {
                    acc[l] += dn[j + l] * ((xr[j + l] - mu) * rs);
                }
            }
            for i in full..c {
                tail += dn[i] * ((xr[i] - mu) * rs);
            }
            let m2 = (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail) / c as f32;
            for i in 0..c {
                let n = (xr[i] - mu) * rs;
                dxr[i] += rs * (dn[i] - m1 - n * m2);
            }
        }
    }

    /// Weight (and bias) gradients of [`norm_fwd`] for columns `c0..c0 + dw.len()`, summed
    /// over all rows: `dw += Σ dout · n`, `db += Σ dout`. Split by columns between
    /// threads, so no two threads touch the same gradient.
    pub fn norm_bwd_params(dout: &[f32], x: &[f32], c: usize, c0: usize, mean: &[f32], rstd: &[f32], dw: &mut [f32], db: Option<&mut [f32]>) {
        let w = dw.len();
        let mut db = db;
        for (r, (dr, xr)) in dout.chunks_exact(c).zip(x.chunks_exact(c)).enumerate() {
            let (mu, rs) = (mean[r], rstd[r]);
            let (dr, xr) = (&dr[c0..c0 + w], &xr[c0..c0 + w]);
            for i in 0..w {
                dw[i] += dr[i] * ((xr[i] - mu) * rs);
            }
            if let Some(db) = db.as_deref_mut() {
                for i in 0..w {
                    db[i] += dr[i];
                }
            }
        }
    }

    /// `db += Σ_rows dy[row, c0..c0 + db.len()]` (bias gradient; `dy` has row stride `ld`).
    pub fn colsum_acc(dy: &[f32], ld: usize, c0: usize, db: &mut [f32]) {
        let w = db.len();
        for row in dy.chunks(ld) {
            if row.len() < c0 + w {
                break;
            }
            for (d, s) in db.iter_mut().zip(&row[c0..c0 + w]) {
                *d += s;
            }
        }
    }

    /// `acc += x` (element-wise; the data-parallel gradient reduction).
    pub fn add_into(acc: &mut [f32], x: &[f32]) {
        for (a, v) in acc.iter_mut().zip(x) {
            *a += v;
        }
    }

    /// `out[r] = x[r] + bias` for rows of width `bias.len()` (`x` may be `out`'s source
    /// residual; `bias = None` copies).
    pub fn add_bias_rows(x: &[f32], bias: Option<&[f32]>, c: usize, out: &mut [f32]) {
        match bias {
            Some(b) => {
                for (o, xr) in out.chunks_exact_mut(c).zip(x.chunks_exact(c)) {
                    for i in 0..c {
                        o[i] = xr[i] + b[i];
                    }
                }
            }
            None => out.copy_from_slice(x),
        }
    }

    /// Fills columns `c0..c0 + bias.len()` of each row (stride `ld`) with `bias`.
    pub fn fill_bias(out: &mut [f32], ld: usize, c0: usize, bias: &[f32]) {
        let w = bias.len();
        for row in out.chunks_mut(ld) {
            if row.len() < c0 + w {
                break;
            }
            row[c0..c0 + w].copy_from_slice(bias);
        }
    }

    /// GPT-2's tanh GELU: `act = 0.5 x (1 + tanh(√(2/π)(x + 0.044715 x³)))`; the tanh is
    /// kept in `th` so the backward pass needs no second exponential.
    pub fn gelu_fwd(pre: &[f32], act: &mut [f32], th: &mut [f32]) {
        for ((a, t), &x) in act.iter_mut().zip(th.iter_mut()).zip(pre) {
            let u = GELU_K * (x + GELU_C * x * x * x);
            let h = tanh(u);
            *t = h;
            *a = 0.5 * x * (1.0 + h);
        }
    }

    /// `dpre = dact · gelu'(pre)`, with `th` the tanh saved by [`gelu_fwd`].
    pub fn gelu_bwd(pre: &[f32], th: &[f32], dact: &[f32], dpre: &mut [f32]) {
        for (((d, &x), &h), &g) in dpre.iter_mut().zip(pre).zip(th).zip(dact) {
            let du = GELU_K * (1.0 + 3.0 * GELU_C * x * x);
            *d = g * (0.5 * (1.0 + h) + 0.5 * x * (1.0 - h * h) * du);
        }
    }

    /// SwiGLU: rows of `pre` are `[gate (f) | up (f)]`; `act = silu(gate) · up` (rows × f).
    pub fn swiglu_fwd(pre: &[f32], f: usize, act: &mut [f32]) {
        for (pr, ar) in pre.chunks_exact(2 * f).zip(act.chunks_exact_mut(f)) {
            let (g, u) = pr.split_at(f);
            for i in 0..f {
                ar[i] = g[i] * sigmoid(g[i]) * u[i];
            }
        }
    }

    /// Backward of [`swiglu_fwd`]: `dgate = dact · up · silu'(gate)`, `dup = dact · silu(gate)`.
    pub fn swiglu_bwd(pre: &[f32], dact: &[f32], f: usize, dpre: &mut [f32]) {
        for ((pr, dr), dp) in pre.chunks_exact(2 * f).zip(dact.chunks_exact(f)).zip(dpre.chunks_exact_mut(2 * f)) {
            let (g, u) = pr.split_at(f);
            let (dg, du) = dp.split_at_mut(f);
            for i in 0..f {
                let s = sigmoid(g[i]);
                let silu = g[i] * s;
                du[i] = dr[i] * silu;
                dg[i] = dr[i] * u[i] * (s * (1.0 + g[i] * (1.0 - s)));
            }
        }
    }

    /// Hugging Face "rotate_half" RoPE in place on the first `heads` heads of each row of
    /// `x` (row stride `ld`, head dim `hd`), over the first `2·half` dims of each head;
    /// row `r` has position `(row0 + r) % t`. `cos`/`sin` are (positions × half).
    /// `inverse` rotates by -θ (the backward pass: the transpose of a rotation).
    pub fn rope(x: &mut [f32], ld: usize, heads: usize, hd: usize, half: usize, row0: usize, t: usize, cos: &[f32], sin: &[f32], inverse: bool) {
        for (r, row) in x.chunks_mut(ld).enumerate() {
            let p = (row0 + r) % t;
            let (cs, sn) = (&cos[p * half..(p + 1) * half], &sin[p * half..(p + 1) * half]);
            for h in 0..heads {
                let head = &mut row[h * hd..h * hd + 2 * half];
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x1, x2) = (a[i], b[i]);
                    let s = if inverse { -sn[i] } else { sn[i] };
                    a[i] = x1 * cs[i] - x2 * s;
                    b[i] = x2 * cs[i] + x1 * s;
                }
            }
        }
    }

    /// Row-wise causal softmax of attention scores in place: `s` holds rows `0..t` of a
    /// (t × t) score matrix (`q·k`, unscaled); row `i` becomes the probabilities of keys
    /// `lo(i)..=i` after scaling by `shape.scale`, and 0 elsewhere (so the product with
    /// the values can run over whole rows).
    pub fn softmax_causal(s: &mut [f32], shape: AttnShape) {
        let t = shape.t;
        for (i, row) in s.chunks_exact_mut(t).enumerate() {
            let lo = shape.lo(i);
            let (before, rest) = row.split_at_mut(lo);
            let (p, after) = rest.split_at_mut(i + 1 - lo);
            before.fill(0.0);
            after.fill(0.0);
            for x in p.iter_mut() {
                *x *= shape.scale;
            }
            let mx = max(p);
            exp_shifted(p, mx);
            let inv = 1.0 / sum(p);
            for x in p.iter_mut() {
                *x *= inv;
            }
        }
    }

    /// Softmax backward in place: `dp` (t × t) holds `dL/dP`; it becomes the gradient of
    /// the unscaled scores, `scale · P ⊙ (dP - rowsum(P ⊙ dP))` (0 where `P` is masked).
    pub fn softmax_bwd(p: &[f32], dp: &mut [f32], t: usize, scale: f32) {
        for (pr, dr) in p.chunks_exact(t).zip(dp.chunks_exact_mut(t)) {
            let pdp = dot(pr, dr);
            for (d, &pj) in dr.iter_mut().zip(pr) {
                *d = pj * (*d - pdp) * scale;
            }
        }
    }

    /// Softmax cross-entropy of each row of `logits` (rows × v) against `targets`; returns
    /// the summed loss (f64). With `grad_scale = Some(s)` the row is overwritten with its
    /// gradient `s · (softmax - onehot)`.
    pub fn cross_entropy(logits: &mut [f32], v: usize, targets: &[u32], grad_scale: Option<f32>) -> f64 {
        let mut total = 0f64;
        for (row, &tg) in logits.chunks_exact_mut(v).zip(targets) {
            let mx = max(row);
            let logit = row[tg as usize];
            exp_shifted(row, mx);
            let s = sum(row);
            total += (s.ln() + mx - logit) as f64;
            if let Some(gs) = grad_scale {
                let inv = gs / s;
                for x in row.iter_mut() {
                    *x *= inv;
                }
                row[tg as usize] -= gs;
            }
        }
        total
    }

    /// Sum of squares (f64), for the global gradient norm.
    pub fn sum_squares(x: &[f32]) -> f64 {
        let mut total = 0f64;
        for block in x.chunks(1024) {
            let mut acc = [0f32; 8];
            let ch = block.chunks_exact(8);
            let mut tail = 0f32;
            for v in ch.remainder() {
                tail += v * v;
            }
            for v in ch {
                for l in 0..8 {
                    acc[l] += v[l] * v[l];
                }
            }
            total += (((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail) as f64;
        }
        total
    }

    /// One AdamW update (PyTorch's formula) of `p` with gradient `g · gscale`:
    /// `m ← β1 m + (1-β1) g`, `v ← β2 v + (1-β2) g²`, `p ← p · decay`,
    /// `p ← p - step · m / (sqrt(v) · inv_bc2_sqrt + eps)`.
    pub fn adamw(p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32], gscale: f32, b1: f32, b2: f32, eps: f32, decay: f32, step: f32, inv_bc2_sqrt: f32) {
        for i in 0..p.len() {
            let gi = g[i] * gscale;
            let mi = b1 * m[i] + (1.0 - b1) * gi;
            let vi = b2 * v[i] + (1.0 - b2) * (gi * gi);
            m[i] = mi;
            v[i] = vi;
            let denom = vi.sqrt() * inv_bc2_sqrt + eps;
            p[i] = p[i] * decay - step * (mi / denom);
        }
    }
}
