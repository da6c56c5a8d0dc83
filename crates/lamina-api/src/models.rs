//! The body of `GET /v1/models` and of `GET /v1/models/{model}`.
//!
//! Follows the OpenAI API reference, "Models" → "List models" and "The model object".

use serde::{Deserialize, Serialize};

use crate::common::{ListObject, ModelObjectTag};

/// `{"object": "list", "data": [...]}`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: ListObject,
    pub data: Vec<ModelObject>,
}

impl ModelList {
    pub fn new(data: Vec<ModelObject>) -> Self {
        ModelList { object: ListObject, data }
    }
}

/// One model: `{"id", "object": "model", "created", "owned_by"}`, and Lamina's `loaded`
/// (whether its weights are in memory now; absent from other servers' bodies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelObject {
    pub id: String,
    pub object: ModelObjectTag,
    /// Unix seconds.
    pub created: u64,
    pub owned_by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loaded: Option<bool>,
}

impl ModelObject {
    pub fn new(id: impl Into<String>, created: u64, owned_by: impl Into<String>) -> Self {
        ModelObject { id: id.into(), object: ModelObjectTag, created, owned_by: owned_by.into(), loaded: None }
    }

    /// With Lamina's `loaded` field.
    pub fn with_loaded(mut self, loaded: bool) -> Self {
        self.loaded = Some(loaded);
        self
    }
}
