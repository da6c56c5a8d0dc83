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
    assert_eq!(resolve_checkpoint(&run, &mut |_| {}).unwrap(), run.join("step-000010"));
    // Without `latest` the loader falls back to the newest *valid* step folder.
    std::fs::remove_file(run.join("latest")).unwrap();
    assert_eq!(resolve_checkpoint(&run, &mut |_| {}).unwrap(), run.join("step-000010"));
    // Pointing straight at the corrupt folder is a clear error.
    let err = load_checkpoint(&bad, &Device::Cpu, &mut |_| {}).err().unwrap().to_string();
    assert!(err.contains("corrupt") && err.contains("model.safetensors"), "{err}");
    std::fs::write(bad.join("trainer_state.json"), b"{ not json").unwrap();
    let err = read_state(&bad).unwrap_err().to_string();
    assert!(err.contains("trainer_state.json is corrupt"), "{err}");
    // The good one loads and has the right step.
    let ck = load_checkpoint(&run.join("step-000005"), &Device::Cpu, &mut |_| {}).unwrap();
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
    let ck = load_checkpoint(&cfg.out_dir, &Device::Cpu, &mut |_| {}).unwrap();

    // f32 safetensors: identical logits after reloading.
    let hf = d.path().join("hf");
    export(&cfg.out_dir, &hf, ExportFormat::Safetensors, Quant::F32, &mut |_| {}).unwrap();
    let mcfg = lamina_core::ModelConfig::from_hf_json(&std::fs::read_to_string(hf.join("config.json")).unwrap()).unwrap();
    assert_eq!(mcfg, ck.state.model_config);
    let re = TrainableModel::load(&mcfg, &hf.join("model.safetensors"), DType::F32, &Device::Cpu).unwrap();
    assert_eq!(logits(&re), logits(&ck.model));
    assert!(hf.join("tokenizer.json").exists());
    assert!(export(&cfg.out_dir, &d.path().join("x"), ExportFormat::Safetensors, Quant::Q4_0, &mut |_| {}).is_err());

    // GGUF: metadata, names, permutation and quantization error bounds.
    let orig = ck.model.state_dict(DType::F32).unwrap();
    let (nh, nkv, hd) = (mcfg.num_heads, mcfg.num_kv_heads, mcfg.head_dim);
    for (quant, rel) in [(Quant::F32, 0.0), (Quant::F16, 1e-3), (Quant::Q8_0, 1.0 / 127.0), (Quant::Q4_0, 1.0 / 8.0), (Quant::Q4_1, 2.0 / 15.0)] {
        let out = d.path().join(format!("m-{quant:?}.gguf"));
        export(&cfg.out_dir, &out, ExportFormat::Gguf, quant, &mut |_| {}).unwrap();
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
    let (mut kv, table) = m.single_sequence_kv(16);
    let mut scratch = lamina_model::Scratch::default();
    let rows: Vec<usize> = (0..n).collect();
    let mut out = Vec::new();
    let seq = [lamina_model::SeqChunk { len: n, start: 0, blocks: &table, lora: None }];
    let input = lamina_model::BatchInput { tokens: &tokens, seqs: &seq, logits_rows: &rows };
    m.forward(input, &mut kv, &mut scratch, &pool, &mut out).unwrap();
    out
}

#[test]
fn gpt2_gguf_export_round_trips() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { max_iters: 3, sample_tokens: 0, ..tiny(d.path(), data, Architecture::Gpt2) };
    pretrain(&cfg, None, &mut NoCallbacks).unwrap();
    let ck = load_checkpoint(&cfg.out_dir, &Device::Cpu, &mut |_| {}).unwrap();
    let want = logits(&ck.model);
    for (quant, tol) in [(Quant::F32, 1e-4f32), (Quant::Q8_0, 0.05)] {
        let out = d.path().join(format!("g-{quant:?}.gguf"));
        export(&cfg.out_dir, &out, ExportFormat::Gguf, quant, &mut |_| {}).unwrap();
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

fn steps_in(run: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("step-")).collect();
    v.sort();
    v
}

