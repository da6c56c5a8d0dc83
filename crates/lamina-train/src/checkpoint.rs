//! Checkpoints, written atomically.
//!
//! A run folder holds `step-000123/` folders and a `latest` file naming the newest one.
//! Each checkpoint folder is a Hugging Face model folder (`config.json`, `model.safetensors`
//! in f32, `tokenizer.json`, so `lamina run DIR/step-000123` works) plus the training state:
//! `optimizer.safetensors` (AdamW moments `m.NAME` / `v.NAME`), `trainer_state.json` (step,
//! RNG states, the training config, sha256 of every weight file) and, when training in
//! f64, `train_weights.safetensors` with the exact weights.
//!
//! Writing: everything goes into `RUN/.tmp-…`, each file is fsynced, the folder is renamed
//! to `step-NNNNNN`, then `latest` is replaced through a temp file + rename. A crash at any
//! point leaves the previous `latest` valid; stray `.tmp-*` folders are ignored (and removed
//! by the next save).

use crate::config::TrainConfig;
use crate::data::hex;
use candle_core::{DType, Device, Tensor};
use lamina_core::{Error, ModelConfig, Result};
use lamina_model::trainable::{candle_err, SplitMix64, TrainableModel};
use lamina_tokenizer::Tokenizer;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 1;
pub const LATEST: &str = "latest";

/// Everything besides weights and moments needed to continue a run exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    pub format_version: u32,
    /// Optimizer steps completed.
    pub step: usize,
    pub data_rng: SplitMix64,
    pub eval_rng: SplitMix64,
    pub config: TrainConfig,
    pub model_config: ModelConfig,
    /// Training dtype ("f32" / "f64").
    pub dtype: String,
    /// sha256 of each file in the folder (except this one).
    pub files: BTreeMap<String, String>,
    pub last_val_loss: Option<f64>,
}

fn ck_err(path: &Path, reason: impl std::fmt::Display) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), reason: reason.to_string() }
}

fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    f.write_all(bytes).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

