//! Rebuilding a tokenizer from GGUF metadata.
//!
//! A GGUF file carries its vocabulary as parallel arrays (`tokenizer.ggml.tokens`,
//! `token_type`, `scores` or `merges`) plus a `pre` name that tells llama.cpp which
//! hard-coded pre-tokenizer regex to use. We translate that into an equivalent
//! `tokenizers::Tokenizer`, so the rest of Lamina has a single tokenizer implementation
//! and GGUF models tokenize exactly as llama.cpp does.

use crate::tokenizer::{parse_byte_token, tok_err, SpecialInfo, Tokenizer};
use candle_core::quantized::gguf_file::{Content, Value};
use lamina_core::{Error, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// llama.cpp's token attributes (`tokenizer.ggml.token_type`).
const TYPE_UNKNOWN: i32 = 2;
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;
const TYPE_BYTE: i32 = 6;

/// Gemma's turn format: a system message opens the first user turn; the assistant's role
/// is `model`.
const GEMMA_TURNS: &str = "{{ bos_token }}\
{%- if messages and messages[0]['role'] == 'system' -%}{%- set first = messages[0]['content'] ~ '\n\n' -%}{%- set rest = messages[1:] -%}\
{%- else -%}{%- set first = '' -%}{%- set rest = messages -%}{%- endif -%}\
{%- for m in rest -%}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n\
{{ (first if loop.first else '') ~ (m['content'] | trim) }}<end_of_turn>\n\
{% endfor -%}\
{%- if add_generation_prompt -%}<start_of_turn>model\n{% endif -%}";

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

/// Llama 3: case-insensitive contractions, numbers in groups of up to three, and a letter
/// run may take one leading non-letter (usually a space).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2: as Llama 3 but every digit stands alone.
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// GGUF metadata keys read as typed values; each accessor says which key was wrong.
struct Meta<'a> {
    path: &'a Path,
    md: &'a HashMap<String, Value>,
}

