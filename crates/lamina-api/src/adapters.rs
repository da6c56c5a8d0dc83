//! `/v1/adapters`: LoRA adapters served on a base model, loaded and unloaded at run time
//! (Lamina's own endpoint; vLLM offers the same as `/v1/load_lora_adapter`). A request
//! selects one with `model: "BASE:NAME"` or `model: "NAME"`.

use serde::{Deserialize, Serialize};

/// The body of `POST /v1/adapters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, expecting = "an adapter object: {\"name\", \"path\", \"model\"?, \"scale\"?}")]
pub struct LoadAdapterRequest {
    /// What requests call it; no `:` or `/`.
    pub name: String,
    /// A PEFT adapter folder on the server's machine.
    pub path: String,
    /// The served model it applies to; default: the first chat model.
    #[serde(default)]
    pub model: Option<String>,
    /// Multiplies the adapter's α/r; default 1.
    #[serde(default)]
    pub scale: Option<f32>,
}

/// One served adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterObject {
    /// `BASE:NAME`, what `model` in a request may say.
    pub id: String,
    pub name: String,
    /// The model it applies to.
    pub model: String,
    pub path: String,
    pub scale: f32,
    /// Whether its base model (and so the adapter) is in memory now.
    pub loaded: bool,
}

/// The body of `GET /v1/adapters`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterList {
    pub object: String,
    pub data: Vec<AdapterObject>,
}

impl AdapterList {
    pub fn new(data: Vec<AdapterObject>) -> Self {
        AdapterList { object: "list".into(), data }
    }
}