/// Resume replaces metrics.jsonl by temp + rename: the old file (here kept alive by a hard
/// link, as a kill between truncate and rewrite would have left it) is never truncated.
#[test]
fn resume_rewrites_the_metrics_log_atomically() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { max_iters: 20, stop_at: Some(10), log_interval: 2, sample_tokens: 0, ..tiny(d.path(), data, Architecture::Gpt2) };
    pretrain(&cfg, None, &mut NoCallbacks).unwrap();
    let log = cfg.out_dir.join("metrics.jsonl");
    let before = std::fs::read(&log).unwrap();
    assert!(before.len() > 100);
    let link = d.path().join("metrics-old-inode.jsonl");
    std::fs::hard_link(&log, &link).unwrap();
    let resumed = TrainConfig { stop_at: None, ..cfg.clone() };
    pretrain(&resumed, Some(&cfg.out_dir), &mut NoCallbacks).unwrap();
    assert_eq!(std::fs::read(&link).unwrap(), before, "the old metrics.jsonl was rewritten in place");
    let after = std::fs::read(&log).unwrap();
    assert!(after.starts_with(&before) && after.len() > before.len(), "kept lines lost or nothing appended");
    let leftovers: Vec<_> =
        std::fs::read_dir(&cfg.out_dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().starts_with("metrics.jsonl.")).collect();
    assert!(leftovers.is_empty(), "temp files left behind");
}

/// A corrupt `latest` checkpoint is skipped with a message naming the step and the
/// reason, each time a run folder is resolved (resume and generate both resolve).
#[test]
fn skipped_checkpoints_are_reported() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let cfg = TrainConfig { max_iters: 10, checkpoint_interval: 5, sample_tokens: 0, ..tiny(d.path(), data, Architecture::Llama) };
    pretrain(&cfg, None, &mut NoCallbacks).unwrap();
    let run = cfg.out_dir.clone();
    let ms = run.join("step-000010/model.safetensors");
    let len = std::fs::metadata(&ms).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&ms).unwrap().set_len(len - 7).unwrap();
    for _ in 0..2 {
        let mut msgs = Vec::new();
        assert_eq!(resolve_checkpoint(&run, &mut |m| msgs.push(m.to_string())).unwrap(), run.join("step-000005"));
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("skipping step-000010") && msgs[0].contains("model.safetensors is corrupt"), "{msgs:?}");
        assert!(msgs[1].contains("step 5"), "{msgs:?}");
    }
    // A valid `latest` is used without a word.
    let mut msgs = Vec::new();
    resolve_checkpoint(&run.join("step-000005"), &mut |m| msgs.push(m.to_string())).unwrap();
    assert!(msgs.is_empty(), "{msgs:?}");
    // The trainer passes the messages on.
    struct Collect(Vec<String>);
    impl lamina_train::Callbacks for Collect {
        fn message(&mut self, m: &str) {
            self.0.push(m.to_string());
        }
    }
    let mut cb = Collect(Vec::new());
    pretrain(&TrainConfig { max_iters: 6, ..cfg.clone() }, Some(&run), &mut cb).unwrap();
    assert!(cb.0.iter().any(|m| m.contains("skipping step-000010")), "{:?}", cb.0);
}

