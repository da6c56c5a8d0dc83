//! End-to-end tests of the `lamina` binary: what a user types, what they see. Each test
//! works in its own temporary directory. Bad input must give one line on stderr starting
//! with `error:`, a non-zero exit, and never a panic.

mod lora_support;

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
    for want in ["architecture:     llama", "layers:           30", "Q4_1 ×210", "vocabulary size:  49152", "chat template:    yes", "context length:   8192"]
    {
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

// ---------------------------------------------------------------------------------------
// Hardening: each test feeds one input that used to lose data, abort, hang or mislead.
// ---------------------------------------------------------------------------------------

fn shakespeare_corpus(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(format!("{}/../../../shared/datasets/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
    write_copy(dir, "corpus.txt", &text.as_bytes()[..20_000])
}

/// `lamina pretrain` of a 1-layer, 32-wide model; `extra` adds or overrides flags.
fn tiny_pretrain(data: &Path, out_dir: &str, extra: &[&str]) -> Command {
    let base = [
        ("--n-layer", "1"),
        ("--n-head", "2"),
        ("--n-embd", "32"),
        ("--block-size", "32"),
        ("--batch-size", "4"),
        ("--eval-interval", "5"),
        ("--eval-iters", "1"),
        ("--warmup-iters", "2"),
        ("--lr-decay-iters", "20"),
        ("--checkpoint-interval", "5"),
        ("--sample-tokens", "0"),
        ("--threads", "1"),
        ("--progress", "false"),
    ];
    let mut cmd = lamina();
    cmd.args(["pretrain", "--data", data.to_str().unwrap(), "--out-dir", out_dir, "--tokenizer", "char"]);
    for (flag, value) in base.iter().filter(|(f, _)| !extra.contains(f)) {
        cmd.args([flag, value]);
    }
    cmd.args(extra);
    cmd
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// Every file of `dir`, recursively: relative path → bytes.
fn snapshot(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let p = e.unwrap().path();
        let to = dst.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &to);
        } else {
            std::fs::copy(&p, &to).unwrap();
        }
    }
}

fn latest(run: &Path) -> String {
    std::fs::read_to_string(run.join("latest")).unwrap().trim().to_string()
}

/// Item 1: a copy of a run folder resumes into itself, never into the folder its stored
/// `out_dir` names; a moved run with a relative `out_dir` resumes into where it now is.
#[test]
fn resume_writes_where_it_was_resumed_from() {
    let dir = tempfile::tempdir().unwrap();
    let data = shakespeare_corpus(dir.path());
    let orig = dir.path().join("orig");
    let backup = dir.path().join("backup");
    ok(tiny_pretrain(&data, orig.to_str().unwrap(), &["--max-iters", "10"]).output().unwrap());
    copy_tree(&orig, &backup);
    ok(lamina().args(["pretrain", "--resume", orig.to_str().unwrap(), "--max-iters", "20"]).output().unwrap());
    assert_eq!(latest(&orig), "step-000020");
    let before = snapshot(&orig);
    ok(lamina().args(["pretrain", "--resume", backup.to_str().unwrap(), "--max-iters", "15"]).output().unwrap());
    assert!(snapshot(&orig) == before, "resuming the copy changed the original run folder");
    assert_eq!(latest(&backup), "step-000015");
    let log = std::fs::read_to_string(backup.join("metrics.jsonl")).unwrap();
    assert!(log.contains("\"step\":15") && !log.contains("\"step\":20"), "{log}");

    // A relative out_dir, the run moved, resumed from another working directory.
    let first = dir.path().join("first");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&first).unwrap();
    std::fs::create_dir_all(&elsewhere).unwrap();
    ok(tiny_pretrain(&data, "rel-run", &["--max-iters", "10"]).current_dir(&first).output().unwrap());
    let moved = dir.path().join("moved");
    std::fs::rename(first.join("rel-run"), &moved).unwrap();
    ok(lamina().args(["pretrain", "--resume", moved.to_str().unwrap(), "--max-iters", "15"]).current_dir(&elsewhere).output().unwrap());
    assert_eq!(latest(&moved), "step-000015");
    assert!(!elsewhere.join("rel-run").exists() && !first.join("rel-run").exists());
    // --out-dir still sends a resumed run elsewhere on purpose, leaving the source alone.
    let before = snapshot(&moved);
    let fork = dir.path().join("fork");
    ok(lamina().args(["pretrain", "--resume", moved.to_str().unwrap(), "--max-iters", "20", "--out-dir", fork.to_str().unwrap()]).output().unwrap());
    assert!(snapshot(&moved) == before);
    assert_eq!(latest(&fork), "step-000020");
}

