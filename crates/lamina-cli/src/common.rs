//! Arguments shared by several commands, and model loading with user-facing messages.

use anyhow::{Context, Result};
use clap::Args;
use lamina_engine::{resolve, DraftModel, Engine, EngineConfig, GenerationParams, SamplingParams, SpecMethod, SpeculativeConfig};
use lamina_kernels::ThreadPool;
use lamina_model::{Model, Precision};
use lamina_tokenizer::Tokenizer;
use std::sync::Arc;

/// `--lora ADAPTER[:SCALE]`: a LoRA adapter applied unmerged on top of the model.
#[derive(Args, Debug, Clone, Default)]
pub struct LoraArgs {
    /// A LoRA adapter folder (PEFT's format: adapter_config.json +
    /// adapter_model.safetensors), optionally with a multiplier of its α/r scale after a
    /// colon (`ADAPTER:0.5`).
    #[arg(long, value_name = "ADAPTER[:SCALE]")]
    pub lora: Option<String>,
}

/// Splits `PATH[:SCALE]`; a suffix that is not a number is part of the path.
pub fn split_scale(spec: &str) -> (&str, f32) {
    match spec.rsplit_once(':') {
        Some((path, scale)) if !path.is_empty() => match scale.parse::<f32>() {
            Ok(s) => (path, s),
            Err(_) => (spec, 1.0),
        },
        _ => (spec, 1.0),
    }
}

impl LoraArgs {
    /// The adapter resolved against `model`, or `None` without `--lora`.
    pub fn prepare(&self, model: &Model) -> Result<Option<Arc<lamina_model::ModelLora>>> {
        let Some(spec) = &self.lora else { return Ok(None) };
        let (path, scale) = split_scale(spec);
        let adapter = lamina_model::lora::LoraAdapter::load(std::path::Path::new(path)).with_context(|| format!("loading the LoRA adapter {path}"))?;
        let name = std::path::Path::new(path).file_name().map_or(path.to_string(), |n| n.to_string_lossy().into_owned());
        let lora = model.prepare_lora(&adapter, &name, scale).with_context(|| format!("applying the LoRA adapter {path} to {}", model.source.display()))?;
        Ok(Some(Arc::new(lora)))
    }
}

#[derive(Args, Debug, Clone)]
pub struct ModelArgs {
    /// Worker threads (default and 0: all logical CPUs; more than the CPUs are capped).
    #[arg(short = 't', long)]
    pub threads: Option<usize>,
    /// Matrix arithmetic: `native` (8-bit activations, fast, as llama.cpp) or `f32`
    /// (dequantized weights, as transformers).
    #[arg(long, default_value = "native", value_parser = ["native", "f32"])]
    pub precision: String,
    /// Context window to use (default: the model's, capped at 4096; at most the model's).
    #[arg(short = 'c', long, value_parser = parse_ctx)]
    pub ctx: Option<usize>,
    /// Positions per KV-cache block (the paged cache's unit of allocation and of prefix
    /// sharing).
    #[arg(long, default_value_t = lamina_model::DEFAULT_BLOCK_SIZE, value_parser = parse_block_size)]
    pub block_size: usize,
}

fn parse_ctx(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("the context window must hold at least 1 token".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Prints `msg` on stderr the first time it is seen in this process (commands such as
/// `bench` resolve their settings once per engine they build).
fn warn_once(msg: &str) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if !seen.iter().any(|m| m == msg) {
        eprintln!("{msg}");
        seen.push(msg.to_string());
    }
}

/// 1 to 4096 positions per block.
fn parse_block_size(s: &str) -> std::result::Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=4096).contains(&n) => Ok(n),
        _ => Err(format!("`{s}`: a block holds 1 to 4096 positions")),
    }
}

impl ModelArgs {
    pub fn precision(&self) -> Precision {
        if self.precision == "f32" {
            Precision::F32
        } else {
            Precision::Native
        }
    }
    /// `--threads`, capped at the CPUs this process may use (with a warning); 0 or
    /// absent means all of them.
    pub fn threads(&self) -> usize {
        let t = lamina_core::Threads::resolve(self.threads.unwrap_or(0));
        if let Some(notice) = t.cap_notice("--threads") {
            warn_once(&notice);
        }
        t.used
    }

    /// The context window for `model`: `--ctx` (warned about and lowered when it is past
    /// the context the model was trained for), else the model's, capped at 4096.
    pub fn context(&self, model: &Model) -> usize {
        let trained = model.config.context_length;
        match self.ctx {
            Some(c) if c > trained => {
                warn_once(&format!("warning: --ctx {c} is more than the {trained} tokens the model was trained for; using {trained}"));
                trained
            }
            Some(c) => c,
            None => trained.min(4096),
        }
    }
}