/// `keep_last = N` leaves the newest N checkpoints; 0 keeps all; the checkpoint `latest`
/// names is never deleted, and nothing is deleted when it is not valid.
#[test]
fn old_checkpoints_are_pruned_to_keep_last() {
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let base = TrainConfig { max_iters: 10, checkpoint_interval: 2, sample_tokens: 0, ..tiny(d.path(), data, Architecture::Gpt2) };
    let all = TrainConfig { out_dir: d.path().join("all"), keep_last: 0, ..base.clone() };
    pretrain(&all, None, &mut NoCallbacks).unwrap();
    assert_eq!(steps_in(&all.out_dir).len(), 5);
    let two = TrainConfig { out_dir: d.path().join("two"), keep_last: 2, ..base.clone() };
    pretrain(&two, None, &mut NoCallbacks).unwrap();
    assert_eq!(steps_in(&two.out_dir), ["step-000008", "step-000010"]);
    assert_eq!(resolve_checkpoint(&two.out_dir, &mut |_| {}).unwrap(), two.out_dir.join("step-000010"));
    // keep_last = 1 in a run whose `latest` is corrupt: nothing can be trusted, nothing goes.
    std::fs::write(all.out_dir.join("step-000010/trainer_state.json"), b"{").unwrap();
    assert!(lamina_train::checkpoint::prune_checkpoints(&all.out_dir, 1).unwrap().is_empty());
    assert_eq!(steps_in(&all.out_dir).len(), 5);
    // Resumed from step 4 with keep_last = 1: later folders of the earlier run stay, older go,
    // and the newest checkpoint of this run is kept.
    let one = TrainConfig { max_iters: 6, keep_last: 1, ..all.clone() };
    pretrain(&one, Some(&all.out_dir.join("step-000004")), &mut NoCallbacks).unwrap();
    assert_eq!(steps_in(&all.out_dir), ["step-000006", "step-000008", "step-000010"]);
    assert_eq!(std::fs::read_to_string(all.out_dir.join("latest")).unwrap().trim(), "step-000006");
    load_checkpoint(&all.out_dir, &Device::Cpu, &mut |_| {}).unwrap();
}

/// Configs whose model or batch cannot fit are refused from the config alone, in well
/// under a second, with an error naming the sizes and the available memory.
#[test]
fn configs_that_cannot_fit_are_refused_before_allocating() {
    if lamina_core::memory::available_bytes().is_none() {
        eprintln!("SKIPPED: no /proc/meminfo, the available memory is unknown");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let data = corpus(d.path(), 10);
    let base = tiny(d.path(), data, Architecture::Gpt2);
    for (cfg, what) in [
        (TrainConfig { batch_size: 100_000_000, ..base.clone() }, "batch_size 100000000"),
        (TrainConfig { n_embd: 1_048_576, n_head: 4, ..base.clone() }, "parameters"),
        (TrainConfig { n_layer: 1_000_000, ..base.clone() }, "parameters"),
        (TrainConfig { n_layer: 1_000_000, engine: "autograd".into(), dtype: "f64".into(), ..base.clone() }, "parameters"),
    ] {
        let t0 = std::time::Instant::now();
        let e = pretrain(&cfg, None, &mut NoCallbacks).unwrap_err();
        assert!(t0.elapsed().as_secs_f64() < 5.0, "took {:?}", t0.elapsed());
        assert!(matches!(e, lamina_core::Error::OutOfMemory { .. }), "{e}");
        let msg = e.to_string();
        assert!(msg.contains(what) && msg.contains("of memory is available") && msg.contains("iB"), "{msg}");
    }
}

/// The parameter count the memory estimate uses is the trainable model's own count.
#[test]
fn parameter_count_from_the_config_matches_the_model() {
    for arch in [Architecture::Gpt2, Architecture::Llama] {
        for (tied, bias) in [(false, false), (true, true)] {
            let c = TrainConfig { tied_embeddings: tied, qkv_bias: bias, ..tiny(Path::new("."), PathBuf::from("x"), arch) };
            let mc = c.model_config(50).unwrap();
            let m = TrainableModel::new(&mc, 1, DType::F32, &Device::Cpu).unwrap();
            assert_eq!(mc.num_parameters(), m.num_params() as u64, "{arch:?} tied={tied} bias={bias}");
        }
    }
}

/// The trainer's sample temperature is checked by the same rule as `lamina run`'s.
#[test]
fn bad_sample_temperature_is_refused() {
    for t in [f64::NAN, -0.5, f64::INFINITY] {
        let c = TrainConfig { temperature: t, data: vec![PathBuf::from("x")], ..TrainConfig::default() };
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("temperature must be a finite number >= 0"), "{t}: {e}");
    }
    let c = TrainConfig::from_toml_str("data = \"x\"\ntemperature = nan").unwrap();
    assert!(c.validate().unwrap_err().to_string().contains("temperature"));
    let engine_msg = lamina_core::sampling::check_temperature(-0.5f64).unwrap_err();
    let c = TrainConfig { temperature: -0.5, data: vec![PathBuf::from("x")], ..TrainConfig::default() };
    assert!(c.validate().unwrap_err().to_string().ends_with(&engine_msg));
}