/// Item 3: configs whose model or batch cannot fit end with one readable error naming the
/// sizes and the free memory, at once, instead of an allocator abort (exit 134).
#[test]
fn training_configs_that_cannot_fit_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = shakespeare_corpus(dir.path());
    let run = dir.path().join("run");
    for flags in [["--batch-size", "100000000"], ["--n-embd", "1048576"], ["--n-layer", "1000000"]] {
        let t0 = std::time::Instant::now();
        let out = tiny_pretrain(&data, run.to_str().unwrap(), &flags).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{flags:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert_clean_error(&out, "of memory is available");
        assert!(String::from_utf8_lossy(&out.stderr).contains("parameters"), "{flags:?}");
        assert!(t0.elapsed().as_secs_f64() < 10.0, "{flags:?} took {:?}", t0.elapsed());
    }
}

/// Item 3, inference: a context window whose KV cache cannot fit is refused up front.
#[test]
fn a_kv_cache_that_cannot_fit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // A tiny Llama (zero weights) trained for a context of 2^40 tokens, with a character
    // tokenizer: its full KV cache would need 128 TiB.
    let cfg = r#"{"model_type":"llama","vocab_size":32,"hidden_size":32,"num_hidden_layers":1,"num_attention_heads":2,
        "num_key_value_heads":2,"intermediate_size":64,"max_position_embeddings":1099511627776,"tie_word_embeddings":true}"#;
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
    let text = write_copy(dir.path(), "chars.txt", b"abcdefghijklmnopqrstuvwxyz .\n");
    let tok = dir.path().join("tokenizer.json");
    ok(lamina().args(["tokenizer", "train", "--char", "--out", tok.to_str().unwrap(), text.to_str().unwrap()]).output().unwrap());
    let model = dir.path().to_str().unwrap();
    let out = lamina().args(["run", model, "-p", "abc", "-n", "1", "--ctx", "1099511627776"]).output().unwrap();
    assert_clean_error(&out, "the KV cache for 1 sequence(s) × 1099511627776 tokens (34359738368 blocks of 32 positions) needs 128.0 TiB");
    // The default window (capped at 4096) fits and runs. With zero weights every logit is
    // equal, so sampling would pick each of the model's 32 rows alike; the 3 past the
    // tokenizer's 29 ids have no text and must never be chosen (40 samples would hit one
    // with probability 0.98 if they were).
    ok(lamina().args(["run", model, "-p", "abc", "-n", "40", "--seed", "7"]).output().unwrap());
}

/// Item 4: --threads above the CPU count is capped with a warning (0 = all CPUs).
#[test]
fn thread_requests_are_capped_at_the_cpu_count() {
    let cpus = std::thread::available_parallelism().unwrap().get();
    let out = ok(lamina().args(["run", "-p", "The", "-n", "1", "-v", "--threads", "1000"]).output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("--threads 1000 is more than the {cpus} CPUs")), "{err}");
    assert!(err.contains(&format!("threads: {cpus} |")), "{err}");
    let out = ok(lamina().args(["run", "-p", "The", "-n", "1", "-v", "--threads", "0"]).output().unwrap());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("threads: {cpus} |")));
    let dir = tempfile::tempdir().unwrap();
    let data = shakespeare_corpus(dir.path());
    let run = dir.path().join("run");
    let out = ok(tiny_pretrain(&data, run.to_str().unwrap(), &["--max-iters", "2", "--threads", "1000"]).output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("threads = 1000 is more than") && err.contains(&format!(", {cpus} threads)")), "{err}");
}

