//! The engine's scheduling, paging and prefix cache on the real SmolLM2-135M: greedy
//! output that does not depend on what else runs (batches of 1 to 16, pre-emption under a
//! tiny KV pool), shared prompt blocks held once, and no block leaked however sequences
//! end.

use lamina_engine::{Engine, EngineConfig, FinishReason, GenerationParams, Request, SamplingParams};
use lamina_kernels::ThreadPool;
use lamina_model::{load_model, Precision};
use lamina_tokenizer::Tokenizer;
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

fn parts() -> &'static (Arc<lamina_model::Model>, Arc<Tokenizer>, Arc<ThreadPool>) {
    static P: OnceLock<(Arc<lamina_model::Model>, Arc<Tokenizer>, Arc<ThreadPool>)> = OnceLock::new();
    P.get_or_init(|| {
        let path = lamina_core::registry::default_model_path().unwrap();
        (Arc::new(load_model(&path, Precision::Native).unwrap()), Arc::new(Tokenizer::from_gguf(&path).unwrap()), Arc::new(ThreadPool::new(2)))
    })
}

fn engine(config: EngineConfig) -> Engine {
    let (m, t, p) = parts();
    Engine::new(m.clone(), t.clone(), p.clone(), config).unwrap()
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams { sampling: SamplingParams::greedy(), max_tokens, ..Default::default() }
}

fn prompts(n: usize) -> Vec<Vec<u32>> {
    let tok = &parts().1;
    let topics = [
        "the sea",
        "bread",
        "a red bicycle",
        "winter",
        "the moon",
        "tea",
        "an old map",
        "rivers",
        "glass",
        "owls",
        "the desert",
        "a clock",
        "music",
        "stones",
        "bees",
        "a lighthouse",
    ];
    (0..n)
        .map(|i| {
            let msg = lamina_tokenizer::ChatMessage::user(format!("Write one sentence about {}.", topics[i % topics.len()]));
            tok.encode(&tok.apply_chat_template(&[msg], true).unwrap(), false).unwrap()
        })
        .collect()
}

/// Runs `prompts` concurrently to completion, checking the pool's invariants at every
/// step; returns each prompt's generated tokens.
fn run_all(e: &mut Engine, prompts: &[Vec<u32>], max_tokens: usize) -> Vec<Vec<u32>> {
    let ids: Vec<u64> = prompts.iter().map(|p| e.add(Request::new(p.clone(), greedy(max_tokens))).unwrap()).collect();
    while e.step().unwrap() > 0 {
        e.check_invariants();
    }
    e.check_invariants();
    let done: HashMap<u64, Vec<u32>> = e.take_finished().into_iter().map(|f| (f.seq, f.tokens)).collect();
    assert_eq!(e.stats().kv_blocks_used, 0, "blocks still in use after every sequence finished");
    ids.iter().map(|id| done[id].clone()).collect()
}

#[test]
fn greedy_tokens_do_not_depend_on_batching_or_preemption() {
    let ps = prompts(16);
    let n = 40;
    // Alone, one at a time, on an engine that runs one sequence.
    let mut solo = engine(EngineConfig { max_sequences: 1, context_length: 512, ..Default::default() });
    let alone: Vec<Vec<u32>> = ps.iter().map(|p| run_all(&mut solo, std::slice::from_ref(p), n).remove(0)).collect();
    assert!(alone.iter().all(|t| !t.is_empty()));
    for batch in [1usize, 4, 8, 16] {
        let mut e = engine(EngineConfig { max_sequences: 16, context_length: 512, ..Default::default() });
        for chunk in (0..16).collect::<Vec<_>>().chunks(batch) {
            let sub: Vec<Vec<u32>> = chunk.iter().map(|&i| ps[i].clone()).collect();
            let got = run_all(&mut e, &sub, n);
            for (&i, g) in chunk.iter().zip(&got) {
                assert_eq!(g, &alone[i], "prompt {i} in a batch of {batch}");
            }
        }
    }
    // A pool of 8 blocks of 16 positions (128 positions for 16 sequences of ~50): most
    // sequences get pre-empted and recomputed, some more than once.
    let mut tiny = engine(EngineConfig { max_sequences: 16, context_length: 512, block_size: 16, kv_blocks: 8, ..Default::default() });
    let got = run_all(&mut tiny, &ps, n);
    let stats = tiny.stats();
    assert!(stats.preemptions >= 4, "only {} pre-emptions: the pool is not tight enough to test them", stats.preemptions);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &alone[i], "prompt {i} under pre-emption");
    }
}

