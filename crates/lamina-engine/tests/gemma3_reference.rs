//! End-to-end checks of the real Gemma 3 270M (built-in `gemma-3-270m`) against llama.cpp:
//! tokens, next-token log-probabilities along llama.cpp's greedy paths, greedy decoding
//! and perplexity. The reference outputs were written by llama.cpp's own tools
//! (`bench/reference/gemma3_llamacpp.sh`, which says how) into `tests/reference/`.

use lamina_engine::{Engine, EngineConfig, GenerationParams, SamplingParams};
use lamina_kernels::ThreadPool;
use lamina_model::{load_model, BatchInput, Model, Precision, Scratch, SeqChunk};
use lamina_tokenizer::Tokenizer;
use serde_json::Value;
use std::sync::{Arc, OnceLock};

fn read_reference(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(format!("{}/tests/reference/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// llama.cpp's records (`bench/reference/gemma3_llamacpp.sh`).
fn reference() -> &'static [Value] {
    static R: OnceLock<Vec<Value>> = OnceLock::new();
    R.get_or_init(|| read_reference("gemma3_llamacpp.jsonl"))
}

/// transformers' records, f32 (`bench/reference/gemma3_hf.py`).
fn transformers() -> &'static [Value] {
    static R: OnceLock<Vec<Value>> = OnceLock::new();
    R.get_or_init(|| read_reference("gemma3_hf_f32.jsonl"))
}

fn prompts() -> impl Iterator<Item = &'static Value> {
    reference().iter().filter(|r| r.get("prompt").is_some())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
}

fn load(precision: Precision) -> (Arc<Model>, Arc<Tokenizer>) {
    let path = lamina_core::registry::gemma3_model_path().unwrap();
    (Arc::new(load_model(&path, precision).unwrap()), Arc::new(Tokenizer::from_gguf(&path).unwrap()))
}

fn model_and_tokenizer() -> (Arc<Model>, Arc<Tokenizer>) {
    static M: OnceLock<(Arc<Model>, Arc<Tokenizer>)> = OnceLock::new();
    M.get_or_init(|| load(Precision::Native)).clone()
}

/// The 262,144-token SentencePiece vocabulary tokenizes every prompt (with BOS) as
/// llama.cpp does, the 700-token Shakespeare passage included.
#[test]
fn tokens_match_llama_cpp() {
    let (_, tok) = model_and_tokenizer();
    for r in prompts() {
        let prompt = r["prompt"].as_str().unwrap();
        assert_eq!(tok.encode(prompt, true).unwrap(), ids(&r["prompt_ids"]), "{prompt:?}");
    }
}

/// The pre-trained Gemma 3 ships no chat template; its vocabulary gets Gemma's turn format,
/// written out here as Google's template renders it (system text opening the first user
/// turn, the assistant's role `model`, contents trimmed), and `<end_of_turn>` ends a turn.
#[test]
fn a_gemma_vocabulary_without_a_template_gets_gemmas_turns() {
    let (_, tok) = model_and_tokenizer();
    let m = |r: &str, c: &str| lamina_tokenizer::ChatMessage::new(r, c);
    let text =
        tok.apply_chat_template(&[m("system", "Be brief."), m("user", " Hi! "), m("assistant", "Hello."), m("user", "Capital of France?")], true).unwrap();
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nBe brief.\n\nHi!<end_of_turn>\n<start_of_turn>model\nHello.<end_of_turn>\n\
         <start_of_turn>user\nCapital of France?<end_of_turn>\n<start_of_turn>model\n"
    );
    let eot = tok.encode("<end_of_turn>", false).unwrap();
    assert_eq!(eot.len(), 1);
    assert!(tok.is_end_of_generation(eot[0]), "<end_of_turn> ends generation");
}

/// Log-softmax of one row of logits.
fn log_softmax(row: &[f32]) -> Vec<f32> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let lse = max + row.iter().map(|&x| ((x - max) as f64).exp()).sum::<f64>().ln() as f32;
    row.iter().map(|&x| x - lse).collect()
}

