//! The model a collection embeds with, as the retrieval library's [`TextEmbedder`]: a
//! served model (loaded through the model registry, as `/v1/embeddings` loads it) whose
//! computations take the registry's embedding lock, batch by batch.

use crate::models::InFlight;
use crate::AppState;
use lamina_api::ApiError;
use lamina_rag::embed::{EmbedKind, EngineEmbedder};
use lamina_rag::{CollectionSpec, TextEmbedder, TokenCounter};
use std::sync::Arc;

pub struct ServedEmbedder {
    inner: EngineEmbedder,
    gate: Arc<tokio::sync::Mutex<()>>,
    /// For a chat model: the mark that a request is in flight on it (it is not unloaded).
    _inflight: Option<InFlight>,
}

impl ServedEmbedder {
    /// The served model `name`, loaded if needed.
    pub async fn load(state: &AppState, name: &str) -> Result<ServedEmbedder, ApiError> {
        let (embedder, inflight) = state.models.embedder(name).await?;
        Ok(ServedEmbedder { inner: EngineEmbedder { model_id: name.to_string(), embedder }, gate: state.models.embed_gate(), _inflight: inflight })
    }

    /// The model for `spec`'s collection: the one it was made with when this server
    /// serves it, else the server's embedding model (which [`lamina_rag::search`] and
    /// ingestion refuse, naming both, unless it is the same model).
    pub async fn for_collection(state: &AppState, spec: &CollectionSpec) -> Result<ServedEmbedder, ApiError> {
        let served = state.models.serves(&spec.embedding_model);
        let name = if served { spec.embedding_model.clone() } else { state.collections.config().embedding_model.clone() };
        ServedEmbedder::load(state, &name).await
    }

    /// Token counts in the model's vocabulary (chunk sizes).
    pub fn counter(&self) -> &dyn TokenCounter {
        self.inner.embedder.tokenizer()
    }
}

impl TextEmbedder for ServedEmbedder {
    fn model_id(&self) -> &str {
        self.inner.model_id()
    }
    fn dimensions(&self) -> usize {
        self.inner.dimensions()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    /// Blocking: call from a blocking task.
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> lamina_rag::Result<Vec<Vec<f32>>> {
        let _one = self.gate.blocking_lock();
        self.inner.embed(texts, kind)
    }
}