/// Speculative decoding flags (`run`, `chat`, `serve`, `bench`).
#[derive(Args, Debug, Clone)]
pub struct SpeculativeArgs {
    /// Speculative decoding: `lookup` drafts tokens by finding the output's latest n-gram
    /// in the prompt and output so far (pays off when the output copies its input:
    /// summaries, edits); `off` decodes one token per step. Greedy output is the same
    /// either way, sampled output has the same distribution.
    #[arg(long, default_value = "off", value_parser = ["off", "lookup"])]
    pub speculative: String,
    /// Speculative decoding with a draft model: a smaller model (or a lower-bit copy) with
    /// the same vocabulary, which must match token for token.
    #[arg(long, value_name = "MODEL", conflicts_with = "speculative")]
    pub draft: Option<String>,
    /// Most draft tokens verified per step (fewer while drafts are being rejected).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=64))]
    pub draft_tokens: u64,
}

impl SpeculativeArgs {
    /// The speculative decoding the flags ask for (`None`: off), loading the draft model
    /// if there is one (its vocabulary is checked when the engine is made).
    pub fn config(&self, args: &ModelArgs) -> Result<Option<SpeculativeConfig>> {
        let k = self.draft_tokens as usize;
        if let Some(draft) = &self.draft {
            let (model, tokenizer) = resolve::load(Some(draft), args.precision(), &mut |msg| eprintln!("{msg}"))?;
            let draft = DraftModel { model: Arc::new(model), tokenizer: Arc::new(tokenizer) };
            return Ok(Some(SpeculativeConfig { method: SpecMethod::DraftModel(draft), k }));
        }
        Ok((self.speculative == "lookup").then(|| SpeculativeConfig::prompt_lookup(k)))
    }
}

#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Temperature; 0 means greedy.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f32,
    /// Keep the k most likely tokens (0 = off).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set with this total probability (1 = off).
    #[arg(long, default_value_t = 0.95)]
    pub top_p: f32,
    /// Drop tokens less likely than min-p × the most likely one (0 = off).
    #[arg(long, default_value_t = 0.05)]
    pub min_p: f32,
    /// Repetition penalty over the last --repeat-last-n tokens (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub frequency_penalty: f32,
    #[arg(long, default_value_t = 0.0)]
    pub presence_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    /// Random seed: the same seed gives the same output.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Most tokens to generate.
    #[arg(short = 'n', long, default_value_t = 256)]
    pub max_tokens: usize,
    /// Stop when this text is generated (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Do not stop at end-of-sequence tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// Print a summary (token counts and speeds) to stderr at the end.
    #[arg(short, long)]
    pub verbose: bool,
}

impl SamplingArgs {
    pub fn params(&self) -> Result<GenerationParams> {
        let sampling = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k,
            top_p: self.top_p,
            min_p: self.min_p,
            repetition_penalty: self.repeat_penalty,
            frequency_penalty: self.frequency_penalty,
            presence_penalty: self.presence_penalty,
            penalty_last_n: self.repeat_last_n,
            seed: self.seed,
        };
        sampling.validate().map_err(|e| anyhow::anyhow!("invalid sampling option: {e}"))?;
        Ok(GenerationParams { sampling, max_tokens: self.max_tokens, stop: self.stop.clone(), ignore_eos: self.ignore_eos, ..GenerationParams::default() })
    }
}

/// Resolves and loads MODEL (None = the built-in default), printing download progress.
pub fn load(model: Option<&str>, args: &ModelArgs) -> Result<(Arc<Model>, Arc<Tokenizer>)> {
    let (m, t) = resolve::load(model, args.precision(), &mut |msg| eprintln!("{msg}"))?;
    Ok((Arc::new(m), Arc::new(t)))
}

/// An engine on a worker pool of its own, for `sequences` concurrent sequences of up to
/// the context window (`--ctx`, default the model's capped at 4096), with `speculative`
/// decoding.
pub fn engine(model: Arc<Model>, tok: Arc<Tokenizer>, args: &ModelArgs, sequences: usize, speculative: Option<SpeculativeConfig>) -> Result<Engine> {
    let ctx = args.context(&model);
    let workers = Arc::new(ThreadPool::new(args.threads()));
    let config = EngineConfig { max_sequences: sequences, context_length: ctx, block_size: args.block_size, speculative, ..EngineConfig::default() };
    Ok(Engine::new(model, tok, workers, config)?)
}

