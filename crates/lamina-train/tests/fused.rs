//! The fused training step against candle autograd (the reference model), and every
//! vectorised fused kernel against its scalar twin.

use candle_core::{DType, Device, Tensor};
use lamina_core::{Architecture, ModelConfig};
use lamina_kernels::cpu::Isa;
use lamina_model::trainable::{SplitMix64, TrainableModel};
use lamina_train::fused::{kernels, FusedAdamW, FusedModel};
use lamina_train::{AdamW, AdamWConfig};

fn llama(window: Option<usize>) -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: 37,
        hidden_size: 24,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2, // GQA
        head_dim: 6,
        ffn_dim: 40,
        context_length: 16,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_dim: 4, // partial rotary
        rope_scaling: None,
        tied_embeddings: false,
        qkv_bias: true,
        sliding_window: window,
        local_layers: None,
    }
}

fn gpt2() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Gpt2,
        vocab_size: 41,
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 4,
        head_dim: 8,
        ffn_dim: 128,
        context_length: 16,
        norm_eps: 1e-5,
        rope_theta: 0.0,
        rope_dim: 0,
        rope_scaling: None,
        tied_embeddings: true,
        qkv_bias: true,
        sliding_window: None,
        local_layers: None,
    }
}

/// A model with norms and biases moved away from 1 / 0 so every gradient is generic.
fn model(cfg: &ModelConfig) -> TrainableModel {
    let dev = Device::Cpu;
    let m = TrainableModel::new(cfg, 11, DType::F32, &dev).unwrap();
    let mut rng = SplitMix64::new(5);
    for (_, var) in m.named_params() {
        if var.rank() == 1 {
            let base: Vec<f32> = var.as_tensor().to_vec1().unwrap();
            let v: Vec<f32> = base.iter().map(|b| b + 0.2 * rng.normal() as f32).collect();
            var.set(&Tensor::from_vec(v, base.len(), &dev).unwrap()).unwrap();
        }
    }
    m
}

fn batch(cfg: &ModelConfig, b: usize, t: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let mut rng = SplitMix64::new(seed);
    let v = cfg.vocab_size as u64;
    let x = (0..b * t).map(|_| rng.below(v) as u32).collect();
    let y = (0..b * t).map(|_| rng.below(v) as u32).collect();
    (x, y)
}

/// Loss and every parameter gradient of the fused step equal candle autograd's.
fn check_against_autograd(cfg: &ModelConfig, b: usize, t: usize, threads: usize, isa: Isa) {
    let m = model(cfg);
    let (x, y) = batch(cfg, b, t, 3);
    let dev = Device::Cpu;
    let xt = Tensor::from_vec(x.clone(), (b, t), &dev).unwrap();
    let yt = Tensor::from_vec(y.clone(), (b, t), &dev).unwrap();
    let (_, loss) = m.forward(&xt, Some(&yt)).unwrap();
    let loss = loss.unwrap();
    let want_loss = loss.to_scalar::<f32>().unwrap() as f64;
    let grads = loss.backward().unwrap();

    let mut f = FusedModel::from_trainable(&m, threads, isa).unwrap();
    f.zero_grads();
    let got_loss = f.step(&x, &y, b, t, 1.0).unwrap();
    assert!((got_loss - want_loss).abs() < 1e-5 * want_loss.max(1.0), "{:?}: loss {got_loss} vs {want_loss}", cfg.architecture);
    assert!((f.loss(&x, &y, b, t).unwrap() - got_loss).abs() < 1e-9, "loss-only pass differs");

    let mut checked = 0;
    for (name, var) in m.named_params() {
        let want: Vec<f32> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let got = f.grad(&name).unwrap();
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs())).max(1e-6);
        assert!(scale > 1e-5, "{name}: gradient is zero, the test would be vacuous");
        for (i, (a, e)) in got.iter().zip(&want).enumerate() {
            assert!((a - e).abs() <= 2e-4 * scale + 1e-7, "{name}[{i}]: fused {a} vs autograd {e} (max |g| {scale})");
        }
        checked += 1;
    }
    assert_eq!(checked, f.params_info().len());
}

