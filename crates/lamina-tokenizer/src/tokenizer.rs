//! The [`Tokenizer`] type: a `tokenizers::Tokenizer` plus the model-level facts that the
//! `tokenizers` crate does not track (which ids are BOS/EOS, which ids end a turn, whether
//! BOS is added, the chat template).

use crate::chat::{ChatMessage, ChatTemplate};
use crate::stream::DecodeStream;
use lamina_core::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;
use tokenizers::DecoderWrapper;

/// Token texts that end an assistant turn in common chat formats. A model stops generating
/// at any of these (not only at its declared EOS), because chat fine-tunes often declare
/// `<|endoftext|>` as EOS yet end every reply with their own end-of-turn marker.
pub(crate) const END_OF_TURN_TOKENS: &[&str] =
    &["<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>"];

/// A tokenizer for one model.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    pub(crate) inner: tokenizers::Tokenizer,
    pub(crate) bos_id: Option<u32>,
    pub(crate) eos_id: Option<u32>,
    pub(crate) unk_id: Option<u32>,
    pub(crate) pad_id: Option<u32>,
    pub(crate) eog_ids: BTreeSet<u32>,
    pub(crate) add_bos: bool,
    pub(crate) add_eos: bool,
    pub(crate) chat_template: Option<String>,
    pub(crate) vocab_size: usize,
    /// Whether the inner post-processor already inserts BOS/EOS when asked for special
    /// tokens; if so we must not add them a second time.
    post_adds_bos: bool,
    post_adds_eos: bool,
    /// Whether pieces are GPT-2 byte-level strings (`Ġ` for space) that need mapping back
    /// to bytes when shown to a user.
    byte_level: bool,
    /// How few tokens a text can encode to, when the tokenizer's pipeline guarantees a
    /// bound (see [`Tokenizer::min_tokens`]).
    length_bound: Option<LengthBound>,
}

/// At least one token per `longest` bytes of a text, not counting bytes that may vanish
/// (byte-level vocabularies without a token for some byte drop that byte).
#[derive(Debug, Clone)]
struct LengthBound {
    longest: usize,
    vanishing: Option<Box<[bool; 256]>>,
}

/// The facts about a tokenizer that come from outside `tokenizer.json` (GGUF metadata,
/// `tokenizer_config.json`, `generation_config.json`). Absent fields are guessed from the
/// vocabulary.
#[derive(Debug, Default, Clone)]
pub(crate) struct SpecialInfo {
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub extra_eos_ids: Vec<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    pub chat_template: Option<String>,
    pub vocab_size: Option<usize>,
}

