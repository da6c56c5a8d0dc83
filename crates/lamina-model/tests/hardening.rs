//! Model files that cannot be right are refused once, in the GGUF reader and the config
//! check, with an error naming the key or tensor: impossible metadata values, wrongly
//! typed keys, duplicate or overlapping tensors, misaligned data, and paths that are not
//! regular files. And a seeded, bounded mutation run keeps proving that no mutated file
//! makes the loader (or a forward pass on what it loaded) panic or hang.
//!
//! The GGUF files are written byte by byte here, so a test can put any value of any type
//! at any key and any offset in the tensor table.

use lamina_kernels::ThreadPool;
use lamina_model::{load_model, BatchInput, Precision, Scratch, SeqChunk};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// A metadata value of a given GGUF type.
#[derive(Clone, Debug)]
enum M {
    U32(u32),
    I32(i32),
    F32(f32),
    Str(&'static str),
}

impl M {
    fn write(&self, out: &mut Vec<u8>) {
        match self {
            M::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            M::I32(v) => {
                out.extend(5u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            M::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            M::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(out, s);
            }
        }
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

/// An F32 tensor: GGML dims (innermost first) and its relative data offset.
#[derive(Clone, Debug)]
struct Tensor {
    name: String,
    dims: Vec<u64>,
    offset: u64,
}

/// A GGUF v3 file: header, metadata, tensor table, padding to 32, then `data_len` bytes of
/// small deterministic f32 values.
fn gguf(meta: &[(String, M)], tensors: &[Tensor], data_len: usize) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        string(&mut out, k);
        v.write(&mut out);
    }
    for t in tensors {
        string(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for d in &t.dims {
            out.extend(d.to_le_bytes());
        }
        out.extend(0u32.to_le_bytes()); // F32
        out.extend(t.offset.to_le_bytes());
    }
    while !out.len().is_multiple_of(32) {
        out.push(0);
    }
    for i in 0..data_len / 4 {
        out.extend((((i * 7919) % 200) as f32 / 1000.0 - 0.1).to_le_bytes());
    }
    out
}

/// The metadata of a tiny Llama: 16 wide, 1 layer, 2 heads of 8, 1 KV head, vocabulary 32.
fn llama_meta() -> Vec<(String, M)> {
    [
        ("general.architecture", M::Str("llama")),
        ("llama.context_length", M::U32(64)),
        ("llama.embedding_length", M::U32(16)),
        ("llama.block_count", M::U32(1)),
        ("llama.feed_forward_length", M::U32(32)),
        ("llama.attention.head_count", M::U32(2)),
        ("llama.attention.head_count_kv", M::U32(1)),
        ("llama.rope.freq_base", M::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", M::F32(1e-5)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The tiny Llama's tensors laid out back to back, each at a multiple of 32 bytes.
fn llama_tensors() -> (Vec<Tensor>, usize) {
    let shapes: [(&str, &[u64]); 11] = [
        ("token_embd.weight", &[16, 32]),
        ("blk.0.attn_norm.weight", &[16]),
        ("blk.0.attn_q.weight", &[16, 16]),
        ("blk.0.attn_k.weight", &[16, 8]),
        ("blk.0.attn_v.weight", &[16, 8]),
        ("blk.0.attn_output.weight", &[16, 16]),
        ("blk.0.ffn_norm.weight", &[16]),
        ("blk.0.ffn_gate.weight", &[16, 32]),
        ("blk.0.ffn_up.weight", &[16, 32]),
        ("blk.0.ffn_down.weight", &[32, 16]),
        ("output_norm.weight", &[16]),
    ];
    let mut offset = 0u64;
    let mut tensors = Vec::new();
    for (name, dims) in shapes {
        tensors.push(Tensor { name: name.into(), dims: dims.to_vec(), offset });
        offset += (dims.iter().product::<u64>() * 4).div_ceil(32) * 32;
    }
    (tensors, offset as usize)
}

fn tiny_llama() -> Vec<u8> {
    let (t, len) = llama_tensors();
    gguf(&llama_meta(), &t, len)
}

fn with_meta(key: &str, value: Option<M>) -> Vec<u8> {
    let mut meta = llama_meta();
    meta.retain(|(k, _)| k != key);
    if let Some(v) = value {
        meta.push((key.to_string(), v));
    }
    let (t, len) = llama_tensors();
    gguf(&meta, &t, len)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Runs `f` on another thread; fails the test if it panics or takes longer than `secs`.
fn guarded<T: Send + 'static>(what: &str, secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(v) => {
            handle.join().unwrap();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still running after {secs} s (hang)")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: panicked ({:?})", handle.join().err())
        }
    }
}

fn load_err(path: &Path) -> String {
    match load_model(path, Precision::F32) {
        Ok(_) => panic!("{} loaded but should have been refused", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_tiny_gguf_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "ok.gguf", &tiny_llama());
    for precision in [Precision::F32, Precision::Native] {
        let m = load_model(&p, precision).unwrap();
        assert_eq!((m.config.num_layers, m.config.num_kv_heads, m.config.head_dim), (1, 1, 8));
    }
}

#[test]
fn impossible_metadata_values_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    // (key, its value or none, one more key to set, what the error must name)
    type Case = (&'static str, Option<M>, Option<(&'static str, M)>, &'static str);
    let cases: Vec<Case> = vec![
        ("llama.rope.freq_base", Some(M::F32(f32::NAN)), None, "rope.freq_base"),
        ("llama.rope.freq_base", Some(M::F32(0.0)), None, "rope_theta"),
        ("llama.rope.freq_base", Some(M::F32(-10000.0)), None, "rope_theta"),
        ("llama.attention.layer_norm_rms_epsilon", Some(M::F32(0.0)), None, "layer_norm_rms_epsilon"),
        ("llama.attention.layer_norm_rms_epsilon", Some(M::F32(f32::NAN)), None, "norm_eps"),
        ("llama.attention.layer_norm_rms_epsilon", Some(M::F32(-1e-5)), None, "norm_eps"),
        ("llama.rope.scaling.type", Some(M::Str("linear")), Some(("llama.rope.scaling.factor", M::F32(f32::NAN))), "rope.scaling.factor"),
        ("llama.rope.scaling.type", Some(M::Str("linear")), Some(("llama.rope.scaling.factor", M::F32(0.0))), "rope_scaling.factor"),
        ("llama.rope.scaling.type", Some(M::U32(1)), None, "`llama.rope.scaling.type` must be a string, got u32 1"),
        ("llama.attention.sliding_window", Some(M::U32(0)), None, "sliding_window"),
        ("llama.attention.head_count_kv", Some(M::Str("1")), None, "`llama.attention.head_count_kv` must be a non-negative integer, got string \"1\""),
        ("llama.attention.head_count_kv", Some(M::I32(-1)), None, "`llama.attention.head_count_kv` must be a non-negative integer, got i32 -1"),
        ("llama.attention.key_length", Some(M::I32(-8)), None, "`llama.attention.key_length` must be a non-negative integer, got i32 -8"),
        ("llama.attention.head_count", Some(M::F32(2.0)), None, "`llama.attention.head_count` must be a non-negative integer, got f32 2"),
        ("llama.rope.freq_base", Some(M::Str("1e4")), None, "`llama.rope.freq_base` must be a number, got string"),
        ("general.alignment", Some(M::Str("32")), None, "general.alignment must be a u32"),
    ];
    for (i, (key, value, extra, want)) in cases.into_iter().enumerate() {
        let mut meta = llama_meta();
        meta.retain(|(k, _)| k != key);
        meta.extend(value.map(|v| (key.to_string(), v)));
        meta.extend(extra.map(|(k, v)| (k.to_string(), v)));
        let (t, len) = llama_tensors();
        let p = write(dir.path(), &format!("m{i}.gguf"), &gguf(&meta, &t, len));
        let msg = load_err(&p);
        assert!(msg.contains(want), "{key}: error {msg:?} does not name {want:?}");
        assert!(msg.contains(&format!("m{i}.gguf")), "{msg}");
    }
    // A sliding window of 0 is refused rather than silently treated as "none".
    assert!(load_err(&write(dir.path(), "sw.gguf", &with_meta("llama.attention.sliding_window", Some(M::U32(0))))).contains("is 0"));
}

#[test]
fn tensor_table_errors_are_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (good, len) = llama_tensors();
    let case = |name: &str, edit: &dyn Fn(&mut Vec<Tensor>)| {
        let mut t = good.clone();
        edit(&mut t);
        load_err(&write(dir.path(), name, &gguf(&llama_meta(), &t, len)))
    };
    // Two tensors of the same name (the second would silently replace the first).
    let msg = case("dup.gguf", &|t| t[4].name = "blk.0.attn_k.weight".into());
    assert!(msg.contains("duplicate tensor name `blk.0.attn_k.weight`"), "{msg}");
    // attn_v's data placed over attn_k's (same size: the same bytes would serve both).
    let msg = case("overlap.gguf", &|t| t[4].offset = t[3].offset);
    assert!(msg.contains("overlap") && msg.contains("blk.0.attn_k.weight") && msg.contains("blk.0.attn_v.weight"), "{msg}");
    // Partial overlap: the norm moved 4 bytes into the tensor before it… which also
    // breaks the alignment rule, checked first.
    let msg = case("misaligned.gguf", &|t| t[1].offset -= 4);
    assert!(msg.contains("tensor `blk.0.attn_norm.weight` data offset") && msg.contains("not a multiple of general.alignment (32)"), "{msg}");
    // With alignment 4 the same layout is legal for alignment but still overlaps.
    let mut meta = llama_meta();
    meta.push(("general.alignment".into(), M::U32(4)));
    let mut t = good.clone();
    t[1].offset -= 4;
    let msg = load_err(&write(dir.path(), "overlap4.gguf", &gguf(&meta, &t, len)));
    assert!(msg.contains("overlap"), "{msg}");
    // Duplicate metadata keys.
    let mut meta = llama_meta();
    meta.push(("llama.block_count".into(), M::U32(1)));
    let msg = load_err(&write(dir.path(), "dupkey.gguf", &gguf(&meta, &good, len)));
    assert!(msg.contains("duplicate metadata key `llama.block_count`"), "{msg}");
}

/// A FIFO (or any non-regular file) as the model path, or as a file of a model folder,
/// is refused before it is opened: opening a FIFO for reading blocks until a writer comes.
#[test]
fn non_regular_model_paths_are_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.gguf");
    if !std::process::Command::new("mkfifo").arg(&fifo).status().is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: mkfifo is not available");
        return;
    }
    let p = fifo.clone();
    let msg = guarded("loading a FIFO", 10, move || load_model(&p, Precision::F32).err().map(|e| e.to_string()));
    assert!(msg.as_deref().is_some_and(|m| m.contains("is a FIFO (named pipe), not a regular file")), "{msg:?}");
    // A Hugging Face folder whose config.json is a FIFO.
    let hf = dir.path().join("hf");
    std::fs::create_dir(&hf).unwrap();
    assert!(std::process::Command::new("mkfifo").arg(hf.join("config.json")).status().unwrap().success());
    let msg = guarded("loading a folder with a FIFO config.json", 10, move || load_model(&hf, Precision::F32).err().map(|e| e.to_string()));
    assert!(msg.as_deref().is_some_and(|m| m.contains("config.json is a FIFO")), "{msg:?}");
    #[cfg(unix)]
    {
        let msg = guarded("loading /dev/zero", 10, || load_model(Path::new("/dev/zero"), Precision::F32).err().map(|e| e.to_string()));
        assert!(msg.as_deref().is_some_and(|m| m.contains("character device")), "{msg:?}");
    }
}

