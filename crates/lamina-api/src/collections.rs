//! Lamina's collections API (`/v1/collections`) and the `rag` extension of chat
//! completions: request and response bodies.
//!
//! These endpoints are Lamina's own (OpenAI has no such resource), so unlike the
//! OpenAI-shaped requests, which ignore unknown fields as OpenAI does, their bodies refuse
//! unknown fields: a misspelt option is an error naming it, never silently dropped.
//!
//! Retrieval's own vocabulary — search modes, filters, document kinds — stays plain JSON
//! here and is read by the server with `lamina-rag`'s types, so this crate keeps no copy
//! of them and does not depend on the retrieval crate:
//! - `mode`: `"vector"`, `"keyword"` or `"hybrid"` (the default);
//! - `filter`: either a map `{"key": value, …}` (every key equals its value) or
//!   `lamina-rag`'s condition list, `[{"op": "eq"|"ne", "key", "value"},
//!   {"op": "in", "key", "values": […]}, {"op": "prefix", "key", "prefix"}]`. `key` is
//!   `source` (a document's id) or a metadata field;
//! - `kind` of a document: `"text"`, `"markdown"` or `"html"`.

use crate::error::ApiError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most results one search (or one RAG retrieval) returns.
pub const MAX_K: u32 = 100;
/// Results when `k` is not given.
pub const DEFAULT_K: u32 = 5;
/// Most documents in one `POST /v1/collections/{name}/documents`.
pub const MAX_DOCUMENTS: usize = 4096;

/// Free-form metadata of a document (filters match on it).
pub type Metadata = BTreeMap<String, serde_json::Value>;

/// A byte range `[start, end)` in a document's text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

/// `"object": "collection"`: what a collection is and holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionObject {
    pub object: String,
    pub name: String,
    /// The embedding model whose vectors it holds.
    pub model: String,
    pub dimensions: usize,
    /// Documents (files, for a collection made by `lamina index add`).
    pub sources: usize,
    pub chunks: usize,
    pub chunk_tokens: usize,
    pub chunk_overlap: usize,
    /// The vector index in use, in words (`exact`, `hnsw …`).
    pub vector_index: String,
    /// Bytes it takes where it is stored, when the back-end can tell.
    #[serde(default)]
    pub stored_bytes: Option<u64>,
}

/// `GET /v1/collections`: `{"object": "list", "data": [collection, …]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectionList {
    pub object: String,
    pub data: Vec<CollectionObject>,
}

impl CollectionList {
    pub fn new(data: Vec<CollectionObject>) -> Self {
        CollectionList { object: "list".into(), data }
    }
}

/// The body of `POST /v1/collections`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a collection object: {\"name\", \"model\"?, \"chunk_tokens\"?, \"chunk_overlap\"?}")]
pub struct CreateCollectionRequest {
    /// 1–64 letters, digits, `-`, `_` or `.`, not starting with `.` (checked by the server).
    pub name: String,
    /// A served model to embed with; default: the server's `--embedding-model`.
    #[serde(default)]
    pub model: Option<String>,
    /// Target chunk size in the embedding model's tokens.
    #[serde(default)]
    pub chunk_tokens: Option<u32>,
    /// Tokens shared by consecutive chunks; less than `chunk_tokens`.
    #[serde(default)]
    pub chunk_overlap: Option<u32>,
}

impl CreateCollectionRequest {
    /// Checks the chunk sizes against each other (with `defaults` for the ones not given).
    pub fn validate(&self, defaults: (u32, u32)) -> Result<(u32, u32), ApiError> {
        let tokens = self.chunk_tokens.unwrap_or(defaults.0);
        let overlap = self.chunk_overlap.unwrap_or(defaults.1.min(tokens.saturating_sub(1)));
        if tokens == 0 {
            return Err(ApiError::invalid_param("chunk_tokens", "`chunk_tokens` must be at least 1"));
        }
        if overlap >= tokens {
            return Err(ApiError::invalid_param("chunk_overlap", format!("`chunk_overlap` ({overlap}) must be less than `chunk_tokens` ({tokens})")));
        }
        Ok((tokens, overlap))
    }
}

/// The body of `POST /v1/collections/{name}/documents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an object {\"documents\": [...]}")]
pub struct DocumentsRequest {
    pub documents: Vec<DocumentInput>,
}

/// One document to add. A document whose `id` is already stored is replaced when its
/// text (or kind, or metadata) changed, and left alone when it did not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a document object: {\"id\", \"text\", \"kind\"?, \"metadata\"?}")]
pub struct DocumentInput {
    pub id: String,
    pub text: String,
    /// `text` (the default), `markdown` or `html`.
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
}

