//! The models a server offers, loaded on first request and unloaded when idle, within
//! one memory budget.
//!
//! A model's share of the budget is its weights (as loaded) plus its KV block pool. The
//! pool gets what the budget has left, up to [`DEFAULT_KV_CONTEXTS`] full context windows
//! (or exactly `--kv-memory`), and must hold at least one full context window; when it cannot, idle models are unloaded
//! (least recently used first) and, failing that, the request is refused with the sizes
//! — never an out-of-memory kill. Request names only ever select among the configured
//! models: a name is never turned into a path.

use crate::executor::Command;
use lamina_api::ApiError;
use lamina_core::memory::human_bytes as human;
use lamina_engine::{EmbedInput, Embedder, EmbeddingNet, Engine, EngineConfig, SpecMethod, SpeculativeConfig};
use lamina_kernels::ThreadPool;
use lamina_model::{ModelLora, Precision};
use lamina_tokenizer::Tokenizer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// One model the server offers.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// What requests call it (`model` field).
    pub name: String,
    pub path: PathBuf,
    pub precision: Precision,
    pub kind: ModelKind,
    /// Listed by `/v1/models` (and the chat page). An unlisted model is served all the
    /// same to a request naming it: collections' embedding model when it was not named
    /// among the models to serve.
    pub listed: bool,
    /// LoRA adapters served on this model (chat models only), applied at load.
    pub adapters: Vec<AdapterSpec>,
}

/// A LoRA adapter served on a base model: requests choose it with `model: "BASE:NAME"` or
/// `model: "NAME"`.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterSpec {
    pub name: String,
    /// A PEFT adapter folder.
    pub path: PathBuf,
    /// Multiplies the adapter's α/r.
    pub scale: f32,
}

/// A served adapter, as `/v1/adapters` lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterInfo {
    pub name: String,
    pub base: String,
    pub path: PathBuf,
    pub scale: f32,
    /// Whether its base is loaded now (adapters load and unload with their base).
    pub loaded: bool,
}

/// Reads `spec`'s adapter and resolves it against `model`; a bad file or an adapter for
/// another base is a 400 naming both.
pub fn prepare_adapter(model: &lamina_model::Model, spec: &AdapterSpec) -> Result<Arc<ModelLora>, ApiError> {
    let bad = |e: lamina_core::Error| ApiError::invalid_param("path", format!("LoRA adapter `{}` ({}): {e}", spec.name, spec.path.display()));
    let adapter = lamina_model::lora::LoraAdapter::load(&spec.path).map_err(bad)?;
    Ok(Arc::new(model.prepare_lora(&adapter, &spec.name, spec.scale).map_err(bad)?))
}

/// What a model serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A decoder: chat and completions, and embeddings from its hidden states.
    Chat,
    /// An encoder (BERT family): embeddings only.
    Embedding,
}

/// Tokens per forward call of an embedding request on a chat model (its KV cache for
/// the call is allocated per call, outside the engine's pool).
const DECODER_EMBED_BATCH_TOKENS: usize = 2048;

/// Full context windows a model's KV cache holds unless `--kv-memory` says otherwise:
/// sequences rarely fill their window, and when they do the scheduler pre-empts and
/// recomputes rather than fail, so four windows serve `max_sequences` well without
/// committing memory for sixteen.
pub const DEFAULT_KV_CONTEXTS: usize = 4;

/// How models are sized.
#[derive(Debug, Clone)]
pub struct ModelLimits {
    /// Bytes for all loaded models' weights and KV caches together.
    pub memory_budget: u64,
    /// Bytes for each model's KV pool (`None`: what the budget leaves, up to
    /// [`DEFAULT_KV_CONTEXTS`] full context windows).
    pub kv_memory: Option<u64>,
    /// Sequences each model runs at once.
    pub max_sequences: usize,
    /// Context window per sequence (`None`: the model's own).
    pub context_length: Option<usize>,
    pub block_size: usize,
    pub max_batch_tokens: usize,
    /// Where prefix caches are saved at shutdown and loaded at model load.
    pub cache_dir: Option<PathBuf>,
    /// Speculative decoding for every model (a draft model's weights and KV cache count
    /// in each model's share of the budget; its vocabulary is checked at load).
    pub speculative: Option<SpeculativeConfig>,
}