/// SplitMix64, for reproducible mutations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One to four random edits, most of them in the header (metadata and tensor table),
/// where the parser's decisions are: a byte set, a little-endian word overwritten with
/// a boundary value, a cut, or bytes inserted or removed.
fn mutate(base: &[u8], header_len: usize, r: &mut Rng) -> Vec<u8> {
    let mut b = base.to_vec();
    for _ in 0..1 + r.below(4) {
        let span = if r.below(8) == 0 { b.len() } else { header_len.min(b.len()) };
        let at = r.below(span);
        match r.below(6) {
            0 | 1 => {
                if at < b.len() {
                    b[at] = r.next() as u8;
                }
            }
            2 => {
                let words: [u64; 8] = [0, 1, 0xFF, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 40, u64::MAX, 0x7FC0_0000];
                let w = words[r.below(words.len())].to_le_bytes();
                let n = [1, 2, 4, 8][r.below(4)];
                for (i, byte) in w.iter().take(n).enumerate() {
                    if let Some(x) = b.get_mut(at + i) {
                        *x = *byte;
                    }
                }
            }
            3 => b.truncate(at),
            4 => {
                let n = 1 + r.below(16);
                let bytes: Vec<u8> = (0..n).map(|_| r.next() as u8).collect();
                let at = at.min(b.len());
                b.splice(at..at, bytes);
            }
            _ => {
                let end = (at + 1 + r.below(16)).min(b.len());
                if at < end {
                    b.drain(at..end);
                }
            }
        }
    }
    b
}