#[test]
fn concurrent_requests_hold_a_common_system_prompt_once() {
    let tok = &parts().1;
    let system: String = (0..80).map(|i| format!("Rule {i}: answer briefly. ")).collect();
    let common = tok.encode(&system, false).unwrap();
    assert!(common.len() >= 600, "{} tokens", common.len());
    let bs = 32;
    let mut e = engine(EngineConfig { max_sequences: 8, context_length: 2048, block_size: bs, ..Default::default() });
    let ids: Vec<u64> = (0..8)
        .map(|i| {
            let mut p = common.clone();
            p.extend(tok.encode(&format!("Question {i}: what is {i} plus {i}?"), false).unwrap());
            e.add(Request::new(p, greedy(8))).unwrap()
        })
        .collect();
    let shared_blocks = common.len() / bs;
    let mut peak = 0;
    while e.step().unwrap() > 0 {
        e.check_invariants();
        peak = peak.max(e.stats().kv_blocks_used);
    }
    let done = e.take_finished();
    assert_eq!(done.len(), 8);
    // Unshared, 8 copies of the prompt would need 8 × 20 blocks; shared, the common full
    // blocks once plus each sequence's own tail (question, reply: at most 3 blocks).
    assert!(peak <= shared_blocks + 8 * 3, "peak {peak} blocks in use; the common prompt has {shared_blocks} full blocks");
    let mut cached: Vec<usize> = ids.iter().map(|id| done.iter().find(|f| f.seq == *id).unwrap().stats.cached_tokens).collect();
    cached.sort();
    // The first computes the prompt; the seven others wait for its blocks and reuse them.
    assert_eq!(cached[0], 0);
    assert!(cached[1..].iter().all(|&c| c == shared_blocks * bs), "cached tokens per request: {cached:?}");
    let s = e.stats();
    assert_eq!(s.prefix_hit_tokens, 7 * (shared_blocks * bs) as u64);
    assert!(s.kv_blocks_cached >= shared_blocks);
}

#[test]
fn cancelled_and_finished_sequences_free_their_blocks() {
    let ps = prompts(6);
    let mut e = engine(EngineConfig { max_sequences: 4, context_length: 512, block_size: 16, ..Default::default() });
    let flags: Vec<Arc<AtomicBool>> = (0..6).map(|_| Arc::new(AtomicBool::new(false))).collect();
    let mut ids = Vec::new();
    for (p, f) in ps.iter().zip(&flags) {
        ids.push(e.add(Request::new(p.clone(), greedy(30)).with_cancel(f.clone())).unwrap());
    }
    // A callback that stops its sequence after 3 tokens (a client that disconnects).
    let mut seen = 0;
    let stopper = e
        .add(Request::new(ps[0].clone(), greedy(30)).with_callback(Box::new(move |_| {
            seen += 1;
            seen < 3
        })))
        .unwrap();
    for step in 0..6 {
        e.step().unwrap();
        e.check_invariants();
        if step == 2 {
            flags[1].store(true, std::sync::atomic::Ordering::Relaxed); // running
            flags[5].store(true, std::sync::atomic::Ordering::Relaxed); // still waiting
        }
    }
    e.cancel(ids[2]);
    e.check_invariants();
    e.run_to_completion().unwrap();
    e.check_invariants();
    let done: HashMap<u64, FinishReason> = e.take_finished().into_iter().map(|f| (f.seq, f.reason)).collect();
    assert_eq!(done.len(), 7);
    for i in [1, 2, 5] {
        assert_eq!(done[&ids[i]], FinishReason::Cancelled, "request {i}");
    }
    assert_eq!(done[&stopper], FinishReason::Cancelled);
    assert_eq!(e.stats().kv_blocks_used, 0);
    assert_eq!(e.stats().kv_blocks_free, e.stats().kv_blocks);
}

#[test]
fn impossible_requests_are_refused_and_empty_ones_generate_nothing() {
    let mut e = engine(EngineConfig { max_sequences: 2, context_length: 256, block_size: 16, kv_blocks: 4, ..Default::default() });
    let p = prompts(1).remove(0);
    // 4 blocks hold 64 positions: a request that may reach 100 can never complete.
    let err = e.add(Request::new(p.clone(), greedy(100))).unwrap_err().to_string();
    assert!(err.contains("KV blocks") && err.contains("has 4"), "{err}");
    let err = e.add(Request::new(vec![1; 300], greedy(1))).unwrap_err().to_string();
    assert!(err.contains("300 tokens") && err.contains("256"), "{err}");
    assert!(e.add(Request::new(vec![], greedy(1))).is_err());
    let err = e.add(Request::new(vec![u32::MAX], greedy(1))).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    let bad = GenerationParams { logit_bias: vec![(10_000_000, 1.0)], ..greedy(1) };
    assert!(e.add(Request::new(p.clone(), bad)).is_err());
    // max_tokens = 0: finished at once, nothing generated, the model never runs.
    let id = e.add(Request::new(p.clone(), greedy(0))).unwrap();
    let f = e.take_finished();
    assert_eq!((f.len(), f[0].seq, f[0].tokens.len(), f[0].reason), (1, id, 0, FinishReason::Length));
    assert_eq!(e.active(), 0);
    // Many requests on the small pool: they wait for memory and all complete.
    let ps = prompts(6);
    let ids: Vec<u64> = ps.iter().map(|p| e.add(Request::new(p.clone(), greedy(20))).unwrap()).collect();
    e.run_to_completion().unwrap();
    let done = e.take_finished();
    assert_eq!(done.len(), ids.len());
    assert!(done.iter().all(|f| f.reason != FinishReason::Cancelled && !f.tokens.is_empty()));
}

