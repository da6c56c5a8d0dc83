//! Instruction data for supervised fine-tuning: records → chat messages → token ids with
//! a loss mask on the assistant's tokens only.
//!
//! A data file is a JSON array or JSON lines; each record is one of
//! - `{"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}`,
//! - an Alpaca record `{"instruction", "input"?, "output"}` (the input, when not empty,
//!   follows the instruction after a blank line, as one user turn),
//! - `{"prompt", "completion"}` (one user turn, one assistant turn).
//!
//! Every conversation is rendered with the model's own chat template. The tokens of each
//! assistant turn (as the template writes it, end-of-turn marker included) are the ones
//! scored; everything before them is context only. The split is found by rendering the
//! conversation up to each assistant turn with the generation prompt and up to its end
//! without: a template whose renderings do not extend each other cannot be split that way
//! and is reported as such.

use lamina_core::{Error, Result};
use lamina_model::trainable::IGNORE;
use lamina_tokenizer::{ChatMessage, Tokenizer};
use std::path::Path;

/// What to do with a record that cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBadRecord {
    /// Leave it out, counting it (and telling the first few).
    Skip,
    /// Stop with an error naming the file and line.
    Fail,
}

impl std::str::FromStr for OnBadRecord {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "skip" => Ok(OnBadRecord::Skip),
            "fail" => Ok(OnBadRecord::Fail),
            _ => Err(format!("`{s}`: expected skip or fail")),
        }
    }
}

/// One training sequence: `tokens[i]` is followed by `targets[i]`, or `targets[i]` is
/// [`IGNORE`] when that prediction is not scored.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub tokens: Vec<u32>,
    pub targets: Vec<u32>,
}

impl Example {
    /// Number of scored predictions.
    pub fn scored(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// The conversation a record holds.
pub fn record_messages(v: &serde_json::Value) -> std::result::Result<Vec<ChatMessage>, String> {
    let obj = v.as_object().ok_or("a record must be a JSON object")?;
    let text = |key: &str| -> std::result::Result<Option<&str>, String> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("`{key}` must be a string")),
        }
    };
    if let Some(m) = obj.get("messages") {
        let list = m.as_array().ok_or("`messages` must be an array")?;
        let mut out = Vec::with_capacity(list.len());
        for (i, item) in list.iter().enumerate() {
            let role = item.get("role").and_then(|r| r.as_str()).ok_or(format!("messages[{i}] has no string `role`"))?;
            let content = item.get("content").and_then(|c| c.as_str()).ok_or(format!("messages[{i}] has no string `content`"))?;
            if !matches!(role, "system" | "user" | "assistant") {
                return Err(format!("messages[{i}]: role `{role}` (expected system, user or assistant)"));
            }
            out.push(ChatMessage::new(role, content));
        }
        if !out.iter().any(|m| m.role == "assistant") {
            return Err("the conversation has no assistant turn to learn from".into());
        }
        return Ok(out);
    }
    if let Some(instruction) = text("instruction")? {
        let output = text("output")?.ok_or("an Alpaca record needs `output`")?;
        let user = match text("input")? {
            Some(input) if !input.trim().is_empty() => format!("{instruction}\n\n{input}"),
            _ => instruction.to_string(),
        };
        return Ok(vec![ChatMessage::user(user), ChatMessage::assistant(output)]);
    }
    if let Some(prompt) = text("prompt")? {
        let completion = text("completion")?.ok_or("a prompt record needs `completion`")?;
        return Ok(vec![ChatMessage::user(prompt), ChatMessage::assistant(completion)]);
    }
    Err("expected `messages`, `instruction`/`output` (Alpaca) or `prompt`/`completion`".into())
}

/// Token ids and the assistant-only loss mask of one conversation.
pub fn encode_conversation(tok: &Tokenizer, messages: &[ChatMessage]) -> std::result::Result<Example, String> {
    let mut ids: Vec<u32> = Vec::new();
    let mut scored: Vec<bool> = Vec::new();
    let mut done = String::new();
    let mut push = |text: &str, train: bool, first: bool| -> std::result::Result<(), String> {
        let t = tok.encode(text, first).map_err(|e| e.to_string())?;
        scored.extend(std::iter::repeat_n(train, t.len()));
        ids.extend(t);
        Ok(())
    };
    let mut first = true;
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let render =
            |n: usize, gen: bool| tok.apply_chat_template(&messages[..n], gen).map_err(|e| format!("the chat template cannot render this conversation: {e}"));
        let prefix = render(i, true)?;
        let full = render(i + 1, false)?;
        let (Some(context), Some(answer)) = (prefix.strip_prefix(done.as_str()), full.strip_prefix(prefix.as_str())) else {
            return Err(
                "the chat template's renderings of the conversation turn by turn do not extend each other, so the assistant's tokens cannot be told apart"
                    .into(),
            );
        };
        push(context, false, first)?;
        push(answer, true, false)?;
        first = false;
        done = full;
    }
    if ids.len() < 2 || !scored[1..].iter().any(|&s| s) {
        return Err("the conversation has no assistant tokens to learn from".into());
    }
    let targets = ids[1..].iter().zip(&scored[1..]).map(|(&t, &s)| if s { t } else { IGNORE }).collect();
    ids.pop();
    Ok(Example { tokens: ids, targets })
}

