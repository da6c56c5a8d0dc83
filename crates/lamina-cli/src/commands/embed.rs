//! `lamina embed`: one embedding per input line, as JSONL on stdout or an `.npy` matrix.

use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_engine::{resolve, EmbedInput, Embedder, Pooling};
use lamina_kernels::ThreadPool;
use lamina_model::Precision;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Args, Debug)]
pub struct EmbedArgs {
    /// Embedding model (default all-minilm-l6-v2) — or a chat model, whose hidden states
    /// are pooled — then the input file (`-` or none: stdin). With one argument, it is the
    /// model when it names a built-in model, a folder or a .gguf file, else the input file.
    #[arg(value_name = "MODEL|FILE", num_args = 0..=2)]
    pub args: Vec<String>,
    /// Output format: `jsonl` (one `{"index", "tokens", "embedding"}` object per line) or
    /// `npy` (a float32 matrix of one row per line; needs --output).
    #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "npy"])]
    pub format: String,
    /// Write to this file (written whole and renamed into place) instead of stdout.
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// Lines embedded per step (their vectors are written before the next lines are read).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=65536))]
    pub batch: u64,
    /// Pooling of the token states: `mean` (the default for encoders) or `last` (the
    /// default for chat models).
    #[arg(long, value_parser = ["mean", "last"])]
    pub pooling: Option<String>,
    /// Worker threads (default and 0: all logical CPUs).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Matrix arithmetic: `native` (8-bit, fast) or `f32` (the checkpoint's f32 weights,
    /// as sentence-transformers computes).
    #[arg(long, default_value = "native", value_parser = ["native", "f32"])]
    pub precision: String,
    /// Print a summary to stderr at the end: inputs, tokens, embedding time and rates
    /// (time spent embedding only, not loading or reading).
    #[arg(short, long)]
    pub verbose: bool,
}

/// Whether a lone argument names a model rather than an input file.
fn is_model_spec(s: &str) -> bool {
    let p = Path::new(s);
    lamina_core::registry::find_builtin(s).is_some() || p.is_dir() || p.extension().is_some_and(|x| x == "gguf")
}

pub fn run(args: EmbedArgs) -> Result<()> {
    let (model, input) = match args.args.as_slice() {
        [] => (None, None),
        [one] if is_model_spec(one) => (Some(one.as_str()), None),
        [one] => (None, Some(one.as_str())),
        [m, f] => (Some(m.as_str()), Some(f.as_str())),
        _ => bail!("at most two arguments: MODEL and FILE"),
    };
    if args.format == "npy" && args.output.is_none() {
        bail!("--format npy writes a binary file: name it with --output FILE");
    }
    let threads = lamina_core::Threads::resolve(args.threads.unwrap_or(0));
    if let Some(n) = threads.cap_notice("--threads") {
        eprintln!("{n}");
    }
    let precision = if args.precision == "f32" { Precision::F32 } else { Precision::Native };
    let pooling = args.pooling.as_deref().map(Pooling::parse).transpose()?;
    let pool = Arc::new(ThreadPool::new(threads.used));
    let embedder = resolve::load_embedder(model, precision, pool, pooling, &mut |m| eprintln!("{m}"))?;

    let reader: Box<dyn BufRead> = match input {
        None | Some("-") => Box::new(std::io::stdin().lock()),
        Some(f) => Box::new(std::io::BufReader::new(std::fs::File::open(f).with_context(|| format!("cannot open {f}"))?)),
    };
    let mut sink = Sink::new(&args, embedder.dimensions());
    let mut lines = Vec::with_capacity(args.batch as usize);
    let mut index = 0usize;
    let mut stats = Stats::default();
    for line in reader.lines() {
        let line = line.with_context(|| format!("reading input line {}", index + lines.len() + 1))?;
        lines.push(line);
        if lines.len() == args.batch as usize {
            index = embed_lines(&embedder, &lines, index, &mut sink, &mut stats)?;
            lines.clear();
        }
    }
    if !lines.is_empty() {
        embed_lines(&embedder, &lines, index, &mut sink, &mut stats)?;
    }
    sink.finish()?;
    if args.verbose {
        let s = stats.seconds.max(1e-9);
        eprintln!(
            "embedded {} inputs, {} tokens in {:.3} s: {:.1} inputs/s, {:.1} tokens/s ({} truncated)",
            stats.inputs,
            stats.tokens,
            stats.seconds,
            stats.inputs as f64 / s,
            stats.tokens as f64 / s,
            stats.truncated
        );
    }
    Ok(())
}

#[derive(Default)]
struct Stats {
    inputs: usize,
    tokens: usize,
    truncated: usize,
    seconds: f64,
}

/// Embeds `lines` (numbered from `index`) into `sink`; returns the next index.
fn embed_lines(e: &Embedder, lines: &[String], index: usize, sink: &mut Sink, stats: &mut Stats) -> Result<usize> {
    let inputs: Vec<EmbedInput> = lines.iter().map(|l| EmbedInput::Text(l.strip_suffix('\r').unwrap_or(l))).collect();
    let t0 = std::time::Instant::now();
    let out = e.embed(&inputs).with_context(|| format!("embedding lines {}..{}", index + 1, index + lines.len()))?;
    stats.seconds += t0.elapsed().as_secs_f64();
    stats.inputs += out.len();
    stats.tokens += out.iter().map(|o| o.tokens).sum::<usize>();
    stats.truncated += out.iter().filter(|o| o.truncated).count();
    for (i, emb) in out.iter().enumerate() {
        sink.push(index + i, emb.tokens, &emb.vector)?;
    }
    Ok(index + lines.len())
}

/// One JSONL record (f32 values printed in their shortest form).
#[derive(serde::Serialize)]
struct Line<'a> {
    index: usize,
    tokens: usize,
    embedding: &'a [f32],
}

/// Where vectors go: JSONL streamed to stdout, or collected for a file.
struct Sink {
    output: Option<PathBuf>,
    npy: bool,
    dims: usize,
    stdout: std::io::BufWriter<std::io::Stdout>,
    /// JSONL text or f32 rows, for a file.
    text: Vec<u8>,
    rows: Vec<f32>,
}

impl Sink {
    fn new(args: &EmbedArgs, dims: usize) -> Sink {
        Sink {
            output: args.output.clone(),
            npy: args.format == "npy",
            dims,
            stdout: std::io::BufWriter::new(std::io::stdout()),
            text: Vec::new(),
            rows: Vec::new(),
        }
    }

    fn push(&mut self, index: usize, tokens: usize, v: &[f32]) -> Result<()> {
        if self.npy {
            self.rows.extend_from_slice(v);
            return Ok(());
        }
        let line = Line { index, tokens, embedding: v };
        let out: &mut dyn Write = if self.output.is_some() { &mut self.text } else { &mut self.stdout };
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
        if self.output.is_none() {
            out.flush()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<()> {
        let Some(path) = &self.output else {
            self.stdout.flush()?;
            return Ok(());
        };
        let bytes = if self.npy { npy_f32(&self.rows, self.rows.len() / self.dims.max(1), self.dims) } else { std::mem::take(&mut self.text) };
        lamina_core::fs::write_bytes_atomic(path, &bytes)?;
        Ok(())
    }
}

/// A NumPy `.npy` file (format 1.0) holding a C-order little-endian float32 matrix.
pub fn npy_f32(values: &[f32], rows: usize, cols: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // Magic (6) + version (2) + length (2) + header + '\n' is a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + values.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}
