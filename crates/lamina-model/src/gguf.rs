//! A strict, memory-mapped GGUF reader (format spec: ggml `docs/gguf.md`, version 2 and 3).
//!
//! We parse the header ourselves rather than through candle so that every length read
//! from the file is checked against the file size before anything is allocated: a corrupt
//! or truncated file becomes a one-line error, never an allocation failure or a panic.
//! Tensor data stays in the memory map and is used in place (no copy of the weights).

use lamina_core::{Error, Result};
use memmap2::Mmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x4655_4747; // "GGUF" little-endian

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        Some(match *self {
            Value::U8(v) => v as u64,
            Value::I8(v) if v >= 0 => v as u64,
            Value::U16(v) => v as u64,
            Value::I16(v) if v >= 0 => v as u64,
            Value::U32(v) => v as u64,
            Value::I32(v) if v >= 0 => v as u64,
            Value::U64(v) => v,
            Value::I64(v) if v >= 0 => v as u64,
            _ => return None,
        })
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_u64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The value as an error message shows it: `i32 -4`, `string "64"`, `an array`.
    pub fn describe(&self) -> String {
        match self {
            Value::U8(v) => format!("u8 {v}"),
            Value::I8(v) => format!("i8 {v}"),
            Value::U16(v) => format!("u16 {v}"),
            Value::I16(v) => format!("i16 {v}"),
            Value::U32(v) => format!("u32 {v}"),
            Value::I32(v) => format!("i32 {v}"),
            Value::U64(v) => format!("u64 {v}"),
            Value::I64(v) => format!("i64 {v}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
            Value::Bool(v) => format!("bool {v}"),
            Value::String(v) => format!("string {v:?}"),
            Value::Array(a) => format!("an array of {} values", a.len()),
        }
    }
}

/// GGML tensor storage types (the numeric codes of the GGUF spec).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    BF16,
}

impl GgmlType {
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            6 => GgmlType::Q5_0,
            7 => GgmlType::Q5_1,
            8 => GgmlType::Q8_0,
            9 => GgmlType::Q8_1,
            10 => GgmlType::Q2K,
            11 => GgmlType::Q3K,
            12 => GgmlType::Q4K,
            13 => GgmlType::Q5K,
            14 => GgmlType::Q6K,
            15 => GgmlType::Q8K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }

    /// (values per block, bytes per block).
    pub fn block(self) -> (usize, usize) {
        match self {
            GgmlType::F32 => (1, 4),
            GgmlType::F16 | GgmlType::BF16 => (1, 2),
            GgmlType::Q4_0 => (32, 18),
            GgmlType::Q4_1 => (32, 20),
            GgmlType::Q5_0 => (32, 22),
            GgmlType::Q5_1 => (32, 24),
            GgmlType::Q8_0 => (32, 34),
            GgmlType::Q8_1 => (32, 36),
            GgmlType::Q2K => (256, 84),
            GgmlType::Q3K => (256, 110),
            GgmlType::Q4K => (256, 144),
            GgmlType::Q5K => (256, 176),
            GgmlType::Q6K => (256, 210),
            GgmlType::Q8K => (256, 292),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
        }
    }

    /// Bytes of a tensor of `elements` values; `None` if they do not form whole blocks.
    pub fn bytes_for(self, elements: u64) -> Option<u64> {
        let (bs, bb) = self.block();
        if !elements.is_multiple_of(bs as u64) {
            return None;
        }
        (elements / bs as u64).checked_mul(bb as u64)
    }
}

/// One tensor's header entry.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// GGML dimension order: `dims[0]` is the contiguous (innermost) one.
    pub dims: Vec<usize>,
    pub dtype: GgmlType,
    /// Absolute byte offset in the file.
    pub offset: usize,
    pub size: usize,
}

