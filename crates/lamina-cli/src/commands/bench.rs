//! `lamina bench`: prefill and decode speed, batched decode throughput and peak memory,
//! optionally side by side with llama.cpp's `llama-bench` on the same model, machine and
//! thread count, in the same run.
//!
//! Method, chosen to match `llama-bench -p 512 -n 128`: prefill is one 512-token prompt
//! from an empty cache; decode is 128 tokens generated one at a time from an empty cache;
//! both use fixed pseudo-random token ids, and each figure is the mean of `--repetitions`
//! runs. Batched decode runs N sequences (16-token prompts, then 128 greedy tokens each,
//! end-of-sequence ignored) through the engine and divides all decoded tokens by the time
//! of the decode steps; it too is repeated, the batch sizes taking turns in each round.
//! With `--spec-text FILE` it measures speculative decoding instead ([`super::bench_spec`]).

use crate::common::{self, ModelArgs, SpeculativeArgs};
use anyhow::{Context, Result};
use clap::Args;
use lamina_engine::{GenerationParams, Request, SamplingParams};
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, Model, Scratch, SeqChunk};
use lamina_tokenizer::Tokenizer;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct BenchArgs {
    pub model: Option<String>,
    /// Prompt tokens for the prefill measurement.
    #[arg(short = 'p', long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Generated tokens for the decode measurement.
    #[arg(short = 'n', long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Concurrent sequences for the batched-decode measurement (comma separated).
    #[arg(long, default_value = "1,4,8", value_delimiter = ',')]
    pub batch: Vec<usize>,
    #[arg(short = 'r', long, default_value_t = 3)]
    pub repetitions: usize,
    /// Also run llama.cpp's llama-bench with the same settings and print ratios.
    #[arg(long)]
    pub vs_llama_cpp: bool,
    /// Path of llama-bench (default: $LLAMA_BENCH, then the build of ../shared/tools/build-llama-cpp.sh).
    #[arg(long)]
    pub llama_bench: Option<PathBuf>,
    /// Measure speculative decoding instead: the model rewrites passages of this text
    /// file, at each --batch size, without speculation, with prompt lookup and (with
    /// --draft) with the draft model; -n is the longest reply.
    #[arg(long, value_name = "FILE")]
    pub spec_text: Option<PathBuf>,
    /// Tokens of each passage for --spec-text.
    #[arg(long, default_value_t = 1000)]
    pub spec_prompt_tokens: usize,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub spec: SpeculativeArgs,
}

/// Aggregate decode tokens/s of `n` sequences (16-token prompts, `gen_tokens` greedy tokens
/// each) through the engine, timing the decode steps only.
fn batched_decode(model: &Arc<Model>, tok: &Arc<Tokenizer>, args: &BenchArgs, n: usize, vocab: usize) -> Result<f64> {
    let mut engine = common::engine(model.clone(), tok.clone(), &args.model_args, n, None)?;
    let params = GenerationParams { sampling: SamplingParams::greedy(), max_tokens: args.gen_tokens, ignore_eos: true, ..GenerationParams::default() };
    for i in 0..n {
        engine.add(Request::new(pseudo_tokens(16, vocab, 10 + i as u64), params.clone()))?;
    }
    engine.step()?; // prefill of all prompts (and each sequence's first token)
    let t = Instant::now();
    while engine.step()? > 0 {}
    let secs = t.elapsed().as_secs_f64();
    let decoded: usize = engine.take_finished().iter().map(|f| f.stats.generated_tokens - 1).sum();
    Ok(decoded as f64 / secs)
}

fn pseudo_tokens(n: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            // Avoid the first ids (special tokens in most vocabularies).
            (100 + (s % (vocab as u64 - 100))) as u32
        })
        .collect()
}

