//! Speculative decoding on the real SmolLM2-135M: greedy output identical to decoding
//! without it (prompt lookup, and a Q8_0 copy of the model as the draft), with drafts
//! proposed and kept, no block leaked or mis-cached however drafts are rejected (also
//! under pre-emption), the sampling distribution unchanged, and a draft model of another
//! vocabulary refused at start.

use lamina_engine::{DraftModel, Engine, EngineConfig, Finished, GenerationParams, Request, SamplingParams, SpecMethod, SpeculativeConfig};
use lamina_kernels::ThreadPool;
use lamina_model::{load_model, Model, Precision};
use lamina_tokenizer::{ChatMessage, Tokenizer};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

type Parts = (Arc<Model>, Arc<Tokenizer>, Arc<ThreadPool>);

fn parts() -> &'static Parts {
    static P: OnceLock<Parts> = OnceLock::new();
    P.get_or_init(|| {
        let path = lamina_core::registry::default_model_path().unwrap();
        (Arc::new(load_model(&path, Precision::Native).unwrap()), Arc::new(Tokenizer::from_gguf(&path).unwrap()), Arc::new(ThreadPool::new(2)))
    })
}

/// A Q8_0 copy of the default model (quantized once per test run, in a temporary folder).
fn draft() -> &'static DraftModel {
    static D: OnceLock<(tempfile::TempDir, DraftModel)> = OnceLock::new();
    &D.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("draft-q8_0.gguf");
        lamina_model::quantize::quantize_gguf(&lamina_core::registry::default_model_path().unwrap(), &path, "q8_0").unwrap();
        let model = Arc::new(load_model(&path, Precision::Native).unwrap());
        let tokenizer = Arc::new(Tokenizer::from_gguf(&path).unwrap());
        (dir, DraftModel { model, tokenizer })
    })
    .1
}

fn engine(config: EngineConfig) -> Engine {
    let (m, t, p) = parts();
    Engine::new(m.clone(), t.clone(), p.clone(), config).unwrap()
}

fn chat(text: &str) -> Vec<u32> {
    let tok = &parts().1;
    tok.encode(&tok.apply_chat_template(&[ChatMessage::user(text)], true).unwrap(), false).unwrap()
}

const PASSAGES: [&str; 4] = [
    "The harbour wakes before the town does. Fishing boats slide out past the breakwater, gulls follow them, and the baker on Quay Street lights his ovens at four.",
    "To make the dough, mix flour, water, salt and yeast, knead it for ten minutes, and leave it to rise in a warm place for two hours before shaping the loaves.",
    "def area(width, height):\n    return width * height\n\ndef perimeter(width, height):\n    return 2 * (width + height)\n",
    "Monday: team meeting at nine. Tuesday: dentist at three. Wednesday: pick up the parcel from the post office. Thursday: call the landlord about the heating.",
];

/// Twenty requests: half copy, correct or rewrite a passage given in the prompt (where
/// prompt lookup proposes and is right), half open questions; their settings vary over
/// stop strings, penalties, `logit_bias`, log-probabilities and short `max_tokens`.
fn requests() -> Vec<(Vec<u32>, GenerationParams)> {
    let tok = &parts().1;
    let grounded = ["Repeat this text exactly:\n\n", "Copy the following, word for word:\n\n", "Rewrite this text in the past tense:\n\n"];
    let open = [
        "Write one sentence about the sea.",
        "Name three colours.",
        "What is a lighthouse for?",
        "Give me a tip for sleeping well.",
        "Describe an owl in two sentences.",
        "Why is the sky blue?",
        "What do bees make?",
    ];
    (0..20)
        .map(|i| {
            let prompt = if i % 2 == 0 || i == 19 { chat(&format!("{}{}", grounded[i % 3], PASSAGES[(i / 2) % 4])) } else { chat(open[(i / 2) % open.len()]) };
            let mut params = GenerationParams { sampling: SamplingParams::greedy(), max_tokens: 40, ..Default::default() };
            match i % 5 {
                1 => params.stop = vec![".".into()],
                2 => params.logprobs = Some(3),
                3 => {
                    params.sampling.repetition_penalty = 1.2;
                    params.sampling.frequency_penalty = 0.3;
                }
                4 => params.logit_bias = vec![(tok.encode(" the", false).unwrap()[0], -3.0)],
                _ => {}
            }
            if i == 10 {
                params.max_tokens = 5;
            }
            (prompt, params)
        })
        .collect()
}