pub(crate) fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Assembles a tokenizer from a built `tokenizers::Tokenizer` and its special-token facts.
    /// Padding and truncation are switched off: they are batching policies, and a
    /// tokenizer.json that pads every input to 128 tokens would otherwise leak `[PAD]` ids
    /// into every encode.
    pub(crate) fn assemble(mut inner: tokenizers::Tokenizer, info: SpecialInfo) -> Result<Self> {
        inner.with_padding(None);
        inner.with_truncation(None).map_err(tok_err)?;

        let vocab = inner.get_vocab(true);
        let max_id = vocab.values().copied().max().map(|m| m as usize + 1).unwrap_or(0);
        let vocab_size = info.vocab_size.unwrap_or(0).max(max_id);

        let find = |names: &[&str]| names.iter().find_map(|n| vocab.get(*n).copied());
        let bos_id = info.bos_id.or_else(|| find(&["<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>"]));
        let eos_id = info.eos_id.or_else(|| find(&["</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|im_end|>"]));
        let unk_id = info.unk_id.or_else(|| find(&["<unk>", "[UNK]", "<|unk|>"]));
        let pad_id = info.pad_id.or_else(|| find(&["<pad>", "[PAD]", "<|pad|>"]));

        let mut eog_ids: BTreeSet<u32> = info.extra_eos_ids.iter().copied().collect();
        eog_ids.extend(eos_id);
        eog_ids.extend(END_OF_TURN_TOKENS.iter().filter_map(|t| vocab.get(*t).copied()));

        let probe = inner.encode_fast("", true).ok().map(|e| e.get_ids().to_vec()).unwrap_or_default();
        let post_adds_bos = bos_id.is_some_and(|b| probe.first() == Some(&b));
        let post_adds_eos = eos_id.is_some_and(|e| probe.last() == Some(&e));
        let byte_level = inner.get_decoder().is_some_and(decoder_is_byte_level);
        let length_bound = length_bound(&inner);

        Ok(Tokenizer {
            inner,
            bos_id,
            eos_id,
            unk_id,
            pad_id,
            eog_ids,
            add_bos: info.add_bos,
            add_eos: info.add_eos,
            chat_template: info.chat_template,
            vocab_size,
            post_adds_bos,
            post_adds_eos,
            byte_level,
            length_bound,
        })
    }

    /// Wraps an existing `tokenizers::Tokenizer`, guessing special tokens from the
    /// vocabulary (no BOS is added unless its post-processor adds one).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Result<Self> {
        Self::assemble(inner, SpecialInfo::default())
    }

    /// Loads a Hugging Face `tokenizer.json` on its own (no `tokenizer_config.json`).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let inner = crate::hf::read_tokenizer_json(path)?;
        Self::assemble(inner, SpecialInfo::default())
    }

    /// Loads `tokenizer.json` from a model folder, together with `tokenizer_config.json`,
    /// `special_tokens_map.json` and `generation_config.json` where present.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        crate::hf::from_dir(dir.as_ref())
    }

    /// Builds the tokenizer stored in a GGUF file's metadata.
    pub fn from_gguf(path: impl AsRef<Path>) -> Result<Self> {
        crate::gguf::from_gguf(path.as_ref())
    }

    /// Builds the tokenizer from GGUF metadata that a model loader has already read;
    /// `path` is only used in error messages.
    pub fn from_gguf_metadata(path: impl AsRef<Path>, metadata: &std::collections::HashMap<String, candle_core::quantized::gguf_file::Value>) -> Result<Self> {
        crate::gguf::from_metadata(path.as_ref(), metadata)
    }

    /// Token ids for `text`. Special-token texts in `text` (such as `<|im_start|>`) become
    /// their single ids, because chat prompts are rendered as text that contains them.
    /// `add_special` adds BOS/EOS as the model asks for (`add_bos`/`add_eos`) and runs the
    /// tokenizer.json post-processor (e.g. BERT's `[CLS] … [SEP]`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode_fast(text, add_special).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if add_special {
            if let Some(bos) = self.bos_id.filter(|_| self.add_bos && !self.post_adds_bos) {
                ids.insert(0, bos);
            }
            if let Some(eos) = self.eos_id.filter(|_| self.add_eos && !self.post_adds_eos) {
                ids.push(eos);
            }
        }
        Ok(ids)
    }

    /// Token ids for `text` with special tokens (as [`Tokenizer::encode`] with
    /// `add_special`), at most `max_tokens` of them: when too long, the text's own tokens
    /// are cut at the end to leave room for the special ones, so `[CLS] … [SEP]` stays
    /// whole — Hugging Face's truncation, which sentence-transformers applies. Returns the
    /// ids and whether anything was cut.
    pub fn encode_truncated(&self, text: &str, max_tokens: usize) -> Result<(Vec<u32>, bool)> {
        use tokenizers::{PostProcessor, TruncationDirection};
        let mut enc = self.inner.encode_fast(text, false).map_err(tok_err)?;
        let bos = self.bos_id.filter(|_| self.add_bos && !self.post_adds_bos);
        let eos = self.eos_id.filter(|_| self.add_eos && !self.post_adds_eos);
        let added = self.inner.get_post_processor().map_or(0, |p| p.added_tokens(false)) + bos.is_some() as usize + eos.is_some() as usize;
        if max_tokens <= added {
            return Err(Error::InvalidInput(format!("a limit of {max_tokens} tokens leaves no room beside the {added} special tokens")));
        }
        let cut = enc.len() > max_tokens - added;
        if cut {
            enc.truncate(max_tokens - added, 0, TruncationDirection::Right);
        }
        let enc = self.inner.post_process(enc, None, true).map_err(tok_err)?;
        let mut ids = enc.get_ids().to_vec();
        if let Some(b) = bos {
            ids.insert(0, b);
        }
        ids.extend(eos);
        Ok((ids, cut))
    }

    /// A lower bound on the number of tokens `text` encodes to (BOS and EOS not counted),
    /// computed from its length alone: its bytes divided by the most bytes one token can
    /// stand for, rounded up. Byte-level BPE can emit a token per byte, so nothing better
    /// holds in general; bytes the vocabulary has no token for (they are dropped) are not
    /// counted. It is 0 (no bound) for tokenizers whose pipeline can shrink or drop text:
    /// a normalizer other than prepend / replace-with-longer (NFKC, lowercase, strip), a
    /// pre-tokenizer that removes whitespace (BERT's), added tokens that swallow the spaces
    /// around them, a model other than BPE, or a BPE that can drop unknown characters or
    /// fuse a run of them into one token. One pass over the bytes, no tokenizing.
    pub fn min_tokens(&self, text: &str) -> usize {
        let Some(b) = &self.length_bound else {
            return 0;
        };
        let counted = match &b.vanishing {
            None => text.len(),
            Some(v) => text.bytes().filter(|&x| !v[x as usize]).count(),
        };
        counted.div_ceil(b.longest)
    }

    /// Refuses `text` by its length alone when it cannot encode to at most `max_tokens`
    /// tokens (see [`Tokenizer::min_tokens`]), before spending time and memory on
    /// tokenizing it. Passing says nothing: the encoded text still has to be checked.
    pub fn check_fits(&self, text: &str, max_tokens: usize) -> Result<()> {
        let min_tokens = self.min_tokens(text);
        if min_tokens > max_tokens {
            return Err(Error::PromptTooLongBytes { bytes: text.len(), min_tokens, max_tokens });
        }
        Ok(())
    }

    /// Text for `ids`. With `skip_special`, control tokens such as `<|im_end|>` are left out.
    /// Ids outside the vocabulary are an error rather than silently dropped, because they
    /// mean the caller and the model disagree about the vocabulary.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(Error::Tokenizer(format!("token id {bad} is outside the vocabulary (size {})", self.vocab_size)));
        }
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }

    /// A streaming decoder that yields text as soon as whole characters are available.
    pub fn decode_stream(&self, skip_special: bool) -> DecodeStream<'_> {
        DecodeStream::new(self, skip_special)
    }

    /// The text one token stands for, as a user would read it: byte-level pieces are mapped
    /// back to bytes (`Ġworld` → ` world`), SentencePiece's `▁` becomes a space and
    /// `<0x0A>` becomes its byte. Incomplete UTF-8 shows as U+FFFD. Special tokens show
    /// their text. Unknown ids give an empty string.
    pub fn token_to_piece(&self, id: u32) -> String {
        String::from_utf8_lossy(&self.token_bytes(id)).into_owned()
    }

    /// The bytes one token stands for ([`token_to_piece`](Self::token_to_piece) before
    /// UTF-8 decoding: a token may hold part of a character).
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(raw) = self.inner.id_to_token(id) else {
            return Vec::new();
        };
        if self.inner.get_added_vocabulary().is_special_token(&raw) {
            return raw.into_bytes();
        }
        if self.byte_level {
            let table = crate::gguf::byte_level_decoder_table();
            let bytes: Option<Vec<u8>> = raw.chars().map(|c| table.get(&c).copied()).collect();
            return bytes.unwrap_or_else(|| raw.into_bytes());
        }
        if let Some(b) = parse_byte_token(&raw) {
            return vec![b];
        }
        raw.replace('\u{2581}', " ").into_bytes()
    }

    /// Whether `id` is a control token (`<|im_end|>`): its text never comes from encoding
    /// plain text, and decoding with `skip_special` leaves it out.
    pub fn is_special(&self, id: u32) -> bool {
        self.inner.id_to_token(id).is_some_and(|t| self.inner.get_added_vocabulary().is_special_token(&t))
    }

    /// The vocabulary string of `id` (`Ġworld`, `▁the`, `<0x0A>`), or `None` if unknown.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The id of a vocabulary string, or `None` if it is not in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Whether generation should stop after sampling `id`.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog_ids.contains(&id)
    }

    /// All ids that stop generation (EOS and end-of-turn markers), ascending.
    pub fn end_of_generation_ids(&self) -> Vec<u32> {
        self.eog_ids.iter().copied().collect()
    }

    /// Number of ids (one more than the largest id), which is the size of the model's
    /// embedding table even if some ids have no string.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos_id
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos_id
    }

    pub fn unk_id(&self) -> Option<u32> {
        self.unk_id
    }

    pub fn pad_id(&self) -> Option<u32> {
        self.pad_id
    }

    /// Whether `encode(_, true)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos || self.post_adds_bos
    }

    /// Whether `encode(_, true)` ends with EOS.
    pub fn add_eos(&self) -> bool {
        self.add_eos || self.post_adds_eos
    }

    pub fn set_add_bos(&mut self, add_bos: bool) {
        self.add_bos = add_bos;
    }

    pub fn set_add_eos(&mut self, add_eos: bool) {
        self.add_eos = add_eos;
    }

    /// Marks one more id as ending generation (e.g. from a user's `--stop-token`).
    pub fn add_end_of_generation_id(&mut self, id: u32) {
        self.eog_ids.insert(id);
    }

    /// The Jinja chat template that came with the model, if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Replaces the chat template (e.g. a user-supplied one for a model that has none).
    pub fn set_chat_template(&mut self, template: Option<String>) {
        self.chat_template = template;
    }

    /// The wrapped `tokenizers::Tokenizer`, for features this type does not expose.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Renders `messages` with the model's chat template into the prompt text (which still
    /// has to be encoded). `add_generation_prompt` appends the opening of an assistant turn.
    pub fn apply_chat_template(&self, messages: &[ChatMessage], add_generation_prompt: bool) -> Result<String> {
        self.chat_template_compiled()?.render(messages, add_generation_prompt)
    }

    /// The model's chat template, compiled (for rendering with tools, or asking whether it
    /// handles them).
    pub fn chat_template_compiled(&self) -> Result<ChatTemplate> {
        let source = self.chat_template.as_deref().ok_or_else(|| {
            Error::ChatTemplate(
                "this model has no chat template (tokenizer.chat_template / tokenizer_config.json); \
                 use plain completion or supply a template"
                    .to_string(),
            )
        })?;
        let name = |id: Option<u32>| id.and_then(|i| self.inner.id_to_token(i)).unwrap_or_default();
        ChatTemplate::new(source, name(self.bos_id), name(self.eos_id))
    }

    /// Writes `tokenizer.json`. The file is written beside its destination and renamed
    /// into place, so a crash never leaves a half-written tokenizer that later fails to load.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let json = self.inner.to_string(false).map_err(tok_err)?;
        if path.file_name().is_none() {
            return Err(Error::InvalidInput(format!("{} is not a file path", path.display())));
        }
        lamina_core::fs::write_bytes_atomic(path, json.as_bytes())
    }
}