pub fn run(args: BenchArgs) -> Result<()> {
    let (model, tok) = common::load(args.model.as_deref(), &args.model_args)?;
    if let Some(file) = &args.spec_text {
        return super::bench_spec::run(&args, file, &model, &tok);
    }
    let threads = args.model_args.threads();
    let pool = ThreadPool::new(threads);
    let vocab = model.config.vocab_size;
    let reps = args.repetitions.max(1);
    let kernels = model.kernels.isa.name();
    let skipped: Vec<&str> = lamina_kernels::Isa::all().iter().filter(|i| !i.supported()).map(|i| i.name()).collect();
    println!(
        "model: {} | threads: {threads} | kernels: {kernels}{} | precision: {:?}",
        model.source.display(),
        if skipped.is_empty() { String::new() } else { format!(" (not supported here: {})", skipped.join(", ")) },
        model.precision
    );

    // Prefill.
    let prompt = pseudo_tokens(args.prompt_tokens, vocab, 1);
    let (mut kv, table) = model.single_sequence_kv(args.prompt_tokens.max(args.gen_tokens) + 1);
    let mut scratch = Scratch::default();
    let mut logits = Vec::new();
    let mut prefill = Vec::new();
    for r in 0..=reps {
        let t = Instant::now();
        let seq = [SeqChunk { len: prompt.len(), start: 0, blocks: &table, lora: None }];
        model.forward(BatchInput { tokens: &prompt, seqs: &seq, logits_rows: &[prompt.len() - 1] }, &mut kv, &mut scratch, &pool, &mut logits)?;
        if r > 0 {
            // The first run warms caches and page-ins, as llama-bench's warm-up does.
            prefill.push(prompt.len() as f64 / t.elapsed().as_secs_f64());
        }
    }
    // Decode from an empty cache, one token at a time.
    let mut decode = Vec::new();
    let gen = pseudo_tokens(args.gen_tokens, vocab, 2);
    for _ in 0..reps {
        let t = Instant::now();
        for (p, &tk) in gen.iter().enumerate() {
            let seq = [SeqChunk { len: 1, start: p, blocks: &table, lora: None }];
            model.forward(BatchInput { tokens: &[tk], seqs: &seq, logits_rows: &[0] }, &mut kv, &mut scratch, &pool, &mut logits)?;
        }
        decode.push(gen.len() as f64 / t.elapsed().as_secs_f64());
    }
    let (pp, pp_sd) = mean_sd(&prefill);
    let (tg, tg_sd) = mean_sd(&decode);
    println!("prefill {:>4} tokens: {pp:>8.1} ± {pp_sd:.1} tok/s", args.prompt_tokens);
    println!("decode  {:>4} tokens: {tg:>8.1} ± {tg_sd:.1} tok/s", args.gen_tokens);
    drop(kv);
    // The peak so far covers what llama-bench runs (one sequence: the prompt, then the
    // generated tokens); the batched runs below add their sequences' KV caches.
    let rss_single = common::peak_rss().unwrap_or(0);

    // Batched decode through the engine: `reps` rounds, each running every batch size in
    // turn, so that the machine's drift hits all sizes alike. One round of one sequence
    // lasts well under a second, so a single round's ratio is mostly noise.
    let sizes: Vec<usize> = args.batch.iter().map(|&n| n.max(1)).collect();
    let mut rounds: Vec<Vec<f64>> = vec![Vec::new(); sizes.len()];
    for _ in 0..reps {
        for (i, &n) in sizes.iter().enumerate() {
            rounds[i].push(batched_decode(&model, &tok, &args, n, vocab)?);
        }
    }
    for (&n, aggs) in sizes.iter().zip(&rounds) {
        let (agg, sd) = mean_sd(aggs);
        println!("batched decode, {n} sequences: {agg:>8.1} ± {sd:.1} tok/s aggregate ({:.1} per sequence)", agg / n as f64);
    }
    if let (Some(&1), Some(&n)) = (sizes.first(), sizes.last()) {
        if n > 1 {
            let (one, many) = (&rounds[0], &rounds[sizes.len() - 1]);
            let per_round: Vec<String> = one.iter().zip(many).map(|(a, b)| format!("{:.2}", b / a)).collect();
            println!("aggregate at {n} sequences / single stream: {:.2}x (per round: {})", mean_sd(many).0 / mean_sd(one).0, per_round.join(", "));
        }
    }
    let rss = common::peak_rss().unwrap_or(0);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    println!("peak RSS: {:.1} MiB after prefill and decode of one sequence, {:.1} MiB with the batched runs", mib(rss_single), mib(rss));

    if args.vs_llama_cpp {
        let model_path = model.source.clone();
        match find_llama_bench(args.llama_bench.clone()) {
            None => println!("llama.cpp: llama-bench not found (build it with ../shared/tools/build-llama-cpp.sh, or pass --llama-bench PATH); no ratios"),
            Some(bin) => {
                let r = run_llama_bench(&bin, &model_path, args.prompt_tokens, args.gen_tokens, threads, reps)?;
                println!("llama.cpp ({}): prefill {:.1} tok/s, decode {:.1} tok/s, peak RSS {:.1} MiB", bin.display(), r.0, r.1, r.2 as f64 / (1 << 20) as f64);
                println!(
                    "ratio lamina / llama.cpp: prefill {:.2}x, decode {:.2}x, peak RSS {:.2}x (one sequence each)",
                    pp / r.0,
                    tg / r.1,
                    rss_single as f64 / r.2 as f64
                );
            }
        }
    }
    Ok(())
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let m = v.iter().sum::<f64>() / v.len() as f64;
    let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
    (m, var.sqrt())
}

fn find_llama_bench(explicit: Option<PathBuf>) -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = explicit.into_iter().collect();
    if let Ok(p) = std::env::var("LLAMA_BENCH") {
        candidates.push(p.into());
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cache/lamina-ref/llama.cpp/src/vendor/llama.cpp/build/bin/llama-bench"));
    }
    candidates.into_iter().find(|p| p.is_file())
}

/// Runs llama-bench and returns (prefill tok/s, decode tok/s, peak RSS bytes).
///
/// Peak RSS is read from the child's own `/proc/PID/status` (`VmHWM`) while it runs:
/// `getrusage(RUSAGE_CHILDREN)` would also count the copy of our address space that the
/// child holds between fork and exec.
fn run_llama_bench(bin: &PathBuf, model: &PathBuf, p: usize, n: usize, threads: usize, reps: usize) -> Result<(f64, f64, u64)> {
    let mut child = std::process::Command::new(bin)
        .args(["-m"])
        .arg(model)
        .args(["-p", &p.to_string(), "-n", &n.to_string(), "-t", &threads.to_string(), "-r", &reps.to_string(), "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", bin.display()))?;
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak = 0u64;
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut buf);
        buf
    });
    loop {
        if let Some(kb) = std::fs::read_to_string(&status_path)
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        {
            peak = peak.max(kb * 1024);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let stdout = reader.join().unwrap_or_default();
    if !out.status.success() {
        anyhow::bail!("llama-bench failed: {}", String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or(""));
    }
    let v: serde_json::Value = serde_json::from_slice(&stdout).context("parsing llama-bench JSON")?;
    let mut pp = 0.0;
    let mut tg = 0.0;
    for e in v.as_array().into_iter().flatten() {
        let ts = e["avg_ts"].as_f64().unwrap_or(0.0);
        if e["n_prompt"].as_u64().unwrap_or(0) > 0 {
            pp = ts;
        } else if e["n_gen"].as_u64().unwrap_or(0) > 0 {
            tg = ts;
        }
    }
    Ok((pp, tg, peak))
}
