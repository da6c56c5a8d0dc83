//! `lamina serve`: an OpenAI-compatible HTTP API over the engine.
//!
//! - [`executor`]: the one thread that owns and steps every model's engine;
//! - [`models`]: the models offered, loaded on demand within a memory budget;
//! - [`jobs`]: a generation request's life on the HTTP side (shared by every endpoint);
//! - [`chat_core`]: the chat pipeline the chat-shaped endpoints share, typed results out;
//! - [`collections`]: document collections (`/v1/collections`) and [`rag`], the chat
//!   extension that answers from one, with citations;
//! - [`routes`]: one file per endpoint (and the chat page at `/`); [`auth`], [`http_error`], [`metrics`];
//! - [`response_store`]: past Responses API conversations, for `previous_response_id`;
//! - [`structured`]: grammars (JSON schemas, Lark, GBNF) compiled per request;
//! - [`tools`]: tool calling on chat completions (and the endpoints built on them).
//!
//! Wire types come from `lamina-api`. Errors are in OpenAI's shape except on Anthropic's
//! `/v1/messages`, which answers in Anthropic's. The server never panics on client input: bodies are
//! read within a size limit and parsed into typed requests, and every failure becomes
//! OpenAI's error JSON with the right status.

pub mod auth;
pub mod chat_core;
pub mod collections;
pub mod executor;
pub mod http_error;
pub mod jobs;
pub mod metrics;
pub mod models;
pub mod rag;
pub mod response_store;
pub mod routes;
pub mod structured;
pub mod tools;

use axum::body::Body;
use axum::routing::{delete, get, post};
use axum::Router;
use collections::{Collections, CollectionsConfig};
use lamina_api::ApiError;
use lamina_kernels::ThreadPool;
use metrics_exporter_prometheus::PrometheusHandle;
use models::{ModelLimits, ModelSpec, Registry};
use response_store::{ResponseStore, StoreLimits};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Everything a server is started with.
pub struct ServerConfig {
    pub addr: SocketAddr,
    pub models: Vec<ModelSpec>,
    pub limits: ModelLimits,
    /// Accepted bearer keys; empty: no authentication.
    pub api_keys: Vec<String>,
    /// Requests waiting per model beyond which new ones get 429.
    pub max_queue: usize,
    /// Unload a model after this long without requests.
    pub idle_unload: Option<Duration>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    pub threads: usize,
    /// Renders `/metrics` (the recorder is installed by the binary).
    pub metrics: Option<PrometheusHandle>,
    /// What the Responses API keeps for `previous_response_id`.
    pub response_store: StoreLimits,
    /// Where collections live, what new ones embed with, and their keys.
    pub collections: CollectionsConfig,
}

/// What every handler shares.
pub struct AppState {
    pub models: Registry,
    pub api_keys: Vec<String>,
    pub max_body_bytes: usize,
    pub metrics: Option<PrometheusHandle>,
    /// Past Responses API conversations, for `previous_response_id`.
    pub responses: ResponseStore,
    pub collections: Collections,
    ids: AtomicU64,
    id_base: u64,
}

impl AppState {
    /// Per-collection API keys.
    pub fn collection_keys(&self) -> &auth::CollectionKeys {
        self.collections.keys()
    }

    /// A response id unique within this server's life and unlikely to repeat across
    /// restarts (the start time is mixed in).
    pub fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        lamina_api::ids::completion_id(prefix, self.id_base.wrapping_add(n))
    }

    /// [`Self::next_id`] in the Responses and Messages APIs' shape, `prefix_…`.
    pub fn next_object_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        lamina_api::ids::object_id(prefix, self.id_base.wrapping_add(n))
    }

    /// A tool call id (`call_…`), unique like [`next_id`](Self::next_id).
    pub fn next_call_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        lamina_api::ids::tool_call_id(self.id_base.wrapping_add(n))
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Reads a request body of at most `limit` bytes.
pub async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e).is_some_and(|s| s.is::<http_body_util::LengthLimitError>()) || e.to_string().contains("length limit");
        if too_large {
            ApiError::payload_too_large(limit)
        } else {
            ApiError::invalid_request(format!("could not read the request body: {e}"))
        }
    })
}

/// The router over a shared state (for tests that drive it without a socket, too).
pub fn router(state: Arc<AppState>) -> Router {
    let v1 = Router::new()
        .route("/v1/chat/completions", post(routes::chat::handle))
        .route("/v1/completions", post(routes::completions::handle))
        .route("/v1/responses", post(routes::responses::handle))
        .route("/v1/messages", post(routes::messages::handle))
        .route("/tokenize", post(routes::tokenize::tokenize))
        .route("/detokenize", post(routes::tokenize::detokenize))
        .route("/v1/embeddings", post(routes::embeddings::handle))
        .route("/v1/models", get(routes::models::list))
        .route("/v1/models/{*id}", get(routes::models::one))
        .route("/v1/adapters", get(routes::adapters::list).post(routes::adapters::load))
        .route("/v1/adapters/{*name}", delete(routes::adapters::unload))
        .route("/v1/collections", post(routes::collections::create).get(routes::collections::list))
        .route("/v1/collections/{name}", get(routes::collections::get).delete(routes::collections::delete))
        .route("/v1/collections/{name}/documents", post(routes::collections::add_documents).get(routes::collections::list_documents))
        .route("/v1/collections/{name}/documents/{*id}", delete(routes::collections::delete_document))
        .route("/v1/collections/{name}/search", post(routes::collections::search))
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_key));
    Router::new()
        .merge(v1)
        .route("/health", get(routes::health::handle))
        .route("/metrics", get(routes::metrics::handle))
        .route("/", get(routes::page::index))
        .route("/page/chat.js", get(routes::page::chat_js))
        .route("/page/markdown.js", get(routes::page::markdown_js))
        .route("/page/chat.css", get(routes::page::style))
        .route("/page/icon.svg", get(routes::page::icon))
        .fallback(routes::not_found)
        .with_state(state)
}

/// Runs a server until `shutdown` resolves, then stops accepting connections, lets the
/// running requests and streams finish, and stops the engine thread.
pub async fn serve(
    config: ServerConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let workers = Arc::new(ThreadPool::new(config.threads));
    let (tx, rx) = std::sync::mpsc::channel();
    let state = Arc::new(AppState {
        models: Registry::new(config.models, config.limits, workers, tx),
        api_keys: config.api_keys,
        max_body_bytes: config.max_body_bytes,
        metrics: config.metrics,
        responses: ResponseStore::new(config.response_store),
        collections: Collections::new(config.collections),
        ids: AtomicU64::new(0),
        id_base: unix_now() << 20,
    });
    // The executor tells the registry when it unloads a model for idleness.
    let weak = Arc::downgrade(&state);
    let on_unload = Box::new(move |name: &str| {
        if let Some(s) = weak.upgrade() {
            s.models.unloaded(name);
        }
    });
    let executor = executor::Executor::new(rx, config.max_queue, config.idle_unload, on_unload);
    let engine_thread = std::thread::Builder::new().name("lamina-engine".into()).spawn(move || executor.run())?;
    let app = router(state.clone());
    // TCP_NODELAY: a stream's small chunks go out at once instead of waiting on Nagle's
    // algorithm for the client's (delayed) ACK of the previous one.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let result = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    state.models.send(executor::Command::Shutdown);
    drop(state);
    let _ = tokio::task::spawn_blocking(move || engine_thread.join()).await;
    result
}
