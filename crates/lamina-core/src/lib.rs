//! Lamina's shared vocabulary: the error type every library crate returns, the model
//! configuration (read from GGUF metadata or a Hugging Face `config.json`), and run-time
//! settings such as the thread count. No global state lives here: settings are values
//! passed down explicitly.

pub mod config;
pub mod registry;
pub mod error;
pub mod memory;
pub mod settings;

pub use config::{Architecture, ModelConfig, RopeScaling};
pub use error::{Error, Result};
pub use settings::Settings;