/// Item 5: a FIFO as the model path is refused at once instead of blocking forever.
#[test]
fn a_fifo_model_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    if !Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    let mut child = lamina().args(["run", fifo.to_str().unwrap(), "-p", "hi"]).stderr(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if t0.elapsed().as_secs() > 20 {
            child.kill().unwrap();
            panic!("lamina run on a FIFO is still blocked after 20 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_clean_error(&child.wait_with_output().unwrap(), "is a FIFO (named pipe), not a regular file");
}

/// Item 6: a corrupt latest checkpoint is skipped with a message naming the step and
/// why, by generate and by resume, every time.
#[test]
fn skipped_checkpoints_are_reported_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let data = shakespeare_corpus(dir.path());
    let run = dir.path().join("run");
    ok(tiny_pretrain(&data, run.to_str().unwrap(), &["--max-iters", "10"]).output().unwrap());
    let ms = run.join("step-000010/model.safetensors");
    let mut bytes = std::fs::read(&ms).unwrap();
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    std::fs::write(&ms, bytes).unwrap();
    for _ in 0..2 {
        let out = ok(lamina().args(["generate", run.to_str().unwrap(), "-p", "ROMEO:", "-n", "2"]).output().unwrap());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("skipping step-000010") && err.contains("model.safetensors is corrupt"), "{err}");
        assert!(err.contains("(step 5) instead"), "{err}");
    }
    let out = ok(lamina().args(["pretrain", "--resume", run.to_str().unwrap(), "--max-iters", "7"]).output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("skipping step-000010") && err.contains("corrupt"), "{err}");
    assert_eq!(latest(&run), "step-000007");
}

/// Item 9: -n 0 generates nothing, and rates are printed only for measured time (a
/// one-token prompt's single forward pass is timed, so its rate is a real one).
#[test]
fn zero_max_tokens_generates_nothing() {
    let out = ok(lamina().args(["run", "-p", "The capital of France is", "-n", "0", "-v"]).output().unwrap());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("generated tokens: 0") && !err.contains("tok/s"), "{err}");
    let out = ok(lamina().args(["run", "-p", "The", "-n", "1", "-v", "--temperature", "0"]).output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("prompt tokens: 1 ") && err.contains("generated tokens: 1"), "{err}");
    let rates: Vec<f64> = err.split(" tok/s").filter_map(|p| p.rsplit(' ').next()?.parse().ok()).collect();
    assert!(rates.iter().all(|&r| r > 0.0 && r < 100_000.0), "implausible rates {rates:?}: {err}");
    let mut cmd = lamina();
    cmd.args(["chat", "-n", "0"]);
    let out = ok(run_with_stdin(cmd, b"Hi!\n/exit\n"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim_matches(|c| c == '>' || c == ' ' || c == '\n'), "");
}

/// Item 10: --ctx 0 is refused; a window past the model's trained context is warned
/// about and lowered to it.
#[test]
fn context_window_edges() {
    let out = lamina().args(["run", "-p", "hi", "--ctx", "0"]).output().unwrap();
    assert_clean_error(&out, "the context window must hold at least 1 token");
    let out = ok(lamina().args(["run", "-p", "The", "-n", "1", "--ctx", "99999999"]).output().unwrap());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ctx 99999999 is more than the 8192 tokens the model was trained for; using 8192"), "{err}");
}

/// Item 11: a 10 MB prompt is refused by its length, without tokenizing it first.
#[test]
fn a_10_mb_prompt_is_refused_quickly() {
    model();
    let mut cmd = lamina();
    cmd.arg("run");
    let t0 = std::time::Instant::now();
    let out = run_with_stdin(cmd, "a".repeat(10_000_000).as_bytes());
    assert_clean_error(&out, "prompt of 10000000 bytes has at least");
    assert!(t0.elapsed().as_secs_f64() < 15.0, "took {:?}", t0.elapsed());
}

/// Item 12: an I/O error prints its cause once.
#[test]
fn io_errors_print_their_cause_once() {
    let out = lamina().args(["pretrain", "--config", "/nonexistent/run.toml"]).output().unwrap();
    assert_clean_error(&out, "/nonexistent/run.toml: No such file or directory");
    assert_eq!(String::from_utf8_lossy(&out.stderr).matches("os error 2").count(), 1);
}

