//! `lamina serve`: the OpenAI-compatible server (`lamina-server`) on a socket, with the
//! models named on the command line, until SIGTERM or Ctrl-C.

use crate::common::{ModelArgs, SpeculativeArgs};
use anyhow::{bail, Context, Result};
use clap::Args;
use lamina_engine::resolve;
use lamina_server::auth::CollectionKeys;
use lamina_server::collections::CollectionsConfig;
use lamina_server::models::{AdapterSpec, ModelKind, ModelLimits, ModelSpec};
use lamina_server::ServerConfig;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Models to serve: `NAME=MODEL` or `MODEL` (a .gguf file, a Hugging Face folder, a
    /// built-in name or a hub id; named after the built-in, the file or the id). Requests
    /// choose one with their `model` field. None: the built-in default.
    pub models: Vec<String>,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY`.
    #[arg(long, conflicts_with = "api_keys")]
    pub api_key: Option<String>,
    /// A file of accepted keys, one per line (blank lines and `#` comments ignored).
    #[arg(long)]
    pub api_keys: Option<PathBuf>,
    /// Memory for all loaded models' weights and KV caches (e.g. 4GiB, 512MiB; default:
    /// three quarters of the memory available at start). A model's KV cache is committed
    /// when it loads, so memory use stays what was planned.
    #[arg(long, value_parser = parse_size)]
    pub memory: Option<u64>,
    /// Memory for each model's KV cache (default: four full context windows, within what
    /// the budget leaves after the weights).
    #[arg(long, value_parser = parse_size)]
    pub kv_memory: Option<u64>,
    /// Requests that may wait per model before new ones get 429.
    #[arg(long, default_value_t = 256)]
    pub max_queue: usize,
    /// Unload a model after this long without requests (e.g. 10m, 30s; 0 = never).
    #[arg(long, default_value = "0", value_parser = parse_duration)]
    pub idle_unload: Duration,
    /// Sequences each model decodes at once (the rest wait).
    #[arg(long, default_value_t = 16)]
    pub max_sequences: usize,
    /// Most tokens in one forward pass (decode tokens plus prompt chunks).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Keep each model's prefix cache here across restarts (saved at shutdown and when a
    /// model is unloaded, loaded with the model; checked against the model's weights).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Where collections (`/v1/collections`, `rag` in chat completions) live: a folder,
    /// or a `postgres://` URL (default: `$LAMINA_COLLECTIONS`, else the user's data
    /// folder's `lamina/collections`, as for `lamina index`). Opened on first use.
    #[arg(long, value_name = "DIR|URL")]
    pub collections: Option<String>,
    /// The model new collections embed with: a served model's name, or a MODEL as for the
    /// positional arguments (then served too, loaded on first use).
    #[arg(long, default_value = lamina_core::registry::DEFAULT_EMBEDDING_MODEL)]
    pub embedding_model: String,
    /// Per-collection API keys: a JSON file `{"collection": ["key", …], …}`. A listed
    /// collection is reached only with one of its keys (401 without, 403 with another);
    /// its keys are accepted wherever the server's own `--api-key(s)` are.
    #[arg(long, value_name = "FILE")]
    pub collection_keys: Option<PathBuf>,
    /// LoRA adapters to serve: `NAME=ADAPTER[:SCALE]` on the first model, or
    /// `MODEL:NAME=ADAPTER[:SCALE]` on another; requests choose one with `model:
    /// "MODEL:NAME"` or `"NAME"` (more can be added at run time with `POST /v1/adapters`).
    #[arg(long = "lora", value_name = "[MODEL:]NAME=ADAPTER")]
    pub lora: Vec<String>,
    /// Largest request body.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub max_body: u64,
    #[command(flatten)]
    pub model_args: ModelArgs,
    #[command(flatten)]
    pub spec: SpeculativeArgs,
}

/// `4GiB`, `512MiB`, `1.5G`, `64k`, `1000` (bytes).
pub fn parse_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.trim().parse().map_err(|_| format!("`{s}` is not a size (try 4GiB, 512MiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => return Err(format!("unknown size unit `{u}` in `{s}` (use KiB, MiB, GiB)")),
    };
    if !(n.is_finite() && n > 0.0) {
        return Err(format!("`{s}`: a size must be positive"));
    }
    Ok((n * mult as f64) as u64)
}

