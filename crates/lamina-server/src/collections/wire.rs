//! Between the retrieval library's types and the collections API's wire types, and
//! [`RagError`] as an HTTP error.

use lamina_api::collections::{ByteRange, Citation, CollectionObject, DocumentObject, DroppedChunk, SearchHit};
use lamina_api::ApiError;
use lamina_rag::{CollectionInfo, Condition, Filter, Hit, RagError, SearchMode, SourceRecord};

/// A retrieval failure as the API answers it: an unknown collection 404, a taken name
/// 409, a bad name or body 400, vectors of another model 400 (naming both), a database
/// that is down or a collection another process is writing 503, the rest 500.
pub fn rag_error(e: RagError) -> ApiError {
    let message = e.to_string();
    match e {
        RagError::UnknownCollection(_) => ApiError::not_found(message).with_code("collection_not_found"),
        RagError::CollectionExists(_) => ApiError::conflict(message).with_code("collection_exists"),
        RagError::InvalidName(_) => ApiError::invalid_param("name", message),
        RagError::DimensionMismatch { ref model, .. } => {
            let hint = format!("{message} (serve `{model}` for this collection, or give it as --embedding-model)");
            ApiError::invalid_request(hint).with_code("embedding_model_mismatch")
        }
        RagError::InvalidInput(_) => ApiError::invalid_request(message),
        RagError::Database { .. } | RagError::Locked(_) => ApiError::unavailable(message),
        _ => ApiError::server_error(message),
    }
}

pub fn collection(info: CollectionInfo) -> CollectionObject {
    let s = info.spec;
    CollectionObject {
        object: "collection".into(),
        name: s.name,
        model: s.embedding_model,
        dimensions: s.dimensions,
        sources: info.sources,
        chunks: info.chunks,
        chunk_tokens: s.chunk_tokens,
        chunk_overlap: s.chunk_overlap,
        vector_index: info.vector_index,
        stored_bytes: info.stored_bytes,
    }
}

pub fn document(s: SourceRecord) -> DocumentObject {
    DocumentObject {
        object: "collection.document".into(),
        id: s.source,
        content_hash: s.content_hash,
        bytes: s.bytes,
        chunks: s.chunks,
        added_at: s.added_at,
        metadata: s.metadata,
    }
}

fn range(r: &std::ops::Range<u64>) -> ByteRange {
    ByteRange { start: r.start, end: r.end }
}

pub fn hit(rank: usize, h: Hit) -> SearchHit {
    let c = h.chunk;
    SearchHit {
        object: "collection.search_result".into(),
        rank,
        score: h.score,
        similarity: h.similarity,
        chunk_id: c.id.0,
        source: c.source,
        byte_range: range(&c.byte_range),
        heading: c.heading,
        text: c.text,
        metadata: c.metadata,
    }
}

/// A prompt's numbered source with the chunk's text (from the hits it was made of).
pub fn citation(c: &lamina_rag::answer::Citation, hits: &[Hit]) -> Citation {
    let text = hits.iter().find(|h| h.chunk.id == c.chunk_id).map(|h| h.chunk.text.clone()).unwrap_or_default();
    Citation {
        n: c.n,
        chunk_id: c.chunk_id.0,
        source: c.source.clone(),
        byte_range: range(&c.byte_range),
        heading: c.heading.clone(),
        score: c.score,
        similarity: c.similarity,
        text,
    }
}

pub fn dropped(d: &lamina_rag::answer::Dropped) -> DroppedChunk {
    DroppedChunk { chunk_id: d.chunk_id.0, source: d.source.clone(), reason: d.reason.to_string() }
}

/// `mode` (`param` names it in errors); absent: hybrid.
pub fn mode(mode: Option<&str>, param: &str) -> Result<SearchMode, ApiError> {
    mode.map_or(Ok(SearchMode::default()), |m| SearchMode::parse(m).map_err(|e| ApiError::invalid_param(param, format!("{param}: {}", inner(e)))))
}

/// `filter` (`param` names it in errors): absent or null, nothing filtered; a map
/// `{"key": value}`, each key equal to its value; a list, lamina-rag's conditions.
pub fn filter(v: Option<&serde_json::Value>, param: &str) -> Result<Filter, ApiError> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(Filter::default()),
        Some(serde_json::Value::Object(map)) => Ok(Filter(map.iter().map(|(k, v)| Condition::Eq { key: k.clone(), value: v.clone() }).collect())),
        Some(list @ serde_json::Value::Array(_)) => serde_json::from_value(list.clone()).map_err(|e| {
            ApiError::invalid_param(
                param,
                format!("{param}: {e}; a condition is {{\"op\": \"eq\"|\"ne\", \"key\", \"value\"}}, {{\"op\": \"in\", \"key\", \"values\"}} or {{\"op\": \"prefix\", \"key\", \"prefix\"}}"),
            )
        }),
        Some(_) => Err(ApiError::invalid_param(param, format!("{param} must be an object {{\"key\": value}} or a list of conditions"))),
    }
}

/// The message of an [`RagError::InvalidInput`] without its "invalid input: " prefix.
fn inner(e: RagError) -> String {
    match e {
        RagError::InvalidInput(m) => m,
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_come_as_a_map_or_as_conditions() {
        let f = filter(Some(&json!({"team": "hr", "year": 2024})), "filter").unwrap();
        assert_eq!(f.0.len(), 2);
        let mut m = lamina_rag::Metadata::new();
        m.insert("team".into(), json!("hr"));
        m.insert("year".into(), json!(2024));
        assert!(f.accepts("doc", &m));
        m.insert("year".into(), json!(2023));
        assert!(!f.accepts("doc", &m));
        let f = filter(Some(&json!([{"op": "prefix", "key": "source", "prefix": "hr/"}])), "filter").unwrap();
        assert!(f.accepts("hr/a", &m) && !f.accepts("legal/a", &m));
        assert!(filter(None, "filter").unwrap().is_empty());
        for bad in [json!([{"op": "like", "key": "a"}]), json!("team=hr"), json!(3)] {
            let e = filter(Some(&bad), "rag.filter").unwrap_err();
            assert_eq!((e.status, e.param.as_deref()), (400, Some("rag.filter")), "{bad}");
        }
    }

    #[test]
    fn modes_and_errors() {
        assert_eq!(mode(None, "mode").unwrap(), SearchMode::Hybrid);
        assert_eq!(mode(Some("keyword"), "mode").unwrap(), SearchMode::Keyword);
        assert_eq!(mode(Some("fuzzy"), "rag.mode").unwrap_err().param.as_deref(), Some("rag.mode"));
        assert_eq!(rag_error(RagError::UnknownCollection("x".into())).status, 404);
        assert_eq!(rag_error(RagError::CollectionExists("x".into())).status, 409);
        assert_eq!(rag_error(RagError::InvalidName("a b".into())).status, 400);
        assert_eq!(rag_error(RagError::Database { url: "postgres://db".into(), reason: "connection refused".into() }).status, 503);
        let e = rag_error(RagError::DimensionMismatch { collection: "c".into(), model: "a".into(), expected: 384, got_model: "b".into(), got: 576 });
        assert_eq!(e.status, 400);
        assert!(e.message.contains("384") && e.message.contains("576") && e.message.contains("`a`") && e.message.contains("`b`"), "{e}");
    }
}
