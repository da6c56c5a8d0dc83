//! The records every back-end stores and every search returns.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ops::Range;

/// A chunk's id, unique within its collection and never reused (ids only grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkId(pub u64);

/// Free-form metadata: a source's kind and title, plus what the user attached (`--meta k=v`).
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// What a collection is: its name, the model whose vectors it holds, and how it chunks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectionSpec {
    pub name: String,
    /// [`crate::TextEmbedder::model_id`] of the model that made the vectors.
    pub embedding_model: String,
    pub dimensions: usize,
    /// Target chunk size, in the embedding model's tokens.
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks of one source.
    pub chunk_overlap: usize,
}

/// Default chunk size: under all-MiniLM-L6-v2's 256-word-piece limit with room to spare.
pub const DEFAULT_CHUNK_TOKENS: usize = 200;
pub const DEFAULT_CHUNK_OVERLAP: usize = 30;

impl CollectionSpec {
    pub fn new(name: &str, embedding_model: &str, dimensions: usize) -> CollectionSpec {
        CollectionSpec {
            name: name.to_string(),
            embedding_model: embedding_model.to_string(),
            dimensions,
            chunk_tokens: DEFAULT_CHUNK_TOKENS,
            chunk_overlap: DEFAULT_CHUNK_OVERLAP,
        }
    }

    /// Collection names are folder names and SQL identifiers' suffixes: keep them plain.
    pub fn check_name(name: &str) -> crate::Result<()> {
        let ok =
            !name.is_empty() && name.len() <= 64 && !name.starts_with('.') && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if ok {
            Ok(())
        } else {
            Err(crate::RagError::InvalidName(name.to_string()))
        }
    }
}

/// A collection's size and state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectionInfo {
    pub spec: CollectionSpec,
    pub sources: usize,
    pub chunks: usize,
    /// Bytes the collection takes where it is stored, when the back-end can tell.
    pub stored_bytes: Option<u64>,
    /// The vector index in use, in words ("exact", "hnsw M=32 ef=64", "pgvector hnsw").
    pub vector_index: String,
}

/// One source (a file, or a document posted to the server) as the collection knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// Its key: a canonical file path, or a caller-given document id.
    pub source: String,
    /// sha256 of the raw bytes, hex: an unchanged file is not added again.
    pub content_hash: String,
    pub bytes: u64,
    pub chunks: usize,
    /// Seconds since the Unix epoch.
    pub added_at: u64,
    pub metadata: Metadata,
}

/// A chunk on its way into a store, with its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct NewChunk {
    pub text: String,
    /// Where the text came from in the source's extracted text, in bytes.
    pub byte_range: Range<u64>,
    /// The heading path above it ("Install > From source"), where the format has headings.
    pub heading: Option<String>,
    pub vector: Vec<f32>,
}

/// A stored chunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkRecord {
    pub id: ChunkId,
    pub source: String,
    pub text: String,
    pub byte_range: Range<u64>,
    pub heading: Option<String>,
    /// The source's metadata (filters match on it).
    pub metadata: Metadata,
}

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    Vector,
    Keyword,
    #[default]
    Hybrid,
}

impl SearchMode {
    pub fn parse(s: &str) -> crate::Result<SearchMode> {
        match s {
            "vector" => Ok(SearchMode::Vector),
            "keyword" => Ok(SearchMode::Keyword),
            "hybrid" => Ok(SearchMode::Hybrid),
            other => Err(crate::RagError::InvalidInput(format!("unknown search mode `{other}` (vector, keyword or hybrid)"))),
        }
    }
}

/// One condition on a chunk. `key` is `source` (the source's key) or a metadata field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "op", deny_unknown_fields)]
pub enum Condition {
    /// The field equals the value.
    Eq { key: String, value: serde_json::Value },
    /// The field differs from the value (or is absent).
    Ne { key: String, value: serde_json::Value },
    /// The field equals one of the values.
    In { key: String, values: Vec<serde_json::Value> },
    /// The field is a string starting with `prefix` (a folder, for `source`).
    Prefix { key: String, prefix: String },
}

/// Conditions that must all hold. Empty: everything passes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Filter(pub Vec<Condition>);

impl Filter {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a chunk of `source` with `metadata` passes.
    pub fn accepts(&self, source: &str, metadata: &Metadata) -> bool {
        let field = |key: &str| -> Option<serde_json::Value> {
            if key == "source" {
                Some(serde_json::Value::String(source.to_string()))
            } else {
                metadata.get(key).cloned()
            }
        };
        self.0.iter().all(|c| match c {
            Condition::Eq { key, value } => field(key).as_ref() == Some(value),
            Condition::Ne { key, value } => field(key).as_ref() != Some(value),
            Condition::In { key, values } => field(key).is_some_and(|v| values.contains(&v)),
            Condition::Prefix { key, prefix } => field(key).is_some_and(|v| v.as_str().is_some_and(|s| s.starts_with(prefix.as_str()))),
        })
    }

    /// Parses `key=value` (value as JSON when it parses, else a string) and `key^=prefix`.
    pub fn parse_cli(items: &[String]) -> crate::Result<Filter> {
        let mut out = Vec::new();
        for item in items {
            let cond = if let Some((k, p)) = item.split_once("^=") {
                Condition::Prefix { key: k.to_string(), prefix: p.to_string() }
            } else if let Some((k, v)) = item.split_once("!=") {
                Condition::Ne { key: k.to_string(), value: parse_value(v) }
            } else if let Some((k, v)) = item.split_once('=') {
                Condition::Eq { key: k.to_string(), value: parse_value(v) }
            } else {
                return Err(crate::RagError::InvalidInput(format!("filter `{item}`: expected key=value, key!=value or key^=prefix")));
            };
            out.push(cond);
        }
        Ok(Filter(out))
    }
}

fn parse_value(v: &str) -> serde_json::Value {
    serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()))
}

/// One search result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    pub chunk: ChunkRecord,
    /// The mode's score: cosine similarity (vector), BM25 (keyword), fused RRF (hybrid).
    pub score: f32,
    /// Cosine similarity to the query when the chunk came from the vector side.
    pub similarity: Option<f32>,
    /// 1-based ranks in each list the hybrid fusion saw.
    pub vector_rank: Option<usize>,
    pub keyword_rank: Option<usize>,
    /// The reranker's score, when a reranker reordered this hit ([`crate::rerank`]).
    pub rerank_score: Option<f32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_match_source_and_metadata() {
        let mut m = Metadata::new();
        m.insert("kind".into(), json!("markdown"));
        m.insert("year".into(), json!(2024));
        let f = Filter::parse_cli(&["kind=markdown".into(), "year=2024".into(), "source^=/docs/".into()]).unwrap();
        assert!(f.accepts("/docs/a.md", &m));
        assert!(!f.accepts("/other/a.md", &m));
        let f = Filter::parse_cli(&["year!=2024".into()]).unwrap();
        assert!(!f.accepts("/docs/a.md", &m));
        let f = Filter(vec![Condition::In { key: "kind".into(), values: vec![json!("pdf"), json!("markdown")] }]);
        assert!(f.accepts("x", &m));
        assert!(Filter::parse_cli(&["nothing".into()]).is_err());
        assert!(Filter::default().accepts("x", &Metadata::new()));
    }

    #[test]
    fn names_are_plain() {
        assert!(CollectionSpec::check_name("docs-v2.1_x").is_ok());
        for bad in ["", ".hidden", "a/b", "a b", &"x".repeat(65)] {
            assert!(CollectionSpec::check_name(bad).is_err(), "{bad}");
        }
    }
}
