//! `lamina gateway`: an OpenAI-compatible endpoint in front of several backends
//! (`lamina serve` instances, llama-server, any OpenAI-compatible URL, Anthropic's API).
//!
//! - [`config`]: the TOML file — backends, model routes, prices, keys, policies — checked
//!   strictly, errors with line and column;
//! - [`rules`]: routing by task (tags, headers, prompt size, JSON mode, tools, a regex);
//! - [`router`]: the order in which a request tries deployments (strategy, health,
//!   fallback routes, context windows); [`health`]: in-flight counts, latency, ejection;
//! - [`backend`]: the HTTP client of one backend and what its failures mean;
//! - [`proxy`]: retries with back-off and jitter, fallbacks, the non-streamed answer and
//!   every request's accounting; [`relay`]: streams, completed from a fallback when they
//!   break midway;
//! - [`price`]: exact integer costs; [`limits`]: budgets, rate limits and spend totals;
//!   [`cache`]: the exact response cache; [`semantic`]: the semantic cache;
//!   [`anthropic`]: Anthropic backends; [`messages`]: `/v1/messages` for Anthropic's
//!   clients; [`log`]: one JSON line per request;
//!   [`metrics`]: Prometheus; [`routes`]: the HTTP endpoints; [`report`]: a log summarised.
//!
//! The gateway speaks HTTP to its backends and links no model code. It holds no global
//! state: everything lives in one [`Gateway`] value, and the binary installs the metrics
//! recorder and resolves secrets from the environment.

pub mod anthropic;
pub mod backend;
pub mod cache;
pub mod classify;
pub mod config;
pub mod fleet;
pub mod health;
pub mod internal;
pub mod limits;
pub mod log;
pub mod messages;
pub mod metrics;
pub mod price;
pub mod proxy;
pub mod relay;
pub mod report;
pub mod router;
pub mod routes;
pub mod rules;
pub mod semantic;

use backend::Backend;
use cache::ExactCache;
use config::Config;
use health::BackendHealth;
use limits::{KeyLimits, Ledger, Totals};
use metrics_exporter_prometheus::PrometheusHandle;
use price::Cost;
use semantic::SemanticCache;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the request log {path}: {source}")]
    Log { path: std::path::PathBuf, source: std::io::Error },
    #[error("{0}")]
    Backend(String),
    #[error("two keys have the same secret (`{0}` and `{1}`)")]
    DuplicateSecret(String, String),
}

/// What outlives a configuration reload: spend and rate windows, totals, the cache, the
/// log and the metrics.
pub struct Shared {
    ledger: Ledger,
    totals: Totals,
    cache: ExactCache,
    semantic: SemanticCache,
    /// Spend, rate windows and the exact cache shared with other gateways (instead of
    /// `ledger` and `cache`).
    fleet: Option<fleet::Fleet>,
    log: Option<log::RequestLog>,
    metrics: Option<PrometheusHandle>,
    ids: AtomicU64,
    id_base: u64,
}

impl Shared {
    /// Admits a request for key `name` under `limits`: in the fleet's Redis when there is
    /// one and the key has limits, else in this process's ledger.
    async fn admit(&self, name: &str, limits: &KeyLimits, now: Instant) -> Result<Result<(), limits::Refusal>, fleet::Unavailable> {
        match &self.fleet {
            Some(fleet) if limits.any() => fleet.admit(name, limits).await,
            _ => Ok(self.ledger.admit(name, now)),
        }
    }

    /// Charges a finished request to key `name` (in the fleet's Redis off the request's
    /// path: the answer does not wait for it).
    fn charge(&self, name: &str, cost: Cost, tokens: u64, now: Instant) {
        match &self.fleet {
            Some(fleet) => {
                let (fleet, name) = (fleet.clone(), name.to_string());
                fleet::in_background(async move {
                    if let Err(e) = fleet.charge(&name, cost, tokens).await {
                        tracing::warn!("key `{name}` could not be charged {}: {e}", cost.decimal());
                    }
                });
            }
            None => self.ledger.charge(name, cost, tokens, now),
        }
    }

    /// The exact cache's answer under `key` (a Redis failure is a miss).
    async fn cached(&self, key: &cache::CacheKey, now: Instant) -> Option<Arc<serde_json::Value>> {
        match &self.fleet {
            Some(fleet) => fleet.cache_get(key).await.unwrap_or_else(|e| {
                tracing::warn!("cache lookup: {e}");
                None
            }),
            None => self.cache.get(key, now),
        }
    }