impl DocumentsRequest {
    /// At least one document and at most [`MAX_DOCUMENTS`], each with a non-empty id,
    /// ids unique within the request.
    pub fn validate(&self) -> Result<(), ApiError> {
        if self.documents.is_empty() {
            return Err(ApiError::invalid_param("documents", "`documents` must hold at least one document"));
        }
        if self.documents.len() > MAX_DOCUMENTS {
            return Err(ApiError::invalid_param("documents", format!("{} documents in one request; at most {MAX_DOCUMENTS}", self.documents.len())));
        }
        let mut seen = std::collections::HashSet::new();
        for (i, d) in self.documents.iter().enumerate() {
            if d.id.trim().is_empty() {
                return Err(ApiError::invalid_param(format!("documents[{i}].id"), format!("documents[{i}].id is empty")));
            }
            if !seen.insert(d.id.as_str()) {
                return Err(ApiError::invalid_param(format!("documents[{i}].id"), format!("documents[{i}].id: `{}` appears twice in this request", d.id)));
            }
        }
        Ok(())
    }
}

/// What `POST /v1/collections/{name}/documents` did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddReport {
    /// `"collection.documents.added"`.
    pub object: String,
    pub collection: String,
    /// New documents.
    pub added: usize,
    /// Stored documents whose content changed, their chunks replaced.
    pub replaced: usize,
    /// Stored documents sent again unchanged: nothing done.
    pub unchanged: usize,
    /// Documents not indexed, with the reason (an empty text, …).
    pub skipped: Vec<SkippedDocument>,
    /// Chunks stored by this request.
    pub chunks: usize,
    /// Embedding-model tokens those chunks took.
    pub tokens: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkippedDocument {
    pub id: String,
    pub reason: String,
}

/// One stored document, `"object": "collection.document"`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentObject {
    pub object: String,
    pub id: String,
    /// sha256 of the content, hex.
    pub content_hash: String,
    pub bytes: u64,
    pub chunks: usize,
    /// Unix seconds.
    pub added_at: u64,
    pub metadata: Metadata,
}

/// `GET /v1/collections/{name}/documents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DocumentList {
    pub object: String,
    pub data: Vec<DocumentObject>,
}

impl DocumentList {
    pub fn new(data: Vec<DocumentObject>) -> Self {
        DocumentList { object: "list".into(), data }
    }
}

/// The answer to a `DELETE`: `{"id", "object": "collection.deleted" | "collection.document.deleted", "deleted": true}`
/// (OpenAI's deletion shape).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

impl Deleted {
    pub fn new(id: impl Into<String>, object: &str) -> Self {
        Deleted { id: id.into(), object: object.into(), deleted: true }
    }
}

/// The body of `POST /v1/collections/{name}/search`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a search object: {\"query\", \"k\"?, \"mode\"?, \"filter\"?}")]
pub struct SearchRequest {
    pub query: String,
    /// Results, 1..=[`MAX_K`]; default [`DEFAULT_K`].
    #[serde(default)]
    pub k: Option<u32>,
    /// `vector`, `keyword` or `hybrid` (default).
    #[serde(default)]
    pub mode: Option<String>,
    /// See the module's documentation.
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
}

impl SearchRequest {
    /// A non-blank query and `k` in range; the number of results.
    pub fn validate(&self) -> Result<u32, ApiError> {
        if self.query.trim().is_empty() {
            return Err(ApiError::invalid_param("query", "`query` is empty"));
        }
        check_k("k", self.k)
    }
}

fn check_k(param: &str, k: Option<u32>) -> Result<u32, ApiError> {
    let k = k.unwrap_or(DEFAULT_K);
    if !(1..=MAX_K).contains(&k) {
        return Err(ApiError::invalid_param(param, format!("`{param}` is {k}; it must be between 1 and {MAX_K}")));
    }
    Ok(k)
}

/// One search result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchHit {
    /// `"collection.search_result"`.
    pub object: String,
    /// 1 for the best.
    pub rank: usize,
    /// The mode's score: cosine similarity (vector), BM25 (keyword), fused reciprocal rank (hybrid).
    pub score: f32,
    /// Cosine similarity to the query, when the chunk came from the vector side.
    pub similarity: Option<f32>,
    pub chunk_id: u64,
    /// The document's id (a file's path, for a collection made by `lamina index add`).
    pub source: String,
    /// Where the chunk is in the document's text.
    pub byte_range: ByteRange,
    /// The Markdown headings above it ("Install > From source"), where there are any.
    pub heading: Option<String>,
    pub text: String,
    pub metadata: Metadata,
}

/// `POST /v1/collections/{name}/search`: `{"object": "list", "collection", "mode", "data": [hit, …]}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchResults {
    pub object: String,
    pub collection: String,
    pub mode: String,
    pub data: Vec<SearchHit>,
}

/// The `rag` extension field of a chat completion request: answer from `collection`.
///
/// The user's last message is the query; the chunks retrieved (best `k`, similarity at
/// least `threshold`, within the model's context window) go into the prompt as numbered
/// sources, and the response carries the sources the answer cited ([`RagReport`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a rag object: {\"collection\", \"k\"?, \"mode\"?, \"filter\"?, \"threshold\"?}")]
pub struct RagOptions {
    pub collection: String,
    /// Chunks retrieved, 1..=[`MAX_K`]; default [`DEFAULT_K`].
    #[serde(default)]
    pub k: Option<u32>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default)]
    pub filter: Option<serde_json::Value>,
    /// Least cosine similarity of a chunk to the question for it to be used, in [-1, 1];
    /// default: the retrieval library's.
    #[serde(default)]
    pub threshold: Option<f32>,
}

