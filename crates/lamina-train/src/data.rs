//! Training data: text files → token ids, tokenized once into a memory-mapped cache file
//! beside the data, reused while the sources and the tokenizer are unchanged.
//!
//! Cache file layout (little endian):
//! ```text
//! 8 bytes  magic "LAMTOKS\0"
//! 4 bytes  format version (1)
//! 4 bytes  header length H
//! H bytes  header JSON: {version, width, n_tokens, tokenizer_hash, sources: [{path, size, mtime_ns}]}
//! pad      zeros up to a multiple of 8
//! n_tokens × width bytes of token ids (u16 or u32)
//! ```

use candle_core::{Device, Tensor};
use lamina_core::{Error, Result};
use lamina_model::trainable::{candle_err, SplitMix64};
use lamina_tokenizer::Tokenizer;
use memmap2::Mmap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LAMTOKS\0";
const VERSION: u32 = 1;

/// Which tokenizer turns the corpus into ids.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenizerSpec {
    /// One token per distinct character of the corpus.
    Char,
    /// A saved tokenizer.json.
    File(PathBuf),
}

impl TokenizerSpec {
    pub fn parse(s: &str) -> Self {
        if s == "char" {
            TokenizerSpec::Char
        } else {
            TokenizerSpec::File(PathBuf::from(s))
        }
    }
}

/// Width of stored token ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    pub fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }

    /// `"auto"`, `"u16"` or `"u32"` for a vocabulary of `vocab` ids. A forced width that
    /// cannot hold every id is an error.
    pub fn choose(setting: &str, vocab: usize) -> Result<Self> {
        let w = match setting {
            "auto" if vocab <= 65535 => TokenWidth::U16,
            "auto" | "u32" => TokenWidth::U32,
            "u16" => TokenWidth::U16,
            other => return Err(Error::InvalidConfig(format!("token_dtype must be auto, u16 or u32, not `{other}`"))),
        };
        if w == TokenWidth::U16 && vocab > 65535 {
            return Err(Error::InvalidConfig(format!("vocabulary of {vocab} tokens does not fit u16 token ids (at most 65535); use token_dtype = \"u32\"")));
        }
        if vocab as u64 > u32::MAX as u64 {
            return Err(Error::InvalidConfig(format!("vocabulary of {vocab} tokens does not fit u32 token ids")));
        }
        Ok(w)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceFile {
    pub path: PathBuf,
    pub size: u64,
    pub mtime_ns: u128,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Header {
    version: u32,
    width: TokenWidth,
    n_tokens: u64,
    tokenizer_hash: String,
    sources: Vec<SourceFile>,
}

/// A memory-mapped token file.
pub struct TokenFile {
    path: PathBuf,
    mmap: Mmap,
    offset: usize,
    width: TokenWidth,
    n: usize,
}

impl TokenFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.n
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub fn width(&self) -> TokenWidth {
        self.width
    }

    pub fn get(&self, i: usize) -> u32 {
        let o = self.offset + i * self.width.bytes();
        let b = &self.mmap[o..o + self.width.bytes()];
        match self.width {
            TokenWidth::U16 => u16::from_le_bytes([b[0], b[1]]) as u32,
            TokenWidth::U32 => u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        }
    }

    /// Ids `start..start+len` (must be in range).
    pub fn slice(&self, start: usize, len: usize) -> Vec<u32> {
        (start..start + len).map(|i| self.get(i)).collect()
    }

    /// Opens a cache file, checking magic, version and size. `None` when it is not a
    /// valid cache (the caller rebuilds it).
    fn open(path: &Path) -> Option<(Self, Header)> {
        let f = std::fs::File::open(path).ok()?;
        // SAFETY: the cache is only written through temp + rename, so a mapped file is
        // never modified in place by us.
        let mmap = unsafe { Mmap::map(&f) }.ok()?;
        if mmap.len() < 16 || &mmap[..8] != MAGIC {
            return None;
        }
        let version = u32::from_le_bytes(mmap[8..12].try_into().ok()?);
        let hlen = u32::from_le_bytes(mmap[12..16].try_into().ok()?) as usize;
        if version != VERSION || mmap.len() < 16 + hlen {
            return None;
        }
        let header: Header = serde_json::from_slice(&mmap[16..16 + hlen]).ok()?;
        let offset = (16 + hlen).div_ceil(8) * 8;
        let n = header.n_tokens as usize;
        if mmap.len() != offset + n * header.width.bytes() {
            return None;
        }
        Some((TokenFile { path: path.to_path_buf(), mmap, offset, width: header.width, n }, header))
    }
}

/// All regular files under `paths` (folders recursively, hidden entries and token caches
/// skipped), sorted within each folder.
pub fn collect_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?.filter_map(|e| e.ok().map(|e| e.path())).collect();
        entries.sort();
        for p in entries {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || name.ends_with(".lamina-tokens") || name.ends_with(".lamina-tokens.tokenizer.json") {
                continue;
            }
            if p.is_dir() {
                walk(&p, out)?;
            } else if p.is_file() {
                out.push(p);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidInput("the training data contains no files".into()));
    }
    Ok(out)
}

