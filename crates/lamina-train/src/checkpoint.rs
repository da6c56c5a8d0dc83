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
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir_all(e.path());
                } else {
                    let _ = std::fs::remove_file(e.path());
                }
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
    lamina_core::fs::write_bytes_atomic(&run_dir.join(LATEST), format!("{name}\n").as_bytes())?;
    Ok(dst)
}

/// Reads and verifies a checkpoint folder's state (checksums of all files).
pub fn read_state(dir: &Path) -> Result<TrainerState> {
    let sp = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&sp).map_err(|e| ck_err(dir, format!("cannot read trainer_state.json: {e}")))?;
    let st: TrainerState = serde_json::from_str(&text).map_err(|e| ck_err(dir, format!("trainer_state.json is corrupt: {e}")))?;
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
/// newest valid `step-*` folder when `latest` is missing or broken. Every checkpoint that
/// is skipped on the way is reported through `warn` (one line each: which step, and why),
/// followed by the one that is used instead.
pub fn resolve_checkpoint(path: &Path, warn: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    if !path.exists() {
        return Err(ck_err(path, "does not exist"));
    }
    if path.join("trainer_state.json").exists() {
        read_state(path)?;
        return Ok(path.to_path_buf());
    }
    let mut skipped: Vec<PathBuf> = Vec::new();
    match std::fs::read_to_string(path.join(LATEST)) {
        Ok(name) if name.trim().is_empty() => warn(&format!("warning: {} is empty; looking for the newest valid step", path.join(LATEST).display())),
        Ok(name) => {
            let dir = path.join(name.trim());
            match read_state(&dir) {
                Ok(_) => return Ok(dir),
                Err(e) => {
                    warn(&format!("warning: skipping {} (named by `latest`): {}", name.trim(), skip_reason(&e)));
                    skipped.push(dir);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn(&format!("warning: cannot read {}: {e}; looking for the newest valid step", path.join(LATEST).display())),
    }
    let mut steps: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::io(path, e))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("step-"))
        .map(|e| e.path())
        .collect();
    steps.sort();
    for dir in steps.iter().rev() {
        if skipped.contains(dir) {
            continue;
        }
        match read_state(dir) {
            Ok(st) => {
                if !skipped.is_empty() {
                    warn(&format!("warning: using {} (step {}) instead", dir.display(), st.step));
                }
                return Ok(dir.clone());
            }
            Err(e) => {
                let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                warn(&format!("warning: skipping {name}: {}", skip_reason(&e)));
                skipped.push(dir.clone());
            }
        }
    }
    Err(ck_err(path, "no valid checkpoint found (no trainer_state.json, no usable `latest`, no valid step-* folder)"))
}

/// Why a checkpoint folder was rejected, without repeating its path.
fn skip_reason(e: &Error) -> String {
    match e {
        Error::Checkpoint { reason, .. } => reason.clone(),
        e => e.to_string(),
    }
}

/// The run folder a checkpoint path belongs to: the folder itself for a run folder, the
/// parent of a step folder. A resumed run writes here (unless told otherwise), wherever
/// the run was first started and whatever `out_dir` its stored config names.
pub fn run_dir_of(path: &Path) -> PathBuf {
    if path.join("trainer_state.json").exists() {
        match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    } else {
        path.to_path_buf()
    }
}

/// The step folders of `run_dir` whose trainer state names a step, by step.
fn step_dirs(run_dir: &Path) -> Vec<(usize, PathBuf)> {
    let Ok(rd) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut v: Vec<(usize, PathBuf)> = rd
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let step = name.strip_prefix("step-")?.parse().ok()?;
            Some((step, e.path()))
        })
        .filter(|(_, p)| p.is_dir())
        .collect();
    v.sort();
    v
}

/// Deletes old checkpoints of `run_dir`, keeping `keep_last` of them (0 keeps all): the
/// one `latest` names, which must be valid for anything to be deleted, and the
/// `keep_last - 1` newest before it. Folders of later steps (left by an earlier run that
/// went further than this one) are not touched. Each folder is first renamed to `.tmp-*`
/// (removed by the next save if a crash interrupts the deletion), so a half-deleted folder
/// never looks like a checkpoint. Returns the deleted folders.
pub fn prune_checkpoints(run_dir: &Path, keep_last: usize) -> Result<Vec<PathBuf>> {
    if keep_last == 0 {
        return Ok(Vec::new());
    }
    let Ok(name) = std::fs::read_to_string(run_dir.join(LATEST)) else {
        return Ok(Vec::new());
    };
    let newest = run_dir.join(name.trim());
    let Ok(state) = read_state(&newest) else {
        return Ok(Vec::new());
    };
    let older: Vec<PathBuf> = step_dirs(run_dir).into_iter().filter(|(s, p)| *s < state.step && *p != newest).map(|(_, p)| p).collect();
    let doomed = older.len().saturating_sub(keep_last - 1);
    let mut removed = Vec::new();
    for dir in older.into_iter().take(doomed) {
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp = run_dir.join(format!(".tmp-prune-{name}-{}", std::process::id()));
        std::fs::rename(&dir, &tmp).map_err(|e| Error::io(&dir, e))?;
        fsync_dir(run_dir);
        std::fs::remove_dir_all(&tmp).map_err(|e| Error::io(&tmp, e))?;
        removed.push(dir);
    }
    Ok(removed)
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

/// Loads a checkpoint (a step folder or a run folder, see [`resolve_checkpoint`], which
/// reports skipped checkpoints through `warn`).
pub fn load_checkpoint(path: &Path, device: &Device, warn: &mut dyn FnMut(&str)) -> Result<LoadedCheckpoint> {
    let dir = resolve_checkpoint(path, warn)?;
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
/// as f32 tensors, with the model config. Skipped checkpoints are reported through `warn`.
pub fn load_weights(path: &Path, warn: &mut dyn FnMut(&str)) -> Result<(PathBuf, ModelConfig, HashMap<String, Tensor>)> {
    let dir = if path.join("trainer_state.json").exists() || path.join(LATEST).exists() { resolve_checkpoint(path, warn)? } else { path.to_path_buf() };
    let cp = dir.join("config.json");
    let text = std::fs::read_to_string(&cp).map_err(|e| Error::io(&cp, e))?;
    let cfg = ModelConfig::from_hf_json(&text)?;
    let tensors = load_tensors(&dir.join("model.safetensors"), &Device::Cpu)?;
    let tensors = tensors.into_iter().map(|(k, v)| Ok((k, v.to_dtype(DType::F32).map_err(candle_err)?))).collect::<Result<HashMap<_, _>>>()?;
    Ok((dir, cfg, tensors))
}