/// Item 13: --keep-last prunes old checkpoints; 0 keeps them all.
#[test]
fn keep_last_prunes_old_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let data = shakespeare_corpus(dir.path());
    let steps = |run: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(run).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("step-")).collect();
        v.sort();
        v
    };
    let two = dir.path().join("two");
    ok(tiny_pretrain(&data, two.to_str().unwrap(), &["--max-iters", "10", "--checkpoint-interval", "2", "--keep-last", "2"]).output().unwrap());
    assert_eq!(steps(&two), ["step-000008", "step-000010"]);
    let all = dir.path().join("all");
    ok(tiny_pretrain(&data, all.to_str().unwrap(), &["--max-iters", "10", "--checkpoint-interval", "2", "--keep-last", "0"]).output().unwrap());
    assert_eq!(steps(&all).len(), 5);
    // The default keeps 3.
    let default = dir.path().join("default");
    ok(tiny_pretrain(&data, default.to_str().unwrap(), &["--max-iters", "10", "--checkpoint-interval", "2"]).output().unwrap());
    assert_eq!(steps(&default), ["step-000006", "step-000008", "step-000010"]);
}

const COPY_PROMPT: &str = "Repeat this text exactly:\n\nThe harbour wakes before the town does. Fishing boats slide out past the breakwater, gulls follow them, and the baker on Quay Street lights his ovens at four.";

#[test]
fn speculative_run_prints_the_same_text_and_its_acceptance() {
    let base = ["run", "--chat", "-p", COPY_PROMPT, "--temperature", "0", "-n", "40", "-v"];
    let plain = ok(lamina().args(base).output().unwrap());
    let lookup = ok(lamina().args(base).args(["--speculative", "lookup", "--draft-tokens", "6"]).output().unwrap());
    assert_eq!(String::from_utf8_lossy(&lookup.stdout), String::from_utf8_lossy(&plain.stdout));
    let err = String::from_utf8_lossy(&lookup.stderr);
    let kept = err.split("speculative: ").nth(1).unwrap_or_else(|| panic!("no acceptance in the summary: {err}"));
    let kept: usize = kept.split(' ').next().unwrap().parse().unwrap();
    assert!(kept > 5, "{err}");
    assert!(!String::from_utf8_lossy(&plain.stderr).contains("speculative"), "a run without drafts reports none");
    // Bad values are refused by name.
    assert_clean_error(&lamina().args(["run", "-p", "x", "--speculative", "maybe"]).output().unwrap(), "maybe");
    assert_clean_error(&lamina().args(["run", "-p", "x", "--draft-tokens", "0"]).output().unwrap(), "draft-tokens");
}

/// A copy of the default model whose vocabulary spells " hello" another way (same length,
/// so the file's layout is unchanged).
fn model_with_other_vocabulary(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(model()).unwrap();
    let piece = "Ġhello";
    let mut needle = (piece.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(piece.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("the token's string in the GGUF metadata");
    bytes[at + 8..at + needle.len()].copy_from_slice("q".repeat(piece.len()).as_bytes());
    write_copy(dir, "other-vocab.gguf", &bytes)
}

#[test]
fn a_draft_model_with_another_vocabulary_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let other = model_with_other_vocabulary(dir.path());
    let out = lamina().args(["run", "-p", "hi", "-n", "4", "--draft"]).arg(&other).output().unwrap();
    assert_clean_error(&out, "vocabulary");
    assert!(String::from_utf8_lossy(&out.stderr).contains("hello"), "the message names the token that differs");
    // The server refuses before it listens.
    let out = lamina().args(["serve", "--port", "0", "--draft"]).arg(&other).output().unwrap();
    assert_clean_error(&out, "vocabulary");
}

#[test]
fn bench_measures_speculative_decoding_on_a_text() {
    let dir = tempfile::tempdir().unwrap();
    let q8 = dir.path().join("draft.gguf");
    ok(lamina().arg("quantize").arg(model()).arg(&q8).args(["--type", "q8_0"]).output().unwrap());
    let text = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/datasets/tinyshakespeare.txt");
    let out = ok(lamina()
        .arg("bench")
        .arg("--spec-text")
        .arg(&text)
        .args(["--spec-prompt-tokens", "120", "-n", "12", "-r", "1", "--batch", "1,2", "--draft-tokens", "3", "--draft"])
        .arg(&q8)
        .output()
        .unwrap());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for want in ["1 sequence(s)", "2 sequence(s)", "off ", "lookup k=3", "draft k=3", "greedy replies identical in every mode"] {
        assert!(stdout.contains(want), "{want:?} missing:\n{stdout}");
    }
    assert!(stdout.lines().filter(|l| l.contains("drafts kept")).count() >= 2, "{stdout}");
}

#[test]
fn run_follows_a_json_schema_or_a_grammar_file() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("pick.json");
    std::fs::write(&schema, r#"{"type": "object", "properties": {"colour": {"enum": ["red", "green"]}, "n": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["colour", "n"], "additionalProperties": false}"#).unwrap();
    let out = lamina()
        .args(["run", "--chat", "-p", "Pick a colour and a number.", "--temperature", "1", "--seed", "4", "--json-schema"])
        .arg(&schema)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(["red", "green"].contains(&v["colour"].as_str().unwrap()), "{v}");
    assert!((1..=9).contains(&v["n"].as_i64().unwrap()), "{v}");
    let gbnf = dir.path().join("answer.gbnf");
    std::fs::write(&gbnf, "root ::= \"answer: \" (\"yes\" | \"no\")\n").unwrap();
    let out = lamina().args(["run", "-p", "Is fire hot?", "--grammar"]).arg(&gbnf).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim() == "answer: yes" || text.trim() == "answer: no", "{text}");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"type": "intger"}"#).unwrap();
    let out = lamina().args(["run", "-p", "x", "--json-schema"]).arg(&bad).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Invalid type: intger"), "{}", String::from_utf8_lossy(&out.stderr));
}

