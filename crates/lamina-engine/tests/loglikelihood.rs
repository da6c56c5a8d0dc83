//! Log-likelihood scoring (`lamina_engine::loglikelihoods`) on the real SmolLM2-135M-Instruct,
//! against Hugging Face `transformers` in f32 (`../shared/reference/`): the greedy
//! continuations `transformers` generated are greedy for us too, and the log-probability
//! gap between two next tokens is `transformers`' logit gap. Packing many requests into one
//! forward pass gives what each gives alone.

use lamina_engine::{loglikelihoods, Continuation, Engine, EngineConfig};
use lamina_kernels::ThreadPool;
use lamina_model::{load_model, Precision};
use lamina_tokenizer::Tokenizer;
use std::sync::Arc;

fn reference(name: &str) -> Vec<serde_json::Value> {
    let path = format!("{}/../../../shared/reference/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn engine(precision: Precision) -> Engine {
    let path = lamina_core::registry::default_model_path().unwrap();
    let model = Arc::new(load_model(&path, precision).unwrap());
    let tok = Arc::new(Tokenizer::from_gguf(&path).unwrap());
    let config = EngineConfig { max_sequences: 4, context_length: 512, ..Default::default() };
    Engine::new(model, tok, Arc::new(ThreadPool::new(2)), config).unwrap()
}

#[test]
fn greedy_continuations_and_logprob_gaps_follow_transformers() {
    let mut e = engine(Precision::F32);
    // transformers' greedy continuations (f32 arithmetic, which ours equals on every prompt).
    let greedy = reference("smollm2_greedy_hf_f32.jsonl");
    let pairs: Vec<(Vec<u32>, Vec<u32>)> = greedy.iter().map(|r| (ids(&r["prompt_ids"]), ids(&r["greedy_ids"]))).collect();
    let items: Vec<Continuation> = pairs.iter().map(|(c, x)| Continuation { context: c, continuation: x }).collect();
    let got = loglikelihoods(&mut e, &items, 4096).unwrap();
    for ((c, x), l) in pairs.iter().zip(&got) {
        assert!(l.greedy, "the reference's greedy continuation of {c:?} is not greedy for us: {l:?}");
        assert_eq!(l.tokens, x.len());
        assert!(l.logprob < 0.0 && l.logprob > -(x.len() as f64) * 5.0, "{l:?}");
    }
    // A continuation with one token changed to another is not greedy and less likely.
    let (c, x) = &pairs[0];
    let mut other = x.clone();
    other[3] = (other[3] + 1) % 49152;
    let changed = loglikelihoods(&mut e, &[Continuation { context: c, continuation: &other }], 4096).unwrap()[0];
    assert!(!changed.greedy && changed.logprob < got[0].logprob, "{changed:?} vs {:?}", got[0]);

    // log P(a) − log P(b) for the next token is the logit gap: transformers' top-10 logits
    // (4 decimals; our f32 logits are within 1e-4 of them, smollm2_logits.rs) allow 2e-3.
    for r in reference("smollm2_logits_hf_f32.jsonl") {
        let prompt = ids(&r["prompt_ids"]);
        let top = ids(&r["top10_ids"]);
        let logits: Vec<f64> = r["top10_logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        let items: Vec<Continuation> = top.iter().map(|t| Continuation { context: &prompt, continuation: std::slice::from_ref(t) }).collect();
        let got = loglikelihoods(&mut e, &items, 4096).unwrap();
        assert!(got[0].greedy, "{:?}: the reference's top token is not our greedy one", r["prompt"]);
        for j in 1..top.len() {
            let (ours, theirs) = (got[0].logprob - got[j].logprob, logits[0] - logits[j]);
            assert!((ours - theirs).abs() < 2e-3, "{:?}: gap to token {} is {ours:.5}, transformers {theirs:.5}", r["prompt"], top[j]);
        }
    }
}

#[test]
fn packed_requests_score_as_they_do_alone_and_bad_ones_are_refused() {
    let mut e = engine(Precision::Native);
    let tok = e.tokenizer.clone();
    let enc = |s: &str| tok.encode(s, false).unwrap();
    let contexts = [enc("The capital of France is"), enc("Question: what do bees make?\nAnswer:"), enc("1, 2, 3, 4,")];
    let conts = [enc(" Paris, a city of art."), enc(" Honey."), enc(" 5, 6, 7")];
    let items: Vec<Continuation> = contexts.iter().zip(&conts).map(|(c, x)| Continuation { context: c, continuation: x }).collect();
    let together = loglikelihoods(&mut e, &items, 4096).unwrap();
    // One request per forward pass (the token budget is below any request's length).
    let apart = loglikelihoods(&mut e, &items, 1).unwrap();
    for (a, b) in together.iter().zip(&apart) {
        // 8-bit activations are quantized per row, so a row's arithmetic does not depend on
        // its neighbours in the batch; only the order of the last sums may differ.
        assert!((a.logprob - b.logprob).abs() < 1e-3, "{a:?} vs {b:?}");
        assert_eq!(a.greedy, b.greedy);
    }
    // Counting is a strong prior: "5, 6, 7" after "1, 2, 3, 4," is likelier per token than the others.
    assert!(together[2].logprob / conts[2].len() as f64 > together[0].logprob / conts[0].len() as f64, "{together:?}");

    let empty: [u32; 0] = [];
    let err = loglikelihoods(&mut e, &[Continuation { context: &empty, continuation: &conts[0] }], 4096).unwrap_err();
    assert!(err.to_string().contains("context is empty"), "{err}");
    let long = vec![contexts[0][0]; 600];
    let err = loglikelihoods(&mut e, &[Continuation { context: &long, continuation: &conts[0] }], 4096).unwrap_err();
    assert!(err.to_string().contains("exceed the context window of 512"), "{err}");
    e.check_invariants();
}
