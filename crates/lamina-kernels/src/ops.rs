//! Element-wise and row-wise operations of the transformer: normalisation, rotary
//! positions, softmax, activations, attention over a KV cache. They are small next to the
//! matrix products, so they are written as plain loops the compiler vectorises, fused where
//! that saves a pass over memory (SwiGLU, scale+softmax).

use crate::matmul::Kernels;

/// RMSNorm (Zhang & Sennrich 2019): `y = x / sqrt(mean(x²) + eps) * weight`, per row.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let scale = 1.0 / (ss + eps).sqrt();
        for ((y, &v), &w) in yr.iter_mut().zip(xr).zip(weight) {
            *y = v * scale * w;
        }
    }
}

/// LayerNorm (Ba et al. 2016) with weight and bias, per row.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32, out: &mut [f32]) {
    let d = weight.len();
    for (xr, yr) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean: f32 = xr.iter().sum::<f32>() / d as f32;
        let var: f32 = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d as f32;
        let scale = 1.0 / (var + eps).sqrt();
        for (((y, &v), &w), &b) in yr.iter_mut().zip(xr).zip(weight).zip(bias) {
            *y = (v - mean) * scale * w + b;
        }
    }
}

/// Rotary position embedding (Su et al. 2021) applied in place to one vector of `heads`
/// heads of `head_dim`, rotating adjacent pairs `(2i, 2i+1)` of the first `rope_dim`
/// dimensions — the GGUF/llama.cpp layout (Hugging Face's "rotate_half" layout is
/// converted to it when weights are loaded).
pub fn rope_interleaved(v: &mut [f32], heads: usize, head_dim: usize, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for h in 0..heads {
        let x = &mut v[h * head_dim..(h + 1) * head_dim];
        for i in 0..half {
            let (a, b) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = a * cos[i] - b * sin[i];
            x[2 * i + 1] = a * sin[i] + b * cos[i];
        }
    }
}

/// Fills `cos`/`sin` (length `inv_freq.len()`) for position `pos`.
pub fn rope_angles(pos: usize, inv_freq: &[f32], cos: &mut [f32], sin: &mut [f32]) {
    for ((c, s), &f) in cos.iter_mut().zip(sin.iter_mut()).zip(inv_freq) {
        let theta = pos as f32 * f;
        let (sn, cs) = theta.sin_cos();
        *c = cs;
        *s = sn;
    }
}

/// In-place softmax of one row; returns nothing, leaves a probability vector.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

/// SwiGLU (Shazeer 2020): `gate = silu(gate) * up`, in place in `gate`.
pub fn swiglu(gate: &mut [f32], up: &[f32]) {
    for (g, &u) in gate.iter_mut().zip(up) {
        let v = *g;
        *g = v / (1.0 + (-v).exp()) * u;
    }
}

/// GELU, tanh approximation (as GPT-2 uses), in place.
pub fn gelu(x: &mut [f32]) {
    const C: f32 = 0.797_884_6; // sqrt(2/pi)
    for v in x.iter_mut() {
        let u = *v;
        *v = 0.5 * u * (1.0 + (C * (u + 0.044715 * u * u * u)).tanh());
    }
}

/// `acc += x`.
pub fn add_assign(acc: &mut [f32], x: &[f32]) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// Causal attention of one query head over `len` cached positions.
///
/// `q`: (head_dim); `k`, `v`: the cache of one layer, position-major with row stride
/// `kv_stride` floats, already offset to this head's kv group; `scores`: scratch of at
/// least `len`; `out`: (head_dim). Keys and values are each read once, in order.
#[allow(clippy::too_many_arguments)]
pub fn attend(
    kern: &Kernels,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    kv_stride: usize,
    len: usize,
    scale: f32,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let hd = q.len();
    let scores = &mut scores[..len];
    let mut p = 0;
    while p < len {
        let c = (len - p).min(crate::dot::MAX_COLS);
        (kern.f32)(q, &k[p * kv_stride..], kv_stride, &mut scores[p..p + c]);
        p += c;
    }
    for s in scores.iter_mut() {
        *s *= scale;
    }
    softmax(scores);
    out[..hd].fill(0.0);
    for (i, &w) in scores.iter().enumerate() {
        let vr = &v[i * kv_stride..i * kv_stride + hd];
        for (o, &x) in out.iter_mut().zip(vr) {
            *o += w * x;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_sums_to_one() {
        let mut x = vec![1.0, 2.0, 3.0, -1e9];
        softmax(&mut x);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(x[3] == 0.0 && x[2] > x[1]);
    }

    #[test]
    fn rope_preserves_norm_and_is_identity_at_zero() {
        let inv = [1.0, 0.1, 0.01];
        let (mut c, mut s) = ([0.0; 3], [0.0; 3]);
        rope_angles(0, &inv, &mut c, &mut s);
        let mut v = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        rope_interleaved(&mut v, 1, 6, &c, &s);
        assert_eq!(v, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        rope_angles(7, &inv, &mut c, &mut s);
        rope_interleaved(&mut v, 1, 6, &c, &s);
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 91.0).abs() < 1e-3);
    }

    #[test]
    fn attention_matches_naive() {
        let kern = Kernels::new(crate::cpu::Isa::Scalar).unwrap();
        let hd = 8;
        let len = 7;
        let stride = 16;
        let q: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.3).sin()).collect();
        let k: Vec<f32> = (0..len * stride).map(|i| (i as f32 * 0.17).cos()).collect();
        let v: Vec<f32> = (0..len * stride).map(|i| (i as f32 * 0.11).sin()).collect();
        let mut scores = vec![0.0; len];
        let mut out = vec![0.0; hd];
        attend(&kern, &q, &k, &v, stride, len, 0.5, &mut scores, &mut out);
        let mut s: Vec<f32> = (0..len).map(|p| (0..hd).map(|d| q[d] * k[p * stride + d]).sum::<f32>() * 0.5).collect();
        softmax(&mut s);
        for d in 0..hd {
            let want: f32 = (0..len).map(|p| s[p] * v[p * stride + d]).sum();
            assert!((out[d] - want).abs() < 1e-5);
        }
    }
}