/// Parses SentencePiece byte-fallback pieces of the form `<0xAB>`.
pub(crate) fn parse_byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The length bound of a tokenizer, if its pipeline guarantees one. Every token of a BPE
/// model stands for exactly its piece in the normalized, pre-tokenized text, except
/// byte-fallback tokens (one byte) and unknown-character tokens (one character, at most 4
/// bytes, unless runs of them are fused); a byte-level piece stands for one input byte per
/// character. So the longest piece (at least 4 bytes) bounds a token's share of the
/// input, provided nothing before the model shrinks or drops text, added tokens match
/// exactly their content, and no character can vanish unseen.
fn length_bound(inner: &tokenizers::Tokenizer) -> Option<LengthBound> {
    use tokenizers::ModelWrapper;
    let ModelWrapper::BPE(bpe) = inner.get_model() else {
        return None;
    };
    let normalizer = inner.get_normalizer().map(|n| serde_json::to_value(n).ok());
    let normalizer_ok = match &normalizer {
        None => true,
        Some(v) => v.as_ref().is_some_and(normalizer_never_shrinks),
    };
    let pre = inner.get_pre_tokenizer().map(|p| serde_json::to_value(p).ok());
    let pre_ok = match &pre {
        None => true,
        Some(v) => v.as_ref().is_some_and(pre_tokenizer_keeps_text),
    };
    let added = inner.get_added_tokens_decoder();
    if !normalizer_ok || !pre_ok || added.values().any(|t| t.lstrip || t.rstrip) {
        return None;
    }
    let vocab = bpe.get_vocab();
    let byte_fallback_complete = bpe.byte_fallback && (0..=255u8).all(|b| vocab.contains_key(&format!("<0x{b:02X}>")));
    let byte_level = pre.as_ref().and_then(|v| v.as_ref()).is_some_and(has_byte_level);
    let alphabet = crate::gguf::byte_level_decoder_table();
    let vanishing = if byte_fallback_complete || !byte_level {
        None
    } else {
        // Bytes whose byte-level character is not a token are dropped (or fused into one
        // unknown token): they are not counted. Only sound on the raw bytes when no
        // normalizer rewrites them first.
        let mut v = Box::new([false; 256]);
        for (c, b) in alphabet {
            v[*b as usize] = !vocab.contains_key(&c.to_string());
        }
        match v.iter().any(|&x| x) {
            false => None,
            true if normalizer.is_some() => return None,
            true => Some(v),
        }
    };
    // Without byte-level or complete byte-fallback coverage, an unknown character must
    // become one unknown token (not be dropped, not be fused with its neighbours).
    if !(byte_fallback_complete || byte_level || (bpe.unk_token.is_some() && !bpe.fuse_unk)) {
        return None;
    }
    let represented = |piece: &str| {
        if byte_level && piece.chars().all(|c| alphabet.contains_key(&c)) {
            piece.chars().count()
        } else {
            piece.len()
        }
    };
    let longest_piece = vocab.keys().map(|p| represented(p)).max().unwrap_or(0);
    let longest_added = added.values().map(|t| t.content.len()).max().unwrap_or(0);
    Some(LengthBound { longest: longest_piece.max(longest_added).max(4), vanishing })
}

