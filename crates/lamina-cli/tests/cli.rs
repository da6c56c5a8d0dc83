//! End-to-end tests of the `lamina` binary: what a user types, what they see. Each test
//! works in its own temporary directory. Bad input must give one line on stderr starting
//! with `error:`, a non-zero exit, and never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn lamina() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
}

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn model() -> PathBuf {
    lamina_core::registry::default_model_path().unwrap()
}

/// Asserts a clean failure: non-zero exit, one `error:` line mentioning `needle`, no panic.
fn assert_clean_error(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success; stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {stderr}");
    assert!(errors[0].to_lowercase().contains(&needle.to_lowercase()), "error line {:?} does not mention {needle:?}", errors[0]);
}

fn write_copy(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

#[test]
fn greedy_run_streams_the_reference_continuation() {
    let out = lamina().args(["run", "-p", "The capital of France is", "--temperature", "0", "-n", "8"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // llama.cpp's greedy continuation of this prompt starts with " Paris.\n\nThe United States".
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(" Paris.\n\nThe United States"), "{text:?}");
}

#[test]
fn same_seed_same_output_and_verbose_summary() {
    let args = ["run", "-p", "Once upon a time", "--temperature", "1.0", "--seed", "42", "-n", "16", "-v"];
    let a = lamina().args(args).output().unwrap();
    let b = lamina().args(args).output().unwrap();
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let c = lamina().args(["run", "-p", "Once upon a time", "--temperature", "1.0", "--seed", "7", "-n", "16"]).output().unwrap();
    assert_ne!(a.stdout, c.stdout, "different seeds gave the same 16 tokens");
    let err = String::from_utf8_lossy(&a.stderr);
    assert!(err.contains("prompt tokens: 4") && err.contains("generated tokens: 16") && err.contains("decode:"), "{err}");
}

#[test]
fn stop_strings_cut_the_output() {
    let out = lamina().args(["run", "-p", "The capital of France is", "--temperature", "0", "-n", "20", "--stop", "United"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), " Paris.\n\nThe \n");
}

#[test]
fn prompt_from_stdin_and_chat_template() {
    let mut cmd = lamina();
    cmd.args(["run", "--chat", "--temperature", "0", "-n", "12", "-v"]);
    let out = run_with_stdin(cmd, "What is the capital of France?".as_bytes());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    // system (default) + user turn rendered by the GGUF's template: 37 tokens.
    assert!(err.contains("prompt tokens: 37"), "{err}");
}

#[test]
fn chat_reuses_the_cache_and_handles_commands() {
    let mut cmd = lamina();
    cmd.args(["chat", "--temperature", "0", "-n", "16", "-v"]);
    let out = run_with_stdin(cmd, b"Hi!\nName a colour.\n/reset\nHello\n/exit\n");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    let stats: Vec<&str> = err.lines().filter(|l| l.starts_with("[prompt")).collect();
    assert_eq!(stats.len(), 3, "{err}");
    // Second turn: the first turn's tokens come from the KV cache.
    let cached: usize = stats[1].split(", ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(cached > 20, "second turn reused only {cached} tokens: {}", stats[1]);
    assert!(err.contains("conversation cleared"));
}

#[test]
fn chat_drops_oldest_turns_when_the_context_is_full() {
    let mut cmd = lamina();
    cmd.args(["chat", "--temperature", "0", "-n", "24", "--ctx", "160"]);
    let turns = "Tell me about the sea.\nTell me about mountains.\nTell me about rivers.\nTell me about deserts.\n";
    let out = run_with_stdin(cmd, turns.as_bytes());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("dropped the oldest turn"), "{err}");
}

#[test]
fn tokenize_prints_ids_pieces_and_count() {
    let out = lamina().args(["tokenize", "smollm2-135m-instruct", "The capital of France is"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    // Reference ids from llama.cpp: [504, 3575, 282, 4649, 314].
    for id in ["504", "3575", "282", "4649", "314"] {
        assert!(text.contains(id), "{text}");
    }
    assert!(text.contains("\" capital\"") && text.trim_end().ends_with("5 tokens"), "{text}");
}

#[test]
fn info_describes_the_model() {
    let out = lamina().args(["info"]).output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for want in ["architecture:     llama", "layers:           30", "Q4_1 ×210", "vocabulary size:  49152", "chat template:    yes", "context length:   8192"] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn bench_repeats_batched_decode_in_rounds() {
    // Tiny sizes: this checks the report, not the speed.
    let out = lamina().args(["bench", "-p", "8", "-n", "4", "-r", "3", "--batch", "1,2", "-t", "1"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in ["prefill    8 tokens:", "decode     4 tokens:", "batched decode, 1 sequences:", "batched decode, 2 sequences:", "peak RSS:"] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let line = text.lines().find(|l| l.starts_with("aggregate at 2 sequences / single stream:")).expect("ratio line");
    let rounds = line.split("per round: ").nth(1).expect("per-round ratios").trim_end_matches(')');
    let ratios: Vec<f64> = rounds.split(", ").map(|r| r.parse().unwrap()).collect();
    assert_eq!(ratios.len(), 3, "{line}");
    assert!(ratios.iter().all(|r| *r > 0.0 && r.is_finite()), "{line}");
}

#[test]
fn perplexity_prints_a_ppl_line() {
    let file = format!("{}/../../../shared/datasets/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"));
    let out = lamina().args(["perplexity", "smollm2-135m-instruct", &file, "--ctx", "128", "--bytes", "4000"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let ppl: f64 = text.trim().strip_prefix("PPL = ").unwrap().parse().unwrap();
    assert!(ppl > 5.0 && ppl < 200.0, "{ppl}");
}

#[test]
fn bad_model_files_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model()).unwrap();
    // Truncated in the header, and in the middle of the tensor data.
    for cut in [3usize, 100, 5_000] {
        let p = write_copy(dir.path(), &format!("cut{cut}.gguf"), &bytes[..cut]);
        let out = lamina().args(["run", p.to_str().unwrap(), "-p", "hi"]).output().unwrap();
        assert_clean_error(&out, "invalid model file");
    }
    let p = write_copy(dir.path(), "short.gguf", &bytes[..bytes.len() - 1000]);
    let out = lamina().args(["run", p.to_str().unwrap(), "-p", "hi"]).output().unwrap();
    assert_clean_error(&out, "truncated");
    // Corrupt header: wrong magic.
    let mut bad = bytes[..4096].to_vec();
    bad[0] = b'X';
    let p = write_copy(dir.path(), "magic.gguf", &bad);
    assert_clean_error(&lamina().args(["info", p.to_str().unwrap()]).output().unwrap(), "not a GGUF file");
    // Unsupported architecture: the value "llama" of general.architecture becomes "mamba".
    let key = b"general.architecture";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    let val = at + bytes[at..].windows(5).position(|w| w == b"llama").unwrap();
    let mut arch = bytes.clone();
    arch[val..val + 5].copy_from_slice(b"mamba");
    let p = write_copy(dir.path(), "arch.gguf", &arch);
    assert_clean_error(&lamina().args(["run", p.to_str().unwrap(), "-p", "hi"]).output().unwrap(), "unsupported architecture `mamba`");
    // A path that does not exist.
    let out = lamina().args(["run", "/no/such/model.gguf", "-p", "hi"]).output().unwrap();
    assert_clean_error(&out, "does not exist");
}

#[test]
fn missing_tokenizer_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // A valid tiny Llama checkpoint with no tokenizer.json beside it.
    let cfg = r#"{"model_type":"llama","vocab_size":32,"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,
        "num_key_value_heads":2,"intermediate_size":64,"max_position_embeddings":64,"tie_word_embeddings":true}"#;
    std::fs::write(dir.path().join("config.json"), cfg).unwrap();
    let shapes: Vec<(&str, Vec<usize>)> = vec![
        ("model.embed_tokens.weight", vec![32, 32]),
        ("model.layers.0.input_layernorm.weight", vec![32]),
        ("model.layers.0.self_attn.q_proj.weight", vec![32, 32]),
        ("model.layers.0.self_attn.k_proj.weight", vec![32, 32]),
        ("model.layers.0.self_attn.v_proj.weight", vec![32, 32]),
        ("model.layers.0.self_attn.o_proj.weight", vec![32, 32]),
        ("model.layers.0.post_attention_layernorm.weight", vec![32]),
        ("model.layers.0.mlp.gate_proj.weight", vec![64, 32]),
        ("model.layers.0.mlp.up_proj.weight", vec![64, 32]),
        ("model.layers.0.mlp.down_proj.weight", vec![32, 64]),
        ("model.norm.weight", vec![32]),
    ];
    let datas: Vec<Vec<u8>> = shapes.iter().map(|(_, s)| vec![0u8; s.iter().product::<usize>() * 4]).collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = shapes
        .iter()
        .zip(&datas)
        .map(|((n, s), d)| (n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, &dir.path().join("model.safetensors")).unwrap();
    let out = lamina().args(["run", dir.path().to_str().unwrap(), "-p", "hi"]).output().unwrap();
    assert_clean_error(&out, "no tokenizer found");
    // With a corrupt safetensors file instead, the weights are what fails.
    std::fs::write(dir.path().join("model.safetensors"), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json").unwrap();
    let out = lamina().args(["run", dir.path().to_str().unwrap(), "-p", "hi"]).output().unwrap();
    assert_clean_error(&out, "invalid model file");
}

#[test]
fn bad_prompts_fail_cleanly() {
    let out = lamina().args(["run", "-p", ""]).output().unwrap();
    assert_clean_error(&out, "prompt is empty");
    let mut cmd = lamina();
    cmd.arg("run");
    let out = run_with_stdin(cmd, b"caf\xff\xfe bad bytes");
    assert_clean_error(&out, "not valid UTF-8");
    let long = "word ".repeat(200);
    let out = lamina().args(["run", "--ctx", "64", "-p", &long]).output().unwrap();
    assert_clean_error(&out, "context window holds 64");
    let out = lamina().args(["run", "-p", "hi", "--top-p", "1.5"]).output().unwrap();
    assert_clean_error(&out, "top_p");
}

#[test]
fn quantize_requantizes_and_the_result_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("q8.gguf");
    let r = lamina().args(["quantize", "smollm2-135m-instruct", out.to_str().unwrap(), "--type", "q8_0"]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let info = String::from_utf8(lamina().args(["info", out.to_str().unwrap()]).output().unwrap().stdout).unwrap();
    assert!(info.contains("Q8_0 ×211") && !info.contains("Q4_1"), "{info}");
    let run = lamina().args(["run", out.to_str().unwrap(), "-p", "The capital of France is", "--temperature", "0", "-n", "2"]).output().unwrap();
    assert!(String::from_utf8(run.stdout).unwrap().starts_with(" Paris"));
    // Q4_K needs 256-value rows: SmolLM2's 576-wide rows fall back to Q5_0, as in llama.cpp.
    let k = dir.path().join("q4k.gguf");
    let r = lamina().args(["quantize", out.to_str().unwrap(), k.to_str().unwrap(), "--type", "q4_k"]).output().unwrap();
    let text = String::from_utf8(r.stdout).unwrap();
    assert!(r.status.success() && text.contains("30 matrices in q4_k") && text.contains("181 in a fallback type"), "{text}");
    // K-quant and Q5_0 weights load (in place / packed integer kernels) and still answer.
    let run = lamina().args(["run", k.to_str().unwrap(), "-p", "The capital of France is", "--temperature", "0", "-n", "2"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    assert!(String::from_utf8(run.stdout).unwrap().starts_with(" Paris"));
    let bad = lamina().args(["quantize", out.to_str().unwrap(), k.to_str().unwrap(), "--type", "q3_xs"]).output().unwrap();
    assert_clean_error(&bad, "unknown quantization type");
}

#[test]
fn pretrain_generate_export_run_llama() {
    pretrain_generate_export_run("llama");
}

#[test]
fn pretrain_generate_export_run_gpt2() {
    pretrain_generate_export_run("gpt2");
}

/// pretrain → generate from the checkpoint → export GGUF → `lamina run` and llama.cpp give
/// the same greedy text.
fn pretrain_generate_export_run(arch: &str) {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(format!("{}/../../../shared/datasets/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let data = write_copy(dir.path(), "corpus.txt", &text.as_bytes()[..20_000]);
    let run_dir = dir.path().join("run");
    let r = lamina()
        .args(["pretrain", "--data", data.to_str().unwrap(), "--out-dir", run_dir.to_str().unwrap(), "--tokenizer", "char"])
        .args(["--arch", arch, "--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "32", "--batch-size", "4"])
        .args(["--max-iters", "20", "--eval-interval", "10", "--eval-iters", "2", "--warmup-iters", "2", "--lr-decay-iters", "20"])
        .args(["--checkpoint-interval", "10", "--sample-tokens", "8", "--threads", "1"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 2);
    assert!(run_dir.join("loss.png").exists());
    let gen = lamina().args(["generate", run_dir.to_str().unwrap(), "-p", "ROMEO:", "--temperature", "0", "-n", "12"]).output().unwrap();
    assert!(gen.status.success(), "{}", String::from_utf8_lossy(&gen.stderr));
    // The same weights exported to GGUF (f32) give the same greedy text through the GGUF loader.
    let gguf = dir.path().join("model.gguf");
    let e = lamina().args(["export", run_dir.to_str().unwrap(), "--format", "gguf", "--quant", "f32", "--out", gguf.to_str().unwrap()]).output().unwrap();
    assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
    let again = lamina().args(["run", gguf.to_str().unwrap(), "-p", "ROMEO:", "--temperature", "0", "-n", "12"]).output().unwrap();
    assert!(again.status.success(), "{}", String::from_utf8_lossy(&again.stderr));
    assert_eq!(String::from_utf8_lossy(&gen.stdout), String::from_utf8_lossy(&again.stdout));
    // llama.cpp loads the exported GGUF and continues greedily with the same text.
    let simple = std::env::var("LLAMA_SIMPLE").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/lamina-ref/llama.cpp/src/vendor/llama.cpp/build/bin/llama-simple")
    });
    if !simple.is_file() {
        eprintln!("SKIPPED: llama.cpp check of the {arch} GGUF (no llama-simple; build it with ../shared/tools/build-llama-cpp.sh)");
        return;
    }
    let ll = Command::new(&simple).args(["-m", gguf.to_str().unwrap(), "-n", "12", "ROMEO:"]).output().unwrap();
    assert!(ll.status.success(), "{}", String::from_utf8_lossy(&ll.stderr));
    let ll_text = String::from_utf8_lossy(&ll.stdout).into_owned();
    assert_eq!(ll_text.strip_prefix("ROMEO:").unwrap_or(&ll_text), String::from_utf8_lossy(&gen.stdout), "{arch}");
}