#[test]
fn logit_bias_and_logprobs() {
    let tok = &parts().1;
    let p = prompts(1).remove(0);
    let mut e = engine(EngineConfig { max_sequences: 2, context_length: 256, ..Default::default() });
    let plain = e.generate(p.clone(), GenerationParams { logprobs: Some(5), ..greedy(6) }, None).unwrap();
    // Log-probabilities: the chosen (greedy) token is the most likely, alternatives sorted,
    // all ≤ 0, and the top 5 carry at most all the mass.
    for lp in &plain.logprobs {
        assert_eq!(lp.top.len(), 5);
        assert_eq!(lp.top[0].0, lp.token);
        assert!((lp.top[0].1 - lp.logprob).abs() < 1e-6);
        assert!(lp.top.windows(2).all(|w| w[0].1 >= w[1].1));
        let mass: f32 = lp.top.iter().map(|t| t.1.exp()).sum();
        assert!(lp.logprob <= 0.0 && mass <= 1.0 + 1e-4);
    }
    // A -100 bias on the greedy first token makes the first token something else.
    let first = plain.tokens[0];
    let biased = e.generate(p.clone(), GenerationParams { logit_bias: vec![(first, -100.0)], ..greedy(6) }, None).unwrap();
    assert_ne!(biased.tokens[0], first);
    // A +100 bias forces a token that is otherwise unlikely, at every step.
    let forced = tok.encode(" zebra", false).unwrap()[0];
    let out = e.generate(p, GenerationParams { logit_bias: vec![(forced, 100.0)], ..greedy(4) }, None).unwrap();
    assert_eq!(out.tokens, vec![forced; 4]);
}

/// A sequence with a LoRA adapter never reuses the base model's cached blocks for the same
/// prompt (its keys and values differ), but does reuse its own adapter's; the base's stay
/// valid for the base.
#[test]
fn prefix_cache_keeps_adapters_apart() {
    use lamina_model::lora::{LoraAdapter, LoraConfig, LoraModule};
    let (m, _, _) = parts();
    let mut modules = std::collections::BTreeMap::new();
    let mut x = 1u32;
    let mut next = move || {
        x = x.wrapping_mul(1664525).wrapping_add(1013904223);
        (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
    };
    for (name, inp, out) in m.lora_modules().unwrap().into_iter().filter(|(n, _, _)| n.ends_with("k_proj") || n.ends_with("v_proj")) {
        let a = (0..4 * inp).map(|_| next() * 0.1).collect();
        let b = (0..out * 4).map(|_| next()).collect();
        modules.insert(name, LoraModule { r: 4, in_dim: inp, out_dim: out, a, b });
    }
    let adapter = LoraAdapter { config: LoraConfig::new(4, 8.0, 0.0, &["k", "v"]).unwrap(), modules, base_model: None };
    let lora = Arc::new(m.prepare_lora(&adapter, "kv", 1.0).unwrap());
    let mut e = engine(EngineConfig { max_sequences: 2, context_length: 512, ..Default::default() });
    let prompt = prompts(1)[0].repeat(4);
    assert!(prompt.len() >= 48, "{} tokens", prompt.len());
    let run = |e: &mut Engine, lora: Option<Arc<lamina_model::ModelLora>>| e.complete(Request::new(prompt.clone(), greedy(8)).with_lora(lora)).unwrap();
    let base = run(&mut e, None);
    let with = run(&mut e, Some(lora.clone()));
    assert_eq!(with.stats.cached_tokens, 0, "the adapter's sequence reused the base model's blocks");
    assert_ne!(with.tokens, base.tokens);
    let again = run(&mut e, Some(lora));
    assert!(again.stats.cached_tokens >= 32 && again.tokens == with.tokens, "{} cached", again.stats.cached_tokens);
    let base_again = run(&mut e, None);
    assert!(base_again.stats.cached_tokens >= 32 && base_again.tokens == base.tokens);
}
