//! End-to-end: overfitting, exact resume, atomic checkpoints, export round trips, and clear
//! errors on bad input. All on tiny models so the whole file runs in seconds.

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use lamina_core::Architecture;
use lamina_model::trainable::TrainableModel;
use lamina_train::checkpoint::{load_checkpoint, read_state, resolve_checkpoint};
use lamina_train::data::{prepare, TokenWidth, TokenizerSpec};
use lamina_train::export::{export, unpermute_from_gguf, ExportFormat, Quant};
use lamina_train::{pretrain, NoCallbacks, TrainConfig};
use std::path::{Path, PathBuf};

const TEXT: &str = "the quick brown fox jumps over the lazy dog. pack my box with five dozen liquor jugs!\n";

fn corpus(dir: &Path, repeat: usize) -> PathBuf {
    let p = dir.join("input.txt");
    std::fs::write(&p, TEXT.repeat(repeat)).unwrap();
    p
}

fn tiny(dir: &Path, data: PathBuf, arch: Architecture) -> TrainConfig {
    TrainConfig {
        data: vec![data],
        out_dir: dir.join("run"),
        arch,
        n_layer: 2,
        n_head: 2,
        n_kv_head: Some(1),
        n_embd: 32,
        ffn_dim: Some(64),
        block_size: 16,
        batch_size: 8,
        max_iters: 30,
        lr: 3e-3,
        min_lr: 3e-4,
        warmup_iters: 5,
        lr_decay_iters: 30,
        weight_decay: 0.1,
        eval_interval: 10,
        eval_iters: 2,
        log_interval: 5,
        sample_tokens: 8,
        tied_embeddings: false,
        progress: false,
        threads: 1,
        ..TrainConfig::default()
    }
}

#[test]
fn tiny_model_overfits_tiny_corpus() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 20);
    // Both gradient engines: the fused kernels (default for f32) and candle autograd.
    let mut s = None;
    for engine in ["autograd", "fused"] {
        let cfg = TrainConfig {
            max_iters: 250,
            lr_decay_iters: 250,
            lr: 1e-2,
            eval_interval: 250,
            engine: engine.into(),
            ..tiny(d.path(), data.clone(), Architecture::Llama)
        };
        let r = pretrain(&cfg, None, &mut NoCallbacks).unwrap();
        let last: f64 = r.train_losses[r.train_losses.len() - 10..].iter().map(|x| x.1).sum::<f64>() / 10.0;
        assert!(r.train_losses[0].1 > 2.5, "{engine}: initial loss {}", r.train_losses[0].1);
        assert!(last < 0.15, "{engine}: final train loss {last}");
        assert!(r.evals.last().unwrap().val_loss < 0.3, "{engine}");
        s = Some(r);
    }
    let s = s.unwrap();
    assert!(s.plot.as_ref().unwrap().exists());
    if let Ok(p) = std::env::var("LAMINA_KEEP_PLOT") {
        std::fs::copy(s.plot.as_ref().unwrap(), p).unwrap();
    }
    assert!(std::fs::read_to_string(&s.metrics_log).unwrap().lines().count() > 10);
}

#[test]
fn resumed_run_matches_uninterrupted_run() {
    for arch in [Architecture::Gpt2, Architecture::Llama] {
        let d = tempfile::tempdir().unwrap();
        let data = corpus(d.path(), 10);
        let full_cfg = TrainConfig { out_dir: d.path().join("full"), grad_accum: 2, ..tiny(d.path(), data.clone(), arch) };
        let full = pretrain(&full_cfg, None, &mut NoCallbacks).unwrap();

        let part_cfg = TrainConfig { out_dir: d.path().join("part"), stop_at: Some(10), ..full_cfg.clone() };
        let part = pretrain(&part_cfg, None, &mut NoCallbacks).unwrap();
        assert_eq!(part.final_step, 10);
        let resume_cfg = TrainConfig { out_dir: d.path().join("part"), ..full_cfg.clone() };
        let rest = pretrain(&resume_cfg, Some(&d.path().join("part")), &mut NoCallbacks).unwrap();
        assert_eq!(rest.start_step, 10);
        let joined: Vec<(usize, f64)> = part.train_losses.iter().chain(rest.train_losses.iter()).cloned().collect();
        assert_eq!(joined.len(), full.train_losses.len());
        for (a, b) in joined.iter().zip(&full.train_losses) {
            assert_eq!(a.0, b.0);
            assert!((a.1 - b.1).abs() <= 1e-6, "{arch:?} step {}: {} vs {}", a.0, a.1, b.1);
        }
        // Evaluation at step 10 happened in both, so the eval RNG is in step too.
        let fv: Vec<f64> = full.evals.iter().map(|e| e.val_loss).collect();
        let pv: Vec<f64> = part.evals.iter().chain(rest.evals.iter()).map(|e| e.val_loss).collect();
        assert_eq!(fv.len(), pv.len());
        for (a, b) in fv.iter().zip(&pv) {
            assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
        }
    }
}

