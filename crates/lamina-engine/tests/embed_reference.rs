//! Embeddings against sentence-transformers' vectors for all-MiniLM-L6-v2
//! (`../shared/reference/minilm_embeddings.jsonl`: mean pooling, L2-normalised, inputs cut
//! at 256 word pieces), on both arithmetics; packed batches against one input at a time;
//! and a chat model's hidden states against its own logits.

use lamina_engine::embed::cosine;
use lamina_engine::{resolve, EmbedInput, Embedder, Pooling};
use lamina_kernels::ThreadPool;
use lamina_model::{BatchInput, Precision, Scratch, SeqChunk};
use serde_json::Value;
use std::sync::Arc;

const REF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/minilm_embeddings.jsonl");

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(REF).expect("reference file ../shared/reference/minilm_embeddings.jsonl");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Case {
                text: v["text"].as_str().unwrap().to_string(),
                ids: v["input_ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
                embedding: v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect(),
            }
        })
        .collect()
}

fn minilm(precision: Precision) -> Embedder {
    static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = FETCH.lock().unwrap_or_else(|e| e.into_inner());
    resolve::load_embedder(None, precision, Arc::new(ThreadPool::new(2)), None, &mut |m| eprintln!("{m}")).expect("load all-minilm-l6-v2")
}

/// Every reference text, in one packed batch; returns the worst cosine.
fn worst_cosine(e: &Embedder) -> f64 {
    let cases = cases();
    assert!(cases.len() >= 10 && cases.iter().any(|c| c.ids.len() > 256), "the reference has short texts and one over 256 word pieces");
    let inputs: Vec<EmbedInput> = cases.iter().map(|c| EmbedInput::Text(&c.text)).collect();
    let got = e.embed(&inputs).unwrap();
    let mut worst = 1.0f64;
    for (c, g) in cases.iter().zip(&got) {
        assert_eq!(g.vector.len(), 384);
        assert_eq!(g.tokens, c.ids.len().min(256), "{:?}", c.text);
        assert_eq!(g.truncated, c.ids.len() > 256);
        let cos = cosine(&g.vector, &c.embedding);
        eprintln!("cosine {cos:.6}  {:?}", &c.text[..c.text.len().min(40)]);
        worst = worst.min(cos);
    }
    worst
}

#[test]
fn f32_path_matches_sentence_transformers_and_its_token_ids() {
    let e = minilm(Precision::F32);
    for c in cases() {
        assert_eq!(e.tokenizer().encode(&c.text, true).unwrap(), c.ids, "{:?}", c.text);
        let (ids, cut) = e.tokenize(EmbedInput::Text(&c.text)).unwrap();
        assert_eq!(ids.len(), c.ids.len().min(256));
        assert_eq!(cut, c.ids.len() > 256);
    }
    let worst = worst_cosine(&e);
    assert!(worst >= 0.9999, "worst cosine {worst}");
}

/// The fast path (Q8_0 weights against 8-bit activations) stays within cosine 0.999 of
/// sentence-transformers on every text (measured: 0.99941 worst, for the empty text, which
/// is only `[CLS] [SEP]`; 0.9997 or more for every other; the f32 path gives 1.00000).
#[test]
fn native_path_is_within_cosine_0_999() {
    let worst = worst_cosine(&minilm(Precision::Native));
    assert!(worst >= 0.999, "worst cosine {worst}");
}

#[test]
fn a_packed_mixed_length_batch_equals_one_input_at_a_time() {
    let e = minilm(Precision::F32);
    let cases = cases();
    let inputs: Vec<EmbedInput> = cases.iter().map(|c| EmbedInput::Text(&c.text)).collect();
    let together = e.embed(&inputs).unwrap();
    // A small token budget splits the same inputs over several forward calls.
    let split = minilm(Precision::F32).with_batch_tokens(40).embed(&inputs).unwrap();
    for (i, input) in inputs.iter().enumerate() {
        let alone = e.embed(&[*input]).unwrap().remove(0);
        for other in [&together[i], &split[i]] {
            let diff = alone.vector.iter().zip(&other.vector).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(diff < 1e-5, "input {i}: batched and alone differ by {diff}");
        }
    }
}

#[test]
fn token_inputs_and_limits() {
    let e = minilm(Precision::F32);
    let c = &cases()[0];
    let by_text = e.embed(&[EmbedInput::Text(&c.text)]).unwrap().remove(0);
    let by_ids = e.embed(&[EmbedInput::Tokens(&c.ids)]).unwrap().remove(0);
    assert_eq!(by_text.vector, by_ids.vector);
    let long: Vec<u32> = std::iter::repeat_n(1996, 300).collect();
    let err = e.embed(&[EmbedInput::Tokens(&long)]).unwrap_err().to_string();
    assert!(err.contains("300") && err.contains("256"), "{err}");
    assert!(e.embed(&[EmbedInput::Tokens(&[])]).is_err());
    assert!(e.embed(&[EmbedInput::Tokens(&[40000])]).unwrap_err().to_string().contains("outside the vocabulary"));
}

/// A chat model's final hidden states, multiplied by its output matrix, are its logits;
/// its embeddings are unit vectors, the same batched as alone.
#[test]
fn decoder_hidden_states_give_its_logits_and_pool_per_input() {
    let path = lamina_core::registry::default_model_path().unwrap();
    let pool = Arc::new(ThreadPool::new(2));
    let model = lamina_model::load_model(&path, Precision::F32).unwrap();
    let tok = resolve::load_tokenizer(&path).unwrap();
    let ids = tok.encode("The capital of France is", true).unwrap();
    let n = ids.len();
    let (mut kv, blocks) = model.single_sequence_kv(n);
    let seqs = [SeqChunk { len: n, start: 0, blocks: &blocks, lora: None }];
    let rows = [n - 1];
    let mut logits = Vec::new();
    model.forward(BatchInput { tokens: &ids, seqs: &seqs, logits_rows: &rows }, &mut kv, &mut Scratch::default(), &pool, &mut logits).unwrap();
    let mut hidden = Vec::new();
    model.hidden_states(BatchInput { tokens: &ids, seqs: &seqs, logits_rows: &rows }, &mut kv, &mut Scratch::default(), &pool, &mut hidden).unwrap();
    let out = model.output.to_f32();
    let d = model.config.hidden_size;
    assert_eq!(hidden.len(), d);
    for t in [0usize, 100, 4000, 20000] {
        let want: f32 = out[t * d..(t + 1) * d].iter().zip(&hidden).map(|(w, h)| w * h).sum();
        assert!((want - logits[t]).abs() < 1e-3 * (1.0 + want.abs()), "token {t}: {want} vs {}", logits[t]);
    }

    for pooling in [Pooling::LastToken, Pooling::Mean] {
        let e = resolve::load_embedder(Some(path.to_str().unwrap()), Precision::F32, pool.clone(), Some(pooling), &mut |_| {}).unwrap();
        assert_eq!(e.dimensions(), d);
        let texts = ["Paris is the capital of France.", "How do I reset my password?", "word"];
        let inputs: Vec<EmbedInput> = texts.iter().map(|t| EmbedInput::Text(t)).collect();
        let together = e.embed(&inputs).unwrap();
        for (i, input) in inputs.iter().enumerate() {
            let alone = e.embed(&[*input]).unwrap().remove(0);
            let norm: f32 = alone.vector.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4);
            assert!(cosine(&alone.vector, &together[i].vector) > 0.99999, "{pooling:?} input {i}");
        }
        // Related texts sit closer than unrelated ones.
        assert!(cosine(&together[0].vector, &together[1].vector) < 0.99999);
    }
}
