//! Collections in the server: the catalog (a folder or a `postgres://` URL, opened on
//! first use so a database that is down costs only the collection requests, with a 503),
//! the collections opened so far, and how handlers read and write them.
//!
//! - Every store and embedding call blocks (files, a database, the model), so each runs
//!   in a blocking task ([`blocking`]); embedding takes the model registry's embedding
//!   lock per batch ([`embedder::ServedEmbedder`]), so collections queue with
//!   `/v1/embeddings` rather than piling onto the cores.
//! - Per collection: one writer at a time ([`Collection::writer`], held for a whole
//!   ingestion or removal), many readers. The store sits behind a read-write lock that a
//!   writer takes only to apply a batch ([`Collection::writing`]), so searches go on while
//!   documents are being embedded.
//! - An embedded collection's writer lock belongs to its open file: a collection is
//!   opened once per server ([`Collections::get`]) and closed before it is deleted.

pub mod embedder;
pub mod wire;

use crate::auth::CollectionKeys;
use lamina_api::ApiError;
use lamina_rag::store::{Change, Store};
use lamina_rag::{Catalog, ChunkId, ChunkRecord, CollectionInfo, CollectionSpec, Filter, RagError, SourceRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use wire::rag_error;

/// Where a server's collections are and what new ones embed with.
#[derive(Debug, Clone)]
pub struct CollectionsConfig {
    /// A folder of embedded collections, or a `postgres://` URL.
    pub location: String,
    /// The served model new collections embed with (a name in the model registry), and
    /// the one tried for a collection whose own model is not served.
    pub embedding_model: String,
    pub keys: CollectionKeys,
}

/// The collections of a server.
pub struct Collections {
    config: CollectionsConfig,
    catalog: Mutex<Option<Arc<dyn Catalog>>>,
    open: Mutex<HashMap<String, Arc<Collection>>>,
    /// Opening, creating and deleting, one at a time.
    opening: tokio::sync::Mutex<()>,
}

/// Runs blocking work (a store, a database, a model) off the async runtime.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| ApiError::server_error(format!("a collection task failed: {e}")))?
}

impl Collections {
    pub fn new(config: CollectionsConfig) -> Collections {
        Collections { config, catalog: Mutex::new(None), open: Mutex::new(HashMap::new()), opening: tokio::sync::Mutex::new(()) }
    }

    pub fn config(&self) -> &CollectionsConfig {
        &self.config
    }

    pub fn keys(&self) -> &CollectionKeys {
        &self.config.keys
    }

    /// The catalog, opened (connected) on first use; a failure is not kept, so the next
    /// request tries again (a database that came back).
    async fn catalog(&self) -> Result<Arc<dyn Catalog>, ApiError> {
        if let Some(c) = self.catalog.lock().expect("catalog").clone() {
            return Ok(c);
        }
        let location = self.config.location.clone();
        // Whatever the reason (a database that is down, a folder that cannot be made), it is
        // the server's, not the request's: 503 with the reason.
        let catalog: Arc<dyn Catalog> = blocking(move || {
            lamina_rag::store::open_catalog(&location).map(Arc::from).map_err(|e| ApiError::unavailable(format!("the collections are unavailable: {e}")))
        })
        .await?;
        Ok(self.catalog.lock().expect("catalog").get_or_insert(catalog).clone())
    }

    fn cached(&self, name: &str) -> Option<Arc<Collection>> {
        self.open.lock().expect("collections").get(name).cloned()
    }

    /// The collection called `name`, opened on first use.
    pub async fn get(&self, name: &str) -> Result<Arc<Collection>, ApiError> {
        CollectionSpec::check_name(name).map_err(rag_error)?;
        if let Some(c) = self.cached(name) {
            return Ok(c);
        }
        let _one = self.opening.lock().await;
        if let Some(c) = self.cached(name) {
            return Ok(c);
        }
        let catalog = self.catalog().await?;
        let owned = name.to_string();
        let store = blocking(move || catalog.open(&owned).map_err(rag_error)).await?;
        let c = Arc::new(Collection::new(store));
        self.open.lock().expect("collections").insert(name.to_string(), c.clone());
        Ok(c)
    }

    /// Creates an empty collection (409 when the name is taken).
    pub async fn create(&self, spec: CollectionSpec) -> Result<Arc<Collection>, ApiError> {
        CollectionSpec::check_name(&spec.name).map_err(rag_error)?;
        let _one = self.opening.lock().await;
        let catalog = self.catalog().await?;
        let name = spec.name.clone();
        let store = blocking(move || catalog.create(spec).map_err(rag_error)).await?;
        let c = Arc::new(Collection::new(store));
        self.open.lock().expect("collections").insert(name, c.clone());
        Ok(c)
    }