impl RagOptions {
    /// `k` in range and a finite `threshold` in [-1, 1]; the number of chunks to retrieve.
    pub fn validate(&self) -> Result<u32, ApiError> {
        if self.collection.is_empty() {
            return Err(ApiError::invalid_param("rag.collection", "`rag.collection` is empty"));
        }
        if let Some(t) = self.threshold {
            if !(t.is_finite() && (-1.0..=1.0).contains(&t)) {
                return Err(ApiError::invalid_param("rag.threshold", format!("`rag.threshold` is {t}; it must be between -1 and 1")));
            }
        }
        check_k("rag.k", self.k)
    }
}

/// A numbered source of a RAG answer: `[n]` in the answer's text is this chunk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub n: usize,
    pub chunk_id: u64,
    pub source: String,
    pub byte_range: ByteRange,
    pub heading: Option<String>,
    pub score: f32,
    pub similarity: Option<f32>,
    pub text: String,
}

/// A retrieved chunk left out of the prompt, and why (it did not fit the context window…).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DroppedChunk {
    pub chunk_id: u64,
    pub source: String,
    pub reason: String,
}

/// What retrieval did for a RAG answer: the `rag` field of the response (or of the stream's
/// citations chunk), beside the top-level `citations` (the sources the answer cited).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RagReport {
    pub collection: String,
    /// Every source the prompt held, numbered as the model saw them.
    pub sources: Vec<Citation>,
    /// Retrieved chunks that were not put in the prompt.
    pub dropped: Vec<DroppedChunk>,
    /// True when nothing retrieved was relevant enough: the model was not called and the
    /// answer says so.
    pub nothing_relevant: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_json;

    #[test]
    fn unknown_fields_and_wrong_types_are_named() {
        let e = parse_json::<CreateCollectionRequest>(br#"{"name":"a","chunk_token":5}"#).unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("chunk_token"), "{e}");
        let e = parse_json::<DocumentsRequest>(br#"{"documents":[{"id":"a","text":"x"},{"id":"b","text":7}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("documents[1].text"), "{e}");
        let e = parse_json::<DocumentsRequest>(br#"{"documents":[{"id":"a"}]}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("documents[0].text"), "{e}");
        let e = parse_json::<SearchRequest>(br#"{"query":"q","k":-1}"#).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("k"), "{e}");
        let e = parse_json::<RagOptions>(br#"{"collection":"c","topk":3}"#).unwrap_err();
        assert!(e.message.contains("topk"), "{e}");
    }

    #[test]
    fn ranges_are_checked() {
        let r: CreateCollectionRequest = parse_json(br#"{"name":"a","chunk_tokens":10,"chunk_overlap":10}"#).unwrap();
        assert_eq!(r.validate((200, 30)).unwrap_err().param.as_deref(), Some("chunk_overlap"));
        let r: CreateCollectionRequest = parse_json(br#"{"name":"a","chunk_tokens":0}"#).unwrap();
        assert_eq!(r.validate((200, 30)).unwrap_err().param.as_deref(), Some("chunk_tokens"));
        // A small chunk size alone keeps the default overlap below it.
        let r: CreateCollectionRequest = parse_json(br#"{"name":"a","chunk_tokens":20}"#).unwrap();
        assert_eq!(r.validate((200, 30)).unwrap(), (20, 19));
        let r: CreateCollectionRequest = parse_json(br#"{"name":"a"}"#).unwrap();
        assert_eq!(r.validate((200, 30)).unwrap(), (200, 30));

        let s: SearchRequest = parse_json(br#"{"query":"  "}"#).unwrap();
        assert_eq!(s.validate().unwrap_err().param.as_deref(), Some("query"));
        let s: SearchRequest = parse_json(br#"{"query":"q","k":101}"#).unwrap();
        assert_eq!(s.validate().unwrap_err().param.as_deref(), Some("k"));
        let s: SearchRequest = parse_json(br#"{"query":"q"}"#).unwrap();
        assert_eq!(s.validate().unwrap(), DEFAULT_K);

        let d: DocumentsRequest = parse_json(br#"{"documents":[{"id":"a","text":"x"},{"id":"a","text":"y"}]}"#).unwrap();
        assert_eq!(d.validate().unwrap_err().param.as_deref(), Some("documents[1].id"));
        let d: DocumentsRequest = parse_json(br#"{"documents":[]}"#).unwrap();
        assert_eq!(d.validate().unwrap_err().param.as_deref(), Some("documents"));

        let g: RagOptions = parse_json(br#"{"collection":"c","threshold":1.5}"#).unwrap();
        assert_eq!(g.validate().unwrap_err().param.as_deref(), Some("rag.threshold"));
        let g: RagOptions = parse_json(br#"{"collection":"c","k":0}"#).unwrap();
        assert_eq!(g.validate().unwrap_err().param.as_deref(), Some("rag.k"));
    }
}
