//! `/v1/collections`: collections of documents as a resource — create, list, get and
//! delete them; add, list and delete their documents; search them (vector, keyword or
//! hybrid). Bodies are `lamina_api::collections`'s; errors OpenAI's shape. A collection
//! that has API keys ([`crate::auth::CollectionKeys`]) answers only requests presenting
//! one of them (401 without a key, 403 with another one); listing shows only the
//! collections the request may reach.

use super::respond;
use crate::collections::embedder::ServedEmbedder;
use crate::collections::{blocking, wire, Collection};
use crate::{read_body, AppState};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::collections::{
    AddReport, CollectionList, CreateCollectionRequest, Deleted, DocumentList, DocumentsRequest, SearchRequest, SearchResults, SkippedDocument,
};
use lamina_api::{parse_json, ApiError};
use lamina_rag::ingest::{self, DocumentInput};
use lamina_rag::store::{Change, Store};
use lamina_rag::types::{DEFAULT_CHUNK_OVERLAP, DEFAULT_CHUNK_TOKENS};
use lamina_rag::{CollectionSpec, TextEmbedder};
use std::sync::Arc;

const ENDPOINT: &str = "collections";

type Name = Result<Path<String>, PathRejection>;
type NameAndId = Result<Path<(String, String)>, PathRejection>;

fn path<T>(p: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    p.map(|Path(v)| v).map_err(|e| ApiError::invalid_request(format!("the path is not valid: {}", e.body_text())))
}

/// The collection `name`, when the request's key may reach it.
async fn reach(state: &AppState, headers: &HeaderMap, name: &str) -> Result<Arc<Collection>, ApiError> {
    state.collections.keys().check(name, crate::auth::presented_key(headers))?;
    state.collections.get(name).await
}

pub async fn create(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    respond(ENDPOINT, create_collection(state, headers, body).await)
}

async fn create_collection(state: Arc<AppState>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: CreateCollectionRequest = parse_json(&bytes)?;
    let (chunk_tokens, chunk_overlap) = req.validate((DEFAULT_CHUNK_TOKENS as u32, DEFAULT_CHUNK_OVERLAP as u32))?;
    CollectionSpec::check_name(&req.name).map_err(wire::rag_error)?;
    state.collections.keys().check(&req.name, crate::auth::presented_key(&headers))?;
    let model = req.model.clone().unwrap_or_else(|| state.collections.config().embedding_model.clone());
    let embedder = ServedEmbedder::load(&state, &model).await.map_err(|e| if e.status == 404 { e.with_param("model") } else { e })?;
    let spec = CollectionSpec {
        name: req.name,
        embedding_model: embedder.model_id().to_string(),
        dimensions: embedder.dimensions(),
        chunk_tokens: chunk_tokens as usize,
        chunk_overlap: chunk_overlap as usize,
    };
    let c = state.collections.create(spec).await?;
    let info = blocking(move || c.read(|s| s.info())).await?;
    Ok((StatusCode::CREATED, Json(wire::collection(info))).into_response())
}

pub async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    respond(ENDPOINT, list_collections(state, headers).await)
}

async fn list_collections(state: Arc<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let key = crate::auth::presented_key(&headers);
    let all = state.collections.list().await?;
    let data = all.into_iter().filter(|i| state.collections.keys().allows(&i.spec.name, key)).map(wire::collection).collect();
    Ok(Json(CollectionList::new(data)).into_response())
}

pub async fn get(State(state): State<Arc<AppState>>, headers: HeaderMap, name: Name) -> Response {
    respond(ENDPOINT, get_collection(state, headers, name).await)
}

async fn get_collection(state: Arc<AppState>, headers: HeaderMap, name: Name) -> Result<Response, ApiError> {
    let c = reach(&state, &headers, &path(name)?).await?;
    let info = blocking(move || c.read(|s| s.info())).await?;
    Ok(Json(wire::collection(info)).into_response())
}

pub async fn delete(State(state): State<Arc<AppState>>, headers: HeaderMap, name: Name) -> Response {
    respond(ENDPOINT, delete_collection(state, headers, name).await)
}

async fn delete_collection(state: Arc<AppState>, headers: HeaderMap, name: Name) -> Result<Response, ApiError> {
    let name = path(name)?;
    reach(&state, &headers, &name).await?;
    state.collections.delete(&name).await?;
    Ok(Json(Deleted::new(name, "collection.deleted")).into_response())
}

pub async fn add_documents(State(state): State<Arc<AppState>>, headers: HeaderMap, name: Name, body: Body) -> Response {
    respond(ENDPOINT, add(state, headers, name, body).await)
}

