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