    /// Keeps `answer` in the exact cache under `key` for `ttl`.
    fn keep(&self, key: cache::CacheKey, answer: &serde_json::Value, ttl: std::time::Duration, now: Instant) {
        match &self.fleet {
            Some(fleet) => {
                let (fleet, answer) = (fleet.clone(), answer.clone());
                fleet::in_background(async move {
                    if let Err(e) = fleet.cache_put(&key, &answer, ttl).await {
                        tracing::warn!("cache store: {e}");
                    }
                });
            }
            None => self.cache.put(key, answer.clone(), ttl, now),
        }
    }
}

/// One configuration in force: its routes, backends (with their connection pools and
/// health) and keys, over the [`Shared`] state.
pub struct Gateway {
    pub config: Config,
    backends: Vec<Backend>,
    health: Vec<BackendHealth>,
    /// Client secret → index in `config.keys`.
    secrets: HashMap<String, usize>,
    shared: Arc<Shared>,
}

impl Gateway {
    /// A gateway for `config`, whose secrets must already be resolved, with the fleet's
    /// shared state when `config.state` names one (see [`fleet::Fleet::connect`]).
    pub fn new(config: Config, metrics: Option<PrometheusHandle>, fleet: Option<fleet::Fleet>) -> Result<Gateway, StartError> {
        let log = match &config.log {
            Some(p) => Some(log::RequestLog::open(p).map_err(|source| StartError::Log { path: p.clone(), source })?),
            None => None,
        };
        let id_base = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        let shared = Shared {
            ledger: Ledger::new(Instant::now()),
            totals: Totals::default(),
            cache: ExactCache::new(config.cache_entries),
            semantic: SemanticCache::new(config.cache_entries),
            fleet,
            log,
            metrics,
            ids: AtomicU64::new(0),
            id_base,
        };
        Gateway::with_shared(config, Arc::new(shared))
    }

    fn with_shared(config: Config, shared: Arc<Shared>) -> Result<Gateway, StartError> {
        let backends = config.backends.iter().map(|b| Backend::new(b.clone()).map_err(|e| StartError::Backend(e.message))).collect::<Result<Vec<_>, _>>()?;
        let mut secrets = HashMap::new();
        for (i, k) in config.keys.iter().enumerate() {
            let secret = k.key.clone().ok_or_else(|| StartError::Backend(format!("key `{}` has no secret (resolve_secrets first)", k.name)))?;
            if let Some(j) = secrets.insert(secret, i) {
                return Err(StartError::DuplicateSecret(config.keys[j].name.clone(), k.name.clone()));
            }
        }
        shared.ledger.sync(config.keys.iter().map(|k| (k.name.as_str(), KeyLimits::of(k))));
        Ok(Gateway { health: config.backends.iter().map(|_| BackendHealth::default()).collect(), config, backends, secrets, shared })
    }

    fn next_id(&self) -> String {
        let s = &self.shared;
        format!("gw-{:x}{:06x}", s.id_base & 0xffff_ffff_ffff, s.ids.fetch_add(1, Ordering::Relaxed))
    }

    /// Spend totals by key, user, tag and model (as `GET /gateway/spend` shows them); with
    /// a fleet, also each key's spend across all its gateways (`fleet.spent`).
    pub async fn totals(&self) -> serde_json::Value {
        let mut totals = self.shared.totals.to_json();
        if let Some(fleet) = &self.shared.fleet {
            let mut spent = serde_json::Map::new();
            for k in &self.config.keys {
                let v = match fleet.spent(&k.name).await {
                    Ok(c) => c.decimal().into(),
                    Err(e) => serde_json::json!({ "error": e.to_string() }),
                };
                spent.insert(k.name.clone(), v);
            }
            totals["fleet"] = serde_json::json!({ "spent": spent });
        }
        totals
    }
}

/// The gateway in force, replaced as a whole by [`Live::reload`]. A request keeps the
/// configuration it started with to its end, so a reload never cuts a stream; spend,
/// limits, totals and the cache carry over. The listen address, the log file and the
/// cache's capacity stay as they were at start.
pub struct Live {
    current: RwLock<Arc<Gateway>>,
}

impl Live {
    pub fn new(gateway: Gateway) -> Live {
        Live { current: RwLock::new(Arc::new(gateway)) }
    }

    pub fn get(&self) -> Arc<Gateway> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `config` (secrets resolved) in force; on error the old one stays.
    pub fn reload(&self, config: Config) -> Result<(), StartError> {
        let next = Gateway::with_shared(config, self.get().shared.clone())?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(next);
        Ok(())
    }
}

/// Serves the gateway in force on `listener` until `shutdown` resolves; streams in flight finish.
pub async fn serve(
    live: Arc<Live>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // TCP_NODELAY: each relayed chunk goes out at once; with Nagle's algorithm a chunk
    // written while the previous one is unacknowledged waits for the client's delayed ACK
    // (about 40 ms on Linux).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, routes::router(live)).with_graceful_shutdown(shutdown).await
}