#[test]
fn gpt2_fused_step_equals_autograd() {
    check_against_autograd(&gpt2(), 3, 16, 2, Isa::best()); // data-parallel shards of 1 and 2 sequences
    check_against_autograd(&gpt2(), 1, 16, 2, Isa::best()); // one sequence: products split between threads
    check_against_autograd(&gpt2(), 2, 5, 1, Isa::Scalar); // shorter than the context
    let mut long = gpt2();
    long.context_length = 80;
    check_against_autograd(&long, 2, 75, 2, Isa::best()); // three causal query blocks, a ragged last one
}

#[test]
fn llama_fused_step_equals_autograd() {
    check_against_autograd(&llama(None), 3, 16, 2, Isa::best());
    check_against_autograd(&llama(None), 1, 16, 2, Isa::best());
    check_against_autograd(&llama(Some(5)), 2, 12, 2, Isa::Scalar); // sliding window
    let mut long = llama(Some(40));
    long.context_length = 70;
    check_against_autograd(&long, 2, 70, 1, Isa::best()); // causal blocks starting inside the window
    let mut tied = llama(None);
    tied.tied_embeddings = true;
    tied.qkv_bias = false;
    tied.rope_dim = 6; // full rotary
    check_against_autograd(&tied, 2, 9, 1, Isa::best());
}

#[test]
fn fused_adamw_matches_candle_adamw_and_writes_back() {
    let cfg = gpt2();
    let m = model(&cfg);
    let mut f = FusedModel::from_trainable(&m, 2, Isa::best()).unwrap();
    let acfg = AdamWConfig { beta1: 0.9, beta2: 0.99, eps: 1e-8, weight_decay: 0.1 };
    let mut fopt = FusedAdamW::new(&f, acfg);
    let mut copt = AdamW::new(m.named_params(), acfg).unwrap();
    let (x, y) = batch(&cfg, 2, 16, 9);
    let dev = Device::Cpu;
    for step in 0..3 {
        // Candle: gradient, clip to 0.5, update.
        let xt = Tensor::from_vec(x.clone(), (2, 16), &dev).unwrap();
        let yt = Tensor::from_vec(y.clone(), (2, 16), &dev).unwrap();
        let (_, loss) = m.forward(&xt, Some(&yt)).unwrap();
        let store = loss.unwrap().backward().unwrap();
        let params = m.named_params();
        let mut g: Vec<Option<Tensor>> = params.iter().map(|(_, v)| store.get(v.as_tensor()).cloned()).collect();
        let cn = lamina_train::clip_grad_norm(&mut g, 0.5).unwrap();
        copt.step(&g, 1e-2).unwrap();
        // Fused.
        f.zero_grads();
        f.step(&x, &y, 2, 16, 1.0).unwrap();
        let fnorm = fopt.step(&mut f, 1e-2, 0.5).unwrap();
        assert!((fnorm - cn).abs() < 1e-4 * cn, "step {step}: grad norm {fnorm} vs {cn}");
    }
    // Same parameters after three steps (both clipped: the norm is ~1-3).
    let check = FusedModel::from_trainable(&m, 1, Isa::Scalar).unwrap();
    for (a, b) in f.params.iter().zip(&check.params) {
        assert!((a - b).abs() < 2e-5, "{a} vs {b}");
    }
    // Write-back puts the fused parameters into the candle model.
    f.store_into(&m).unwrap();
    let back = FusedModel::from_trainable(&m, 1, Isa::Scalar).unwrap();
    assert_eq!(back.params, f.params);
    // Optimizer state round trip.
    let st = fopt.state_tensors(&f).unwrap();
    let mut again = FusedAdamW::new(&f, acfg);
    again.load_state(&f, &st, fopt.step).unwrap();
    assert_eq!(again.state_tensors(&f).unwrap()["m.wte.weight"].to_vec2::<f32>().unwrap(), st["m.wte.weight"].to_vec2::<f32>().unwrap());
}