fn stat(files: &[PathBuf]) -> Result<Vec<SourceFile>> {
    files
        .iter()
        .map(|p| {
            let m = std::fs::metadata(p).map_err(|e| Error::io(p, e))?;
            let mtime_ns = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map(|d| d.as_nanos()).unwrap_or(0);
            Ok(SourceFile { path: std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()), size: m.len(), mtime_ns })
        })
        .collect()
}

/// Default cache path: `FILE.lamina-tokens` for one file, `DIR/.lamina-tokens` for a folder —
/// or, when that folder is read-only (a shared data set), a file of the same name under
/// the user's cache directory (`$LAMINA_CACHE/tokens/`), keyed by the data's full path.
pub fn default_cache_path(paths: &[PathBuf]) -> PathBuf {
    let beside = match paths.first() {
        Some(p) if p.is_dir() => p.join(".lamina-tokens"),
        Some(p) => {
            let mut s = p.as_os_str().to_owned();
            s.push(".lamina-tokens");
            PathBuf::from(s)
        }
        None => PathBuf::from(".lamina-tokens"),
    };
    let dir = beside.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if is_writable_dir(dir) {
        return beside;
    }
    let key = paths.first().map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())).unwrap_or_default();
    let digest = hex(&Sha256::digest(key.to_string_lossy().as_bytes()));
    let name = beside.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    lamina_core::registry::cache_dir().join("tokens").join(format!("{}-{name}", &digest[..12]))
}

/// Whether files can be created in `dir` (probed by creating and removing one). A folder
/// whose permission bits allow no writing counts as read-only even for root, who could
/// write anyway: shared, read-only data sets must not get cache files.
fn is_writable_dir(dir: &Path) -> bool {
    if std::fs::metadata(dir).map(|m| m.permissions().readonly()).unwrap_or(true) {
        return false;
    }
    let probe = dir.join(format!(".lamina-write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            true
        }
        Err(_) => false,
    }
}

/// sha256 of a tokenizer's JSON form: the cache key for "same tokenizer".
pub fn tokenizer_hash(tok: &Tokenizer) -> Result<String> {
    let json = tok.inner().to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))?;
    Ok(hex(&Sha256::digest(json.as_bytes())))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_text(files: &[PathBuf]) -> Result<Vec<String>> {
    files
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            String::from_utf8(bytes).map_err(|_| Error::InvalidInput(format!("{} is not UTF-8 text", p.display())))
        })
        .collect()
}