/// A loaded model, as request handlers see it.
pub struct Loaded {
    pub name: String,
    /// The weights the engine runs (shared with embedding requests on this model).
    pub model: Arc<lamina_model::Model>,
    pub tokenizer: Arc<Tokenizer>,
    pub context_length: usize,
    pub vocab_size: usize,
    /// Weights plus KV pool.
    pub bytes: u64,
    /// Its grammar compiler, made when a request first needs one ([`crate::structured`]).
    pub grammar: std::sync::OnceLock<Result<Arc<lamina_grammar::Compiler>, String>>,
    /// Its LoRA adapters by name, resolved against its weights.
    pub adapters: Mutex<HashMap<String, Arc<ModelLora>>>,
}

impl Loaded {
    /// The adapter called `name` (`None`: the base model).
    pub fn lora(&self, name: Option<&str>) -> Result<Option<Arc<ModelLora>>, ApiError> {
        let Some(name) = name else { return Ok(None) };
        let found = self.adapters.lock().expect("adapters").get(name).cloned();
        // Removed between the lookup of its base and now.
        found.map(Some).ok_or_else(|| ApiError::model_not_found(&format!("{}:{name}", self.name)))
    }
}

struct Entry {
    spec: ModelSpec,
    loaded: Option<Arc<Loaded>>,
    /// Requests between lookup and completion: such a model is not idle.
    inflight: Arc<AtomicUsize>,
    last_used: Instant,
}

/// Marks a request in flight on a model until dropped.
pub struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct Registry {
    entries: Mutex<HashMap<String, Entry>>,
    order: Vec<String>,
    /// One load (and its memory planning) at a time.
    loading: tokio::sync::Mutex<()>,
    limits: ModelLimits,
    workers: Arc<ThreadPool>,
    commands: Mutex<mpsc::Sender<Command>>,
    created: u64,
    /// Loaded embedding (encoder) models; they stay loaded.
    encoders: Mutex<HashMap<String, Arc<Embedder>>>,
    /// The pool embedding requests run on (see [`Registry::embed`]).
    embed_workers: Arc<ThreadPool>,
    /// One embedding computation at a time (shared with collections' ingestion and search).
    embedding: Arc<tokio::sync::Mutex<()>>,
}

