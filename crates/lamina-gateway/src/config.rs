//! The gateway's configuration file (TOML): backends, model routes with their prices and
//! fallbacks, client keys with budgets and rate limits, retry and health policies.
//!
//! Parsing is strict — unknown fields, wrong types, unknown backend or model names, bad
//! durations, duplicate names and fallback cycles are errors that name the file, the line
//! and the column. Secrets are never in the parsed config itself: a backend's key and a
//! client key may name an environment variable, and the caller resolves them
//! ([`Config::resolve_secrets`]) so the library reads no environment of its own.
//!
//! ```toml
//! [gateway]
//! listen = "127.0.0.1:4000"
//! log = "requests.jsonl"
//!
//! [[backend]]
//! name = "local"
//! kind = "lamina"                     # lamina | openai | llama-server | anthropic
//! url = "http://127.0.0.1:8080/v1"
//!
//! [[model]]
//! name = "chat"
//! deployments = [{ backend = "local", model = "smollm2" }]
//! price = { input = 0.15, output = 0.60 }   # per million tokens
//! ```

use crate::price::Price;
use crate::rules::Rule;
use serde::Deserialize;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A configuration error with its place in the file.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; 0 when the error is about the whole file.
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// How a backend speaks, which sets its defaults (see [`Continuation`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// `lamina serve`.
    Lamina,
    /// Any OpenAI-compatible server (vLLM, OpenAI itself, ...).
    Openai,
    /// llama.cpp's `llama-server`.
    LlamaServer,
    /// Anthropic's Messages API (`{url}/messages`, `x-api-key`); chat only.
    Anthropic,
}

/// How a backend is asked to continue an answer that another backend started (a stream
/// that failed midway is completed from a fallback).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Continuation {
    /// The text so far as a final assistant message plus `continue_final_message: true`
    /// (lamina serve, vLLM).
    ContinueFinalMessage,
    /// The text so far as a final assistant message, which the server continues
    /// (llama-server's assistant prefill, Anthropic's prefilled assistant turn).
    AssistantPrefill,
    /// This backend cannot continue: a stream that fails after its first token ends with
    /// an error event.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Deployments in the order written; later ones only when earlier ones fail.
    Ordered,
    /// A random order drawn by weight.
    Weighted,
    /// Fewest requests in flight first.
    LeastBusy,
    /// Lowest recent latency first (an exponentially weighted mean; untried ones first).
    LowestLatency,
    /// The same conversation to the same deployment, from every gateway of a fleet (its
    /// prefix's KV blocks are cached there): rendezvous hashing of the conversation's
    /// start over the deployments, so an ejected one moves only its own conversations.
    PrefixAffinity,
}

#[derive(Clone, Debug)]
pub struct BackendConfig {
    pub name: String,
    pub kind: BackendKind,
    /// Base URL up to and including `/v1`.
    pub url: String,
    /// The environment variable holding the backend's bearer key.
    pub api_key_env: Option<String>,
    /// Resolved by [`Config::resolve_secrets`]; never logged.
    pub api_key: Option<String>,
    pub connect_timeout: Duration,
    /// A non-streamed request's whole time; a stream's time to its first event.
    pub timeout: Duration,
    /// Longest silence between a stream's events before it counts as failed.
    pub stream_idle_timeout: Duration,
    pub continuation: Continuation,
    /// The `max_tokens` sent to an Anthropic backend when the request names none (its
    /// API requires one).
    pub max_tokens: u32,
}

#[derive(Clone, Debug)]
pub struct Deployment {
    pub backend: usize,
    /// The model name sent to the backend.
    pub model: String,
    pub weight: u32,
}