/// A few hundred seeded mutations of the tiny GGUF: each must load or be refused with an
/// error, never panic or hang; what loads must also run a forward pass without panicking.
#[test]
fn mutated_gguf_files_never_panic_or_hang() {
    let base = tiny_llama();
    let header_len = base.len() - llama_tensors().1;
    let dir = tempfile::tempdir().unwrap();
    let mut r = Rng(0x1A31_4A00);
    let (mut loaded, mut refused) = (0, 0);
    for i in 0..400 {
        let bytes = mutate(&base, header_len, &mut r);
        let path = write(dir.path(), &format!("mut{}.gguf", i % 8), &bytes);
        let precision = if i % 2 == 0 { Precision::F32 } else { Precision::Native };
        let ok = guarded(&format!("mutation {i}"), 20, move || {
            match load_model(&path, precision) {
                Err(e) => {
                    assert!(!e.to_string().is_empty());
                    false
                }
                Ok(m) => {
                    let pool = ThreadPool::new(1);
                    let (mut kv, table) = m.single_sequence_kv(8);
                    let mut logits = Vec::new();
                    let tokens = [1u32, 2];
                    let seq = [SeqChunk { len: 2, start: 0, blocks: &table, lora: None }];
                    let input = BatchInput { tokens: &tokens, seqs: &seq, logits_rows: &[1] };
                    // Errors are fine (a token id past a mutated vocabulary); panics are not.
                    let _ = m.forward(input, &mut kv, &mut Scratch::default(), &pool, &mut logits);
                    true
                }
            }
        });
        if ok {
            loaded += 1;
        } else {
            refused += 1;
        }
    }
    // Both outcomes occur, so the run exercises the loader and the forward pass.
    assert!(loaded > 10 && refused > 100, "loaded {loaded}, refused {refused}");
}
