//! Loading Hugging Face tokenizer folders: `tokenizer.json` for the tokenizer itself, and
//! the side files that say which tokens are BOS/EOS, whether BOS is added, and the chat
//! template (`tokenizer_config.json`, `special_tokens_map.json`, `generation_config.json`).

use crate::tokenizer::{tok_err, SpecialInfo, Tokenizer};
use lamina_core::{Error, Result};
use serde_json::Value;
use std::path::Path;

pub(crate) fn read_tokenizer_json(path: &Path) -> Result<tokenizers::Tokenizer> {
    let bytes = lamina_core::fs::read_regular(path)?;
    tokenizers::Tokenizer::from_bytes(&bytes).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display())))
}

/// Reads an optional JSON side file: a missing file is `None`, a broken one is an error
/// (silently ignoring it would, say, drop the chat template without telling anyone).
fn read_json(path: &Path) -> Result<Option<Value>> {
    match lamina_core::fs::read_regular(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Tokenizer(format!("{}: {e}", path.display()))),
        Err(Error::Io { error, .. }) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Special tokens appear either as plain strings or as `{"content": "...", ...}` objects.
fn token_text(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) => Some(s),
        Value::Object(o) => o.get("content").and_then(Value::as_str),
        _ => None,
    }
}

/// `chat_template` is a string, or a list of named templates of which `default` is the one
/// for plain chat (others are for tool use or RAG).
fn chat_template(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let named = |n: &str| items.iter().find(|t| t.get("name").and_then(Value::as_str) == Some(n));
            named("default").or_else(|| items.first()).and_then(|t| t.get("template")).and_then(Value::as_str).map(str::to_string)
        }
        _ => None,
    }
}

fn ids_of(v: &Value) -> Vec<u32> {
    match v {
        Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()).into_iter().collect(),
        Value::Array(a) => a.iter().flat_map(ids_of).collect(),
        _ => Vec::new(),
    }
}

pub(crate) fn from_dir(dir: &Path) -> Result<Tokenizer> {
    let tokenizer_json = dir.join("tokenizer.json");
    if !tokenizer_json.exists() {
        return Err(Error::MissingTokenizer(dir.to_path_buf()));
    }
    let inner = read_tokenizer_json(&tokenizer_json)?;
    let config = read_json(&dir.join("tokenizer_config.json"))?;
    let special_map = read_json(&dir.join("special_tokens_map.json"))?;
    let generation = read_json(&dir.join("generation_config.json"))?;

    let id_of = |key: &str| -> Option<u32> {
        [config.as_ref(), special_map.as_ref()].into_iter().flatten().find_map(|c| c.get(key).and_then(token_text)).and_then(|t| inner.token_to_id(t))
    };

    let mut info = SpecialInfo {
        bos_id: id_of("bos_token"),
        eos_id: id_of("eos_token"),
        unk_id: id_of("unk_token"),
        pad_id: id_of("pad_token"),
        ..SpecialInfo::default()
    };
    if let Some(c) = &config {
        info.add_bos = c.get("add_bos_token").and_then(Value::as_bool).unwrap_or(false);
        info.add_eos = c.get("add_eos_token").and_then(Value::as_bool).unwrap_or(false);
        info.chat_template = c.get("chat_template").and_then(chat_template);
    }
    if info.chat_template.is_none() {
        // Newer exports keep the template in its own file.
        let jinja = dir.join("chat_template.jinja");
        if jinja.exists() {
            info.chat_template = Some(lamina_core::fs::read_regular_to_string(&jinja)?);
        }
    }
    if let Some(g) = &generation {
        let eos = g.get("eos_token_id").map(ids_of).unwrap_or_default();
        if info.eos_id.is_none() {
            info.eos_id = eos.first().copied();
        }
        info.extra_eos_ids = eos;
        if info.bos_id.is_none() {
            info.bos_id = g.get("bos_token_id").map(ids_of).and_then(|v| v.first().copied());
        }
    }
    if info.add_bos && info.bos_id.is_none() {
        return Err(tok_err(format!("{}: add_bos_token is set but no BOS token is defined", dir.display())));
    }
    Tokenizer::assemble(inner, info)
}
