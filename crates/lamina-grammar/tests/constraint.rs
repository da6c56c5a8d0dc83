//! Grammars compiled against a small vocabulary of our own (every byte, a few words, an
//! end token): masks allow exactly what the grammar can continue with, the constraint
//! ends where the grammar does, and bad grammars are refused with llguidance's reason.

use lamina_grammar::{Compiler, Constraint, Grammar, GrammarError, Lookahead, TokenSource, Vocabulary};
use serde_json::json;

/// Ids 0..=255 are single bytes; then some words; then the end token.
const WORDS: &[&str] = &["yes", "no", "true", "false", "{\"", "\":", "null"];

struct Bytes;

impl Bytes {
    fn end() -> u32 {
        256 + WORDS.len() as u32
    }
}

impl TokenSource for Bytes {
    fn vocab_size(&self) -> usize {
        257 + WORDS.len()
    }
    fn token_bytes(&self, id: u32) -> Vec<u8> {
        match id {
            0..=255 => vec![id as u8],
            _ if id == Bytes::end() => b"<end>".to_vec(),
            _ => WORDS[id as usize - 256].as_bytes().to_vec(),
        }
    }
    fn is_special(&self, id: u32) -> bool {
        id == Bytes::end()
    }
    fn end_ids(&self) -> Vec<u32> {
        vec![Bytes::end()]
    }
    fn encode(&self, text: &str) -> Option<Vec<u32>> {
        Some(text.bytes().map(u32::from).collect())
    }
}

fn compiler() -> Compiler {
    Compiler::new(Vocabulary::new(Bytes).unwrap()).unwrap()
}

fn allowed(c: &mut Constraint) -> Vec<u32> {
    let mut logits = vec![0.0f32; Bytes.vocab_size() + 3];
    c.mask().apply(&mut logits);
    (0..logits.len() as u32).filter(|&i| logits[i as usize].is_finite()).collect()
}

/// Feeds `text` byte by byte, checking each byte was allowed.
fn feed(c: &mut Constraint, text: &str) {
    for b in text.bytes() {
        assert!(allowed(c).contains(&u32::from(b)), "byte {:?} refused after the text before it", b as char);
        c.accept(u32::from(b));
    }
}

#[test]
fn a_lark_choice_allows_its_words_and_then_only_the_end() {
    let mut c = compiler().compile(&Grammar::Lark("start: \"yes\" | \"no\"".into())).unwrap();
    let first = allowed(&mut c);
    // "y", "n", and the whole-word tokens.
    assert_eq!(first, vec![u32::from(b'n'), u32::from(b'y'), 256, 257]);
    c.accept(256);
    assert!(c.is_done() || allowed(&mut c) == vec![Bytes::end()]);
}

#[test]
fn a_json_schema_is_followed_to_its_end() {
    let schema = json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "n": {"type": "integer", "minimum": 0, "maximum": 9}}, "required": ["ok", "n"], "additionalProperties": false});
    let mut c = compiler().compile(&Grammar::JsonSchema(schema)).unwrap();
    feed(&mut c, "{\"ok\": ");
    let next = allowed(&mut c);
    assert!(next.contains(&258) && next.contains(&259) && !next.contains(&u32::from(b'1')), "after a boolean key: {next:?}");
    feed(&mut c, "true, \"n\": ");
    let digits = allowed(&mut c);
    assert!(digits.contains(&u32::from(b'7')) && !digits.contains(&u32::from(b'-')), "the bound excludes negatives: {digits:?}");
    feed(&mut c, "7}");
    assert!(c.is_done() || allowed(&mut c) == vec![Bytes::end()]);
    assert_eq!(c.error(), None);
}

#[test]
fn json_object_allows_any_object_and_nothing_else() {
    let mut c = compiler().compile(&Grammar::JsonObject).unwrap();
    let first = allowed(&mut c);
    assert!(first.contains(&u32::from(b'{')) && !first.contains(&u32::from(b'[')) && !first.contains(&u32::from(b'"')));
    feed(&mut c, "{\"a\": [1, null, \"x\"]}");
    assert!(c.is_done() || allowed(&mut c) == vec![Bytes::end()]);
}

#[test]
fn gbnf_is_translated_and_enforced() {
    let mut c = compiler().compile(&Grammar::Gbnf("root ::= \"n=\" [0-9]{2}\n".into())).unwrap();
    feed(&mut c, "n=4");
    let next = allowed(&mut c);
    assert_eq!(next.len(), 10, "one more digit: {next:?}");
    feed(&mut c, "2");
    assert!(c.is_done() || allowed(&mut c) == vec![Bytes::end()]);
}

#[test]
fn the_lookahead_thread_gives_the_same_masks() {
    let g = Grammar::Lark("start: \"a\" /[0-9]+/ \"b\"".into());
    let comp = compiler();
    let mut plain = comp.compile(&g).unwrap();
    let mut ahead = Lookahead::new(comp.compile(&g).unwrap());
    for b in "a12b".bytes() {
        let mut l1 = vec![0.0f32; Bytes.vocab_size()];
        let mut l2 = l1.clone();
        plain.mask().apply(&mut l1);
        ahead.apply(&mut l2);
        assert_eq!(l1, l2);
        plain.accept(u32::from(b));
        ahead.accept(u32::from(b));
        assert_eq!(plain.is_done(), ahead.is_done());
    }
    let stats = ahead.finish();
    assert_eq!(stats.masks, 4);
}

#[test]
fn bad_grammars_are_refused_with_a_reason() {
    let c = compiler();
    let err = |g: Grammar| match c.compile(&g) {
        Err(GrammarError::Invalid { kind, message }) => format!("{kind}: {message}"),
        Err(e) => panic!("unexpected error kind: {e}"),
        Ok(_) => panic!("{g:?} was accepted"),
    };
    let e = err(Grammar::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})));
    assert!(e.starts_with("JSON schema: "), "{e}");
    let e = err(Grammar::JsonSchema(json!({"type": "no-such-type"})));
    assert!(e.contains("no-such-type"), "{e}");
    let e = err(Grammar::JsonSchema(json!([1, 2])));
    assert!(e.contains("an object or a boolean"), "{e}");
    let e = err(Grammar::Lark("start: undefined_rule".into()));
    assert!(e.contains("undefined_rule"), "{e}");
    let e = err(Grammar::Gbnf("root ::= [a-z".into()));
    assert!(e.contains("unterminated character class"), "{e}");
    assert!(err(Grammar::Lark("  ".into())).contains("empty"));
}

#[test]
fn text_is_checked_against_a_schema_in_any_layout() {
    let c = compiler();
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}, "required": ["n"]});
    assert!(c.matches_json_schema(&schema, "{\"n\":3}").unwrap());
    assert!(c.matches_json_schema(&schema, "{ \"n\" : 3 }").unwrap());
    assert!(!c.matches_json_schema(&schema, "{\"n\": 9}").unwrap());
    assert!(!c.matches_json_schema(&schema, "{\"m\": 1}").unwrap());
    assert!(!c.matches_json_schema(&schema, "{\"n\": 3").unwrap());
    assert!(c.matches_json_schema(&json!({"type": "bogus"}), "{}").is_err());
}
