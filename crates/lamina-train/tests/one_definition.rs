//! One model definition: the trainable (candle autograd) forward pass and the inference
//! forward pass (our kernels) compute the same logits for the same weights, for both
//! families. The trainable model is saved as a Hugging Face folder and loaded by the
//! inference loader exactly as `lamina run CKPT` does.

use candle_core::{DType, Device, Tensor};
use lamina_core::{Architecture, ModelConfig};
use lamina_kernels::ThreadPool;
use lamina_model::trainable::TrainableModel;
use lamina_model::{load_model, BatchInput, Precision, Scratch, SeqChunk};

fn config(arch: Architecture) -> ModelConfig {
    let llama = arch == Architecture::Llama;
    ModelConfig {
        architecture: arch,
        vocab_size: 48,
        hidden_size: 32,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: if llama { 2 } else { 4 },
        head_dim: 8,
        ffn_dim: 64,
        context_length: 32,
        norm_eps: 1e-5,
        rope_theta: if llama { 10000.0 } else { 0.0 },
        rope_dim: if llama { 8 } else { 0 },
        rope_scaling: None,
        tied_embeddings: !llama,
        qkv_bias: !llama,
        sliding_window: None,
        local_layers: None,
    }
}

fn check(arch: Architecture) {
    let cfg = config(arch);
    let dir = tempfile::tempdir().unwrap();
    let model = TrainableModel::new(&cfg, 7, DType::F32, &Device::Cpu).unwrap();
    model.save(&dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.to_hf_json().to_string()).unwrap();

    let tokens: Vec<u32> = vec![3, 17, 5, 42, 0, 9, 31, 11];
    let n = tokens.len();
    let input = Tensor::from_vec(tokens.clone(), (1, n), &Device::Cpu).unwrap();
    let (logits, _) = model.forward(&input, None).unwrap();
    let want: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap(); // (1, n, vocab)

    let inf = load_model(dir.path(), Precision::F32).unwrap();
    let pool = ThreadPool::new(2);
    let (mut kv, table) = inf.single_sequence_kv(32);
    let mut scratch = Scratch::default();
    let mut got = Vec::new();
    let rows: Vec<usize> = (0..n).collect();
    let seq = [SeqChunk { len: n, start: 0, blocks: &table, lora: None }];
    inf.forward(BatchInput { tokens: &tokens, seqs: &seq, logits_rows: &rows }, &mut kv, &mut scratch, &pool, &mut got).unwrap();
    assert_eq!(want.len(), got.len());
    let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    assert!(worst < 1e-4, "{arch:?}: trainable and inference logits differ by {worst}");
}

#[test]
fn llama_trainable_and_inference_agree() {
    check(Architecture::Llama);
}

#[test]
fn gpt2_trainable_and_inference_agree() {
    check(Architecture::Gpt2);
}

/// The trainer takes its weights from a loaded inference model (`from_model`: Llama's
/// interleaved q/k rows back in Hugging Face order) and gives the same logits; an adapter
/// it trains, handed over in PEFT's layout, gives the inference model the trainer's logits.
#[test]
fn llama_from_inference_model_and_lora_round_trip() {
    use lamina_model::lora::LoraConfig;
    let cfg = config(Architecture::Llama);
    let dir = tempfile::tempdir().unwrap();
    let original = TrainableModel::new(&cfg, 9, DType::F32, &Device::Cpu).unwrap();
    original.save(&dir.path().join("model.safetensors")).unwrap();
    std::fs::write(dir.path().join("config.json"), cfg.to_hf_json().to_string()).unwrap();
    let inf = load_model(dir.path(), Precision::F32).unwrap();
    let mut model = TrainableModel::from_model(&inf, DType::F32, &Device::Cpu).unwrap();
    let tokens: Vec<u32> = vec![3, 17, 5, 42, 0, 9, 31, 11];
    let n = tokens.len();
    let input = Tensor::from_vec(tokens.clone(), (1, n), &Device::Cpu).unwrap();
    let logits = |m: &TrainableModel| -> Vec<f32> { m.forward(&input, None).unwrap().0.flatten_all().unwrap().to_vec1().unwrap() };
    let worst = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(worst(&logits(&original), &logits(&model)) < 1e-5);

    model.add_lora(&LoraConfig::new(4, 8.0, 0.0, &["q", "k", "v", "o", "gate", "up", "down"]).unwrap(), 1).unwrap();
    let mut x = 17u64;
    for (name, var) in model.trainable_params() {
        if name.ends_with("lora_B.weight") {
            let v: Vec<f32> = (0..var.elem_count())
                .map(|_| {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.5
                })
                .collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    let want = logits(&model);
    assert!(worst(&want, &logits(&original)) > 0.05, "the adapter should move the logits");
    let adapter = model.lora_adapter().unwrap().unwrap();
    let adapter_dir = dir.path().join("adapter");
    std::fs::create_dir_all(&adapter_dir).unwrap();
    adapter.save(&adapter_dir).unwrap();
    let lora = inf.prepare_lora(&lamina_model::lora::LoraAdapter::load(&adapter_dir).unwrap(), "t", 1.0).unwrap();
    let pool = ThreadPool::new(2);
    let (mut kv, table) = inf.single_sequence_kv(32);
    let mut got = Vec::new();
    let rows: Vec<usize> = (0..n).collect();
    let seq = [SeqChunk { len: n, start: 0, blocks: &table, lora: Some(&lora) }];
    inf.forward(BatchInput { tokens: &tokens, seqs: &seq, logits_rows: &rows }, &mut kv, &mut Scratch::default(), &pool, &mut got).unwrap();
    let diff = worst(&want, &got);
    assert!(diff < 1e-4, "trainer and inference logits with the adapter differ by {diff}");
}
