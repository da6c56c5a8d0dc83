//! Analytic gradients of the training loss vs central finite differences, in f64, for
//! every parameter kind of both architectures.

use candle_core::{DType, Device, Tensor};
use lamina_core::{Architecture, ModelConfig};
use lamina_model::trainable::{SplitMix64, TrainableModel};

fn llama() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Llama,
        vocab_size: 13,
        hidden_size: 8,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2, // GQA
        head_dim: 2 * 2,
        ffn_dim: 12,
        context_length: 6,
        norm_eps: 1e-5,
        rope_theta: 10000.0,
        rope_dim: 4,
        rope_scaling: None,
        tied_embeddings: false,
        qkv_bias: true,
        sliding_window: None,
        local_layers: None,
    }
}

fn gpt2() -> ModelConfig {
    ModelConfig {
        architecture: Architecture::Gpt2,
        vocab_size: 13,
        hidden_size: 8,
        num_layers: 2,
        num_heads: 2,
        num_kv_heads: 2,
        head_dim: 4,
        ffn_dim: 16,
        context_length: 6,
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

fn check(cfg: &ModelConfig) {
    let dev = Device::Cpu;
    let model = TrainableModel::new(cfg, 7, DType::F64, &dev).unwrap();
    // Perturb norms and biases away from 1/0 so their gradients are generic.
    let mut rng = SplitMix64::new(99);
    for (name, var) in model.named_params() {
        if var.rank() == 1 {
            let n = var.elem_count();
            let base: Vec<f64> = var.as_tensor().to_vec1().unwrap();
            let v: Vec<f64> = base.iter().map(|b| b + 0.3 * rng.normal()).collect();
            var.set(&Tensor::from_vec(v, n, &dev).unwrap()).unwrap();
        } else if name.contains("embed") || name.contains("wte") || name.contains("wpe") {
            let t = (var.as_tensor() * 20.0).unwrap(); // make attention non-uniform
            var.set(&t).unwrap();
        }
    }
    let (b, t) = (2, 5);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let tg: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let x = Tensor::from_vec(ids, (b, t), &dev).unwrap();
    let y = Tensor::from_vec(tg, (b, t), &dev).unwrap();
    check_params(&model, &model.named_params(), &x, &y, &mut rng);
}

/// Analytic gradients of `params` against central differences, at four entries each.
fn check_params(model: &TrainableModel, params: &[(String, candle_core::Var)], x: &Tensor, y: &Tensor, rng: &mut SplitMix64) {
    let dev = Device::Cpu;
    let loss_of = |m: &TrainableModel| -> f64 { m.forward(x, Some(y)).unwrap().1.unwrap().to_scalar::<f64>().unwrap() };
    let loss = model.forward(x, Some(y)).unwrap().1.unwrap();
    let grads = loss.backward().unwrap();
    let h = 1e-5;
    let mut checked = 0;
    for (name, var) in params {
        let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
        let g: Vec<f64> = g.flatten_all().unwrap().to_vec1().unwrap();
        let base: Vec<f64> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        let n = base.len();
        let mut nonzero = false;
        for k in 0..4 {
            let i = if k == 0 { 0 } else { rng.below(n as u64) as usize };
            let set = |delta: f64| {
                let mut v = base.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap()).unwrap();
            };
            set(h);
            let lp = loss_of(model);
            set(-h);
            let lm = loss_of(model);
            set(0.0);
            let num = (lp - lm) / (2.0 * h);
            let err = (g[i] - num).abs();
            assert!(err <= 1e-7 + 1e-5 * num.abs(), "{name}[{i}]: analytic {} vs numeric {num} (err {err})", g[i]);
            nonzero |= num.abs() > 1e-9;
            checked += 1;
        }
        let _ = nonzero;
    }
    assert!(checked > 0);
}

/// LoRA: the adapters' dA and dB (with B away from its zero start, so dA is not zero)
/// match finite differences through a loss that ignores some targets (the SFT mask); the
/// frozen base gets no gradient at all; with B = 0 the model is the base.
#[test]
fn lora_gradients_match_finite_differences_and_the_base_is_frozen() {
    use lamina_model::lora::LoraConfig;
    use lamina_model::trainable::IGNORE;
    let dev = Device::Cpu;
    let cfg = ModelConfig { qkv_bias: false, ..llama() };
    let mut model = TrainableModel::new(&cfg, 3, DType::F64, &dev).unwrap();
    let mut rng = SplitMix64::new(5);
    for (name, var) in model.named_params() {
        if name.contains("embed") {
            var.set(&(var.as_tensor() * 20.0).unwrap()).unwrap();
        }
    }
    let (b, t) = (2, 5);
    let ids: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let mut tg: Vec<u32> = (0..b * t).map(|_| rng.below(cfg.vocab_size as u64) as u32).collect();
    let x = Tensor::from_vec(ids, (b, t), &dev).unwrap();
    let y_all = Tensor::from_vec(tg.clone(), (b, t), &dev).unwrap();
    let (logits_base, _) = model.forward(&x, None).unwrap();
    for i in [0, 1, 2, 5, 9] {
        tg[i] = IGNORE;
    }
    let y = Tensor::from_vec(tg.clone(), (b, t), &dev).unwrap();
    model.add_lora(&LoraConfig::new(2, 4.0, 0.0, &["q", "k", "v", "o", "gate", "up", "down"]).unwrap(), 11).unwrap();
    let (logits_fresh, _) = model.forward(&x, None).unwrap();
    let d: f64 = (logits_fresh - &logits_base).unwrap().abs().unwrap().max_all().unwrap().to_scalar().unwrap();
    assert_eq!(d, 0.0, "a fresh adapter (B = 0) changed the logits");
    let lora = model.trainable_params();
    assert_eq!(lora.len(), 2 * 7 * cfg.num_layers);
    for (name, var) in &lora {
        if name.ends_with("lora_B.weight") {
            let n = var.elem_count();
            let v: Vec<f64> = (0..n).map(|_| 0.5 * rng.normal()).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap()).unwrap();
        }
    }
    check_params(&model, &lora, &x, &y, &mut rng);
    let grads = model.forward(&x, Some(&y)).unwrap().1.unwrap().backward().unwrap();
    for (name, var) in model.named_params() {
        assert!(grads.get(var.as_tensor()).is_none(), "the frozen {name} got a gradient");
    }
    // The masked loss is the mean over the scored positions only.
    let (logits, loss) = model.forward(&x, Some(&y)).unwrap();
    let lp = candle_nn::ops::log_softmax(&logits, 2).unwrap().flatten_to(1).unwrap().to_vec2::<f64>().unwrap();
    let kept: Vec<usize> = (0..b * t).filter(|&i| tg[i] != IGNORE).collect();
    let want = -kept.iter().map(|&i| lp[i][tg[i] as usize]).sum::<f64>() / kept.len() as f64;
    let got = loss.unwrap().to_scalar::<f64>().unwrap();
    assert!((got - want).abs() < 1e-12, "masked loss {got} vs {want}");
    let all = model.forward(&x, Some(&y_all)).unwrap().1.unwrap().to_scalar::<f64>().unwrap();
    assert!((all - got).abs() > 1e-6, "ignoring targets should change the loss");
}