/// How far our log-probabilities are from a reference's along the reference's own greedy
/// path (its tokens fed back, so both models see the same text): at every step of every
/// record, for the reference's ten most likely next tokens. Returns the mean absolute
/// difference, the number compared, and the worst difference among tokens the reference
/// gives more than e⁻³ (5%), with where it is.
fn logprob_differences(model: &Model, records: &[Value]) -> (f64, usize, f32, String) {
    let pool = ThreadPool::new(2);
    let (mut sum, mut count, mut worst, mut at) = (0.0f64, 0usize, 0.0f32, String::new());
    for r in records.iter().filter(|r| r.get("prompt").is_some()) {
        let prompt = ids(&r["prompt_ids"]);
        let greedy = ids(&r["greedy_ids"]);
        let tokens: Vec<u32> = prompt.iter().chain(&greedy[..greedy.len() - 1]).copied().collect();
        let rows: Vec<usize> = (prompt.len() - 1..tokens.len()).collect();
        let (mut kv, blocks) = model.single_sequence_kv(tokens.len());
        let seqs = [SeqChunk { len: tokens.len(), start: 0, blocks: &blocks, lora: None }];
        let mut logits = Vec::new();
        model.forward(BatchInput { tokens: &tokens, seqs: &seqs, logits_rows: &rows }, &mut kv, &mut Scratch::default(), &pool, &mut logits).unwrap();
        let vocab = model.config.vocab_size;
        for (step, top) in r["top_logprobs"].as_array().unwrap().iter().enumerate() {
            let ours = log_softmax(&logits[step * vocab..(step + 1) * vocab]);
            for pair in top.as_array().unwrap() {
                let (id, want) = (pair[0].as_u64().unwrap() as usize, pair[1].as_f64().unwrap() as f32);
                let diff = (ours[id] - want).abs();
                sum += diff as f64;
                count += 1;
                if diff > worst && want > -3.0 {
                    worst = diff;
                    let p: String = r["prompt"].as_str().unwrap().chars().take(24).collect();
                    at = format!("{p:?} step {step} token {id}: ours {} reference {want}", ours[id]);
                }
            }
        }
    }
    (sum / count.max(1) as f64, count, worst, at)
}

/// Our f32 path against transformers (GGUF weights dequantized to f32, f32 activations):
/// the same arithmetic up to summation order. Measured: 1e-5 in the mean, 2e-5 at worst;
/// bounds 1e-4 and 1e-3.
#[test]
fn f32_logprobs_match_transformers() {
    let (model, _) = load(Precision::F32);
    let (mean, count, worst, at) = logprob_differences(&model, transformers());
    eprintln!("f32 vs transformers: mean |diff| {mean:.5} over {count}, worst likely {worst:.5} ({at})");
    assert!(count >= 9 * 32 * 10, "{count} comparisons");
    assert!(worst < 1e-3 && mean < 1e-4, "mean {mean}, worst {worst} at {at}");
}

/// Our native path against llama.cpp's and against transformers'. Both native runs
/// quantize activations to 8 bits against the same Q4_K/Q5_0/Q6_K/Q8_0 weights with an
/// f16 KV cache, but round differently (another summation order; llama.cpp's f16 GELU
/// table and f16 attention accumulation), and at 8 bits that shows. Measured: ours is
/// 0.12 from llama.cpp in the mean and 0.54 at worst on likely tokens, and 0.11 / 0.57
/// from transformers; llama.cpp itself is 0.11 / 0.45 from transformers (as far as from
/// our f32 path, which equals transformers to 1e-5). Bounds: 0.2 mean, 0.75 worst. A
/// model error is far larger: without the sliding window, or with the global rotary base
/// in the local layers, perplexity is 210 or 170 instead of 46.
#[test]
fn native_logprobs_close_to_llama_cpp() {
    let (model, _) = model_and_tokenizer();
    let (mean, count, worst, at) = logprob_differences(&model, reference());
    eprintln!("native vs llama.cpp: mean |diff| {mean:.4} over {count}, worst likely {worst:.4} ({at})");
    let (m2, _, w2, at2) = logprob_differences(&model, transformers());
    eprintln!("native vs transformers: mean |diff| {m2:.4}, worst likely {w2:.4} ({at2})");
    assert!(w2 < 0.75 && m2 < 0.2, "mean {m2}, worst {w2} at {at2}");
    assert!(count >= 9 * 32 * 10, "{count} comparisons");
    assert!(worst < 0.75 && mean < 0.2, "mean {mean}, worst {worst} at {at}");
}