/// `30s`, `10m`, `1h`, `500ms`, `0`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration (try 30s, 10m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("unknown duration unit `{u}` in `{s}` (use ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("`{s}`: a duration must be 0 or more"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// What a MODEL argument is called when no `NAME=` is given.
fn default_name(spec: &str, path: &Path) -> String {
    if lamina_core::registry::find_builtin(spec).is_some() || resolve::looks_like_hub_id(spec) {
        return spec.to_string();
    }
    let stem = if path.is_dir() { path.file_name() } else { path.file_stem() };
    stem.map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| spec.to_string())
}

fn read_keys(path: &Path) -> Result<Vec<String>> {
    let text = lamina_core::fs::read_regular(path).with_context(|| format!("reading API keys from {}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
    let keys: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from).collect();
    if keys.is_empty() {
        bail!("{} holds no API keys", path.display());
    }
    Ok(keys)
}

/// The served model `--embedding-model` names, adding it to `specs` (unlisted) when it is
/// not one of them. The default (built-in) embedding model is fetched on first use, not at start.
fn embedding_model(given: &str, specs: &mut Vec<ModelSpec>, precision: lamina_model::Precision) -> Result<String> {
    if specs.iter().any(|s| s.name == given) {
        return Ok(given.to_string());
    }
    let (name, path, kind) = if given == lamina_core::registry::DEFAULT_EMBEDDING_MODEL {
        (given.to_string(), PathBuf::from(given), ModelKind::Embedding)
    } else {
        let path = resolve::resolve_model_path(Some(given), &mut |m| eprintln!("{m}"))?;
        let folder = if path.is_file() { path.parent().map(Path::to_path_buf).unwrap_or_default() } else { path.clone() };
        let (path, kind) = if resolve::is_encoder_dir(&folder) { (folder, ModelKind::Embedding) } else { (path, ModelKind::Chat) };
        (default_name(given, &path), path, kind)
    };
    if let Some(s) = specs.iter().find(|s| s.name == name) {
        // Served already under that name (`MODEL` given both ways).
        return Ok(s.name.clone());
    }
    specs.push(ModelSpec { name: name.clone(), path, precision, kind, listed: false, adapters: Vec::new() });
    Ok(name)
}

/// Attaches each `--lora [MODEL:]NAME=ADAPTER[:SCALE]` to its model's spec (checked against
/// the model's weights when the model loads; the folder must be readable now).
fn add_adapters(given: &[String], specs: &mut [ModelSpec]) -> Result<()> {
    let mut names: HashSet<String> = specs.iter().map(|s| s.name.clone()).collect();
    for g in given {
        let Some((target, path)) = g.split_once('=') else { bail!("--lora {g}: expected NAME=ADAPTER or MODEL:NAME=ADAPTER") };
        let (base, name) = match target.rsplit_once(':') {
            Some((b, n)) => (Some(b), n),
            None => (None, target),
        };
        if name.is_empty() || name.contains('/') {
            bail!("--lora {g}: the adapter needs a name without `/`");
        }
        if !names.insert(name.to_string()) {
            bail!("--lora {g}: `{name}` is already the name of a model or adapter");
        }
        let (path, scale) = crate::common::split_scale(path);
        // Fails now on a missing or malformed folder rather than at the first request.
        lamina_model::lora::LoraAdapter::load(Path::new(path)).with_context(|| format!("--lora {g}: loading the adapter {path}"))?;
        let spec = match base {
            Some(b) => specs.iter_mut().find(|s| s.name == b).ok_or_else(|| anyhow::anyhow!("--lora {g}: no served model is called `{b}`"))?,
            None => specs.iter_mut().find(|s| s.listed && s.kind == ModelKind::Chat).ok_or_else(|| anyhow::anyhow!("--lora {g}: no chat model is served"))?,
        };
        if spec.kind != ModelKind::Chat {
            bail!("--lora {g}: `{}` is an embedding model; adapters go on chat models", spec.name);
        }
        spec.adapters.push(AdapterSpec { name: name.to_string(), path: PathBuf::from(path), scale });
    }
    Ok(())
}

fn read_collection_keys(path: &Path) -> Result<CollectionKeys> {
    let text = lamina_core::fs::read_regular(path).with_context(|| format!("reading collection keys from {}", path.display()))?;
    let text = String::from_utf8(text).map_err(|_| anyhow::anyhow!("{} is not UTF-8 text", path.display()))?;
    CollectionKeys::from_json(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

pub fn run(args: ServeArgs) -> Result<()> {
    let precision = args.model_args.precision();
    let given = if args.models.is_empty() { vec![lamina_core::registry::DEFAULT_MODEL.to_string()] } else { args.models.clone() };
    let mut specs = Vec::new();
    let mut names = HashSet::new();
    for g in &given {
        let (name, spec) = match g.split_once('=') {
            Some((n, s)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), s),
            _ => (None, g.as_str()),
        };
        let path = resolve::resolve_model_path(Some(spec), &mut |m| eprintln!("{m}"))?;
        let name = name.unwrap_or_else(|| default_name(spec, &path));
        if !names.insert(name.clone()) {
            bail!("two models are both called `{name}`: name them with NAME=MODEL");
        }
        // Encoders (a built-in resolves to its weights file inside the model folder).
        let folder = if path.is_file() { path.parent().map(Path::to_path_buf).unwrap_or_default() } else { path.clone() };
        let (path, kind) = if resolve::is_encoder_dir(&folder) { (folder, ModelKind::Embedding) } else { (path, ModelKind::Chat) };
        specs.push(ModelSpec { name, path, precision, kind, listed: true, adapters: Vec::new() });
    }
    add_adapters(&args.lora, &mut specs)?;
    let collections = CollectionsConfig {
        location: crate::common::collections_location(args.collections.as_deref())?,
        embedding_model: embedding_model(&args.embedding_model, &mut specs, precision)?,
        keys: match &args.collection_keys {
            Some(f) => read_collection_keys(f)?,
            None => CollectionKeys::default(),
        },
    };
    let api_keys = match (&args.api_key, &args.api_keys) {
        (Some(k), _) if k.trim().is_empty() => bail!("--api-key is empty"),
        (Some(k), _) => vec![k.trim().to_string()],
        (None, Some(file)) => read_keys(file)?,
        (None, None) => Vec::new(),
    };
    let memory = match args.memory {
        Some(m) => m,
        None => lamina_core::memory::available_bytes().map_or(4 << 30, |a| a / 4 * 3),
    };
    if args.max_sequences == 0 || args.max_batch_tokens == 0 {
        bail!("--max-sequences and --max-batch-tokens must be at least 1");
    }
    let speculative = args.spec.config(&args.model_args)?;
    if let Some(lamina_engine::SpecMethod::DraftModel(d)) = speculative.as_ref().map(|s| &s.method) {
        // Refused now rather than at each model's first request.
        for spec in specs.iter().filter(|s| s.kind == ModelKind::Chat) {
            let tok = resolve::load_tokenizer(&spec.path)?;
            if let Err(e) = lamina_engine::speculative::check_tokenizers(&tok, &d.tokenizer) {
                bail!("--draft {} cannot draft for model `{}`: its vocabulary is not the model's: {e}", d.model.source.display(), spec.name);
            }
        }
    }
    let handle = lamina_server::metrics::prometheus_builder().install_recorder().context("installing the metrics recorder")?;
    let config = ServerConfig {
        addr: SocketAddr::new(args.host, args.port),
        models: specs,
        limits: ModelLimits {
            memory_budget: memory,
            kv_memory: args.kv_memory,
            max_sequences: args.max_sequences,
            // As everywhere: the model's window, capped at 4096 unless --ctx says more.
            context_length: Some(args.model_args.ctx.unwrap_or(4096)),
            block_size: args.model_args.block_size,
            max_batch_tokens: args.max_batch_tokens,
            cache_dir: args.cache_dir.clone(),
            speculative,
        },
        api_keys,
        max_queue: args.max_queue,
        idle_unload: (!args.idle_unload.is_zero()).then_some(args.idle_unload),
        max_body_bytes: args.max_body.min(usize::MAX as u64) as usize,
        threads: args.model_args.threads(),
        metrics: Some(handle),
        response_store: lamina_server::response_store::StoreLimits::default(),
        collections,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.addr).await.with_context(|| format!("listening on {}", config.addr))?;
        let addr = listener.local_addr()?;
        let names: Vec<&str> = config.models.iter().filter(|m| m.listed).map(|m| m.name.as_str()).collect();
        eprintln!(
            "lamina serve: listening on http://{addr} — models: {} — memory budget {}",
            names.join(", "),
            lamina_core::memory::human_bytes(config.limits.memory_budget)
        );
        lamina_server::serve(config, listener, shutdown_signal("lamina serve")).await.context("serving")?;
        eprintln!("lamina serve: stopped");
        Ok(())
    })
}

/// SIGTERM or Ctrl-C (`who` names the command in the message).
pub(crate) async fn shutdown_signal(who: &'static str) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("{who}: shutting down (finishing running requests)");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("0").is_err());
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(parse_duration("5 fortnights").is_err());
    }
}