fn greedy(model: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", model, "-p", "The capital of France is", "--temperature", "0", "-n", "12"];
    args.extend_from_slice(extra);
    let out = lamina().args(&args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// `lamina run --lora` applies an adapter unmerged; `lamina merge` folds it into a GGUF
/// that gives the same greedy text (merged in f32, both run in f32: the same weights up to
/// rounding); a zero scale is the base model; bad adapters fail cleanly.
#[test]
fn lora_run_and_merge_agree() {
    let dir = tempfile::tempdir().unwrap();
    let adapter = lora_support::random_smollm2_adapter(dir.path(), "adapter", 7);
    let a = adapter.to_str().unwrap();
    let base = greedy("smollm2-135m-instruct", &["--precision", "f32"]);
    let with = greedy("smollm2-135m-instruct", &["--precision", "f32", "--lora", a]);
    assert_ne!(base, with, "the adapter should change the greedy text");
    assert_eq!(greedy("smollm2-135m-instruct", &["--precision", "f32", "--lora", &format!("{a}:0")]), base);
    let merged = dir.path().join("merged.gguf");
    let r = lamina().args(["merge", "smollm2-135m-instruct", a, "--out", merged.to_str().unwrap(), "--quant", "f32"]).output().unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert!(String::from_utf8_lossy(&r.stdout).contains("90 with the adapter merged"), "{}", String::from_utf8_lossy(&r.stdout));
    assert_eq!(greedy(merged.to_str().unwrap(), &["--precision", "f32"]), with);
    // Types kept: the merged Q4_1 file runs on the native path.
    let kept = dir.path().join("kept.gguf");
    assert!(lamina().args(["merge", "smollm2-135m-instruct", a, "--out", kept.to_str().unwrap()]).output().unwrap().status.success());
    let info = String::from_utf8(lamina().args(["info", kept.to_str().unwrap()]).output().unwrap().stdout).unwrap();
    assert!(info.contains("Q4_1"), "{info}");
    greedy(kept.to_str().unwrap(), &[]);

    // Bad input.
    assert_clean_error(&lamina().args(["run", "-p", "x", "--lora", dir.path().join("none").to_str().unwrap()]).output().unwrap(), "adapter");
    std::fs::write(adapter.join("adapter_config.json"), r#"{"peft_type":"LORA","r":0,"lora_alpha":8,"target_modules":["q_proj"]}"#).unwrap();
    assert_clean_error(&lamina().args(["run", "-p", "x", "--lora", a]).output().unwrap(), "rank");
    assert_clean_error(&lamina().args(["merge", "smollm2-135m-instruct", a, "--out", dir.path().join("m").to_str().unwrap()]).output().unwrap(), "rank");
}

/// The first `n` Alpaca records of `../shared/datasets/alpaca_5000.json` as a JSON array.
fn alpaca_subset(dir: &Path, n: usize) -> PathBuf {
    let all: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/alpaca_5000.json")).unwrap()).unwrap();
    let p = dir.join("alpaca.json");
    std::fs::write(&p, serde_json::to_string(&all[..n]).unwrap()).unwrap();
    p
}

/// `lamina sft --lora` on Alpaca records (the last ones held out, as `../shared/README.md`
/// says) lowers the held-out loss, logs every step as JSON, and writes a PEFT adapter that
/// `lamina run --lora` applies; malformed records are errors naming the file and line, or
/// skipped with `--on-bad-record skip`.
#[test]
fn sft_with_lora_lowers_held_out_loss_and_the_adapter_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = alpaca_subset(dir.path(), 96);
    let out = dir.path().join("run");
    let o = |extra: &[&str]| {
        let mut args = vec!["sft", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--lora", "8", "--steps", "12", "--batch", "2"];
        args.extend_from_slice(&["--max-len", "512", "--held-out", "16", "--lr", "5e-4", "--warmup", "2"]);
        args.extend_from_slice(extra);
        lamina().args(&args).output().unwrap()
    };
    let r = o(&[]);
    let stdout = String::from_utf8_lossy(&r.stdout);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log: Vec<serde_json::Value> = std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let evals: Vec<f64> = log.iter().filter_map(|l| l["held_out_loss"].as_f64()).collect();
    assert_eq!(evals.len(), 2, "{log:?}");
    assert_eq!(log.iter().filter(|l| l["loss"].is_number()).count(), 12);
    eprintln!("{stdout}");
    assert!(evals[1] < evals[0] - 0.01, "held-out loss did not go down: {evals:?}");
    let cfg: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!((cfg["r"].as_u64(), cfg["lora_alpha"].as_f64()), (Some(8), Some(16.0)));
    let run = lamina().args(["run", "--lora", out.to_str().unwrap(), "--chat", "-p", "Name a color.", "-n", "8", "--temperature", "0"]).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    // `lamina eval` on the same held-out records, with our kernels in f32, gives the
    // trainer's (candle's) held-out losses before and after: two implementations of the
    // same sums (f32 over ~10^3 tokens: agreement to ~1e-4 expected, 2e-3 allowed).
    let eval = |lora: Option<&Path>| -> f64 {
        let mut cmd = lamina();
        cmd.args(["eval", "--task", data.to_str().unwrap(), "--last", "16", "--precision", "f32", "--json", dir.path().join("eval.json").to_str().unwrap()]);
        if let Some(l) = lora {
            cmd.arg("--lora").arg(l);
        }
        let r = cmd.output().unwrap();
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("eval.json")).unwrap()).unwrap();
        report["tasks"][0]["metrics"]["loss"].as_f64().unwrap()
    };
    let (base, tuned) = (eval(None), eval(Some(&out)));
    assert!((base - evals[0]).abs() < 2e-3 && (tuned - evals[1]).abs() < 2e-3, "eval {base}/{tuned} vs the trainer's {evals:?}");

    // Bad records: JSON lines with one broken line, one record of an unknown shape.
    let bad = dir.path().join("bad.jsonl");
    let good = r#"{"prompt": "Say hi.", "completion": "Hi!"}"#;
    let lines = [good, good, "{not json", r#"{"question": "?"}"#, good, good, good, good, good, good, good, good];
    std::fs::write(&bad, lines.join("\n")).unwrap();
    let args = |policy: &str| {
        let d = bad.to_str().unwrap().to_string();
        let o2 = out.to_str().unwrap().to_string();
        vec![
            "sft".to_string(),
            "--data".into(),
            d,
            "--out".into(),
            o2,
            "--lora".into(),
            "2".into(),
            "--steps".into(),
            "1".into(),
            "--held-out".into(),
            "2".into(),
            "--on-bad-record".into(),
            policy.into(),
        ]
    };
    assert_clean_error(&lamina().args(args("fail")).output().unwrap(), "bad.jsonl: line 3");
    let skip = lamina().args(args("skip")).output().unwrap();
    let err = String::from_utf8_lossy(&skip.stderr);
    assert!(skip.status.success() && err.contains("line 4") && err.contains("skipped 2 bad records"), "{err}");
    assert_clean_error(&lamina().args(["sft", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--lora", "0"]).output().unwrap(), "rank");
}

/// `lamina eval`: multiple choice (lm-evaluation-harness's acc and acc_norm), preference
/// accuracy on the HH held-out pairs, one line per task and a JSON report; a bad record
/// names its file and line, a pair longer than the context window is refused.
#[test]
fn eval_scores_multiple_choice_and_preferences() {
    let dir = tempfile::tempdir().unwrap();
    let mc = dir.path().join("mc.jsonl");
    let qs = [
        r#"{"question": "What is the capital of France?", "choices": ["Paris", "Banana", "Seven", "Blue"], "answer": 0}"#,
        r#"{"question": "What color is the sky on a clear day?", "choices": ["Green", "Blue", "Purple", "Black"], "answer": "Blue"}"#,
        r#"{"question": "What do bees make?", "choices": ["Honey", "Steel", "Glass", "Plastic"], "answer": 0}"#,
    ];
    std::fs::write(&mc, qs.join("\n")).unwrap();
    let hh = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/datasets/hh_rlhf_harmless_base_test.jsonl.gz");
    let json = dir.path().join("report.json");
    let out = lamina().args(["eval", "--task", mc.to_str().unwrap(), hh, "--last", "8", "--json", json.to_str().unwrap()]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("mc.jsonl (multiple_choice, 3 records): acc 1.0000") && text.contains("(preference, 8 records): accuracy"), "{text}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let acc = report["tasks"][1]["metrics"]["accuracy"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc) && (acc * 8.0).fract() == 0.0, "{report}");

    std::fs::write(&mc, [qs[0], r#"{"question": "?", "choices": ["a", "b"], "answer": 5}"#].join("\n")).unwrap();
    assert_clean_error(&lamina().args(["eval", "--task", mc.to_str().unwrap()]).output().unwrap(), "mc.jsonl: line 2");
    assert_clean_error(&lamina().args(["eval", "--task", hh, "--last", "4", "--ctx", "32"]).output().unwrap(), "more than the context window");
}

/// `lamina dpo --lora`: on pairs where the chosen answer is always the helpful one, a few
/// steps raise the held-out implicit-reward margin above zero and lower the held-out DPO
/// loss below log 2 (where it starts: the adapters begin at zero, so the policy is the
/// reference); an over-long pair is a named bad record.
#[test]
fn dpo_with_lora_learns_held_out_preferences() {
    let dir = tempfile::tempdir().unwrap();
    let prompts = [
        "Can you help me bake bread?",
        "How do I tie a tie?",
        "What is a good name for a cat?",
        "Can you explain rain?",
        "How do I boil an egg?",
        "What should I read next?",
        "How can I sleep better?",
        "Can you help me plan a trip?",
        "How do I water a plant?",
        "What is a prime number?",
        "How do I start running?",
        "Can you suggest a hobby?",
    ];
    let lines: Vec<String> = prompts
        .iter()
        .map(|p| serde_json::json!({"prompt": p, "chosen": "Sure, I would be glad to help with that.", "rejected": "No. Figure it out yourself."}).to_string())
        .collect();
    let data = dir.path().join("prefs.jsonl");
    std::fs::write(&data, lines.join("\n")).unwrap();
    let out = dir.path().join("dpo");
    let r = lamina()
        .args(["dpo", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--lora", "4", "--steps", "6", "--batch", "2"])
        .args(["--held-out", "3", "--lr", "2e-3", "--warmup", "1", "--beta", "0.1"])
        .output()
        .unwrap();
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let log: Vec<serde_json::Value> = std::fs::read_to_string(out.join("log.jsonl")).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let held: Vec<&serde_json::Value> = log.iter().filter_map(|l| l.get("held_out")).collect();
    assert_eq!(held.len(), 2);
    let (before, after) = (held[0], held[1]);
    assert!((before["loss"].as_f64().unwrap() - std::f64::consts::LN_2).abs() < 1e-6, "{before}");
    assert!(after["loss"].as_f64().unwrap() < before["loss"].as_f64().unwrap() - 0.01 && after["margin"].as_f64().unwrap() > 0.0, "{before} → {after}");
    assert_eq!(after["reward_accuracy"].as_f64(), Some(1.0), "{after}");
    assert!(std::fs::metadata(out.join("adapter_model.safetensors")).is_ok());
    let bad = dir.path().join("long.jsonl");
    std::fs::write(&bad, format!("{}\n{}", lines[0], serde_json::json!({"prompt": "x ".repeat(300), "chosen": "a", "rejected": "b"}))).unwrap();
    assert_clean_error(
        &lamina().args(["dpo", "--data", bad.to_str().unwrap(), "--out", out.to_str().unwrap(), "--lora", "2", "--max-len", "64"]).output().unwrap(),
        "long.jsonl: line 2",
    );
}