impl TensorInfo {
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// An opened GGUF file: metadata, tensor table and the memory map.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: BTreeMap<String, TensorInfo>,
    /// Tensor names in file order.
    pub order: Vec<String>,
    mmap: Mmap,
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Cursor<'a> {
    fn err(&self, what: &str) -> Error {
        Error::invalid_file(self.path, format!("{what} at byte {} (file is {} bytes; truncated or corrupt)", self.pos, self.buf.len()))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() - self.pos {
            return Err(self.err("unexpected end of header"));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    /// A length that must fit in what is left of the file (each item takes ≥ `min_item` bytes).
    fn len(&mut self, min_item: usize) -> Result<usize> {
        let n = self.u64()?;
        let left = (self.buf.len() - self.pos) as u64;
        if n.saturating_mul(min_item.max(1) as u64) > left {
            return Err(self.err(&format!("length {n} larger than the rest of the file")));
        }
        Ok(n as usize)
    }
    fn string(&mut self) -> Result<String> {
        let n = self.len(1)?;
        let bytes = self.take(n)?;
        // Vocabularies may hold invalid UTF-8 pieces; keep them readable, never fail on it.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.u8()?),
            1 => Value::I8(self.u8()? as i8),
            2 => Value::U16(self.u16()?),
            3 => Value::I16(self.u16()? as i16),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(self.u32()? as i32),
            6 => Value::F32(f32::from_bits(self.u32()?)),
            7 => Value::Bool(self.u8()? != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(self.err("arrays nested too deeply"));
                }
                let ety = self.u32()?;
                let n = self.len(1)?;
                let mut v = Vec::with_capacity(n.min(1 << 20));
                for _ in 0..n {
                    v.push(self.value(ety, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(self.u64()? as i64),
            12 => Value::F64(f64::from_bits(self.u64()?)),
            other => return Err(self.err(&format!("unknown metadata value type {other}"))),
        })
    }
}

impl GgufFile {
    /// Opens and validates a GGUF file: header, metadata, tensor table, and that every
    /// tensor's data lies inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::ModelNotFound(path.to_path_buf()));
        }
        let file = lamina_core::fs::open_regular(path)?;
        // SAFETY: the map is read-only; a file changed underneath us by another process is
        // outside what any reader can defend against (llama.cpp maps the same way).
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut c = Cursor { buf: &mmap, pos: 0, path };
        if mmap.len() < 4 || u32::from_le_bytes(mmap[0..4].try_into().unwrap()) != MAGIC {
            return Err(Error::invalid_file(path, "not a GGUF file (bad magic)"));
        }
        c.pos = 4;
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(Error::invalid_file(path, format!("unsupported GGUF version {version} (supported: 2, 3)")));
        }
        let n_tensors = c.len(8)?;
        let n_kv = c.len(8)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            if metadata.contains_key(&key) {
                return Err(Error::invalid_file(path, format!("duplicate metadata key `{key}`")));
            }
            metadata.insert(key, v);
        }
        let mut infos = Vec::with_capacity(n_tensors);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let nd = c.u32()? as usize;
            if nd == 0 || nd > 4 {
                return Err(c.err(&format!("tensor `{name}` has {nd} dimensions")));
            }
            let mut dims = Vec::with_capacity(nd);
            for _ in 0..nd {
                let d = c.u64()?;
                if d == 0 || d > (1 << 40) {
                    return Err(c.err(&format!("tensor `{name}` has invalid dimension {d}")));
                }
                dims.push(d as usize);
            }
            let code = c.u32()?;
            let dtype = GgmlType::from_code(code).ok_or_else(|| Error::UnsupportedTensorType { tensor: name.clone(), dtype: format!("ggml type {code}") })?;
            let rel = c.u64()?;
            infos.push((name, dims, dtype, rel));
        }
        let align = match metadata.get("general.alignment") {
            None => 32,
            Some(v) => match v {
                Value::U32(a) => *a as usize,
                other => return Err(Error::invalid_file(path, format!("general.alignment must be a u32, got {}", other.describe()))),
            },
        };
        if align == 0 || !align.is_power_of_two() {
            return Err(Error::invalid_file(path, format!("invalid general.alignment {align}")));
        }
        let data_start = c.pos.div_ceil(align) * align;
        let mut tensors = BTreeMap::new();
        let mut order = Vec::with_capacity(infos.len());
        for (name, dims, dtype, rel) in infos {
            if tensors.contains_key(&name) {
                return Err(Error::invalid_file(path, format!("duplicate tensor name `{name}`")));
            }
            // The spec requires every tensor's offset to be a multiple of the alignment.
            if rel % align as u64 != 0 {
                return Err(Error::invalid_file(path, format!("tensor `{name}` data offset {rel} is not a multiple of general.alignment ({align})")));
            }
            let elements: u64 = dims.iter().map(|&d| d as u64).try_fold(1u64, |a, d| a.checked_mul(d)).unwrap_or(u64::MAX);
            let size = dtype
                .bytes_for(elements)
                .ok_or_else(|| Error::invalid_file(path, format!("tensor `{name}`: {elements} values are not whole {} blocks", dtype.name())))?;
            let offset = (data_start as u64).saturating_add(rel);
            let end = offset.saturating_add(size);
            if end > mmap.len() as u64 {
                return Err(Error::invalid_file(
                    path,
                    format!("tensor `{name}` data ends at byte {end} but the file has only {} bytes (truncated?)", mmap.len()),
                ));
            }
            order.push(name.clone());
            tensors.insert(name.clone(), TensorInfo { name, dims, dtype, offset: offset as usize, size: size as usize });
        }
        // No two tensors may share bytes: a writer bug or a crafted file would otherwise
        // make one tensor's data silently another's.
        let mut spans: Vec<&TensorInfo> = tensors.values().collect();
        spans.sort_by_key(|t| (t.offset, t.size));
        for w in spans.windows(2) {
            if w[0].offset + w[0].size > w[1].offset {
                return Err(Error::invalid_file(
                    path,
                    format!(
                        "tensors `{}` (bytes {}..{}) and `{}` (bytes {}..{}) overlap",
                        w[0].name,
                        w[0].offset,
                        w[0].offset + w[0].size,
                        w[1].name,
                        w[1].offset,
                        w[1].offset + w[1].size
                    ),
                ));
            }
        }
        Ok(GgufFile { path: path.to_path_buf(), version, metadata, tensors, order, mmap })
    }

    /// The raw bytes of a tensor (inside the memory map).
    pub fn data(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset..info.offset + info.size]
    }

    /// `len` bytes at absolute `offset` (bounds were validated when the file was opened).
    pub fn data_at(&self, offset: usize, len: usize) -> &[u8] {
        &self.mmap[offset..offset + len]
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    fn wrong_type(&self, key: &str, want: &str, got: &Value) -> Error {
        Error::invalid_file(&self.path, format!("metadata `{key}` must be {want}, got {}", got.describe()))
    }

    /// An optional unsigned integer key: absent is `None`, any other type (or a negative
    /// value) is an error naming the key and what it holds.
    pub fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| self.wrong_type(key, "a non-negative integer", v)),
        }
    }

    /// An optional number key (integers are accepted); other types are errors.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_f64().map(Some).ok_or_else(|| self.wrong_type(key, "a number", v)),
        }
    }

    /// An optional string key; other types are errors.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v.as_str().map(Some).ok_or_else(|| self.wrong_type(key, "a string", v)),
        }
    }

    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key).and_then(Value::as_u64)
    }

    pub fn get_f64(&self, key: &str) -> Option<f64> {
        self.get(key).and_then(Value::as_f64)
    }

    pub fn tensor(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors.get(name).ok_or_else(|| Error::MissingTensor(name.to_string()))
    }

    /// Reads the model hyper-parameters from `{arch}.*` metadata. Every key is typed: a
    /// present key of the wrong type is an error naming it; the values are then checked
    /// once, by [`lamina_core::ModelConfig::validate`].
    pub fn model_config(&self) -> Result<lamina_core::ModelConfig> {
        use lamina_core::{Architecture, LocalLayers, ModelConfig, RopeScaling};
        let arch_name =
            self.opt_str("general.architecture")?.ok_or_else(|| Error::invalid_file(&self.path, "no general.architecture in metadata"))?.to_string();
        let architecture = Architecture::from_name(&arch_name)?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let uint = |k: &str| -> Result<Option<usize>> { Ok(self.opt_u64(&key(k))?.map(|v| v as usize)) };
        let float = |k: &str| -> Result<Option<f64>> { self.opt_f64(&key(k)) };
        let need = |k: &str| uint(k)?.ok_or_else(|| Error::invalid_file(&self.path, format!("metadata has no {}", key(k))));
        let hidden = need("embedding_length")?;
        let heads = need("attention.head_count")?;
        let kv_heads = uint("attention.head_count_kv")?.unwrap_or(heads);
        let head_dim = uint("attention.key_length")?.unwrap_or(hidden.checked_div(heads).unwrap_or(0));
        let embd = self.tensor("token_embd.weight")?;
        let vocab = uint("vocab_size")?.or_else(|| embd.dims.get(1).copied()).unwrap_or(0);
        let eps_key = match architecture {
            Architecture::Llama | Architecture::Gemma3 => "attention.layer_norm_rms_epsilon",
            Architecture::Gpt2 => "attention.layer_norm_epsilon",
        };
        let rope_scaling = match self.opt_str(&key("rope.scaling.type"))? {
            Some("linear") => Some(RopeScaling::Linear { factor: float("rope.scaling.factor")?.unwrap_or(1.0) as f32 }),
            Some("none") | None => None,
            Some(other) => {
                return Err(Error::invalid_file(&self.path, format!("unsupported {} `{other}` (supported: linear, none)", key("rope.scaling.type"))))
            }
        };
        let cfg = ModelConfig {
            architecture,
            vocab_size: vocab,
            hidden_size: hidden,
            num_layers: need("block_count")?,
            num_heads: heads,
            num_kv_heads: kv_heads,
            head_dim,
            ffn_dim: need("feed_forward_length")?,
            context_length: need("context_length")?,
            norm_eps: float(eps_key)?.unwrap_or(1e-5) as f32,
            rope_theta: match architecture {
                Architecture::Llama | Architecture::Gemma3 => float("rope.freq_base")?.unwrap_or(10000.0) as f32,
                Architecture::Gpt2 => 0.0,
            },
            rope_dim: match architecture {
                Architecture::Llama | Architecture::Gemma3 => uint("rope.dimension_count")?.unwrap_or(head_dim),
                Architecture::Gpt2 => 0,
            },
            rope_scaling,
            tied_embeddings: !self.tensors.contains_key("output.weight"),
            qkv_bias: self.tensors.contains_key("blk.0.attn_q.bias") || self.tensors.contains_key("blk.0.attn_qkv.bias"),
            sliding_window: uint("attention.sliding_window")?,
            // Gemma 3 files do not record the interleaving: five local layers to one
            // global, local bases of 10 000 (what llama.cpp and transformers hard-code).
            local_layers: (architecture == Architecture::Gemma3).then_some(LocalLayers { global_every: 6, rope_theta: 10_000.0 }),
        };
        if architecture == Architecture::Gemma3 && cfg.num_layers == 62 {
            // Gemma 3 27B scales queries by 1/√(d/heads), not 1/√head_dim.
            return Err(Error::invalid_file(&self.path, "Gemma 3 27B's query scaling is not supported (270M to 12B are)"));
        }
        cfg.validate().map_err(|e| match e {
            Error::InvalidConfig(m) => Error::invalid_file(&self.path, m),
            e => e,
        })?;
        Ok(cfg)
    }

    /// Total number of weight values.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(TensorInfo::elements).sum()
    }
}