#[derive(Clone, Debug)]
pub struct ModelRoute {
    /// The name clients send as `model`.
    pub name: String,
    pub deployments: Vec<Deployment>,
    pub strategy: Strategy,
    /// Other routes tried, in order, when every deployment of this one failed.
    pub fallbacks: Vec<usize>,
    /// Prompt tokens the model takes; a larger request goes to a fallback with room.
    pub context_window: Option<u32>,
    pub price: Price,
    /// Exact-match response cache with this time to live (opt-in per route).
    pub cache_ttl: Option<Duration>,
    /// The semantic cache beside the exact one (needs `cache_ttl`).
    pub semantic: Option<SemanticCacheConfig>,
}

/// A route's semantic cache: a request whose last message is close enough in meaning to
/// a cached one's, with everything else the same, is answered from the cache.
#[derive(Clone, Copy, Debug)]
pub struct SemanticCacheConfig {
    /// The route that embeds the last message (its deployments serve `/v1/embeddings`).
    pub embeddings: usize,
    /// The least cosine similarity that counts as a hit.
    pub similarity: f32,
}

#[derive(Clone, Debug)]
pub struct KeyConfig {
    pub name: String,
    pub key_env: Option<String>,
    /// Literal key or, after [`Config::resolve_secrets`], the one from `key_env`.
    pub key: Option<String>,
    pub user: Option<String>,
    pub tags: Vec<String>,
    /// Spend (in the price table's currency) after which requests are refused.
    pub budget: Option<f64>,
    /// Requests per minute.
    pub rpm: Option<u32>,
    /// Tokens (prompt + completion) per minute.
    pub tpm: Option<u64>,
    /// Routes this key may use (all when empty).
    pub models: Vec<usize>,
}

#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Further tries of one deployment after a retryable failure (connection refused,
    /// timeout, 429, 5xx, malformed reply) before moving on.
    pub attempts: u32,
    /// First back-off; doubled each retry, with full jitter.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

#[derive(Clone, Debug)]
pub struct HealthPolicy {
    /// Consecutive failures after which a deployment is ejected (tried last) ...
    pub failures: u32,
    /// ... for this long.
    pub cooldown: Duration,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub file: PathBuf,
    pub listen: SocketAddr,
    pub log: Option<PathBuf>,
    pub max_body_bytes: usize,
    pub cache_entries: usize,
    /// Where spend, rate windows and the exact cache live when several gateways share them
    /// (`redis://host:port/db`); in this process's memory when `None`.
    pub state: Option<String>,
    /// The prefix of every Redis key the gateway writes.
    pub state_prefix: String,
    pub retry: RetryPolicy,
    pub health: HealthPolicy,
    pub backends: Vec<BackendConfig>,
    pub models: Vec<ModelRoute>,
    pub keys: Vec<KeyConfig>,
    /// Routing by task, tried in order before the requested name is looked up.
    pub rules: Vec<Rule>,
}

// ---- the file as written -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    gateway: RawGateway,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    health: RawHealth,
    #[serde(default)]
    backend: Vec<RawBackend>,
    #[serde(default)]
    model: Vec<RawModel>,
    #[serde(default)]
    key: Vec<RawKey>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Option<String>,
    #[serde(default)]
    model: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    min_prompt_tokens: Option<u64>,
    max_prompt_tokens: Option<u64>,
    json_mode: Option<bool>,
    tools: Option<bool>,
    last_message: Option<Spanned<String>>,
    route: Spanned<String>,
    classify: Option<Spanned<RawClassify>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClassify {
    route: Spanned<String>,
    labels: std::collections::BTreeMap<String, Spanned<String>>,
    instructions: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    listen: Option<Spanned<String>>,
    log: Option<PathBuf>,
    max_body_bytes: Option<usize>,
    cache_entries: Option<usize>,
    state: Option<Spanned<String>>,
    state_prefix: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u32>,
    backoff: Option<Spanned<String>>,
    max_backoff: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    failures: Option<u32>,
    cooldown: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    name: Spanned<String>,
    kind: BackendKind,
    url: Spanned<String>,
    api_key_env: Option<String>,
    connect_timeout: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    stream_idle_timeout: Option<Spanned<String>>,
    continuation: Option<Continuation>,
    max_tokens: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    backend: Spanned<String>,
    model: String,
    #[serde(default = "one")]
    weight: Spanned<u32>,
}