impl Registry {
    pub fn new(specs: Vec<ModelSpec>, limits: ModelLimits, workers: Arc<ThreadPool>, commands: mpsc::Sender<Command>) -> Self {
        let order = specs.iter().filter(|s| s.listed).map(|s| s.name.clone()).collect();
        let entries = specs
            .into_iter()
            .map(|spec| (spec.name.clone(), Entry { spec, loaded: None, inflight: Arc::new(AtomicUsize::new(0)), last_used: Instant::now() }))
            .collect();
        let created = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let embed_workers = Arc::new(ThreadPool::new(workers.threads().div_ceil(2)));
        Registry {
            entries: Mutex::new(entries),
            order,
            loading: tokio::sync::Mutex::new(()),
            limits,
            workers,
            commands: Mutex::new(commands),
            created,
            encoders: Mutex::new(HashMap::new()),
            embed_workers,
            embedding: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Listed model names in the order given.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// Whether a model called `name` is served (listed or not).
    pub fn serves(&self, name: &str) -> bool {
        self.entries.lock().expect("registry").contains_key(name)
    }

    /// Whether `name`'s weights are in memory now (unknown names: `false`).
    pub fn is_loaded(&self, name: &str) -> bool {
        self.entries.lock().expect("registry").get(name).is_some_and(|e| e.loaded.is_some()) || self.encoders.lock().expect("encoders").contains_key(name)
    }

    fn kind(&self, name: &str) -> Result<ModelKind, ApiError> {
        self.entries.lock().expect("registry").get(name).map(|e| e.spec.kind).ok_or_else(|| ApiError::model_not_found(name))
    }

    /// An embedder for `name` (an encoder, loaded on first use, or a chat model's
    /// weights pooled), and, for a chat model, the mark that a request is in flight on it.
    pub async fn embedder(&self, name: &str) -> Result<(Arc<Embedder>, Option<InFlight>), ApiError> {
        if self.kind(name)? == ModelKind::Chat {
            let (loaded, inflight) = self.get(name).await?;
            let net = EmbeddingNet::Decoder(loaded.model.clone());
            let e = Embedder::new(net, loaded.tokenizer.clone(), self.embed_workers.clone(), None)
                .map_err(|e| ApiError::server_error(e.to_string()))?
                .with_batch_tokens(DECODER_EMBED_BATCH_TOKENS);
            return Ok((Arc::new(e), Some(inflight)));
        }
        if let Some(e) = self.encoders.lock().expect("encoders").get(name) {
            return Ok((e.clone(), None));
        }
        let _one = self.loading.lock().await;
        if let Some(e) = self.encoders.lock().expect("encoders").get(name) {
            return Ok((e.clone(), None));
        }
        let spec = self.entries.lock().expect("registry")[name].spec.clone();
        let (budget_left, pool) = (self.budget_left(), self.embed_workers.clone());
        let embedder = tokio::task::spawn_blocking(move || {
            let unavailable = |e: lamina_core::Error| ApiError::unavailable(format!("model `{}` could not be loaded: {e}", spec.name));
            let e = lamina_engine::resolve::load_embedder(spec.path.to_str(), spec.precision, pool, None, &mut |_| {}).map_err(unavailable)?;
            let bytes = embedder_bytes(&e);
            if bytes > budget_left {
                return Err(ApiError::unavailable(format!(
                    "model `{}` needs {} for its weights, and the memory budget has {} left",
                    spec.name,
                    human(bytes),
                    human(budget_left)
                )));
            }
            Ok(e)
        })
        .await
        .map_err(|e| ApiError::server_error(format!("loading the model failed: {e}")))??;
        let embedder = Arc::new(embedder);
        tracing::info!(model = %name, bytes = embedder_bytes(&embedder), "loaded");
        self.encoders.lock().expect("encoders").insert(name.to_string(), embedder.clone());
        Ok((embedder, None))
    }

    /// Runs `inputs` through `embedder` on the embedding pool, one request at a time.
    ///
    /// Embeddings run neither on the executor thread (a batch of long texts would hold
    /// up every stream's next token for its whole duration) nor on the generation pool
    /// (whose threads the executor drives step by step), but as a blocking task on a
    /// pool of their own with half the threads: token generation keeps going while an
    /// embedding request computes, slowed by the shared cores rather than stopped, and
    /// embedding requests queue behind each other instead of multiplying that load.
    pub async fn embed(&self, embedder: Arc<Embedder>, inputs: Vec<EmbedOwned>) -> Result<Vec<lamina_engine::Embedding>, lamina_core::Error> {
        let _one = self.embedding.lock().await;
        tokio::task::spawn_blocking(move || {
            let items: Vec<EmbedInput<'_>> = inputs
                .iter()
                .map(|i| match i {
                    EmbedOwned::Text(t) => EmbedInput::Text(t),
                    EmbedOwned::Tokens(t) => EmbedInput::Tokens(t),
                })
                .collect();
            embedder.embed(&items)
        })
        .await
        .map_err(|e| lamina_core::Error::Other(format!("the embedding task failed: {e}")))?
    }

    /// The lock [`Self::embed`] takes: held by any other embedding computation (a
    /// collection's ingestion and search take it per batch) so they queue as one.
    pub fn embed_gate(&self) -> Arc<tokio::sync::Mutex<()>> {
        self.embedding.clone()
    }

    pub fn created(&self) -> u64 {
        self.created
    }

    pub fn send(&self, cmd: Command) {
        // The executor outlives the HTTP server; a send can only fail during shutdown.
        let _ = self.commands.lock().expect("commands").send(cmd);
    }

    /// The executor unloaded `name` for idleness.
    pub fn unloaded(&self, name: &str) {
        if let Some(e) = self.entries.lock().expect("registry").get_mut(name) {
            e.loaded = None;
        }
    }

    /// Forgets that `name` is loaded (the executor no longer has it) so the next
    /// [`get`](Self::get) loads it again.
    pub fn forget(&self, name: &str, loaded: &Arc<Loaded>) {
        if let Some(e) = self.entries.lock().expect("registry").get_mut(name) {
            if e.loaded.as_ref().is_some_and(|l| Arc::ptr_eq(l, loaded)) {
                e.loaded = None;
            }
        }
    }

    /// The model called `name`, loading it first if needed, and a mark that a request is
    /// in flight on it.
    pub async fn get(&self, name: &str) -> Result<(Arc<Loaded>, InFlight), ApiError> {
        let (base, _) = self.base_of(name)?;
        let name = base.as_str();
        if let Some(found) = self.lookup(name)? {
            return Ok(found);
        }
        let _one = self.loading.lock().await;
        if let Some(found) = self.lookup(name)? {
            return Ok(found);
        }
        let spec = self.entries.lock().expect("registry")[name].spec.clone();
        self.make_room_for(&spec).await?;
        let budget_left = self.budget_left();
        let limits = self.limits.clone();
        let workers = self.workers.clone();
        let (engine, loaded, cache_file) = tokio::task::spawn_blocking(move || load(&spec, &limits, budget_left, workers))
            .await
            .map_err(|e| ApiError::server_error(format!("loading the model failed: {e}")))??;
        tracing::info!(model = %loaded.name, bytes = loaded.bytes, "loaded");
        let loaded = Arc::new(loaded);
        self.send(Command::Install { model: name.to_string(), engine: Box::new(engine), cache_file });
        let mut entries = self.entries.lock().expect("registry");
        let e = entries.get_mut(name).expect("known model");
        e.loaded = Some(loaded.clone());
        e.last_used = Instant::now();
        e.inflight.fetch_add(1, Ordering::AcqRel);
        Ok((loaded, InFlight(e.inflight.clone())))
    }

    /// The served model a request's `model` names, and the adapter on it: `BASE`,
    /// `BASE:ADAPTER`, or `ADAPTER` alone.
    pub fn base_of(&self, name: &str) -> Result<(String, Option<String>), ApiError> {
        let entries = self.entries.lock().expect("registry");
        if entries.contains_key(name) {
            return Ok((name.to_string(), None));
        }
        if let Some((base, adapter)) = name.rsplit_once(':') {
            if entries.get(base).is_some_and(|e| e.spec.adapters.iter().any(|a| a.name == adapter)) {
                return Ok((base.to_string(), Some(adapter.to_string())));
            }
        }
        for (base, e) in entries.iter() {
            if e.spec.adapters.iter().any(|a| a.name == name) {
                return Ok((base.clone(), Some(name.to_string())));
            }
        }
        Err(ApiError::model_not_found(name))
    }

    /// Every served adapter, in the order added per base.
    pub fn adapters(&self) -> Vec<AdapterInfo> {
        let entries = self.entries.lock().expect("registry");
        let mut out = Vec::new();
        for base in self.order.iter().chain(entries.keys().filter(|k| !self.order.contains(k))) {
            let Some(e) = entries.get(base) else { continue };
            for a in &e.spec.adapters {
                out.push(AdapterInfo { name: a.name.clone(), base: base.clone(), path: a.path.clone(), scale: a.scale, loaded: e.loaded.is_some() });
            }
        }
        out
    }

    /// Adds an adapter on `base` (default: the first listed chat model), loading the base
    /// if needed to check the adapter against it. Names are unique among models and
    /// adapters.
    pub async fn add_adapter(&self, base: Option<&str>, spec: AdapterSpec) -> Result<AdapterInfo, ApiError> {
        if spec.name.is_empty() || spec.name.contains(':') || spec.name.contains('/') {
            return Err(ApiError::invalid_param("name", format!("`{}`: an adapter name is non-empty, without `:` or `/`", spec.name)));
        }
        if !spec.scale.is_finite() {
            return Err(ApiError::invalid_param("scale", "the scale must be a finite number"));
        }
        let base = match base {
            Some(b) => b.to_string(),
            None => self
                .order
                .iter()
                .find(|n| self.kind(n).ok() == Some(ModelKind::Chat))
                .cloned()
                .ok_or_else(|| ApiError::invalid_param("model", "no chat model is served"))?,
        };
        if self.kind(&base)? != ModelKind::Chat {
            return Err(ApiError::invalid_param("model", format!("`{base}` is an embedding model; adapters go on chat models")));
        }
        if self.serves(&spec.name) || self.adapters().iter().any(|a| a.name == spec.name) {
            return Err(ApiError::invalid_param("name", format!("`{}` is already the name of a model or adapter", spec.name)));
        }
        let (loaded, _inflight) = self.get(&base).await?;
        let (model, s) = (loaded.model.clone(), spec.clone());
        let lora = tokio::task::spawn_blocking(move || prepare_adapter(&model, &s))
            .await
            .map_err(|e| ApiError::server_error(format!("loading the adapter failed: {e}")))??;
        let mut entries = self.entries.lock().expect("registry");
        let e = entries.get_mut(&base).expect("known model");
        if e.spec.adapters.iter().any(|a| a.name == spec.name) {
            return Err(ApiError::invalid_param("name", format!("`{}` was added meanwhile", spec.name)));
        }
        e.spec.adapters.push(spec.clone());
        if let Some(l) = &e.loaded {
            l.adapters.lock().expect("adapters").insert(spec.name.clone(), lora);
        }
        Ok(AdapterInfo { name: spec.name, base, path: spec.path, scale: spec.scale, loaded: e.loaded.is_some() })
    }

    /// Removes the adapter `name` (`ADAPTER` or `BASE:ADAPTER`); requests running with it
    /// finish with it.
    pub fn remove_adapter(&self, name: &str) -> Result<AdapterInfo, ApiError> {
        let (base, adapter) = self.base_of(name)?;
        let Some(adapter) = adapter else { return Err(ApiError::invalid_param("name", format!("`{name}` is a model, not an adapter"))) };
        let mut entries = self.entries.lock().expect("registry");
        let e = entries.get_mut(&base).expect("known model");
        let i = e.spec.adapters.iter().position(|a| a.name == adapter).ok_or_else(|| ApiError::model_not_found(name))?;
        let spec = e.spec.adapters.remove(i);
        if let Some(l) = &e.loaded {
            l.adapters.lock().expect("adapters").remove(&adapter);
        }
        Ok(AdapterInfo { name: spec.name, base, path: spec.path, scale: spec.scale, loaded: e.loaded.is_some() })
    }

    fn lookup(&self, name: &str) -> Result<Option<(Arc<Loaded>, InFlight)>, ApiError> {
        let mut entries = self.entries.lock().expect("registry");
        let e = entries.get_mut(name).ok_or_else(|| ApiError::model_not_found(name))?;
        if e.spec.kind == ModelKind::Embedding {
            return Err(ApiError::invalid_param("model", format!("`{name}` is an embedding model: it serves /v1/embeddings only")));
        }
        Ok(e.loaded.clone().map(|l| {
            e.last_used = Instant::now();
            e.inflight.fetch_add(1, Ordering::AcqRel);
            (l, InFlight(e.inflight.clone()))
        }))
    }

    fn budget_left(&self) -> u64 {
        let encoders: u64 = self.encoders.lock().expect("encoders").values().map(|e| embedder_bytes(e)).sum();
        let used: u64 = encoders + self.entries.lock().expect("registry").values().filter_map(|e| e.loaded.as_ref()).map(|l| l.bytes).sum::<u64>();
        self.limits.memory_budget.saturating_sub(used)
    }

    /// Unloads idle models, least recently used first, until `spec` can fit (judged by
    /// its file size, a lower bound of its weights, plus one context window of KV is
    /// checked when it loads).
    async fn make_room_for(&self, spec: &ModelSpec) -> Result<(), ApiError> {
        let want = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
        loop {
            if self.budget_left() >= want.saturating_mul(11) / 10 {
                return Ok(());
            }
            let victim = {
                let entries = self.entries.lock().expect("registry");
                entries
                    .values()
                    .filter(|e| e.loaded.is_some() && e.inflight.load(Ordering::Acquire) == 0)
                    .min_by_key(|e| e.last_used)
                    .map(|e| e.spec.name.clone())
            };
            let Some(victim) = victim else { return Ok(()) };
            let (done, wait) = tokio::sync::oneshot::channel();
            self.send(Command::Unload { model: victim.clone(), done });
            let _ = wait.await;
            self.unloaded(&victim);
            tracing::info!(model = %victim, "unloaded to make room for {}", spec.name);
        }
    }
}

/// An input of an embedding request, owned (it crosses into a blocking task).
pub enum EmbedOwned {
    Text(String),
    Tokens(Vec<u32>),
}

/// The weights an embedding model holds.
fn embedder_bytes(e: &Embedder) -> u64 {
    match e.net() {
        EmbeddingNet::Encoder(enc) => enc.weight_bytes() as u64,
        EmbeddingNet::Decoder(m) => m.weight_bytes() as u64,
    }
}

/// Loads a model and sizes its engine within `budget_left` bytes; with a cache folder,
/// restores the model's saved prefix cache and says where to save it.
fn load(spec: &ModelSpec, limits: &ModelLimits, budget_left: u64, workers: Arc<ThreadPool>) -> Result<(Engine, Loaded, Option<PathBuf>), ApiError> {
    let unavailable = |e: lamina_core::Error| ApiError::unavailable(format!("model `{}` could not be loaded: {e}", spec.name));
    let file = std::fs::metadata(&spec.path).map(|m| m.len()).unwrap_or(0);
    if file > budget_left {
        return Err(ApiError::unavailable(format!(
            "model `{}` needs at least {} for its weights, and the memory budget has {} left of {}",
            spec.name,
            human(file),
            human(budget_left),
            human(limits.memory_budget)
        )));
    }
    let model = lamina_model::load_model(&spec.path, spec.precision).map_err(unavailable)?;
    let tokenizer = lamina_engine::resolve::load_tokenizer(&spec.path).map_err(unavailable)?;
    let ctx = limits.context_length.unwrap_or(model.config.context_length).min(model.config.context_length);
    let shape = model.kv_shape(limits.block_size);
    let draft = match limits.speculative.as_ref().map(|s| &s.method) {
        Some(SpecMethod::DraftModel(d)) => Some(&d.model),
        _ => None,
    };
    let weights = (model.weight_bytes() + draft.map_or(0, |d| d.weight_bytes())) as u64;
    // A draft model keeps as many positions as the model.
    let block = (shape.block_bytes() + draft.map_or(0, |d| d.kv_shape(limits.block_size).block_bytes())) as u64;
    let min_blocks = shape.blocks_for(ctx) as u64;
    let for_kv = budget_left.saturating_sub(weights);
    let (blocks, min_blocks) = match limits.kv_memory {
        // An explicit size: exactly that (a sequence longer than it can hold is refused
        // per request, and requests wait for blocks), if the budget has it.
        Some(kv) => ((kv / block).max(1), if kv > for_kv { u64::MAX } else { 1 }),
        None => ((min_blocks * limits.max_sequences.clamp(1, DEFAULT_KV_CONTEXTS) as u64).min(for_kv / block), min_blocks),
    };
    if blocks < min_blocks {
        return Err(ApiError::unavailable(format!(
            "model `{}` needs {} of weights and {} of KV cache, and the memory budget has {} left of {}",
            spec.name,
            human(weights),
            human(limits.kv_memory.unwrap_or(min_blocks * block)),
            human(budget_left),
            human(limits.memory_budget)
        )));
    }
    let fingerprint = match &limits.cache_dir {
        Some(_) => Some(lamina_engine::model_fingerprint(&spec.path).map_err(unavailable)?),
        None => None,
    };
    let cache_file = limits.cache_dir.as_ref().zip(fingerprint.as_ref()).map(|(d, f)| {
        let precision = format!("{:?}", spec.precision).to_lowercase();
        d.join(format!("{}-{precision}-bs{}.lkv", &f[..32.min(f.len())], limits.block_size))
    });
    let config = EngineConfig {
        max_sequences: limits.max_sequences.max(1),
        context_length: ctx,
        max_batch_tokens: limits.max_batch_tokens,
        block_size: limits.block_size,
        kv_blocks: blocks as usize,
        prefault_kv: true,
        model_fingerprint: fingerprint,
        speculative: limits.speculative.clone(),
    };
    let vocab_size = model.config.vocab_size;
    let tokenizer = Arc::new(tokenizer);
    let model = Arc::new(model);
    let mut engine = Engine::new(model.clone(), tokenizer.clone(), workers, config).map_err(unavailable)?;
    if let Some(file) = cache_file.as_ref().filter(|f| f.exists()) {
        match engine.load_prefix_cache(file) {
            Ok(n) => tracing::info!(model = %spec.name, "restored {n} cached KV blocks from {}", file.display()),
            // A damaged or foreign file costs the cache, never the model.
            Err(e) => eprintln!("warning: {e}; starting with an empty prefix cache"),
        }
    }
    let mut adapters = HashMap::new();
    for a in &spec.adapters {
        adapters.insert(a.name.clone(), prepare_adapter(&model, a)?);
    }
    let adapter_bytes: u64 = adapters.values().map(|l| l.weight_bytes() as u64).sum();
    let loaded = Loaded {
        name: spec.name.clone(),
        model,
        tokenizer,
        context_length: ctx,
        vocab_size,
        bytes: weights + blocks * block + adapter_bytes,
        grammar: Default::default(),
        adapters: Mutex::new(adapters),
    };
    Ok((engine, loaded, cache_file))
}