#[test]
fn fused_step_rejects_bad_batches() {
    let cfg = gpt2();
    let mut f = FusedModel::from_trainable(&model(&cfg), 1, Isa::Scalar).unwrap();
    let (x, y) = batch(&cfg, 1, 4, 1);
    assert!(f.loss(&x, &y, 1, 5).is_err(), "length mismatch");
    assert!(f.loss(&[], &[], 0, 4).is_err(), "empty");
    let long = vec![0u32; 17];
    assert!(f.loss(&long, &long, 1, 17).is_err(), "longer than the context");
    let mut bad = x.clone();
    bad[2] = 41;
    assert!(f.loss(&bad, &y, 1, 4).is_err(), "out of vocabulary");
    // A batch whose saved attention probabilities cannot fit (4 heads × (2^17)^2 floats
    // per layer, ~0.5 TB) is refused with a readable error instead of an allocation abort.
    let mut long = llama(None);
    long.context_length = 1 << 17;
    let mut f = FusedModel::from_trainable(&model(&long), 1, Isa::Scalar).unwrap();
    let t = 1 << 17;
    assert!(f.workspace_floats(1, t) > 1 << 36);
    if std::path::Path::new("/proc/meminfo").exists() {
        let ids = vec![1u32; t];
        let e = f.loss(&ids, &ids, 1, t).unwrap_err().to_string();
        assert!(e.contains("GiB") && e.contains("batch_size"), "{e}");
    }
}

#[test]
fn exp_is_accurate() {
    let mut worst = 0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let got = kernels::exp(x) as f64;
        let want = (x as f64).exp();
        worst = worst.max(((got - want) / want).abs());
        x += 0.0137;
    }
    assert!(worst < 4e-7, "max relative error {worst}");
    assert!(kernels::exp(f32::NEG_INFINITY) < 1e-37);
    assert!((kernels::tanh(0.3) as f64 - 0.3f64.tanh()).abs() < 2e-7);
    assert!(kernels::tanh(-50.0) == -1.0 && kernels::tanh(50.0) == 1.0);
}