/// Runs the requests concurrently to completion, checking the block pool at every step.
fn run_all(e: &mut Engine, reqs: &[(Vec<u32>, GenerationParams)]) -> Vec<Finished> {
    let ids: Vec<u64> = reqs.iter().map(|(p, g)| e.add(Request::new(p.clone(), g.clone())).unwrap()).collect();
    while e.step().unwrap() > 0 {
        e.check_invariants();
    }
    e.check_invariants();
    assert_eq!(e.stats().kv_blocks_used, 0, "blocks still in use after every sequence finished");
    let mut done: HashMap<u64, Finished> = e.take_finished().into_iter().map(|f| (f.seq, f)).collect();
    ids.iter().map(|id| done.remove(id).unwrap()).collect()
}

fn assert_same(label: &str, got: &[Finished], want: &[Finished]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.tokens, w.tokens, "{label}, request {i}: tokens");
        assert_eq!(g.text, w.text, "{label}, request {i}: text");
        assert_eq!(g.reason, w.reason, "{label}, request {i}: finish reason");
        assert_eq!(g.logprobs, w.logprobs, "{label}, request {i}: log-probabilities");
    }
}

fn base() -> EngineConfig {
    EngineConfig { max_sequences: 8, context_length: 1024, ..Default::default() }
}

#[test]
fn greedy_output_is_the_same_with_prompt_lookup_and_with_a_draft_model() {
    let reqs = requests();
    let plain = run_all(&mut engine(base()), &reqs);
    assert!(plain.iter().all(|f| !f.tokens.is_empty()));

    let lookup = SpeculativeConfig::prompt_lookup(6);
    let mut e = engine(EngineConfig { speculative: Some(lookup.clone()), ..base() });
    let got = run_all(&mut e, &reqs);
    assert_same("prompt lookup", &got, &plain);
    let s = e.stats();
    // The copying prompts give long runs of kept drafts.
    assert!(s.spec_accepted_tokens >= 100, "prompt lookup kept {} of {} drafts", s.spec_accepted_tokens, s.spec_draft_tokens);
    assert!(s.spec_accepted_tokens < s.spec_draft_tokens, "no draft was rejected: the test does not exercise rejection");
    let per_seq: usize = got.iter().map(|f| f.stats.accepted_tokens).sum();
    assert_eq!(per_seq as u64, s.spec_accepted_tokens);

    // Blocks of 16 and a pool for about two sequences: drafts are rejected while
    // sequences are pre-empted and recomputed around them.
    let tight = EngineConfig { block_size: 16, kv_blocks: 24, speculative: Some(lookup), ..base() };
    let mut e = engine(tight);
    let got = run_all(&mut e, &reqs);
    assert_same("prompt lookup under pre-emption", &got, &plain);
    assert!(e.stats().preemptions >= 2, "{} pre-emptions: the pool is not tight enough", e.stats().preemptions);
    assert!(e.stats().spec_accepted_tokens > 0);

    let with_draft = SpeculativeConfig { method: SpecMethod::DraftModel(draft().clone()), k: 4 };
    let mut e = engine(EngineConfig { speculative: Some(with_draft), ..base() });
    let got = run_all(&mut e, &reqs);
    assert_same("draft model", &got, &plain);
    let s = e.stats();
    // An 8-bit copy of a 4-bit model agrees with it on most greedy tokens.
    assert!(s.spec_accepted_tokens * 2 > s.spec_draft_tokens, "the draft model kept {} of {} drafts", s.spec_accepted_tokens, s.spec_draft_tokens);
}

