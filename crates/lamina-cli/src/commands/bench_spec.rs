//! `lamina bench --spec-text FILE`: speculative decoding's speed on an input-grounded
//! task, against decoding without it, in the same run.
//!
//! The task: the model is asked to rewrite a passage of FILE (`--spec-prompt-tokens`
//! tokens, default 1,000) with its mistakes corrected and everything else kept — output
//! that mostly copies its input, as summaries and edits do. Each sequence gets its own
//! passage; the replies are greedy and end at end-of-sequence or `-n` tokens. The figure
//! is decoded tokens per second of wall time after every sequence has its first token
//! (drafting, verification and sampling included; the prompt's prefill is not — except a
//! draft model's own reading of the prompt, which comes with its first drafts), and
//! generated tokens per second from the requests' arrival (everything included); each the
//! mean of `-r` rounds in which the modes take turns, after a warm-up round. Modes: without speculation, prompt
//! lookup, and the draft model when `--draft` is given, each with `--draft-tokens`.
//! Greedy replies are the same in every mode; the run says so, or stops if they are not.

use super::bench::BenchArgs;
use crate::common;
use anyhow::{bail, Context, Result};
use lamina_engine::{GenerationParams, Request, SamplingParams, SpeculativeConfig};
use lamina_model::Model;
use lamina_tokenizer::{ChatMessage, Tokenizer};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One mode's round: decoded tokens/s, generated tokens/s from the requests' arrival
/// (prefill included), drafts verified and kept, and the replies.
struct Round {
    tok_s: f64,
    e2e_tok_s: f64,
    drafted: u64,
    kept: u64,
    replies: Vec<Vec<u32>>,
}

/// The prompts: `n` passages of `len` tokens from `text`, one after the other (wrapping
/// around a short file), each in the rewrite instruction and the chat template.
fn prompts(tok: &Tokenizer, text: &str, len: usize, n: usize) -> Result<Vec<Vec<u32>>> {
    let ids = tok.encode(text, false)?;
    if ids.len() < len {
        bail!("the text has {} tokens; --spec-prompt-tokens asks for passages of {len}", ids.len());
    }
    (0..n)
        .map(|i| {
            let from = (i * len) % (ids.len() - len + 1);
            let passage = tok.decode(&ids[from..from + len], false)?;
            let msg = ChatMessage::user(format!("Rewrite the following text, correcting any mistakes and keeping everything else the same:\n\n{passage}"));
            Ok(tok.encode(&tok.apply_chat_template(&[msg], true)?, false)?)
        })
        .collect()
}

fn round(model: &Arc<Model>, tok: &Arc<Tokenizer>, args: &BenchArgs, prompts: &[Vec<u32>], spec: Option<SpeculativeConfig>) -> Result<Round> {
    let n = prompts.len();
    let mut engine = common::engine(model.clone(), tok.clone(), &args.model_args, n, spec)?;
    let params = GenerationParams { sampling: SamplingParams::greedy(), max_tokens: args.gen_tokens, ..GenerationParams::default() };
    let started = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let ids: Vec<u64> = prompts
        .iter()
        .map(|p| {
            let started = started.clone();
            let mut first = true;
            let callback: lamina_engine::TokenCallback = Box::new(move |_| {
                if std::mem::take(&mut first) {
                    started.fetch_add(1, Ordering::Relaxed);
                }
                true
            });
            engine.add(Request::new(p.clone(), params.clone()).with_callback(callback))
        })
        .collect::<lamina_core::Result<_>>()?;
    while started.load(Ordering::Relaxed) < n && engine.step()? > 0 {}
    let t = Instant::now();
    while engine.step()? > 0 {}
    let secs = t.elapsed().as_secs_f64();
    let total = t0.elapsed().as_secs_f64();
    let mut done = engine.take_finished();
    done.sort_by_key(|f| ids.iter().position(|&i| i == f.seq));
    let decoded: usize = done.iter().map(|f| f.stats.generated_tokens.saturating_sub(1)).sum();
    let generated: usize = done.iter().map(|f| f.stats.generated_tokens).sum();
    let s = engine.stats();
    Ok(Round {
        tok_s: decoded as f64 / secs,
        e2e_tok_s: generated as f64 / total,
        drafted: s.spec_draft_tokens,
        kept: s.spec_accepted_tokens,
        replies: done.into_iter().map(|f| f.tokens).collect(),
    })
}

pub fn run(args: &BenchArgs, file: &Path, model: &Arc<Model>, tok: &Arc<Tokenizer>) -> Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let k = args.spec.draft_tokens as usize;
    let mut modes: Vec<(String, Option<SpeculativeConfig>)> = vec![("off".into(), None), (format!("lookup k={k}"), Some(SpeculativeConfig::prompt_lookup(k)))];
    if args.spec.draft.is_some() {
        modes.push((format!("draft k={k}"), args.spec.config(&args.model_args)?));
    }
    let reps = args.repetitions.max(1);
    println!("model: {} | threads: {} | text: {}", model.source.display(), args.model_args.threads(), file.display());
    for &n in &args.batch {
        let prompts = prompts(tok, &text, args.spec_prompt_tokens, n.max(1))?;
        let mut rates = vec![Vec::new(); modes.len()];
        let mut e2e = vec![Vec::new(); modes.len()];
        let mut kept = vec![(0u64, 0u64); modes.len()];
        let mut reference: Option<Vec<Vec<u32>>> = None;
        // A warm-up round (page-ins, caches), as `lamina bench` and llama-bench do.
        round(model, tok, args, &prompts, None)?;
        for _ in 0..reps {
            for (m, (name, spec)) in modes.iter().enumerate() {
                let r = round(model, tok, args, &prompts, spec.clone())?;
                match &reference {
                    Some(want) if *want != r.replies => bail!("{name}: the greedy replies differ from those without speculation"),
                    Some(_) => {}
                    None => reference = Some(r.replies),
                }
                rates[m].push(r.tok_s);
                e2e[m].push(r.e2e_tok_s);
                kept[m].0 += r.drafted;
                kept[m].1 += r.kept;
            }
        }
        let generated: usize = reference.iter().flatten().map(Vec::len).sum();
        println!("speculative decoding, {n} sequence(s), passages of {} tokens, {generated} tokens generated:", args.spec_prompt_tokens);
        let (base, base_e2e) = (mean(&rates[0]), mean(&e2e[0]));
        for (m, (name, _)) in modes.iter().enumerate() {
            let (r, e) = (mean(&rates[m]), mean(&e2e[m]));
            let mut line = format!("  {name:<12} decode {r:>7.1} tok/s ({:.2}x) | end to end {e:>7.1} tok/s ({:.2}x)", r / base, e / base_e2e);
            let (d, a) = kept[m];
            if d > 0 {
                line.push_str(&format!(" | {:.0}% of {} drafts kept", 100.0 * a as f64 / d as f64, d / reps as u64));
            }
            println!("{line}");
        }
    }
    println!("greedy replies identical in every mode");
    Ok(())
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}
