//! Instruction records → tokens with an assistant-only loss mask, on SmolLM2's real
//! tokenizer and ChatML template: exactly the assistant turns' text (with their
//! `<|im_end|>` marker) is scored, in every record shape.

use lamina_model::trainable::IGNORE;
use lamina_tokenizer::Tokenizer;
use lamina_train::instruct::{encode_conversation, record_messages};

fn tok() -> Tokenizer {
    Tokenizer::from_gguf(lamina_core::registry::default_model_path().unwrap()).unwrap()
}

/// The scored text of an example, one string per run of scored targets.
fn scored_runs(tok: &Tokenizer, targets: &[u32]) -> Vec<String> {
    let mut runs = Vec::new();
    let mut cur = Vec::new();
    for &t in targets.iter().chain([IGNORE].iter()) {
        if t == IGNORE {
            if !cur.is_empty() {
                runs.push(tok.decode(&cur, false).unwrap());
                cur.clear();
            }
        } else {
            cur.push(t);
        }
    }
    runs
}

#[test]
fn only_assistant_turns_are_scored_in_every_record_shape() {
    let tok = tok();
    let multi = serde_json::json!({"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."}
    ]});
    let e = encode_conversation(&tok, &record_messages(&multi).unwrap()).unwrap();
    assert_eq!(e.tokens.len(), e.targets.len());
    assert_eq!(scored_runs(&tok, &e.targets), ["Hello!<|im_end|>\n", "Goodbye.<|im_end|>\n"]);
    // The inputs are the whole rendered conversation, shifted by one.
    let full = tok.apply_chat_template(&record_messages(&multi).unwrap(), false).unwrap();
    let ids = tok.encode(&full, true).unwrap();
    assert_eq!(e.tokens, ids[..ids.len() - 1]);
    for (i, &t) in e.targets.iter().enumerate() {
        assert!(t == IGNORE || t == ids[i + 1]);
    }

    let alpaca = serde_json::json!({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"});
    let m = record_messages(&alpaca).unwrap();
    assert_eq!(m[0].content, "Add the numbers.\n\n2 and 3");
    let e = encode_conversation(&tok, &m).unwrap();
    assert_eq!(scored_runs(&tok, &e.targets), ["5<|im_end|>\n"]);
    let no_input = record_messages(&serde_json::json!({"instruction": "Say yes.", "input": "", "output": "Yes."})).unwrap();
    assert_eq!(no_input[0].content, "Say yes.");
    let pc = record_messages(&serde_json::json!({"prompt": "Q?", "completion": "A."})).unwrap();
    assert_eq!(scored_runs(&tok, &encode_conversation(&tok, &pc).unwrap().targets), ["A.<|im_end|>\n"]);
}

#[test]
fn records_that_cannot_be_used_say_why() {
    for (rec, why) in [
        (serde_json::json!([1, 2]), "JSON object"),
        (serde_json::json!({"question": "?"}), "expected `messages`"),
        (serde_json::json!({"instruction": "x"}), "needs `output`"),
        (serde_json::json!({"messages": [{"role": "user", "content": "x"}]}), "no assistant turn"),
        (serde_json::json!({"messages": [{"role": "robot", "content": "x"}]}), "role `robot`"),
        (serde_json::json!({"prompt": 3, "completion": "x"}), "must be a string"),
    ] {
        let e = record_messages(&rec).unwrap_err();
        assert!(e.contains(why), "{rec}: {e}");
    }
}

/// Anthropic HH pairs: two whole dialogues that share every turn but the last answer.
#[test]
fn hh_pairs_split_into_the_shared_conversation_and_two_answers() {
    use lamina_train::instruct::{encode_pair, preference_pair};
    let rec = serde_json::json!({
        "chosen": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: Why did the chicken cross the road?",
        "rejected": "\n\nHuman: Hi there\n\nAssistant: Hello!\n\nHuman: Tell me a joke\n\nAssistant: No."
    });
    let p = preference_pair(&rec).unwrap();
    let roles: Vec<(&str, &str)> = p.prompt.iter().map(|m| (m.role.as_str(), m.content.as_str())).collect();
    assert_eq!(roles, [("user", "Hi there"), ("assistant", "Hello!"), ("user", "Tell me a joke")]);
    assert_eq!((p.chosen.as_str(), p.rejected.as_str()), ("Why did the chicken cross the road?", "No."));
    let tok = tok();
    let e = encode_pair(&tok, &p).unwrap();
    assert_eq!(tok.decode(&e.rejected, false).unwrap(), "No.<|im_end|>\n");
    assert!(tok.decode(&e.prompt, false).unwrap().ends_with("<|im_start|>assistant\n"));
    let differ = serde_json::json!({"chosen": "\n\nHuman: A\n\nAssistant: B", "rejected": "\n\nHuman: C\n\nAssistant: B"});
    assert!(preference_pair(&differ).unwrap_err().contains("differ before"));
    let explicit = preference_pair(&serde_json::json!({"prompt": "Q", "chosen": "yes", "rejected": "no"})).unwrap();
    assert_eq!(explicit.prompt.len(), 1);
}
