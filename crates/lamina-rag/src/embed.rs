//! What retrieval needs from a model, as two small traits: vectors for texts, and token
//! counts (chunk sizes, prompt budgets). The `engine` feature implements them for
//! lamina-engine's embedder and lamina-tokenizer's tokenizer.

use crate::Result;

/// Whether a text is stored (a passage) or asked (a query). Symmetric models such as
/// all-MiniLM-L6-v2 treat both alike; asymmetric ones (e5, bge) prefix them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbedKind {
    Passage,
    Query,
}

/// Texts in, one unit-length vector per text out.
pub trait TextEmbedder: Send + Sync {
    /// The model's name as recorded in a collection (a different model's vectors do not mix).
    fn model_id(&self) -> &str;
    fn dimensions(&self) -> usize;
    /// The longest input, in the model's tokens, it reads before truncating.
    fn max_tokens(&self) -> usize;
    fn embed(&self, texts: &[&str], kind: EmbedKind) -> Result<Vec<Vec<f32>>>;
}

/// Token counts in some model's vocabulary.
pub trait TokenCounter: Send + Sync {
    fn count_tokens(&self, text: &str) -> usize;
}

/// Whitespace-separated words as tokens: a rough count where no model is at hand, and one
/// that tests can check by hand.
pub struct WordCounter;

impl TokenCounter for WordCounter {
    fn count_tokens(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
}

#[cfg(feature = "engine")]
mod engine_impls {
    use super::*;
    use crate::RagError;
    use lamina_engine::embed::{EmbedInput, Embedder};
    use lamina_tokenizer::Tokenizer;

    /// lamina-engine's [`Embedder`] under the name it is stored with.
    pub struct EngineEmbedder {
        pub model_id: String,
        pub embedder: std::sync::Arc<Embedder>,
    }

    impl TextEmbedder for EngineEmbedder {
        fn model_id(&self) -> &str {
            &self.model_id
        }
        fn dimensions(&self) -> usize {
            self.embedder.dimensions()
        }
        fn max_tokens(&self) -> usize {
            self.embedder.max_tokens()
        }
        fn embed(&self, texts: &[&str], _kind: EmbedKind) -> Result<Vec<Vec<f32>>> {
            let inputs: Vec<EmbedInput<'_>> = texts.iter().map(|t| EmbedInput::Text(t)).collect();
            let out = self.embedder.embed(&inputs).map_err(|e| RagError::Embed(e.to_string()))?;
            Ok(out.into_iter().map(|e| e.vector).collect())
        }
    }

    impl TokenCounter for Tokenizer {
        fn count_tokens(&self, text: &str) -> usize {
            self.encode(text, false).map(|ids| ids.len()).unwrap_or(text.len())
        }
    }
}

#[cfg(feature = "engine")]
pub use engine_impls::EngineEmbedder;