fn one() -> Spanned<u32> {
    Spanned::new(0..0, 1)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    name: Spanned<String>,
    deployments: Spanned<Vec<RawDeployment>>,
    strategy: Option<Strategy>,
    #[serde(default)]
    fallbacks: Vec<Spanned<String>>,
    context_window: Option<u32>,
    price: Option<Spanned<RawPrice>>,
    cache: Option<RawCache>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input: Option<f64>,
    cached_input: Option<f64>,
    output: Option<f64>,
    reasoning: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCache {
    ttl: Spanned<String>,
    similarity: Option<Spanned<f64>>,
    embeddings: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: Spanned<String>,
    key: Option<Spanned<String>>,
    key_env: Option<String>,
    user: Option<String>,
    #[serde(default)]
    tags: Vec<String>,
    budget: Option<Spanned<f64>>,
    rpm: Option<u32>,
    tpm: Option<u64>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(before.len(), |i| before.len() - i - 1) + 1;
    (line, column)
}

struct Checker<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Checker<'_> {
    fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = if span.is_empty() && span.start == 0 { (0, 0) } else { line_col(self.text, span.start) };
        ConfigError { file: self.file.to_path_buf(), line, column, message: message.into() }
    }

    fn duration(&self, value: &Option<Spanned<String>>, what: &str, default: Duration) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => parse_duration(v.get_ref()).map_err(|e| self.at(v.span(), format!("{what}: {e}"))),
        }
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"` (a number and a unit).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("`{s}` is not a duration such as \"250ms\", \"30s\", \"5m\" or \"1h\""))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}` has no unit: write ms, s, m or h")),
    };
    if !secs.is_finite() || secs > 7.0 * 86400.0 {
        return Err(format!("`{s}` is out of range (at most a week)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl Config {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the configuration: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses and checks configuration text; `file` names it in errors.
    pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
        let c = Checker { file, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            c.at(span, e.message().to_string())
        })?;

        let g = &raw.gateway;
        let listen = match &g.listen {
            None => SocketAddr::from(([127, 0, 0, 1], 4000)),
            Some(l) => l.get_ref().parse().map_err(|_| c.at(l.span(), format!("listen: `{}` is not an address such as \"127.0.0.1:4000\"", l.get_ref())))?,
        };
        let state = match &g.state {
            None => None,
            Some(u) if ["redis://", "rediss://", "unix://", "redis+unix://"].iter().any(|p| u.get_ref().starts_with(p)) => Some(u.get_ref().clone()),
            Some(u) => return Err(c.at(u.span(), format!("state: `{}` is not a Redis URL such as \"redis://127.0.0.1:6379/0\"", u.get_ref()))),
        };
        let retry = RetryPolicy {
            attempts: raw.retry.attempts.unwrap_or(2),
            backoff: c.duration(&raw.retry.backoff, "backoff", Duration::from_millis(50))?,
            max_backoff: c.duration(&raw.retry.max_backoff, "max_backoff", Duration::from_secs(2))?,
        };
        let health = HealthPolicy {
            failures: raw.health.failures.unwrap_or(3).max(1),
            cooldown: c.duration(&raw.health.cooldown, "cooldown", Duration::from_secs(30))?,
        };

        let mut backends = Vec::new();
        let mut backend_ids = HashMap::new();
        for b in &raw.backend {
            let name = b.name.get_ref().clone();
            if backend_ids.insert(name.clone(), backends.len()).is_some() {
                return Err(c.at(b.name.span(), format!("a second backend is named `{name}`")));
            }
            let url = b.url.get_ref().trim_end_matches('/').to_string();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(c.at(b.url.span(), format!("backend `{name}`: url `{url}` must start with http:// or https://")));
            }
            let continuation = b.continuation.unwrap_or(match b.kind {
                BackendKind::Lamina => Continuation::ContinueFinalMessage,
                BackendKind::LlamaServer | BackendKind::Anthropic => Continuation::AssistantPrefill,
                BackendKind::Openai => Continuation::None,
            });
            if let Some(m) = b.max_tokens.as_ref().filter(|m| *m.get_ref() == 0) {
                return Err(c.at(m.span(), format!("backend `{name}`: max_tokens must be at least 1")));
            }
            backends.push(BackendConfig {
                name,
                kind: b.kind,
                url,
                api_key_env: b.api_key_env.clone(),
                api_key: None,
                connect_timeout: c.duration(&b.connect_timeout, "connect_timeout", Duration::from_secs(2))?,
                timeout: c.duration(&b.timeout, "timeout", Duration::from_secs(60))?,
                stream_idle_timeout: c.duration(&b.stream_idle_timeout, "stream_idle_timeout", Duration::from_secs(30))?,
                continuation,
                max_tokens: b.max_tokens.as_ref().map_or(4096, |m| *m.get_ref()),
            });
        }

        let mut model_ids = HashMap::new();
        for (i, m) in raw.model.iter().enumerate() {
            if model_ids.insert(m.name.get_ref().clone(), i).is_some() {
                return Err(c.at(m.name.span(), format!("a second model route is named `{}`", m.name.get_ref())));
            }
        }
        let known = |ids: &HashMap<String, usize>| {
            let mut names: Vec<&str> = ids.keys().map(String::as_str).collect();
            names.sort();
            if names.is_empty() {
                "none are defined".to_string()
            } else {
                format!("known: {}", names.join(", "))
            }
        };
        let mut models = Vec::new();
        for m in &raw.model {
            let name = m.name.get_ref().clone();
            if m.deployments.get_ref().is_empty() {
                return Err(c.at(m.deployments.span(), format!("model `{name}` has no deployments")));
            }
            let mut deployments = Vec::new();
            for d in m.deployments.get_ref() {
                let Some(&backend) = backend_ids.get(d.backend.get_ref()) else {
                    return Err(c.at(d.backend.span(), format!("model `{name}`: unknown backend `{}` ({})", d.backend.get_ref(), known(&backend_ids))));
                };
                if *d.weight.get_ref() == 0 {
                    return Err(c.at(d.weight.span(), format!("model `{name}`: a deployment's weight must be at least 1")));
                }
                deployments.push(Deployment { backend, model: d.model.clone(), weight: *d.weight.get_ref() });
            }
            let mut fallbacks = Vec::new();
            for f in &m.fallbacks {
                let Some(&id) = model_ids.get(f.get_ref()) else {
                    return Err(c.at(f.span(), format!("model `{name}`: unknown fallback `{}` ({})", f.get_ref(), known(&model_ids))));
                };
                if f.get_ref() == &name {
                    return Err(c.at(f.span(), format!("model `{name}` names itself as a fallback")));
                }
                fallbacks.push(id);
            }
            let price = match &m.price {
                None => Price::default(),
                Some(sp) => {
                    let p = sp.get_ref();
                    Price::per_million(
                        p.input.unwrap_or(0.0),
                        p.cached_input.or(p.input).unwrap_or(0.0),
                        p.output.unwrap_or(0.0),
                        p.reasoning.or(p.output).unwrap_or(0.0),
                    )
                    .map_err(|e| c.at(sp.span(), format!("model `{name}`: {e}")))?
                }
            };
            let cache_ttl = match &m.cache {
                None => None,
                Some(cache) => Some(parse_duration(cache.ttl.get_ref()).map_err(|e| c.at(cache.ttl.span(), format!("cache ttl: {e}")))?),
            };
            let semantic = match m.cache.as_ref().map(|cache| (&cache.similarity, &cache.embeddings)) {
                None | Some((None, None)) => None,
                Some((Some(sim), None)) => {
                    return Err(c.at(sim.span(), format!("model `{name}`: a semantic cache needs `embeddings`, the route that embeds messages")))
                }
                Some((None, Some(e))) => {
                    return Err(c.at(e.span(), format!("model `{name}`: a semantic cache needs `similarity`, the least cosine similarity of a hit")))
                }
                Some((Some(sim), Some(e))) => {
                    let Some(&embeddings) = model_ids.get(e.get_ref()) else {
                        return Err(c.at(e.span(), format!("model `{name}`: unknown embeddings route `{}` ({})", e.get_ref(), known(&model_ids))));
                    };
                    let v = *sim.get_ref();
                    if !(v > 0.0 && v <= 1.0) {
                        return Err(c.at(sim.span(), format!("model `{name}`: similarity must be above 0 and at most 1, not {v}")));
                    }
                    Some(SemanticCacheConfig { embeddings, similarity: v as f32 })
                }
            };
            models.push(ModelRoute {
                name,
                deployments,
                strategy: m.strategy.unwrap_or(Strategy::Ordered),
                fallbacks,
                context_window: m.context_window,
                price,
                cache_ttl,
                semantic,
            });
        }

        let mut keys = Vec::new();
        let mut key_names = HashSet::new();
        for k in &raw.key {
            let name = k.name.get_ref().clone();
            if !key_names.insert(name.clone()) {
                return Err(c.at(k.name.span(), format!("a second key is named `{name}`")));
            }
            if k.key.is_some() == k.key_env.is_some() {
                return Err(c.at(k.name.span(), format!("key `{name}`: give exactly one of `key` and `key_env`")));
            }
            if let Some(b) = &k.budget {
                if !(b.get_ref().is_finite() && *b.get_ref() >= 0.0) {
                    return Err(c.at(b.span(), format!("key `{name}`: budget must be a non-negative number")));
                }
            }
            let mut allowed = Vec::new();
            for m in &k.models {
                let Some(&id) = model_ids.get(m.get_ref()) else {
                    return Err(c.at(m.span(), format!("key `{name}`: unknown model `{}` ({})", m.get_ref(), known(&model_ids))));
                };
                allowed.push(id);
            }
            keys.push(KeyConfig {
                name,
                key_env: k.key_env.clone(),
                key: k.key.as_ref().map(|s| s.get_ref().clone()),
                user: k.user.clone(),
                tags: k.tags.clone(),
                budget: k.budget.as_ref().map(|b| *b.get_ref()),
                rpm: k.rpm,
                tpm: k.tpm,
                models: allowed,
            });
        }

        let mut rules = Vec::new();
        for (i, r) in raw.rule.iter().enumerate() {
            let name = r.name.clone().unwrap_or_else(|| format!("rule {}", i + 1));
            let Some(&route) = model_ids.get(r.route.get_ref()) else {
                return Err(c.at(r.route.span(), format!("{name}: unknown route `{}` ({})", r.route.get_ref(), known(&model_ids))));
            };
            let last_message = match &r.last_message {
                None => None,
                Some(re) => {
                    Some(regex::Regex::new(re.get_ref()).map_err(|e| c.at(re.span(), format!("{name}: last_message is not a regular expression: {e}")))?)
                }
            };
            let classify = match &r.classify {
                None => None,
                Some(cls) => {
                    let raw = cls.get_ref();
                    let Some(&by) = model_ids.get(raw.route.get_ref()) else {
                        return Err(c.at(raw.route.span(), format!("{name}: unknown classifier route `{}` ({})", raw.route.get_ref(), known(&model_ids))));
                    };
                    if raw.labels.is_empty() {
                        return Err(c.at(cls.span(), format!("{name}: a classifier needs `labels`, each naming the route it picks")));
                    }
                    let mut labels = Vec::new();
                    for (label, target) in &raw.labels {
                        let Some(&to) = model_ids.get(target.get_ref()) else {
                            return Err(c.at(target.span(), format!("{name}: label `{label}`: unknown route `{}` ({})", target.get_ref(), known(&model_ids))));
                        };
                        labels.push((label.clone(), to));
                    }
                    Some(crate::classify::Classifier { route: by, labels, instructions: raw.instructions.clone() })
                }
            };
            rules.push(Rule {
                name,
                models: r.model.clone(),
                tags: r.tags.clone(),
                headers: r.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect(),
                min_prompt_tokens: r.min_prompt_tokens,
                max_prompt_tokens: r.max_prompt_tokens,
                json_mode: r.json_mode,
                tools: r.tools,
                last_message,
                route,
                classify,
            });
        }

        let config = Config {
            file: file.to_path_buf(),
            listen,
            log: g.log.clone(),
            max_body_bytes: g.max_body_bytes.unwrap_or(16 << 20),
            cache_entries: g.cache_entries.unwrap_or(10_000),
            state,
            state_prefix: g.state_prefix.clone().unwrap_or_else(|| "lamina:".to_string()),
            retry,
            health,
            backends,
            models,
            keys,
            rules,
        };
        if let Some((route, at)) = config.fallback_cycle() {
            let span = raw.model[route].fallbacks.get(at).map_or(raw.model[route].name.span(), |f| f.span());
            return Err(c.at(span, format!("fallbacks of model `{}` lead back to it", config.models[route].name)));
        }
        Ok(config)
    }

    /// A route whose fallbacks (followed transitively) lead back to it, with the index
    /// of the fallback that starts the cycle.
    fn fallback_cycle(&self) -> Option<(usize, usize)> {
        fn reaches(models: &[ModelRoute], from: usize, target: usize, seen: &mut Vec<bool>) -> bool {
            if from == target {
                return true;
            }
            if std::mem::replace(&mut seen[from], true) {
                return false;
            }
            models[from].fallbacks.iter().any(|&f| reaches(models, f, target, seen))
        }
        for (i, m) in self.models.iter().enumerate() {
            for (j, &f) in m.fallbacks.iter().enumerate() {
                if reaches(&self.models, f, i, &mut vec![false; self.models.len()]) {
                    return Some((i, j));
                }
            }
        }
        None
    }

    /// Fills backend and client keys named by environment variables from `lookup`; an
    /// unset variable is an error naming it (not its value).
    pub fn resolve_secrets(&mut self, lookup: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let err = |message: String| ConfigError { file: self.file.clone(), line: 0, column: 0, message };
        for b in &mut self.backends {
            if let Some(var) = &b.api_key_env {
                b.api_key =
                    Some(lookup(var).filter(|v| !v.is_empty()).ok_or_else(|| err(format!("backend `{}`: environment variable {var} is not set", b.name)))?);
            }
        }
        for k in &mut self.keys {
            if let Some(var) = &k.key_env {
                k.key = Some(lookup(var).filter(|v| !v.is_empty()).ok_or_else(|| err(format!("key `{}`: environment variable {var} is not set", k.name)))?);
            }
        }
        Ok(())
    }

    pub fn route(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// Names clients may send as `model`: the routes, then names that exist only in rules.
    pub fn model_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        for r in &self.rules {
            for m in &r.models {
                if !names.contains(&m.as_str()) {
                    names.push(m);
                }
            }
        }
        names
    }

    /// A one-screen summary for `--check`.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} backend(s), {} model route(s) ({}), {} rule(s), {} key(s); listens on {}",
            self.file.display(),
            self.backends.len(),
            self.models.len(),
            self.models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>().join(", "),
            self.rules.len(),
            self.keys.len(),
            self.listen
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_a_unit() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("9999h").is_err());
    }

    #[test]
    fn line_and_column_are_one_based() {
        let t = "a\nbc\n  d";
        assert_eq!(line_col(t, 0), (1, 1));
        assert_eq!(line_col(t, 3), (2, 2));
        assert_eq!(line_col(t, 7), (3, 3));
    }
}