#[test]
fn checkpoints_are_atomic_and_corruption_is_reported() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { max_iters: 10, checkpoint_interval: 5, ..tiny(d.path(), data, Architecture::Gpt2) };
    pretrain(&cfg, None, &mut NoCallbacks).unwrap();
    let run = cfg.out_dir.clone();
    assert_eq!(std::fs::read_to_string(run.join("latest")).unwrap().trim(), "step-000010");
    // Simulated crash while writing step 15: half-written temp folder, plus a step folder
    // that got renamed but whose weights are truncated.
    let tmp = run.join(".tmp-step-000015-1-2");
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("model.safetensors"), b"garbage").unwrap();
    let bad = run.join("step-000015");
    copy_dir(&run.join("step-000010"), &bad);
    let ms = bad.join("model.safetensors");
    let len = std::fs::metadata(&ms).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&ms).unwrap();
    f.set_len(len / 2).unwrap();
    // `latest` still names step 10.
    assert_eq!(resolve_checkpoint(&run).unwrap(), run.join("step-000010"));
    // Without `latest` the loader falls back to the newest *valid* step folder.
    std::fs::remove_file(run.join("latest")).unwrap();
    assert_eq!(resolve_checkpoint(&run).unwrap(), run.join("step-000010"));
    // Pointing straight at the corrupt folder is a clear error.
    let err = load_checkpoint(&bad, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("corrupt") && err.contains("model.safetensors"), "{err}");
    std::fs::write(bad.join("trainer_state.json"), b"{ not json").unwrap();
    let err = read_state(&bad).unwrap_err().to_string();
    assert!(err.contains("trainer_state.json is corrupt"), "{err}");
    // The good one loads and has the right step.
    let ck = load_checkpoint(&run.join("step-000005"), &Device::Cpu).unwrap();
    assert_eq!(ck.state.step, 5);
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
}