fn fsync_dir(dir: &Path) {
    // Best effort: not every platform allows opening a directory for fsync.
    if let Ok(f) = std::fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

fn save_tensors(map: &HashMap<String, Tensor>, path: &Path) -> Result<()> {
    candle_core::safetensors::save(map, path).map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    f.sync_all().map_err(|e| Error::io(path, e))
}

/// Name of the checkpoint folder for `step`.
pub fn step_dir_name(step: usize) -> String {
    format!("step-{step:06}")
}

/// Writes a checkpoint of `model` and its optimizer moments (`m.NAME` / `v.NAME`, see
/// [`crate::AdamW::state_tensors`]) at `state.step` into `run_dir`, atomically, and points
/// `latest` at it. Returns the checkpoint folder.
pub fn save_checkpoint(
    run_dir: &Path,
    model: &TrainableModel,
    optimizer_state: &HashMap<String, Tensor>,
    tokenizer: &Tokenizer,
    state: &TrainerState,
) -> Result<PathBuf> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    // Remove leftovers of earlier crashes.
    if let Ok(rd) = std::fs::read_dir(run_dir) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(".tmp-") {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    let name = step_dir_name(state.step);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let tmp = run_dir.join(format!(".tmp-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let result = (|| -> Result<()> {
        let cfg_json = serde_json::to_string_pretty(&model.config().to_hf_json()).map_err(|e| Error::Other(e.to_string()))?;
        write_file(&tmp.join("config.json"), cfg_json.as_bytes())?;
        save_tensors(&model.state_dict(DType::F32)?, &tmp.join("model.safetensors"))?;
        if model.dtype() != DType::F32 {
            save_tensors(&model.state_dict(model.dtype())?, &tmp.join("train_weights.safetensors"))?;
        }
        save_tensors(optimizer_state, &tmp.join("optimizer.safetensors"))?;
        let tjson = tokenizer.inner().to_string(true).map_err(|e| Error::Tokenizer(e.to_string()))?;
        write_file(&tmp.join("tokenizer.json"), tjson.as_bytes())?;
        let mut st = state.clone();
        st.format_version = FORMAT_VERSION;
        st.files.clear();
        for f in ["config.json", "model.safetensors", "train_weights.safetensors", "optimizer.safetensors", "tokenizer.json"] {
            let p = tmp.join(f);
            if p.exists() {
                st.files.insert(f.to_string(), sha256_file(&p)?);
            }
        }
        let sjson = serde_json::to_string_pretty(&st).map_err(|e| Error::Other(e.to_string()))?;
        write_file(&tmp.join("trainer_state.json"), sjson.as_bytes())?;
        fsync_dir(&tmp);
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let dst = run_dir.join(&name);
    if dst.exists() {
        // Re-saving a step (e.g. a resumed run that re-reaches it): move the old one aside.
        let old = run_dir.join(format!(".tmp-old-{name}-{nanos}"));
        std::fs::rename(&dst, &old).map_err(|e| Error::io(&dst, e))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&tmp, &dst).map_err(|e| Error::io(&dst, e))?;
    fsync_dir(run_dir);
    let latest_tmp = run_dir.join(format!(".tmp-latest-{}", std::process::id()));
    write_file(&latest_tmp, format!("{name}\n").as_bytes())?;
    std::fs::rename(&latest_tmp, run_dir.join(LATEST)).map_err(|e| Error::io(run_dir.join(LATEST), e))?;
    fsync_dir(run_dir);
    Ok(dst)
}

/// Reads and verifies a checkpoint folder's state (checksums of all files).
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let sp = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| ck_err(dir, format!("cannot read trainer_state.json: {e}")))?;
    let st: TrainerState =
        serde_json::from_str(&text).map_err(|e| ck_err(dir, format!("trainer_state.json is corrupt: {e}")))?;
    if st.format_version != FORMAT_VERSION {
        return Err(ck_err(dir, format!("checkpoint format {} is not supported (expected {FORMAT_VERSION})", st.format_version)));
    }
    for (f, want) in &st.files {
        let p = dir.join(f);
        let got = sha256_file(&p).map_err(|e| ck_err(dir, format!("{f}: {e}")))?;
        if &got != want {
            return Err(ck_err(dir, format!("{f} is corrupt or truncated (sha256 mismatch)")));
        }
    }
    Ok(st)
}

/// Resolves `path` to a checkpoint folder: a folder with `trainer_state.json` is taken as
/// is (and must be valid); a run folder is followed through `latest`, falling back to the
/// newest valid `step-*` folder when `latest` is missing or broken.
pub fn resolve_checkpoint(path: &Path) -> Result<PathBuf> {
    if !path.exists() {
        return Err(ck_err(path, "does not exist"));
    }
    if path.join("trainer_state.json").exists() {
        read_state(path)?;
        return Ok(path.to_path_buf());
    }
    if let Ok(name) = std::fs::read_to_string(path.join(LATEST)) {
        let dir = path.join(name.trim());
        if !name.trim().is_empty() && read_state(&dir).is_ok() {
            return Ok(dir);
        }
    }
    let mut steps: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .map(|e| e.path())
        .collect();
    steps.sort();
    for dir in steps.iter().rev() {
        if read_state(dir).is_ok() {
            return Ok(dir.clone());
        }
    }
    Err(ck_err(path, "no valid checkpoint found (no trainer_state.json, no usable `latest`, no valid step-* folder)"))
}

/// A checkpoint read back: model, optimizer moments and trainer state.
pub struct LoadedCheckpoint {
    pub dir: PathBuf,
    pub state: TrainerState,
    pub model: TrainableModel,
    pub optimizer_state: HashMap<String, Tensor>,
    pub tokenizer: Tokenizer,
}

fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device).map_err(|e| ck_err(path, format!("unreadable safetensors: {e}")))
}

/// Loads a checkpoint (a step folder or a run folder, see [`resolve_checkpoint`]).
pub fn load_checkpoint(path: &Path, device: &Device) -> Result<LoadedCheckpoint> {
    let dir = resolve_checkpoint(path)?;
    let state = read_state(&dir)?;
    let dtype = match state.dtype.as_str() {
        "f64" => DType::F64,
        _ => DType::F32,
    };
    let exact = dir.join("train_weights.safetensors");
    let weights = if exact.exists() { exact } else { dir.join("model.safetensors") };
    let tensors = load_tensors(&weights, device)?;
    let model = TrainableModel::new(&state.model_config, 0, dtype, device)?;
    model.set_weights(&tensors).map_err(|e| ck_err(&dir, e))?;
    let optimizer_state = load_tensors(&dir.join("optimizer.safetensors"), device)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| ck_err(&dir, e))?;
    Ok(LoadedCheckpoint { dir, state, model, optimizer_state, tokenizer })
}

/// Loads only the weights of a checkpoint or HF folder (config.json + model.safetensors)
/// as f32 tensors, with the model config.
pub fn load_weights(path: &Path) -> Result<(PathBuf, ModelConfig, HashMap<String, Tensor>)> {
    let dir = if path.join("trainer_state.json").exists() || path.join(LATEST).exists() {
        resolve_checkpoint(path)?
    } else {
        path.to_path_buf()
    };
    let cp = dir.join("config.json");
    let text = std::fs::read_to_string(&cp).map_err(|e| Error::io(&cp, e))?;
    let cfg = ModelConfig::from_hf_json(&text)?;
    let tensors = load_tensors(&dir.join("model.safetensors"), &Device::Cpu)?;
    let tensors = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32).map_err(candle_err)?)))
        .collect::<Result<HashMap<_, _>>>()?;
    Ok((dir, cfg, tensors))
}