/// Every kernel's AVX2 build gives bit-identical results to the scalar build.
#[test]
fn simd_kernels_equal_scalar() {
    if !Isa::Avx2.supported() {
        eprintln!("SKIPPED: fused kernels avx2 path (this CPU lacks AVX2/FMA)");
        return;
    }
    let mut rng = SplitMix64::new(17);
    let mut rand = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (s, a) = (Isa::Scalar, Isa::Avx2);
    for c in [1usize, 7, 8, 13, 64, 131] {
        let rows = 5;
        let x = rand(rows * c);
        let w = rand(c);
        let bias = rand(c);
        let dout = rand(rows * c);
        for rms in [false, true] {
            let run = |isa| {
                let (mut o, mut m, mut r) = (vec![0f32; rows * c], vec![0f32; rows], vec![0f32; rows]);
                kernels::norm_fwd(isa, &x, &w, (!rms).then_some(&bias[..]), rms, 1e-5, &mut o, &mut m, &mut r);
                let mut dx = vec![0.5f32; rows * c];
                let mut scratch = vec![0f32; c];
                kernels::norm_bwd_dx(isa, &dout, &x, &w, &m, &r, rms, &mut dx, &mut scratch);
                let (mut dw, mut db) = (vec![0f32; c - c / 3], vec![0f32; c - c / 3]);
                kernels::norm_bwd_params(isa, &dout, &x, c, c / 3, &m, &r, &mut dw, Some(&mut db));
                (o, m, r, dx, dw, db)
            };
            assert_eq!(run(s), run(a), "norm c={c} rms={rms}");
        }
        let run = |isa| {
            let mut act = vec![0f32; rows * c];
            let mut th = vec![0f32; rows * c];
            kernels::gelu_fwd(isa, &x, &mut act, &mut th);
            let mut d = vec![0f32; rows * c];
            kernels::gelu_bwd(isa, &x, &th, &dout, &mut d);
            let pre = [x.clone(), dout.clone()].concat(); // `rows` rows of [gate (c) | up (c)]
            let f = c;
            let mut sw = vec![0f32; rows * f];
            kernels::swiglu_fwd(isa, &pre, f, &mut sw);
            let mut dsw = vec![0f32; 2 * rows * f];
            kernels::swiglu_bwd(isa, &pre, &dout, f, &mut dsw);
            let mut ce = [x.clone(), dout.clone()].concat();
            let targets: Vec<u32> = (0..2 * rows).map(|i| (i * 3 % c) as u32).collect();
            let l = kernels::cross_entropy(isa, &mut ce, c, &targets, Some(0.25));
            let mut db = vec![0f32; c];
            kernels::colsum_acc(isa, &x, c, 0, &mut db);
            let ss = kernels::sum_squares(isa, &x);
            let mut acc = dout.clone();
            kernels::add_into(isa, &mut acc, &x);
            (act, d, sw, dsw, ce, l.to_bits(), db, ss.to_bits(), acc)
        };
        assert_eq!(run(s), run(a), "element-wise c={c}");
        let run = |isa| {
            let (mut p, mut m, mut v) = (x.clone(), vec![0.1f32; rows * c], vec![0.2f32; rows * c]);
            kernels::adamw(isa, &mut p, &dout, &mut m, &mut v, 0.7, 0.9, 0.99, 1e-8, 0.999, 1e-3, 1.2);
            (p, m, v)
        };
        assert_eq!(run(s), run(a), "adamw c={c}");
    }
    // RoPE and the attention softmax on odd sizes, with and without a window.
    for (t, hd, window) in [(7usize, 6usize, 0usize), (16, 8, 5), (33, 64, 0)] {
        let (nh, nkv, b) = (4, 2, 2);
        let ld = (nh + 2 * nkv) * hd;
        let sh = kernels::AttnShape { t, nh, nkv, hd, ld, scale: 1.0 / (hd as f32).sqrt(), window };
        let qkv = rand(b * t * ld);
        let scores = rand(t * t);
        let dp = rand(t * t);
        let half = hd / 2;
        let cos = rand(t * half);
        let sin = rand(t * half);
        let run = |isa| {
            let mut r = qkv.clone();
            kernels::rope(isa, &mut r, ld, nh + nkv, hd, half, 3, t, &cos, &sin, false);
            let mut ri = r.clone();
            kernels::rope(isa, &mut ri, ld, nh + nkv, hd, half, 3, t, &cos, &sin, true);
            let mut p = scores.clone();
            kernels::softmax_causal(isa, &mut p, sh);
            let mut ds = dp.clone();
            kernels::softmax_bwd(isa, &p, &mut ds, t, sh.scale);
            (r, ri, p, ds)
        };
        assert_eq!(run(s), run(a), "rope/attention t={t} hd={hd}");
    }
}

/// Two accumulated half-weighted micro-batches give the gradient of the mean loss over
/// both (what `grad_accum = 2` relies on), checked against autograd on the joined batch.
#[test]
fn accumulated_micro_batches_equal_the_joined_batch() {
    let cfg = gpt2();
    let m = model(&cfg);
    let (x1, y1) = batch(&cfg, 2, 16, 21);
    let (x2, y2) = batch(&cfg, 2, 16, 22);
    let mut f = FusedModel::from_trainable(&m, 2, Isa::best()).unwrap();
    f.zero_grads();
    f.step(&x1, &y1, 2, 16, 0.5).unwrap();
    f.step(&x2, &y2, 2, 16, 0.5).unwrap();
    let dev = Device::Cpu;
    let xt = Tensor::from_vec([x1, x2].concat(), (4, 16), &dev).unwrap();
    let yt = Tensor::from_vec([y1, y2].concat(), (4, 16), &dev).unwrap();
    let grads = m.forward(&xt, Some(&yt)).unwrap().1.unwrap().backward().unwrap();
    for (name, var) in m.named_params() {
        let want: Vec<f32> = grads.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let scale = want.iter().fold(0f32, |a, x| a.max(x.abs()));
        for (a, e) in f.grad(&name).unwrap().iter().zip(&want) {
            assert!((a - e).abs() <= 2e-4 * scale + 1e-7, "{name}: {a} vs {e}");
        }
    }
}