fn logits(m: &TrainableModel) -> Vec<f32> {
    let x = Tensor::new(&[[1u32, 5, 7, 2, 9, 3]], &Device::Cpu).unwrap();
    m.forward(&x, None).unwrap().0.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn export_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { max_iters: 5, sample_tokens: 0, ..tiny(d.path(), data, Architecture::Llama) };
    pretrain(&cfg, None, &mut NoCallbacks).unwrap();
    let ck = load_checkpoint(&cfg.out_dir, &Device::Cpu).unwrap();

    // f32 safetensors: identical logits after reloading.
    let hf = d.path().join("hf");
    export(&cfg.out_dir, &hf, ExportFormat::Safetensors, Quant::F32).unwrap();
    let mcfg = lamina_core::ModelConfig::from_hf_json(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(mcfg, ck.state.model_config);
    let re = TrainableModel::load(&mcfg, &hf.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(logits(&re), logits(&ck.model));
    assert!(hf.join("tokenizer.json").exists());
    assert!(export(&cfg.out_dir, &d.path().join("x"), ExportFormat::Safetensors, Quant::Q4_0).is_err());

    // GGUF: metadata, names, permutation and quantization error bounds.
    let orig = ck.model.state_dict(DType::F32).unwrap();
    let (nh, nkv, hd) = (mcfg.num_heads, mcfg.num_kv_heads, mcfg.head_dim);
    for (quant, rel) in [(Quant::F32, 0.0), (Quant::F16, 1e-3), (Quant::Q8_0, 1.0 / 127.0), (Quant::Q4_0, 1.0 / 8.0), (Quant::Q4_1, 2.0 / 15.0)] {
        let out = d.path().join(format!("m-{quant:?}.gguf"));
        export(&cfg.out_dir, &out, ExportFormat::Gguf, quant).unwrap();
        let mut f = std::fs::File::open(&out).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        let md = &c.metadata;
        assert_eq!(md["general.architecture"].to_string().unwrap(), "llama");
        assert_eq!(md["llama.block_count"].to_u32().unwrap(), 2);
        assert_eq!(md["llama.attention.head_count_kv"].to_u32().unwrap(), 1);
        assert_eq!(md["llama.embedding_length"].to_u32().unwrap(), 32);
        assert_eq!(md["llama.rope.dimension_count"].to_u32().unwrap(), 16);
        assert_eq!(md["tokenizer.ggml.model"].to_string().unwrap(), "gpt2");
        assert_eq!(md["tokenizer.ggml.tokens"].to_vec().unwrap().len(), mcfg.vocab_size);
        for (hf_name, want) in &orig {
            let g = lamina_train::export::gguf_name(hf_name).unwrap();
            let t = c.tensor(&mut f, &g, &Device::Cpu).unwrap().dequantize(&Device::Cpu).unwrap();
            let t = if g.contains("attn_q.weight") {
                unpermute_from_gguf(&t, nh, hd).unwrap()
            } else if g.contains("attn_k.weight") {
                unpermute_from_gguf(&t, nkv, hd).unwrap()
            } else {
                t
            };
            assert_eq!(t.dims(), want.dims(), "{g}");
            let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = want.flatten_all().unwrap().to_vec1().unwrap();
            let amax = b.iter().fold(0f32, |m, x| m.max(x.abs()));
            let err = a.iter().zip(&b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            let tol = if want.rank() == 1 { 0.0 } else { rel as f32 * amax + 1e-7 };
            assert!(err <= tol, "{quant:?} {g}: max err {err} > {tol}");
        }
        for name in ["token_embd.weight", "blk.0.attn_norm.weight", "blk.1.ffn_down.weight", "output_norm.weight", "output.weight"] {
            assert!(c.tensor_infos.contains_key(name), "{name}");
        }
    }
    // Permutation: GGUF row h*hd + 2j + k = HF row h*hd + k*hd/2 + j.
    let w = Tensor::arange(0f32, 8.0, &Device::Cpu).unwrap().reshape((8, 1)).unwrap();
    let p = lamina_train::export::permute_for_gguf(&w, 2, 4).unwrap();
    assert_eq!(p.flatten_all().unwrap().to_vec1::<f32>().unwrap(), vec![0., 2., 1., 3., 4., 6., 5., 7.]);
}

/// Logits of the inference model loaded from `path` (GGUF or HF folder) for [`logits`]' tokens.
fn inference_logits(path: &Path) -> Vec<f32> {
    let m = lamina_model::load_model(path, lamina_model::Precision::F32).unwrap();
    let tokens = [1u32, 5, 7, 2, 9, 3];
    let n = tokens.len();
    let pool = lamina_kernels::ThreadPool::new(1);
    let mut kv = m.new_kv_cache(1, 16);
    let mut scratch = lamina_model::Scratch::default();
    let (pos, rows): (Vec<usize>, Vec<usize>) = ((0..n).collect(), (0..n).collect());
    let mut out = Vec::new();
    let input = lamina_model::BatchInput { tokens: &tokens, positions: &pos, slots: &vec![0; n], logits_rows: &rows };
    m.forward(input, &mut kv, &mut scratch, &pool, &mut out).unwrap();
    out
}

#[test]
fn gpt2_gguf_export_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { max_iters: 3, sample_tokens: 0, ..tiny(d.path(), data, Architecture::Gpt2) };
    pretrain(&cfg, None, &mut NoCallbacks).unwrap();
    let ck = load_checkpoint(&cfg.out_dir, &Device::Cpu).unwrap();
    let want = logits(&ck.model);
    for (quant, tol) in [(Quant::F32, 1e-4f32), (Quant::Q8_0, 0.05)] {
        let out = d.path().join(format!("g-{quant:?}.gguf"));
        export(&cfg.out_dir, &out, ExportFormat::Gguf, quant).unwrap();
        let mut f = std::fs::File::open(&out).unwrap();
        let c = gguf_file::Content::read(&mut f).unwrap();
        assert_eq!(c.metadata["general.architecture"].to_string().unwrap(), "gpt2");
        assert_eq!(c.metadata["gpt2.block_count"].to_u32().unwrap(), 2);
        for name in ["token_embd.weight", "position_embd.weight", "blk.1.attn_qkv.bias", "blk.0.ffn_down.weight", "output_norm.bias"] {
            assert!(c.tensor_infos.contains_key(name), "{name}");
        }
        assert!(!c.tensor_infos.contains_key("output.weight"), "the tied head is not duplicated");
        // The Conv1D weights are stored transposed ([out, in] rows in GGUF order).
        assert_eq!(c.tensor_infos["blk.0.attn_qkv.weight"].shape.dims(), &[3 * 32, 32]);
        let got = inference_logits(&out);
        let worst = got.iter().zip(&want).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert_eq!(got.len(), want.len());
        assert!(worst <= tol, "{quant:?}: logits differ by {worst}");
    }
}

#[test]
fn token_cache_is_reused_until_the_data_changes() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 3);
    let mut msgs = Vec::new();
    let (_, a) = prepare(std::slice::from_ref(&data), &TokenizerSpec::Char, None, "auto", &mut |m| msgs.push(m.to_string())).unwrap();
    assert_eq!(a.width(), TokenWidth::U16);
    assert_eq!(a.len(), TEXT.len() * 3);
    let (_, _) = prepare(std::slice::from_ref(&data), &TokenizerSpec::Char, None, "auto", &mut |m| msgs.push(m.to_string())).unwrap();
    assert!(msgs.last().unwrap().contains("using token cache"), "{msgs:?}");
    std::fs::write(&data, TEXT.repeat(4)).unwrap();
    let (_, b) = prepare(std::slice::from_ref(&data), &TokenizerSpec::Char, None, "u32", &mut |m| msgs.push(m.to_string())).unwrap();
    assert!(msgs.last().unwrap().contains("tokenizing"), "{msgs:?}");
    assert_eq!((b.len(), b.width()), (TEXT.len() * 4, TokenWidth::U32));
    // A folder works too (hidden cache files inside it are skipped).
    let folder = d.path().join("corpus");
    std::fs::create_dir_all(folder.join("sub")).unwrap();
    std::fs::write(folder.join("a.txt"), "abc").unwrap();
    std::fs::write(folder.join("sub/b.txt"), "def").unwrap();
    let (_, f) = prepare(std::slice::from_ref(&folder), &TokenizerSpec::Char, None, "auto", &mut |_| {}).unwrap();
    assert_eq!(f.len(), 6);
    let (_, f) = prepare(&[folder], &TokenizerSpec::Char, None, "auto", &mut |_| {}).unwrap();
    assert_eq!(f.slice(0, 6).len(), 6);
}