async fn add(state: Arc<AppState>, headers: HeaderMap, name: Name, body: Body) -> Result<Response, ApiError> {
    let name = path(name)?;
    let c = reach(&state, &headers, &name).await?;
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: DocumentsRequest = parse_json(&bytes)?;
    req.validate()?;
    let mut docs = Vec::with_capacity(req.documents.len());
    for (i, d) in req.documents.into_iter().enumerate() {
        let kind = match d.kind.as_deref() {
            None => None,
            Some(k) => Some(document_kind(k).ok_or_else(|| {
                ApiError::invalid_param(format!("documents[{i}].kind"), format!("documents[{i}].kind: `{k}` is not a document kind (text, markdown or html)"))
            })?),
        };
        docs.push(DocumentInput { id: d.id, text: d.text, kind, metadata: d.metadata.unwrap_or_default() });
    }
    let embedder = ServedEmbedder::for_collection(&state, c.spec()).await?;
    let _writer = c.writer().await;
    let report = blocking(move || {
        let mut store = c.writing();
        ingest::add_documents(&mut store, &embedder, embedder.counter(), docs, &ingest::IngestOptions::default(), &mut |_| {}).map_err(wire::rag_error)
    })
    .await?;
    Ok(Json(AddReport {
        object: "collection.documents.added".into(),
        collection: name,
        added: report.added,
        replaced: report.replaced,
        unchanged: report.unchanged,
        skipped: report.skipped.into_iter().map(|(id, reason)| SkippedDocument { id: id.display().to_string(), reason }).collect(),
        chunks: report.chunks,
        tokens: report.tokens,
    })
    .into_response())
}

/// The kinds a posted document may be (its text is given, so not PDF).
fn document_kind(k: &str) -> Option<lamina_rag::document::DocKind> {
    use lamina_rag::document::DocKind;
    [DocKind::Text, DocKind::Markdown, DocKind::Html].into_iter().find(|d| d.as_str() == k)
}

pub async fn list_documents(State(state): State<Arc<AppState>>, headers: HeaderMap, name: Name) -> Response {
    respond(ENDPOINT, documents(state, headers, name).await)
}

async fn documents(state: Arc<AppState>, headers: HeaderMap, name: Name) -> Result<Response, ApiError> {
    let c = reach(&state, &headers, &path(name)?).await?;
    let sources = blocking(move || c.read(|s| s.sources())).await?;
    Ok(Json(DocumentList::new(sources.into_iter().map(wire::document).collect())).into_response())
}

pub async fn delete_document(State(state): State<Arc<AppState>>, headers: HeaderMap, ids: NameAndId) -> Response {
    respond(ENDPOINT, remove(state, headers, ids).await)
}

async fn remove(state: Arc<AppState>, headers: HeaderMap, ids: NameAndId) -> Result<Response, ApiError> {
    let (name, id) = path(ids)?;
    let c = reach(&state, &headers, &name).await?;
    let _writer = c.writer().await;
    let owned = id.clone();
    blocking(move || {
        let mut store = c.writing();
        if store.source(&owned).map_err(wire::rag_error)?.is_none() {
            return Err(ApiError::not_found(format!("collection `{}` has no document `{owned}`", store.spec().name)).with_code("document_not_found"));
        }
        store.apply(vec![Change::Remove { source: owned }]).map_err(wire::rag_error)
    })
    .await?;
    Ok(Json(Deleted::new(id, "collection.document.deleted")).into_response())
}

pub async fn search(State(state): State<Arc<AppState>>, headers: HeaderMap, name: Name, body: Body) -> Response {
    respond(ENDPOINT, search_collection(state, headers, name, body).await)
}

async fn search_collection(state: Arc<AppState>, headers: HeaderMap, name: Name, body: Body) -> Result<Response, ApiError> {
    let name = path(name)?;
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: SearchRequest = parse_json(&bytes)?;
    let k = req.validate()? as usize;
    let mode = wire::mode(req.mode.as_deref(), "mode")?;
    let filter = wire::filter(req.filter.as_ref(), "filter")?;
    let c = reach(&state, &headers, &name).await?;
    let embedder = ServedEmbedder::for_collection(&state, c.spec()).await?;
    let search = lamina_rag::SearchRequest { filter, ..lamina_rag::SearchRequest::new(&req.query, k, mode) };
    let hits = blocking(move || c.read(|store| lamina_rag::search(store, &embedder, &search))).await?;
    let data = hits.into_iter().enumerate().map(|(i, h)| wire::hit(i + 1, h)).collect();
    let mode = serde_json::to_value(mode).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
    Ok(Json(SearchResults { object: "list".into(), collection: name, mode, data }).into_response())
}
