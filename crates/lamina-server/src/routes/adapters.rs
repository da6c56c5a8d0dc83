//! `GET /v1/adapters`, `POST /v1/adapters`, `DELETE /v1/adapters/{name}`: the LoRA adapters
//! served on the base models, added and removed at run time.

use super::respond;
use crate::models::{AdapterInfo, AdapterSpec};
use crate::{read_body, AppState};
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use lamina_api::adapters::{AdapterList, AdapterObject, LoadAdapterRequest};
use lamina_api::{parse_json, ApiError};
use std::sync::Arc;

const ENDPOINT: &str = "adapters";

fn object(a: AdapterInfo) -> AdapterObject {
    AdapterObject {
        id: format!("{}:{}", a.base, a.name),
        name: a.name,
        model: a.base,
        path: a.path.to_string_lossy().into_owned(),
        scale: a.scale,
        loaded: a.loaded,
    }
}

pub async fn list(State(state): State<Arc<AppState>>) -> Response {
    let data = state.models.adapters().into_iter().map(object).collect();
    respond(ENDPOINT, Ok(Json(AdapterList::new(data)).into_response()))
}

pub async fn load(State(state): State<Arc<AppState>>, body: Body) -> Response {
    respond(ENDPOINT, load_adapter(state, body).await)
}

async fn load_adapter(state: Arc<AppState>, body: Body) -> Result<Response, ApiError> {
    let bytes = read_body(body, state.max_body_bytes).await?;
    let req: LoadAdapterRequest = parse_json(&bytes)?;
    let spec = AdapterSpec { name: req.name, path: req.path.into(), scale: req.scale.unwrap_or(1.0) };
    let info = state.models.add_adapter(req.model.as_deref(), spec).await?;
    Ok((StatusCode::CREATED, Json(object(info))).into_response())
}

pub async fn unload(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    respond(ENDPOINT, state.models.remove_adapter(&name).map(|a| Json(object(a)).into_response()))
}