impl Meta<'_> {
    fn bad(&self, key: &str, what: &str) -> Error {
        Error::invalid_file(self.path, format!("metadata `{key}` is not {what}"))
    }

    fn string(&self, key: &str) -> Result<Option<String>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(key, "a string")),
        }
    }

    fn u32(&self, key: &str) -> Result<Option<u32>> {
        let Some(v) = self.md.get(key) else {
            return Ok(None);
        };
        let n: i128 = match v {
            Value::U8(x) => (*x).into(),
            Value::I8(x) => (*x).into(),
            Value::U16(x) => (*x).into(),
            Value::I16(x) => (*x).into(),
            Value::U32(x) => (*x).into(),
            Value::I32(x) => (*x).into(),
            Value::U64(x) => (*x).into(),
            Value::I64(x) => (*x).into(),
            _ => return Err(self.bad(key, "an integer")),
        };
        // Some converters write -1 for "no such token".
        Ok(u32::try_from(n).ok())
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.bad(key, "a boolean")),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&Vec<Value>>> {
        match self.md.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.bad(key, "an array")),
        }
    }

    fn strings(&self, key: &str) -> Result<Option<Vec<String>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(self.bad(key, "an array of strings")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn ints(&self, key: &str) -> Result<Option<Vec<i32>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| match v {
                Value::I32(x) => Ok(*x),
                Value::U32(x) => i32::try_from(*x).map_err(|_| self.bad(key, "a token type array")),
                Value::I8(x) => Ok((*x).into()),
                Value::U8(x) => Ok((*x).into()),
                _ => Err(self.bad(key, "an array of integers")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    fn floats(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(a) = self.array(key)? else {
            return Ok(None);
        };
        a.iter()
            .map(|v| match v {
                Value::F32(x) => Ok(*x),
                Value::F64(x) => Ok(*x as f32),
                _ => Err(self.bad(key, "an array of floats")),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

pub(crate) fn from_gguf(path: &Path) -> Result<Tokenizer> {
    if !path.exists() {
        return Err(Error::ModelNotFound(path.to_path_buf()));
    }
    let file = lamina_core::fs::open_regular(path)?;
    let mut reader = std::io::BufReader::new(file);
    let content = Content::read(&mut reader).map_err(|e| Error::invalid_file(path, e))?;
    from_metadata(path, &content.metadata)
}

/// Builds the tokenizer from already-read GGUF metadata (the model loader has it anyway).
pub(crate) fn from_metadata(path: &Path, md: &HashMap<String, Value>) -> Result<Tokenizer> {
    let meta = Meta { path, md };
    let (Some(model), Some(tokens)) = (meta.string("tokenizer.ggml.model")?, meta.strings("tokenizer.ggml.tokens")?) else {
        return Err(Error::MissingTokenizer(path.to_path_buf()));
    };
    if tokens.is_empty() {
        return Err(Error::MissingTokenizer(path.to_path_buf()));
    }
    let types = match meta.ints("tokenizer.ggml.token_type")? {
        Some(t) if t.len() == tokens.len() => t,
        Some(t) => return Err(Error::invalid_file(path, format!("{} token types for {} tokens", t.len(), tokens.len()))),
        None => vec![1; tokens.len()],
    };
    let check_id = |key: &str| -> Result<Option<u32>> {
        match meta.u32(key)? {
            Some(id) if id as usize >= tokens.len() => {
                Err(Error::invalid_file(path, format!("`{key}` = {id} is outside the vocabulary of {} tokens", tokens.len())))
            }
            other => Ok(other),
        }
    };
    let unk_id = check_id("tokenizer.ggml.unknown_token_id")?.or_else(|| types.iter().position(|&t| t == TYPE_UNKNOWN).map(|i| i as u32));
    let mut info = SpecialInfo {
        bos_id: check_id("tokenizer.ggml.bos_token_id")?,
        eos_id: check_id("tokenizer.ggml.eos_token_id")?,
        unk_id,
        pad_id: check_id("tokenizer.ggml.padding_token_id")?,
        chat_template: meta.string("tokenizer.chat_template")?,
        vocab_size: Some(tokens.len()),
        ..SpecialInfo::default()
    };
    if info.chat_template.is_none() && ["<start_of_turn>", "<end_of_turn>"].iter().all(|t| tokens.iter().any(|x| x == t)) {
        // A Gemma vocabulary without a template (the pre-trained models ship none): the
        // turn format Gemma's instruction-tuned models use.
        info.chat_template = Some(GEMMA_TURNS.to_string());
    }
    for key in ["tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"] {
        info.extra_eos_ids.extend(check_id(key)?);
    }
    // llama.cpp's defaults: SentencePiece models start with BOS, BPE models do not.
    info.add_bos = meta.bool("tokenizer.ggml.add_bos_token")?.unwrap_or(model == "llama");
    info.add_eos = meta.bool("tokenizer.ggml.add_eos_token")?.unwrap_or(false);

    let mut inner = match model.as_str() {
        "gpt2" => {
            let merges =
                meta.strings("tokenizer.ggml.merges")?.ok_or_else(|| Error::invalid_file(path, "byte-level BPE vocabulary without tokenizer.ggml.merges"))?;
            let pre = meta.string("tokenizer.ggml.pre")?.unwrap_or_else(|| "default".to_string());
            build_byte_level_bpe(path, &tokens, &merges, &pre)?
        }
        "llama" => {
            let scores =
                meta.floats("tokenizer.ggml.scores")?.ok_or_else(|| Error::invalid_file(path, "SentencePiece vocabulary without tokenizer.ggml.scores"))?;
            if scores.len() != tokens.len() {
                return Err(Error::invalid_file(path, format!("{} scores for {} tokens", scores.len(), tokens.len())));
            }
            let add_space_prefix = meta.bool("tokenizer.ggml.add_space_prefix")?.unwrap_or(true);
            let unk = info.unk_id.map(|i| tokens[i as usize].clone());
            build_sentencepiece_bpe(path, &tokens, &types, &scores, unk, add_space_prefix)?
        }
        other => return Err(Error::Tokenizer(format!("{}: tokenizer model `{other}` is not supported (supported: gpt2, llama)", path.display()))),
    };

    add_special_tokens(&mut inner, &tokens, &types);
    set_post_processor(&mut inner, &tokens, &info)?;
    Tokenizer::assemble(inner, info)
}

/// The GGUF vocabulary as a map, keeping the first id of any duplicated string (the
/// `tokenizers` models need unique strings; later duplicates are unreachable anyway).
fn vocab_map(tokens: &[String]) -> Vocab {
    let mut vocab = Vocab::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        vocab.entry(t.clone()).or_insert(id as u32);
    }
    vocab
}

fn build_byte_level_bpe(path: &Path, tokens: &[String], merges: &[String], pre: &str) -> Result<tokenizers::Tokenizer> {
    let merges = merges
        .iter()
        .map(|m| {
            // The separator is the first space after the first character: neither half
            // contains a literal space in a byte-level vocabulary (spaces are `Ġ`).
            let cut = m.char_indices().skip(1).find(|&(_, c)| c == ' ').map(|(i, _)| i);
            match cut {
                Some(i) => Ok((m[..i].to_string(), m[i + 1..].to_string())),
                None => Err(Error::invalid_file(path, format!("malformed merge `{m}`"))),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    // A merge whose halves or result are not in the vocabulary can never apply; llama.cpp
    // keeps it as an unused rank, the tokenizers crate refuses it, so we drop it.
    let vocab = vocab_map(tokens);
    let merges: Vec<(String, String)> =
        merges.into_iter().filter(|(a, b)| vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&format!("{a}{b}"))).collect();
    let bpe = BPE::builder().vocab_and_merges(vocab, merges).build().map_err(|e| Error::invalid_file(path, format!("BPE vocabulary: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);
    tok.with_pre_tokenizer(Some(byte_level_pre_tokenizer(pre)?));
    tok.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tok)
}

/// The pre-tokenizer llama.cpp uses for a `tokenizer.ggml.pre` name. The regex splits
/// text into words first; merges never cross word boundaries, so a wrong split gives
/// different ids even with the right vocabulary.
fn byte_level_pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    // ByteLevel with `use_regex` applies the GPT-2 split itself.
    let gpt2 = || PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true));
    let regex_then_bytes = |regex: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(SplitPattern::Regex(regex.to_string()), SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?;
        Ok(PreTokenizerWrapper::Sequence(PreSequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()])))
    };
    Ok(match pre {
        "gpt-2" | "gpt2" | "default" | "mpt" | "olmo" | "jais" => gpt2(),
        // StarCoder-family vocabularies (SmolLM among them) split every digit off first.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" | "minerva" => {
            PreTokenizerWrapper::Sequence(PreSequence::new(vec![Digits::new(true).into(), gpt2()]))
        }
        "llama-bpe" | "llama3" | "llama-v3" | "smaug-bpe" | "dbrx" | "falcon3" => regex_then_bytes(LLAMA3_REGEX)?,
        "qwen2" | "deepseek-r1-qwen" | "stablelm2" | "megrez" | "hunyuan" => regex_then_bytes(QWEN2_REGEX)?,
        other => {
            tracing::warn!("unknown tokenizer.ggml.pre `{other}`; using the GPT-2 pre-tokenizer");
            gpt2()
        }
    })
}

/// SentencePiece vocabularies store scores instead of merges. A BPE merge `a + b` exists
/// when `ab`, `a` and `b` are all pieces, and merges of higher-scored pieces apply first;
/// this is the merge order llama.cpp's SentencePiece tokenizer follows.
fn build_sentencepiece_bpe(
    path: &Path,
    tokens: &[String],
    types: &[i32],
    scores: &[f32],
    unk: Option<String>,
    add_space_prefix: bool,
) -> Result<tokenizers::Tokenizer> {
    let vocab = vocab_map(tokens);
    let mergeable = |id: usize| !matches!(types[id], TYPE_CONTROL | TYPE_BYTE | TYPE_UNKNOWN);
    let mut merges: Vec<(f32, u32, u32, usize)> = Vec::new();
    for (id, piece) in tokens.iter().enumerate() {
        if !mergeable(id) || vocab.get(piece) != Some(&(id as u32)) {
            continue;
        }
        for (cut, _) in piece.char_indices().skip(1) {
            let (l, r) = piece.split_at(cut);
            if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                if mergeable(li as usize) && mergeable(ri as usize) {
                    merges.push((scores[id], li, ri, id));
                }
            }
        }
    }
    // Highest score first; equal scores by the ids of the halves, for a stable order.
    merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    let merges = merges.into_iter().map(|(_, l, r, _)| (tokens[l as usize].clone(), tokens[r as usize].clone())).collect();

    let mut builder = BPE::builder().vocab_and_merges(vocab, merges).byte_fallback(true).fuse_unk(true);
    if let Some(unk) = unk {
        builder = builder.unk_token(unk);
    }
    let bpe = builder.build().map_err(|e| Error::invalid_file(path, format!("BPE vocabulary: {e}")))?;
    let mut tok = tokenizers::Tokenizer::new(bpe);

    let replace = Replace::new(" ", SPM_SPACE).map_err(tok_err)?;
    let normalizer: NormalizerWrapper =
        if add_space_prefix { NormalizerSequence::new(vec![Prepend::new(SPM_SPACE.to_string()).into(), replace.into()]).into() } else { replace.into() };
    tok.with_normalizer(Some(normalizer));

    let mut decoders: Vec<DecoderWrapper> = vec![Replace::new(SPM_SPACE, " ").map_err(tok_err)?.into(), ByteFallback::new().into(), Fuse::new().into()];
    if add_space_prefix {
        // Undo the space the normalizer put in front of the text.
        decoders.push(Strip::new(' ', 1, 0).into());
    }
    tok.with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(tok)
}

/// Control, user-defined and unknown tokens are matched whole in the input text before
/// the model sees it, as llama.cpp does when parsing special tokens; control and unknown
/// tokens are also "special", so `skip_special` drops them when decoding.
fn add_special_tokens(tok: &mut tokenizers::Tokenizer, tokens: &[String], types: &[i32]) {
    let added: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter_map(|(t, &ty)| match ty {
            TYPE_CONTROL | TYPE_UNKNOWN if !t.is_empty() => Some(AddedToken::from(t.clone(), true)),
            TYPE_USER_DEFINED if !t.is_empty() && parse_byte_token(t).is_none() => Some(AddedToken::from(t.clone(), false).normalized(false)),
            _ => None,
        })
        .collect();
    tok.add_special_tokens(&added.iter().filter(|t| t.special).cloned().collect::<Vec<_>>());
    tok.add_tokens(&added.into_iter().filter(|t| !t.special).collect::<Vec<_>>());
}

/// BOS/EOS insertion as a post-processor, so the in-memory tokenizer is self-contained:
/// saved as tokenizer.json it still adds them.
fn set_post_processor(tok: &mut tokenizers::Tokenizer, tokens: &[String], info: &SpecialInfo) -> Result<()> {
    let bos = info.bos_id.filter(|_| info.add_bos);
    let eos = info.eos_id.filter(|_| info.add_eos);
    if bos.is_none() && eos.is_none() {
        return Ok(());
    }
    // Template pieces name entries of the special-token table; the names are our own so
    // that token texts containing `:` or spaces cannot confuse the template parser.
    let mut specials = Vec::new();
    let mut single = Vec::new();
    if let Some(id) = bos {
        specials.push(SpecialToken::new("BOS".into(), vec![id], vec![tokens[id as usize].clone()]).map_err(tok_err)?);
        single.push("BOS");
    }
    single.push("$A");
    if let Some(id) = eos {
        specials.push(SpecialToken::new("EOS".into(), vec![id], vec![tokens[id as usize].clone()]).map_err(tok_err)?);
        single.push("EOS");
    }
    let single = single.join(" ");
    let pair = format!("{single} {}", single.replace("$A", "$B:1"));
    let processor = TemplateProcessing::builder()
        .try_single(single.as_str())
        .map_err(tok_err)?
        .try_pair(pair.as_str())
        .map_err(tok_err)?
        .special_tokens(specials)
        .build()
        .map_err(tok_err)?;
    tok.with_post_processor(Some(processor));
    Ok(())
}

/// GPT-2's byte-level alphabet, reversed: printable characters stand for bytes, so that
/// every byte string is a printable token string. Bytes that are already printable and
/// not space map to themselves; the rest map to code points from U+0100 upward.
pub(crate) fn byte_level_decoder_table() -> &'static HashMap<char, u8> {
    static TABLE: OnceLock<HashMap<char, u8>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut next = 256u32;
        (0..=255u8)
            .map(|b| {
                let c = if printable(b) {
                    char::from(b)
                } else {
                    let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
                    next += 1;
                    c
                };
                (c, b)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokenizers::{OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer};

    fn split(pre: &str, text: &str) -> Vec<String> {
        let p = byte_level_pre_tokenizer(pre).unwrap();
        let mut s = PreTokenizedString::from(text);
        p.pre_tokenize(&mut s).unwrap();
        let table = byte_level_decoder_table();
        s.get_splits(OffsetReferential::Original, OffsetType::Byte)
            .into_iter()
            .map(|(piece, _, _)| {
                let bytes: Vec<u8> = piece.chars().map(|c| table[&c]).collect();
                String::from_utf8(bytes).unwrap()
            })
            .collect()
    }

    #[test]
    fn pre_tokenizers_split_like_llama_cpp() {
        assert_eq!(split("gpt-2", "it's 12345 ok"), ["it", "'s", " 12345", " ok"]);
        assert_eq!(split("smollm", "it's 12345"), ["it", "'s", " ", "1", "2", "3", "4", "5"]);
        assert_eq!(split("llama-bpe", "IT'S 12345\n\nok"), ["IT", "'S", " ", "123", "45", "\n\n", "ok"]);
        assert_eq!(split("qwen2", "a 123"), ["a", " ", "1", "2", "3"]);
        assert_eq!(split("some-future-pre", "hello world"), ["hello", " world"]);
    }

    #[test]
    fn byte_table_covers_every_byte_once() {
        let table = byte_level_decoder_table();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'Ġ'], b' ');
        assert_eq!(table[&'Ċ'], b'\n');
        assert_eq!(table[&'a'], b'a');
    }
}