#[test]
fn llama_gradients_match_finite_differences() {
    let cfg = llama();
    check(&cfg);
    // Tied embeddings, no biases, partial-width (non-GQA) too.
    let cfg2 = ModelConfig { tied_embeddings: true, qkv_bias: false, num_kv_heads: 4, ..llama() };
    check(&cfg2);
}

#[test]
fn gpt2_gradients_match_finite_differences() {
    check(&gpt2());
}

#[test]
fn every_parameter_kind_is_present() {
    let m = TrainableModel::new(&llama(), 1, DType::F64, &Device::Cpu).unwrap();
    let names: Vec<String> = m.named_params().into_iter().map(|(n, _)| n).collect();
    for want in [
        "model.embed_tokens.weight",
        "model.layers.0.input_layernorm.weight",
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.k_proj.weight",
        "model.layers.0.self_attn.v_proj.weight",
        "model.layers.0.self_attn.o_proj.weight",
        "model.layers.0.post_attention_layernorm.weight",
        "model.layers.0.mlp.gate_proj.weight",
        "model.layers.0.mlp.up_proj.weight",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
        "lm_head.weight",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} missing from {names:?}");
    }
    let g = TrainableModel::new(&gpt2(), 1, DType::F64, &Device::Cpu).unwrap();
    let shapes: std::collections::HashMap<String, Vec<usize>> = g.named_params().into_iter().map(|(n, v)| (n, v.dims().to_vec())).collect();
    assert_eq!(shapes["h.0.attn.c_attn.weight"], vec![8, 24]); // Conv1D [in, out]
    assert_eq!(shapes["h.0.mlp.c_proj.weight"], vec![16, 8]);
    assert_eq!(shapes["wpe.weight"], vec![6, 8]);
    assert!(shapes.contains_key("ln_f.bias") && !shapes.contains_key("lm_head.weight"));
}