/// Normalizers that only ever lengthen text: prepending, replacing a literal with one at
/// least as long, the byte-level mapping, and sequences of those.
fn normalizer_never_shrinks(v: &serde_json::Value) -> bool {
    match v.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => v.get("normalizers").and_then(|n| n.as_array()).is_some_and(|a| a.iter().all(normalizer_never_shrinks)),
        Some("Prepend") | Some("ByteLevel") => true,
        Some("Replace") => {
            let pattern = v.get("pattern").and_then(|p| p.get("String")).and_then(|p| p.as_str());
            let content = v.get("content").and_then(|c| c.as_str());
            matches!((pattern, content), (Some(p), Some(c)) if !p.is_empty() && c.len() >= p.len())
        }
        _ => false,
    }
}

/// Pre-tokenizers that split text without dropping any of it.
fn pre_tokenizer_keeps_text(v: &serde_json::Value) -> bool {
    let kept = |v: &serde_json::Value| v.get("behavior").and_then(|b| b.as_str()).is_some_and(|b| b != "Removed");
    match v.get("type").and_then(|t| t.as_str()) {
        Some("Sequence") => v.get("pretokenizers").and_then(|n| n.as_array()).is_some_and(|a| a.iter().all(pre_tokenizer_keeps_text)),
        Some("ByteLevel") | Some("Digits") | Some("Metaspace") | Some("UnicodeScripts") => true,
        Some("Split") | Some("Punctuation") => kept(v),
        _ => false,
    }
}

fn has_byte_level(v: &serde_json::Value) -> bool {
    match v.get("type").and_then(|t| t.as_str()) {
        Some("ByteLevel") => true,
        Some("Sequence") => v.get("pretokenizers").and_then(|n| n.as_array()).is_some_and(|a| a.iter().any(has_byte_level)),
        _ => false,
    }
}

fn decoder_is_byte_level(d: &DecoderWrapper) -> bool {
    match d {
        DecoderWrapper::ByteLevel(_) => true,
        DecoderWrapper::Sequence(s) => s.get_decoders().iter().any(decoder_is_byte_level),
        _ => false,
    }
}