#[test]
fn bad_input_gives_clear_errors() {
    let d = tempfile::tempdir().unwrap();
    // Empty corpus.
    let empty = d.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let e = pretrain(&tiny(d.path(), empty, Architecture::Gpt2), None, &mut NoCallbacks).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    // Shorter than one context window (the validation split needs block_size + 1 tokens).
    let short = d.path().join("short.txt");
    std::fs::write(&short, "hello there, this is short").unwrap();
    let e = pretrain(&tiny(d.path(), short, Architecture::Gpt2), None, &mut NoCallbacks).unwrap_err().to_string();
    assert!(e.contains("shorter than one context window"), "{e}");
    // Heads that do not divide the width.
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { n_embd: 30, n_head: 4, ..tiny(d.path(), data.clone(), Architecture::Llama) };
    let e = pretrain(&cfg, None, &mut NoCallbacks).unwrap_err().to_string();
    assert!(e.contains("not divisible"), "{e}");
    // A vocabulary larger than the token id type.
    let e = TokenWidth::choose("u16", 70_000).unwrap_err().to_string();
    assert!(e.contains("does not fit u16"), "{e}");
    let cfg = TrainConfig { vocab_size: Some(5), ..tiny(d.path(), data.clone(), Architecture::Gpt2) };
    let e = pretrain(&cfg, None, &mut NoCallbacks).unwrap_err().to_string();
    assert!(e.contains("smaller than the tokenizer"), "{e}");
    // Missing data, missing checkpoint, bad config values.
    let cfg = TrainConfig { data: vec![d.path().join("nope.txt")], ..tiny(d.path(), data.clone(), Architecture::Gpt2) };
    assert!(pretrain(&cfg, None, &mut NoCallbacks).unwrap_err().to_string().contains("nope.txt"));
    let cfg = tiny(d.path(), data.clone(), Architecture::Gpt2);
    let e = pretrain(&cfg, Some(&d.path().join("nockpt")), &mut NoCallbacks).unwrap_err().to_string();
    assert!(e.contains("checkpoint") && e.contains("does not exist"), "{e}");
    let cfg = TrainConfig { batch_size: 0, ..tiny(d.path(), data, Architecture::Gpt2) };
    assert!(pretrain(&cfg, None, &mut NoCallbacks).unwrap_err().to_string().contains("batch_size"));
    assert!(TrainConfig::from_toml_str("lr = \"fast\"").is_err());
}