/// A record and where it is: `line N` (JSON lines) or `record N` (a JSON array); a line
/// that is not JSON is an `Err` with the reason.
pub type Located = (String, std::result::Result<serde_json::Value, String>);

/// The records of a JSON array or JSON lines file, gzip-compressed or not (`.gz`).
pub fn read_records(path: &Path) -> Result<Vec<Located>> {
    let raw = lamina_core::fs::read_regular(path)?;
    let bytes = if path.extension().is_some_and(|x| x == "gz") {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&raw[..]), &mut out)
            .map_err(|e| Error::invalid_file(path, format!("not gzip data: {e}")))?;
        out
    } else {
        raw
    };
    let text = std::str::from_utf8(&bytes).map_err(|e| Error::invalid_file(path, format!("not UTF-8 text (byte {})", e.valid_up_to())))?;
    let mut records = Vec::new();
    if text.trim_start().starts_with('[') {
        let all: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| Error::invalid_file(path, format!("line {}: {e}", e.line())))?;
        records.extend(all.into_iter().enumerate().map(|(i, v)| (format!("record {}", i + 1), Ok(v))));
    } else {
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                records.push((format!("line {}", i + 1), serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))));
            }
        }
    }
    Ok(records)
}

/// A preference pair: the conversation before the answers, and the preferred and the
/// rejected answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PreferencePair {
    pub prompt: Vec<ChatMessage>,
    pub chosen: String,
    pub rejected: String,
}

/// Splits an Anthropic HH dialogue (`\n\nHuman: … \n\nAssistant: …`) into turns.
fn hh_turns(text: &str) -> std::result::Result<Vec<ChatMessage>, String> {
    let mut turns = Vec::new();
    let mut rest = text;
    loop {
        let (role, after) = if let Some(r) = rest.strip_prefix("\n\nHuman:") {
            ("user", r)
        } else if let Some(r) = rest.strip_prefix("\n\nAssistant:") {
            ("assistant", r)
        } else {
            return Err("an HH dialogue is `\\n\\nHuman: …\\n\\nAssistant: …` turns".into());
        };
        let end = [after.find("\n\nHuman:"), after.find("\n\nAssistant:")].into_iter().flatten().min().unwrap_or(after.len());
        turns.push(ChatMessage::new(role, after[..end].trim()));
        rest = &after[end..];
        if rest.is_empty() {
            return Ok(turns);
        }
    }
}

/// The preference pair a record holds: `{"prompt", "chosen", "rejected"}` (strings), or
/// `{"chosen", "rejected"}` as two whole Anthropic HH dialogues that differ in their last
/// assistant turn.
pub fn preference_pair(v: &serde_json::Value) -> std::result::Result<PreferencePair, String> {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).ok_or(format!("a preference record needs a string `{k}`"));
    let (chosen, rejected) = (s("chosen")?, s("rejected")?);
    if let Some(p) = v.get("prompt") {
        let p = p.as_str().ok_or("`prompt` must be a string")?;
        return Ok(PreferencePair { prompt: vec![ChatMessage::user(p)], chosen: chosen.into(), rejected: rejected.into() });
    }
    let (mut c, mut r) = (hh_turns(chosen)?, hh_turns(rejected)?);
    let (Some(ca), Some(ra)) = (c.pop(), r.pop()) else { return Err("an empty dialogue".into()) };
    if ca.role != "assistant" || ra.role != "assistant" {
        return Err("both dialogues must end with an assistant turn".into());
    }
    if c != r {
        return Err("the two dialogues differ before their last assistant turn".into());
    }
    if c.is_empty() {
        return Err("the dialogues have no turn before the answers".into());
    }
    Ok(PreferencePair { prompt: c, chosen: ca.content, rejected: ra.content })
}

/// A preference pair in token ids.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPair {
    /// The rendered conversation, with the generation prompt.
    pub prompt: Vec<u32>,
    /// Each answer as the template closes it.
    pub chosen: Vec<u32>,
    pub rejected: Vec<u32>,
}