/// Sampling with drafts draws from the model's distribution: on a prompt that prompt
/// lookup drafts for (the reply copies it), 240 seeded samples of four tokens at
/// temperature 0.7 with and without speculation. At each of the second to fourth tokens
/// the most frequent value's share is compared: two independent estimates of a share p
/// from n = 240 samples differ with standard deviation sqrt(2p(1-p)/n) <= 0.046, so 0.2
/// (over 4 standard deviations) is not reached by chance; drafts kept too often, or
/// verified against the wrong row or history, move it further (keeping drafts with three
/// times their probability moves it by 0.4).
#[test]
fn sampling_with_drafts_keeps_the_distribution() {
    let prompt = chat(&format!("Repeat this text exactly:\n\n{}", PASSAGES[0]));
    let n = 240;
    let sample = |spec: Option<SpeculativeConfig>| -> (Vec<Vec<u32>>, u64, u64) {
        let mut e = engine(EngineConfig { max_sequences: 16, context_length: 512, speculative: spec, ..Default::default() });
        let reqs: Vec<(Vec<u32>, GenerationParams)> = (0..n)
            .map(|i| {
                let sampling = SamplingParams { temperature: 0.7, top_k: 0, top_p: 1.0, min_p: 0.0, seed: Some(i as u64), ..SamplingParams::greedy() };
                (prompt.clone(), GenerationParams { sampling, max_tokens: 4, ignore_eos: true, ..Default::default() })
            })
            .collect();
        let out = run_all(&mut e, &reqs).into_iter().map(|f| f.tokens).collect();
        (out, e.stats().spec_draft_tokens, e.stats().spec_accepted_tokens)
    };
    let (plain, _, _) = sample(None);
    let lookup = SpeculativeConfig { method: SpecMethod::PromptLookup { min_n: 1, max_n: 3 }, k: 2 };
    let (spec, drafted, kept) = sample(Some(lookup));
    assert!(drafted > 50 && kept > 0 && kept < drafted, "{kept} of {drafted} drafts kept: both outcomes must occur");
    for pos in 1..4 {
        let mut counts: HashMap<u32, (usize, usize)> = HashMap::new();
        for (a, b) in plain.iter().zip(&spec) {
            counts.entry(a[pos]).or_default().0 += 1;
            counts.entry(b[pos]).or_default().1 += 1;
        }
        let (&mode, &(a, b)) = counts.iter().max_by_key(|(_, c)| c.0 + c.1).unwrap();
        let (fa, fb) = (a as f64 / n as f64, b as f64 / n as f64);
        assert!((fa - fb).abs() < 0.2, "token {pos}: {mode} drawn {fa:.3} of the time without drafts, {fb:.3} with");
        assert!(fa > 0.1, "token {pos}: the most frequent token has share {fa:.3}: the comparison says nothing");
    }
}

/// A copy of the default model whose vocabulary spells token `id` differently (same
/// length, so the file's layout is unchanged).
fn model_with_other_vocabulary(dir: &std::path::Path) -> PathBuf {
    let src = lamina_core::registry::default_model_path().unwrap();
    let mut bytes = std::fs::read(&src).unwrap();
    let tok = &parts().1;
    let id = tok.encode(" hello", false).unwrap()[0];
    let piece = tok.id_to_token(id).unwrap();
    let mut needle = (piece.len() as u64).to_le_bytes().to_vec();
    needle.extend_from_slice(piece.as_bytes());
    let at = bytes.windows(needle.len()).position(|w| w == needle.as_slice()).expect("the token's string in the GGUF metadata");
    let other = "q".repeat(piece.len());
    bytes[at + 8..at + needle.len()].copy_from_slice(other.as_bytes());
    let path = dir.join("other-vocab.gguf");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_draft_model_with_another_vocabulary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = model_with_other_vocabulary(dir.path());
    let other = DraftModel { model: Arc::new(load_model(&path, Precision::Native).unwrap()), tokenizer: Arc::new(Tokenizer::from_gguf(&path).unwrap()) };
    let (m, t, p) = parts();
    let config = EngineConfig { speculative: Some(SpeculativeConfig { method: SpecMethod::DraftModel(other), k: 4 }), ..base() };
    let err = Engine::new(m.clone(), t.clone(), p.clone(), config).err().expect("a draft with another vocabulary must be refused");
    assert!(matches!(err, lamina_core::Error::DraftVocabulary(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("vocabulary") && msg.contains("hello") && msg.contains("qqq"), "{msg}");
}

/// A logits processor that changes nothing but sees every token (a grammar's shape).
struct Watch(Arc<std::sync::atomic::AtomicUsize>);

impl lamina_engine::LogitsProcessor for Watch {
    fn process(&mut self, _generated: &[u32], _logits: &mut [f32]) {}
    fn accept(&mut self, _token: u32) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn requests_with_their_own_logits_processors_decode_without_drafts() {
    let (prompt, mut params) = requests().remove(0);
    params.max_tokens = 16;
    let mut e = engine(EngineConfig { speculative: Some(SpeculativeConfig::prompt_lookup(6)), ..base() });
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut req = Request::new(prompt.clone(), params.clone());
    req.processors.push(Box::new(Watch(seen.clone())));
    e.add(req).unwrap();
    e.run_to_completion().unwrap();
    let with_processor = e.take_finished().remove(0);
    assert_eq!(e.stats().spec_draft_tokens, 0, "a sequence with a processor was given drafts");
    assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), with_processor.tokens.len(), "the processor saw every token once");
    // The same request without the processor does speculate, and gives the same tokens.
    let plain = e.generate(prompt, params, None).unwrap();
    assert!(e.stats().spec_draft_tokens > 0);
    assert_eq!(plain.tokens, with_processor.tokens);
}
