//! Constrained decoding on the real SmolLM2-135M: sampled at temperature 1, eight
//! sequences in one batch, every answer follows its grammar (a JSON schema, a Lark
//! choice, a GBNF pattern) and ends where the grammar does.

use lamina_engine::{grammar_compiler, Engine, EngineConfig, FinishReason, GenerationParams, Request, SamplingParams};
use lamina_grammar::{Compiler, Grammar, Lookahead};
use lamina_kernels::ThreadPool;
use lamina_model::{load_model, Precision};
use lamina_tokenizer::{ChatMessage, Tokenizer};
use serde_json::{json, Value};
use std::sync::Arc;

struct Parts {
    engine: Engine,
    tok: Arc<Tokenizer>,
    compiler: Compiler,
}

fn parts() -> Parts {
    let path = lamina_core::registry::default_model_path().unwrap();
    let model = Arc::new(load_model(&path, Precision::Native).unwrap());
    let tok = Arc::new(Tokenizer::from_gguf(&path).unwrap());
    let engine =
        Engine::new(model, tok.clone(), Arc::new(ThreadPool::new(2)), EngineConfig { max_sequences: 8, context_length: 1024, ..Default::default() }).unwrap();
    let compiler = grammar_compiler(tok.clone()).unwrap();
    Parts { engine, tok, compiler }
}

fn prompt(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(&tok.apply_chat_template(&[ChatMessage::user(text)], true).unwrap(), false).unwrap()
}

fn sampled(seed: u64, max_tokens: usize) -> GenerationParams {
    GenerationParams {
        sampling: SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed: Some(seed), ..SamplingParams::default() },
        max_tokens,
        ..Default::default()
    }
}

/// Runs one request per seed, all in one batch, each with its own constraint.
fn run(p: &mut Parts, text: &str, grammar: &Grammar, seeds: std::ops::Range<u64>, max_tokens: usize) -> Vec<(String, FinishReason)> {
    let ids = prompt(&p.tok, text);
    let mut order = Vec::new();
    for seed in seeds {
        let c = Lookahead::new(p.compiler.compile(grammar).unwrap());
        order.push(p.engine.add(Request::new(ids.clone(), sampled(seed, max_tokens)).with_processor(Box::new(c))).unwrap());
    }
    p.engine.run_to_completion().unwrap();
    let mut done = p.engine.take_finished();
    done.sort_by_key(|f| order.iter().position(|&id| id == f.seq));
    done.into_iter().map(|f| (f.text, f.reason)).collect()
}

#[test]
fn json_schema_answers_parse_and_match() {
    let mut p = parts();
    let schema = json!({
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "population": {"type": "integer", "minimum": 0, "maximum": 100000000},
            "coastal": {"type": "boolean"},
            "rivers": {"type": "array", "items": {"type": "string", "maxLength": 15}, "maxItems": 3}
        },
        "required": ["city", "population", "coastal", "rivers"],
        "additionalProperties": false
    });
    for (text, reason) in run(&mut p, "Describe Paris as JSON.", &Grammar::JsonSchema(schema), 0..8, 200) {
        assert_eq!(reason, FinishReason::Stop, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
        let o = v.as_object().unwrap();
        assert_eq!(o.len(), 4, "{text}");
        assert!(o["city"].as_str().is_some_and(|s| s.chars().count() <= 20), "{text}");
        assert!(o["population"].as_u64().is_some_and(|n| n <= 100_000_000), "{text}");
        assert!(o["coastal"].is_boolean(), "{text}");
        let rivers = o["rivers"].as_array().unwrap();
        assert!(rivers.len() <= 3 && rivers.iter().all(|r| r.as_str().is_some_and(|s| s.chars().count() <= 15)), "{text}");
    }
}

#[test]
fn lark_and_gbnf_grammars_hold() {
    let mut p = parts();
    let yes_no = Grammar::Lark("start: \"yes\" | \"no\"".into());
    for (text, reason) in run(&mut p, "Is the sky blue? Answer yes or no.", &yes_no, 0..4, 10) {
        assert!(text == "yes" || text == "no", "{text:?}");
        assert_eq!(reason, FinishReason::Stop);
    }
    let date = Grammar::Gbnf("root ::= year \"-\" [01] [0-9] \"-\" [0-3] [0-9]\nyear ::= [12] [0-9]{3}\n".into());
    for (text, reason) in run(&mut p, "When did the first moon landing happen? Give the date.", &date, 0..4, 20) {
        let b = text.as_bytes();
        assert!(b.len() == 10 && b[4] == b'-' && b[7] == b'-' && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit()), "{text:?}");
        assert_eq!(reason, FinishReason::Stop);
    }
    p.engine.check_invariants();
}