/// Token ids of a pair.
pub fn encode_pair(tok: &Tokenizer, pair: &PreferencePair) -> std::result::Result<EncodedPair, String> {
    let render = |m: &[ChatMessage], gen: bool| tok.apply_chat_template(m, gen).map_err(|e| format!("the chat template cannot render this conversation: {e}"));
    let prompt = render(&pair.prompt, true)?;
    let answer = |a: &str| -> std::result::Result<Vec<u32>, String> {
        let mut all = pair.prompt.clone();
        all.push(ChatMessage::assistant(a));
        let full = render(&all, false)?;
        let tail = full.strip_prefix(prompt.as_str()).ok_or("the chat template's rendering with the answer does not extend the prompt's")?;
        tok.encode(tail, false).map_err(|e| e.to_string())
    };
    let p = tok.encode(&prompt, true).map_err(|e| e.to_string())?;
    Ok(EncodedPair { prompt: p, chosen: answer(&pair.chosen)?, rejected: answer(&pair.rejected)? })
}

/// What reading a data file gave.
#[derive(Debug)]
pub struct Loaded<T> {
    pub examples: Vec<T>,
    /// Records left out under [`OnBadRecord::Skip`].
    pub skipped: usize,
    /// Of those, records longer than the length limit.
    pub too_long: usize,
}

/// The reason given for a record over the length limit.
fn too_long(n: usize, max_len: usize) -> String {
    format!("{n} tokens, more than the limit of {max_len}")
}

/// Reads `path`'s records through `make`. A record `make` refuses is an error naming the
/// file and its line (JSON lines) or record number (array), or is skipped and counted, as
/// `policy` says; `warn` hears about the first few skipped.
fn load_with<T>(
    path: &Path,
    policy: OnBadRecord,
    warn: &mut dyn FnMut(&str),
    make: &dyn Fn(serde_json::Value) -> std::result::Result<T, String>,
) -> Result<Loaded<T>> {
    let mut out = Loaded { examples: Vec::new(), skipped: 0, too_long: 0 };
    for (at, rec) in read_records(path)? {
        match rec.and_then(make) {
            Ok(e) => out.examples.push(e),
            Err(why) => {
                let msg = format!("{}: {at}: {why}", path.display());
                if policy == OnBadRecord::Fail {
                    return Err(Error::InvalidInput(format!("{msg} (use --on-bad-record skip to leave such records out)")));
                }
                out.too_long += why.contains("more than the limit") as usize;
                out.skipped += 1;
                if out.skipped <= 3 {
                    warn(&format!("skipped {msg}"));
                }
            }
        }
    }
    if out.examples.is_empty() {
        return Err(Error::invalid_file(path, "no usable training records"));
    }
    Ok(out)
}

/// Reads `path` (a JSON array or JSON lines) into examples of at most `max_len` tokens;
/// bad records (malformed, unrenderable, too long) as [`load_with`] says.
pub fn load_examples(path: &Path, tok: &Tokenizer, max_len: usize, policy: OnBadRecord, warn: &mut dyn FnMut(&str)) -> Result<Loaded<Example>> {
    load_with(path, policy, warn, &|v| {
        let e = record_messages(&v).and_then(|m| encode_conversation(tok, &m))?;
        if e.tokens.len() > max_len {
            return Err(too_long(e.tokens.len(), max_len));
        }
        Ok(e)
    })
}

/// A preference pair as two training sequences (prompt + answer) scored on the answer.
#[derive(Debug, Clone, PartialEq)]
pub struct PairExample {
    pub chosen: Example,
    pub rejected: Example,
}

fn answer_example(prompt: &[u32], answer: &[u32]) -> Example {
    let seq: Vec<u32> = prompt.iter().chain(answer).copied().collect();
    let targets = seq[1..].iter().enumerate().map(|(i, &t)| if i + 1 >= prompt.len() { t } else { IGNORE }).collect();
    Example { tokens: seq[..seq.len() - 1].to_vec(), targets }
}

impl PairExample {
    pub fn new(e: &EncodedPair) -> PairExample {
        PairExample { chosen: answer_example(&e.prompt, &e.chosen), rejected: answer_example(&e.prompt, &e.rejected) }
    }
}

/// Reads preference pairs (see [`preference_pair`]) of at most `max_len` tokens each side;
/// a pair longer is a bad record.
pub fn load_pairs(path: &Path, tok: &Tokenizer, max_len: usize, policy: OnBadRecord, warn: &mut dyn FnMut(&str)) -> Result<Loaded<PairExample>> {
    load_with(path, policy, warn, &|v| {
        let e = encode_pair(tok, &preference_pair(&v)?)?;
        if e.chosen.is_empty() || e.rejected.is_empty() {
            return Err("an answer is empty".into());
        }
        let n = e.prompt.len() + e.chosen.len().max(e.rejected.len()) - 1;
        if n > max_len {
            return Err(too_long(n, max_len));
        }
        Ok(PairExample::new(&e))
    })
}