/// ` | speculative: 120 of 150 drafts kept (80.0%)`, or nothing without drafts.
pub fn acceptance(stats: &lamina_engine::SeqStats) -> String {
    stats
        .acceptance()
        .map(|a| format!(" | speculative: {} of {} drafts kept ({:.1}%)", stats.accepted_tokens, stats.draft_tokens, a * 100.0))
        .unwrap_or_default()
}

/// ` | LABEL 12.3 tok/s`, or nothing when no time was measured for it.
pub fn rate(label: &str, tok_s: Option<f64>) -> String {
    tok_s.map(|r| format!(" | {label} {r:.1} tok/s")).unwrap_or_default()
}

/// Peak resident memory of this process, in bytes (Linux `VmHWM`).
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A per-token callback that prints each new piece of text to stdout as it arrives.
pub fn stream_to_stdout() -> lamina_engine::TokenCallback {
    Box::new(|ev| {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(ev.text.as_bytes());
        let _ = out.flush();
        true
    })
}

/// Where collections live (`lamina index …`, `lamina ask`).
#[derive(Args, Debug, Clone)]
pub struct CollectionsArgs {
    /// A folder of collections or a postgres:// URL (default: $LAMINA_COLLECTIONS, else the
    /// user's data folder's lamina/collections).
    #[arg(long, value_name = "DIR|URL")]
    pub collections: Option<String>,
}

impl CollectionsArgs {
    pub fn location(&self) -> Result<String> {
        collections_location(self.collections.as_deref())
    }
}

/// Where collections live: `flag` (`--collections`) when given, else `$LAMINA_COLLECTIONS`,
/// else the user's data folder's `lamina/collections` (`lamina index`, `ask`, `serve`).
pub fn collections_location(flag: Option<&str>) -> Result<String> {
    if let Some(c) = flag {
        return Ok(c.to_string());
    }
    if let Some(c) = std::env::var_os("LAMINA_COLLECTIONS").filter(|c| !c.is_empty()) {
        return Ok(c.to_string_lossy().into_owned());
    }
    let data = dirs::data_dir().ok_or_else(|| anyhow::anyhow!("no data folder for this user: give --collections DIR or set LAMINA_COLLECTIONS"))?;
    Ok(data.join("lamina").join("collections").to_string_lossy().into_owned())
}

/// Reranking a search's first hits with a chat model (`lamina index search`, `lamina ask`).
#[derive(Args, Debug, Clone)]
pub struct RerankArgs {
    /// Rerank the first N hits (5 when N is left out) with the chat model: how much likelier
    /// the question makes each passage as its answer. Better first hits for about N × 100
    /// tokens of prefill a query.
    #[arg(long, value_name = "N", num_args = 0..=1, default_missing_value = "5")]
    pub rerank: Option<usize>,
    /// The chat model that reranks (default: the built-in chat model; for `ask`, its MODEL).
    #[arg(long, value_name = "MODEL")]
    pub rerank_model: Option<String>,
    /// The reranker's weight against the search score, 0–1 (1: the reranker alone).
    #[arg(long, value_name = "W", default_value_t = lamina_rag::rerank::DEFAULT_RERANK_WEIGHT)]
    pub rerank_weight: f32,
}

impl RerankArgs {
    /// The options when reranking is asked for, checked.
    pub fn options(&self) -> Result<Option<lamina_rag::RerankOptions>> {
        let Some(candidates) = self.rerank else { return Ok(None) };
        if candidates < 2 {
            anyhow::bail!("--rerank {candidates}: reranking needs at least 2 candidates");
        }
        if !(0.0..=1.0).contains(&self.rerank_weight) {
            anyhow::bail!("--rerank-weight {}: a weight between 0 and 1", self.rerank_weight);
        }
        Ok(Some(lamina_rag::RerankOptions { candidates, weight: self.rerank_weight }))
    }

    /// The reranker on `model` (already loaded, as `name`) with `threads` threads.
    pub fn reranker(name: &str, model: Arc<Model>, tok: Arc<Tokenizer>, threads: usize) -> Result<lamina_rag::rerank::EngineReranker> {
        let workers = Arc::new(ThreadPool::new(threads));
        Ok(lamina_rag::rerank::EngineReranker::new(name, model, tok, workers, lamina_rag::rerank::DEFAULT_PASSAGE_TOKENS)?)
    }
}
