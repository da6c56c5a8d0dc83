//! lamina-train: pre-training Lamina models from scratch by next-token prediction, and
//! fine-tuning them on instructions.
//!
//! - [`data`]: text → token ids, cached in a memory-mapped file beside the data; 90/10
//!   split; seeded random (batch, block) windows.
//! - [`optim`]: AdamW (decay on matrices only), warm-up + cosine schedule, global-norm clipping.
//! - [`config`]: [`TrainConfig`] (TOML, every key overridable with [`TrainConfig::set`]).
//! - [`trainer`]: [`pretrain`], with evaluation, samples, a metrics JSONL log and a loss plot.
//! - [`checkpoint`]: atomic checkpoints (HF folder + optimizer + trainer state), exact resume,
//!   pruning to the newest `keep_last`.
//! - [`memory`]: what a run will allocate, estimated from the config and checked before
//!   anything is allocated.
//! - [`export`]: HF safetensors folder or GGUF (f32/f16/q8_0/q4_0/q4_1).
//! - [`instruct`]: instruction records (chat messages, Alpaca, prompt/completion) → token
//!   ids with an assistant-only loss mask; [`sft`]: supervised fine-tuning on them, with
//!   LoRA adapters or every weight.
//!
//! The model is [`lamina_model::trainable::TrainableModel`], the same definition (and the
//! same Hugging Face tensor names) that inference loads.
//!
//! Threads: candle's CPU kernels use `RAYON_NUM_THREADS` threads; [`set_threads`] (called
//! by [`pretrain`] with `TrainConfig::threads`) sets it, and must run before any tensor work
//! in the process for rayon's pool to follow it.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dpo;
pub mod eval;
pub mod export;
pub mod fused;
pub mod instruct;
pub mod memory;
pub mod optim;
pub mod plot;
pub mod sft;
pub mod trainer;

pub use checkpoint::{load_checkpoint, resolve_checkpoint, run_dir_of, save_checkpoint, LoadedCheckpoint, TrainerState};
pub use config::TrainConfig;
pub use data::{Dataset, Split, TokenizerSpec};
pub use export::{export, ExportFormat, Quant};
pub use optim::{clip_grad_norm, lr_at, AdamW, AdamWConfig};
pub use plot::plot_log;
pub use trainer::{estimate_loss, generate, pretrain, set_threads, Callbacks, EvalMetrics, NoCallbacks, ProgressCallbacks, StepMetrics, TrainSummary};