/// Greedy decoding through the engine in f32 reproduces transformers' 32 tokens for
/// every prompt, the 703-token one (decoding past the 512-position window) included.
#[test]
fn f32_greedy_matches_transformers() {
    let (model, tok) = load(Precision::F32);
    let mut engine =
        Engine::new(model, tok, Arc::new(ThreadPool::new(2)), EngineConfig { max_sequences: 1, context_length: 1024, ..Default::default() }).unwrap();
    for r in transformers() {
        let reference = ids(&r["greedy_ids"]);
        let params = GenerationParams { sampling: SamplingParams::greedy(), max_tokens: reference.len(), ..Default::default() };
        let done = engine.generate(ids(&r["prompt_ids"]), params, None).unwrap();
        assert_eq!(done.tokens, reference, "{:?}", r["prompt"]);
    }
}

/// Greedy decoding through the engine (KV blocks, decode steps of one token) follows
/// llama.cpp's greedy text; where it first differs, the two tokens are a near-tie in our
/// own log-probabilities: under 1.5 apart. That is twice the bound of the log-probability
/// test (0.75): if each of our log-probabilities is within ε of llama.cpp's and llama.cpp
/// ranks token b over a, our lead of a over b is at most 2ε. Measured at the chat prompt's
/// step 7, the widest case: 0.39 on the AVX2 kernels, 0.58 on the scalar ones, 0.81 on the
/// VNNI ones (8-bit activations make the paths' rounding differences discrete jumps).
#[test]
fn greedy_follows_llama_cpp() {
    let (model, tok) = model_and_tokenizer();
    let mut engine =
        Engine::new(model, tok, Arc::new(ThreadPool::new(2)), EngineConfig { max_sequences: 1, context_length: 1024, ..Default::default() }).unwrap();
    let mut exact = 0;
    for r in prompts() {
        let reference = ids(&r["greedy_ids"]);
        let params = GenerationParams { sampling: SamplingParams::greedy(), max_tokens: reference.len(), logprobs: Some(20), ..Default::default() };
        let done = engine.generate(ids(&r["prompt_ids"]), params, None).unwrap();
        let first_diff = reference.iter().zip(&done.tokens).position(|(a, b)| a != b);
        match first_diff {
            None => {
                assert_eq!(done.tokens.len(), reference.len(), "{:?} stopped early ({})", r["prompt"], done.reason.as_str());
                exact += 1;
            }
            Some(step) => {
                let lp = &done.logprobs[step];
                let want = reference[step];
                let want_lp = lp.top.iter().find(|t| t.0 == want).map(|t| t.1);
                let gap = want_lp.map(|w| lp.logprob - w);
                eprintln!("{:?}: first difference at step {step}, gap {gap:?}", r["prompt"].as_str().unwrap().chars().take(30).collect::<String>());
                assert!(gap.is_some_and(|g| g < 1.5), "{:?}: step {step}: ours {} vs llama.cpp {want}, gap {gap:?}", r["prompt"], lp.token);
            }
        }
    }
    eprintln!("greedy vs llama.cpp: {exact}/{} prompts identical for 32 tokens", prompts().count());
    assert!(exact >= prompts().count() / 2, "only {exact} identical");
}

/// llama-perplexity with 1,024-token windows on the first 32,768 bytes of tinyshakespeare
/// (each window reaches past the 512-position sliding window): within 1%.
#[test]
fn perplexity_matches_llama_cpp() {
    let (model, tok) = model_and_tokenizer();
    let rec = reference().iter().find(|r| r.get("perplexity").is_some()).unwrap();
    let (want, bytes, ctx) = (rec["perplexity"].as_f64().unwrap(), rec["bytes"].as_u64().unwrap() as usize, rec["ctx"].as_u64().unwrap() as usize);
    let text = std::fs::read(format!("{}/../../../shared/datasets/tinyshakespeare.txt", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let tokens = tok.encode(std::str::from_utf8(&text[..bytes]).unwrap(), false).unwrap();
    let mut engine =
        Engine::new(model, tok.clone(), Arc::new(ThreadPool::new(2)), EngineConfig { max_sequences: 1, context_length: ctx, ..Default::default() }).unwrap();
    let bos = if tok.add_bos() { tok.bos_id() } else { None };
    let report = lamina_engine::perplexity::perplexity(&mut engine, &tokens, ctx, bos, |_, _, _| {}).unwrap();
    eprintln!("PPL = {:.4} over {} windows (llama.cpp {want})", report.ppl, report.windows);
    assert!((report.ppl - want).abs() / want < 0.01, "PPL {} not within 1% of llama.cpp's {want}", report.ppl);
}
