//! `GET /v1/models` and `GET /v1/models/{id}`: the models this server offers, each
//! saying whether it is loaded now (the others load on their first request).

use super::respond;
use crate::AppState;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::{ApiError, ModelList, ModelObject};
use std::sync::Arc;

fn object(state: &AppState, name: &str) -> ModelObject {
    ModelObject::new(name, state.models.created(), "lamina").with_loaded(state.models.is_loaded(name))
}

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let data = state.models.names().iter().map(|n| object(&state, n)).collect();
    respond("models", Ok(Json(ModelList::new(data)).into_response()))
}

pub async fn one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let result = match state.models.names().iter().find(|n| **n == id) {
        Some(n) => Ok(Json(object(&state, n)).into_response()),
        None => Err(ApiError::model_not_found(&id)),
    };
    respond("models", result)
}
