//! Lamina's shared vocabulary: the error type every library crate returns, the model
//! configuration (read from GGUF metadata or a Hugging Face `config.json`), run-time
//! settings such as the thread count, and the checks every crate shares (available
//! memory, sampling settings, files that must be regular). No global state lives here:
//! settings are values passed down explicitly.

pub mod config;
pub mod encoder_config;
pub mod error;
pub mod fs;
pub mod memory;
pub mod registry;
pub mod sampling;
pub mod settings;

pub use config::{Architecture, LocalLayers, ModelConfig, RopeScaling};
pub use encoder_config::EncoderConfig;
pub use error::{Error, Result};
pub use settings::{Settings, Threads};