    /// Every collection, by name; those open here as this server sees them.
    pub async fn list(&self) -> Result<Vec<CollectionInfo>, ApiError> {
        let catalog = self.catalog().await?;
        let mut infos = blocking(move || catalog.list().map_err(rag_error)).await?;
        for info in &mut infos {
            if let Some(c) = self.cached(&info.spec.name) {
                let live = blocking(move || c.read(|s| s.info())).await;
                if let Ok(live) = live {
                    *info = live;
                }
            }
        }
        Ok(infos)
    }

    /// Deletes a collection and everything in it, after the write in progress, if any.
    pub async fn delete(&self, name: &str) -> Result<(), ApiError> {
        CollectionSpec::check_name(name).map_err(rag_error)?;
        let _one = self.opening.lock().await;
        let open = self.cached(name);
        let _writing = match &open {
            Some(c) => Some(c.writer().await),
            None => None,
        };
        let catalog = self.catalog().await?;
        let owned = name.to_string();
        blocking(move || {
            // Closed first: an embedded store keeps its writer lock while it is open.
            if let Some(c) = open {
                c.close();
            }
            catalog.delete(&owned).map_err(rag_error)
        })
        .await?;
        self.open.lock().expect("collections").remove(name);
        Ok(())
    }
}

/// One open collection.
pub struct Collection {
    spec: CollectionSpec,
    /// `None` once deleted (a reader still holding it gets "no collection").
    store: RwLock<Option<Box<dyn Store>>>,
    writer: Arc<tokio::sync::Mutex<()>>,
}

impl Collection {
    fn new(store: Box<dyn Store>) -> Collection {
        Collection { spec: store.spec().clone(), store: RwLock::new(Some(store)), writer: Arc::new(tokio::sync::Mutex::new(())) }
    }

    pub fn spec(&self) -> &CollectionSpec {
        &self.spec
    }

    /// The right to write, one writer at a time; hold it across a whole change.
    pub async fn writer(&self) -> tokio::sync::OwnedMutexGuard<()> {
        self.writer.clone().lock_owned().await
    }

    /// Reads the store (blocking: call from a blocking task).
    pub fn read<T>(&self, f: impl FnOnce(&dyn Store) -> lamina_rag::Result<T>) -> Result<T, ApiError> {
        let guard = self.store.read().unwrap_or_else(|p| p.into_inner());
        let store = guard.as_deref().ok_or_else(|| rag_error(RagError::UnknownCollection(self.spec.name.clone())))?;
        f(store).map_err(rag_error)
    }

    /// The store as a writer sees it: reads as [`read`](Self::read), the write lock taken
    /// only while a batch is applied. Hold [`writer`](Self::writer) while using it.
    pub fn writing(&self) -> Writing<'_> {
        Writing { c: self }
    }

    fn close(&self) {
        self.store.write().unwrap_or_else(|p| p.into_inner()).take();
    }
}

/// A collection's store for its one writer (see [`Collection::writing`]).
pub struct Writing<'a> {
    c: &'a Collection,
}

impl Writing<'_> {
    fn read<T>(&self, f: impl FnOnce(&dyn Store) -> lamina_rag::Result<T>) -> lamina_rag::Result<T> {
        let guard = self.c.store.read().unwrap_or_else(|p| p.into_inner());
        f(guard.as_deref().ok_or_else(|| RagError::UnknownCollection(self.c.spec.name.clone()))?)
    }
}

impl Store for Writing<'_> {
    fn spec(&self) -> &CollectionSpec {
        &self.c.spec
    }
    fn info(&self) -> lamina_rag::Result<CollectionInfo> {
        self.read(|s| s.info())
    }
    fn source(&self, source: &str) -> lamina_rag::Result<Option<SourceRecord>> {
        self.read(|s| s.source(source))
    }
    fn sources(&self) -> lamina_rag::Result<Vec<SourceRecord>> {
        self.read(|s| s.sources())
    }
    fn apply(&mut self, changes: Vec<Change>) -> lamina_rag::Result<()> {
        let mut guard = self.c.store.write().unwrap_or_else(|p| p.into_inner());
        guard.as_deref_mut().ok_or_else(|| RagError::UnknownCollection(self.c.spec.name.clone()))?.apply(changes)
    }
    fn vector_search(&self, query: &[f32], k: usize, filter: &Filter) -> lamina_rag::Result<Vec<(ChunkId, f32)>> {
        self.read(|s| s.vector_search(query, k, filter))
    }
    fn keyword_search(&self, query: &str, k: usize, filter: &Filter) -> lamina_rag::Result<Vec<(ChunkId, f32)>> {
        self.read(|s| s.keyword_search(query, k, filter))
    }
    fn chunks(&self, ids: &[ChunkId]) -> lamina_rag::Result<Vec<ChunkRecord>> {
        self.read(|s| s.chunks(ids))
    }
}
