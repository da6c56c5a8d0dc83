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

/// The served models, then each adapter as `BASE:NAME` (what a request's `model` may say).
fn all(state: &AppState) -> Vec<ModelObject> {
    let mut data: Vec<ModelObject> = state.models.names().iter().map(|n| object(state, n)).collect();
    for a in state.models.adapters() {
        data.push(ModelObject::new(format!("{}:{}", a.base, a.name), state.models.created(), "lamina").with_loaded(a.loaded));
    }
    data
}

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let data = all(&state);
    respond("models", Ok(Json(ModelList::new(data)).into_response()))
}

pub async fn one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> Response {
    let result = match all(&state).into_iter().find(|m| m.id == id) {
        Some(m) => Ok(Json(m).into_response()),
        None => Err(ApiError::model_not_found(&id)),
    };
    respond("models", result)
}
