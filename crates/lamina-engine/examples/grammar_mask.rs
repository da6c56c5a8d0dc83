//! llguidance's mask time per token for a JSON schema, on a model's real vocabulary: a
//! JSON document the schema accepts is written out token by token (as our tokenizer
//! encodes it), and the mask before each token is timed. No model runs.
//!
//!     cargo run --release -p lamina-engine --example grammar_mask -- MODEL.gguf SCHEMA.json

use lamina_grammar::Grammar;
use lamina_tokenizer::Tokenizer;
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, schema] = args.as_slice() else {
        return Err("usage: grammar_mask MODEL.gguf SCHEMA.json".into());
    };
    let tok = Arc::new(Tokenizer::from_gguf(model)?);
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(schema)?)?;
    let t0 = Instant::now();
    let compiler = lamina_engine::grammar_compiler(tok.clone())?;
    let made = t0.elapsed();
    let grammar = Grammar::JsonSchema(schema.clone());
    let t0 = Instant::now();
    let mut constraint = compiler.compile(&grammar)?;
    let compiled = t0.elapsed();
    let doc = example(&schema);
    let text = layout(&doc);
    let tokens = tok.encode(&text, false)?;
    let mut logits = vec![0.0f32; tok.vocab_size()];
    for &t in &tokens {
        let mask = constraint.mask();
        mask.apply(&mut logits);
        if !mask.allows(t) {
            return Err(format!("the grammar refused token {t} ({:?}) of {text}", tok.token_to_piece(t)).into());
        }
        constraint.accept(t);
    }
    let s = constraint.stats();
    println!(
        "vocabulary {} tokens: compiler made in {:.1} ms, schema compiled in {:.2} ms",
        tok.vocab_size(),
        made.as_secs_f64() * 1e3,
        compiled.as_secs_f64() * 1e3
    );
    println!("{} tokens of JSON: mask mean {:.1} µs, longest {:.1} µs per token", s.masks, s.mean().as_secs_f64() * 1e6, s.longest.as_secs_f64() * 1e6);
    Ok(())
}

/// JSON as constrained output lays it out: `", "` between items, `": "` after keys.
fn layout(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Array(a) => format!("[{}]", a.iter().map(layout).collect::<Vec<_>>().join(", ")),
        Value::Object(o) => format!("{{{}}}", o.iter().map(|(k, v)| format!("{}: {}", Value::String(k.clone()), layout(v))).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

/// A value the schema accepts (for the kinds of schema the benchmark uses).
fn example(s: &serde_json::Value) -> serde_json::Value {
    use serde_json::{json, Value};
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        return e[0].clone();
    }
    match s.get("type").and_then(Value::as_str) {
        Some("object") => {
            let props = s.get("properties").and_then(Value::as_object).cloned().unwrap_or_default();
            Value::Object(props.iter().map(|(k, v)| (k.clone(), example(v))).collect())
        }
        Some("array") => {
            let n = s.get("minItems").and_then(Value::as_u64).unwrap_or(1) as usize;
            Value::Array((0..n).map(|_| example(&s["items"])).collect())
        }
        Some("integer") => json!(s.get("minimum").and_then(Value::as_i64).unwrap_or(0).max(1)),
        Some("number") => json!(s.get("minimum").and_then(Value::as_f64).unwrap_or(0.0) + 0.5),
        Some("boolean") => json!(true),
        _ => json!("a short note about the film"),
    }
}