/// Tokenizes the corpus (or reuses the cache) and returns the tokenizer with the mapped
/// token file. For [`TokenizerSpec::Char`] the vocabulary is built from the corpus and
/// saved beside the cache (`CACHE.tokenizer.json`).
pub fn prepare(paths: &[PathBuf], spec: &TokenizerSpec, cache: Option<&Path>, token_dtype: &str, log: &mut dyn FnMut(&str)) -> Result<(Tokenizer, TokenFile)> {
    let files = collect_files(paths)?;
    let sources = stat(&files)?;
    let cache = cache.map(Path::to_path_buf).unwrap_or_else(|| default_cache_path(paths));
    let mut side = cache.as_os_str().to_owned();
    side.push(".tokenizer.json");
    let side = PathBuf::from(side);

    // Try the cache first.
    let tokenizer = match spec {
        TokenizerSpec::File(p) => Some(Tokenizer::from_file(p)?),
        TokenizerSpec::Char => Tokenizer::from_file(&side).ok(),
    };
    if let Some(tok) = &tokenizer {
        let hash = tokenizer_hash(tok)?;
        if let Some((tf, h)) = TokenFile::open(&cache) {
            let width_ok = TokenWidth::choose(token_dtype, tok.vocab_size()).is_ok_and(|w| w == h.width);
            if h.tokenizer_hash == hash && h.sources == sources && width_ok {
                log(&format!("using token cache {} ({} tokens)", cache.display(), tf.len()));
                if tf.is_empty() {
                    return Err(Error::InvalidInput("the training corpus is empty (0 tokens)".into()));
                }
                return Ok((tok.clone(), tf));
            }
        }
    }

    // (Re)build it.
    let texts = read_text(&files)?;
    let total: usize = texts.iter().map(|t| t.len()).sum();
    if total == 0 {
        return Err(Error::InvalidInput(format!("the training corpus is empty ({} files, 0 bytes)", files.len())));
    }
    let tok = match spec {
        TokenizerSpec::File(_) => tokenizer.expect("loaded above"),
        TokenizerSpec::Char => {
            let all: String = texts.concat();
            let t = lamina_tokenizer::char_tokenizer(&all)?;
            lamina_core::fs::write_atomic(&side, |f| {
                let json = t.inner().to_string(false).map_err(|e| Error::Tokenizer(e.to_string()))?;
                f.write_all(json.as_bytes()).map_err(|e| Error::io(&side, e))
            })?;
            Tokenizer::from_file(&side)?
        }
    };
    let width = TokenWidth::choose(token_dtype, tok.vocab_size())?;
    log(&format!("tokenizing {} files ({total} bytes) into {}", files.len(), cache.display()));
    let mut ids: Vec<u32> = Vec::new();
    for t in &texts {
        ids.extend(tok.encode(t, false)?);
    }
    if ids.is_empty() {
        return Err(Error::InvalidInput("the training corpus is empty (0 tokens)".into()));
    }
    if let Some(&max) = ids.iter().max() {
        if width == TokenWidth::U16 && max > u16::MAX as u32 {
            return Err(Error::InvalidInput(format!("token id {max} does not fit the u16 token cache")));
        }
    }
    let header = Header { version: VERSION, width, n_tokens: ids.len() as u64, tokenizer_hash: tokenizer_hash(&tok)?, sources };
    let hjson = serde_json::to_vec(&header).map_err(|e| Error::Other(e.to_string()))?;
    lamina_core::fs::write_atomic(&cache, |f| {
        let mut buf = Vec::with_capacity(16 + hjson.len() + 8 + ids.len() * width.bytes());
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&(hjson.len() as u32).to_le_bytes());
        buf.extend_from_slice(&hjson);
        while buf.len() % 8 != 0 {
            buf.push(0);
        }
        for &id in &ids {
            match width {
                TokenWidth::U16 => buf.extend_from_slice(&(id as u16).to_le_bytes()),
                TokenWidth::U32 => buf.extend_from_slice(&id.to_le_bytes()),
            }
        }
        f.write_all(&buf).map_err(|e| Error::io(&cache, e))
    })?;
    let (tf, _) = TokenFile::open(&cache).ok_or_else(|| Error::invalid_file(&cache, "token cache unreadable right after writing it"))?;
    Ok((tok, tf))
}

/// Which part of the corpus a batch is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

/// The corpus split 90/10 (first 90 % train), sampled in (batch, block) windows.
pub struct Dataset {
    pub tokens: TokenFile,
    train_end: usize,
    block: usize,
}

impl Dataset {
    /// Errors when either split is shorter than one context window plus one target.
    pub fn new(tokens: TokenFile, block: usize) -> Result<Self> {
        let n = tokens.len();
        let train_end = n * 9 / 10;
        let (tr, va) = (train_end, n - train_end);
        if tr < block + 1 || va < block + 1 {
            return Err(Error::InvalidInput(format!(
                "the corpus has {n} tokens: train split {tr}, validation split {va}, but each needs at least \
                 block_size + 1 = {} tokens (the corpus is shorter than one context window); add data or lower block_size",
                block + 1
            )));
        }
        Ok(Dataset { tokens, train_end, block })
    }

    pub fn split_len(&self, split: Split) -> usize {
        match split {
            Split::Train => self.train_end,
            Split::Val => self.tokens.len() - self.train_end,
        }
    }

    /// `batch` random windows: inputs (batch, block) and targets shifted by one, both u32.
    pub fn batch(&self, split: Split, batch: usize, rng: &mut SplitMix64, device: &Device) -> Result<(Tensor, Tensor)> {
        let (x, y) = self.batch_ids(split, batch, rng);
        let t = self.block;
        let x = Tensor::from_vec(x, (batch, t), device).map_err(candle_err)?;
        let y = Tensor::from_vec(y, (batch, t), device).map_err(candle_err)?;
        Ok((x, y))
    }

    /// [`Dataset::batch`] as flat row-major id vectors (the same windows for the same RNG state).
    pub fn batch_ids(&self, split: Split, batch: usize, rng: &mut SplitMix64) -> (Vec<u32>, Vec<u32>) {
        let (start, len) = match split {
            Split::Train => (0, self.train_end),
            Split::Val => (self.train_end, self.tokens.len() - self.train_end),
        };
        let t = self.block;
        let mut x = Vec::with_capacity(batch * t);
        let mut y = Vec::with_capacity(batch * t);
        for _ in 0..batch {
            let i = start + rng.below((len - t) as u64) as usize;
            let w = self.tokens.slice(i, t + 1);
            x.extend_from_slice(&w[..t]);
            y.extend_from_slice(&w[1..]);
        }
        (x, y)
    }

    /// Tokens per window.
    pub fn block(&self) -> usize {
        self.block
    }
}
