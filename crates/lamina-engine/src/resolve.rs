//! Turning what a user typed as MODEL into files: a built-in name (fetched on first use),
//! a `.gguf` file, a Hugging Face model folder, or a hub id `org/name` (downloaded with
//! `hf-hub` into its cache; without network access this fails with a clear message).

use crate::embed::{Embedder, EmbeddingNet, Pooling};
use lamina_core::registry;
use lamina_core::{Error, Result};
use lamina_model::{load_model, Encoder, Model, Precision};
use lamina_tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Resolves MODEL to a local path. `None` means the built-in default model.
pub fn resolve_model_path(spec: Option<&str>, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let spec = spec.unwrap_or(registry::DEFAULT_MODEL);
    if let Some(builtin) = registry::find_builtin(spec) {
        return builtin.ensure(progress);
    }
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    if looks_like_hub_id(spec) {
        return download_from_hub(spec, progress);
    }
    Err(Error::ModelNotFound(path.to_path_buf()))
}

/// `org/name` with no path-like parts and no file extension.
pub fn looks_like_hub_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)))
        && !spec.starts_with('.')
        && !spec.ends_with(".gguf")
}

/// Downloads a Hugging Face model repository's inference files into the hf-hub cache and
/// returns the folder. Files: config.json, tokenizer.json, tokenizer_config.json (optional),
/// and the safetensors weights (single file or the shards listed in the index).
pub fn download_from_hub(repo_id: &str, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    progress(&format!("fetching {repo_id} from the Hugging Face hub …"));
    let api = hf_hub::api::sync::Api::new().map_err(|e| Error::Download(format!("hub client: {e}")))?;
    let repo = api.model(repo_id.to_string());
    let get = |f: &str| repo.get(f).map_err(|e| Error::Download(format!("{repo_id}/{f}: {e} (is the hub reachable?)")));
    let config = get("config.json")?;
    get("tokenizer.json")?;
    let _ = repo.get("tokenizer_config.json");
    match repo.get("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
            let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Download(format!("bad index: {e}")))?;
            let mut shards: Vec<String> =
                v["weight_map"].as_object().map(|m| m.values().filter_map(|x| x.as_str().map(String::from)).collect()).unwrap_or_default();
            shards.sort();
            shards.dedup();
            for s in shards {
                get(&s)?;
            }
        }
        Err(_) => {
            get("model.safetensors")?;
        }
    }
    Ok(config.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// Loads the tokenizer that belongs with a model path: `tokenizer.json` in a folder (or
/// beside a `.gguf`), else the GGUF's own vocabulary.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.is_dir() {
        if path.join("tokenizer.json").exists() {
            return Tokenizer::from_dir(path);
        }
        return Err(Error::MissingTokenizer(path.to_path_buf()));
    }
    match Tokenizer::from_gguf(path) {
        Ok(t) => Ok(t),
        Err(e) => {
            let beside = path.parent().map(|p| p.join("tokenizer.json"));
            match beside {
                Some(b) if b.exists() => Tokenizer::from_file(&b),
                _ => Err(match e {
                    Error::Tokenizer(_) | Error::MissingTokenizer(_) => Error::MissingTokenizer(path.to_path_buf()),
                    other => other,
                }),
            }
        }
    }
}

/// Whether `path` is a model folder whose `config.json` describes an encoder (BERT).
pub fn is_encoder_dir(path: &Path) -> bool {
    let config = path.join("config.json");
    path.is_dir() && lamina_core::fs::read_regular_to_string(&config).is_ok_and(|t| lamina_core::encoder_config::is_encoder_config(&t))
}

/// Resolves and loads MODEL as an embedding model (`None`: the built-in
/// all-MiniLM-L6-v2): an encoder folder, or any chat model (pooled hidden states).
pub fn load_embedder(
    spec: Option<&str>,
    precision: Precision,
    pool: std::sync::Arc<lamina_kernels::ThreadPool>,
    pooling: Option<Pooling>,
    progress: &mut dyn FnMut(&str),
) -> Result<Embedder> {
    let mut path = resolve_model_path(Some(spec.unwrap_or(registry::DEFAULT_EMBEDDING_MODEL)), progress)?;
    // A built-in resolves to its main file; encoders are folders.
    if path.is_file() && path.parent().is_some_and(is_encoder_dir) {
        path = path.parent().map(Path::to_path_buf).unwrap_or_default();
    }
    let (net, tokenizer) = if is_encoder_dir(&path) {
        (EmbeddingNet::Encoder(std::sync::Arc::new(Encoder::load(&path, precision)?)), Tokenizer::from_dir(&path)?)
    } else {
        (EmbeddingNet::Decoder(std::sync::Arc::new(load_model(&path, precision)?)), load_tokenizer(&path)?)
    };
    Embedder::new(net, std::sync::Arc::new(tokenizer), pool, pooling)
}

/// Resolves, loads and checks a model and its tokenizer.
pub fn load(spec: Option<&str>, precision: Precision, progress: &mut dyn FnMut(&str)) -> Result<(Model, Tokenizer)> {
    let path = resolve_model_path(spec, progress)?;
    let folder = if path.is_file() { path.parent().map(Path::to_path_buf).unwrap_or_default() } else { path.clone() };
    if is_encoder_dir(&folder) {
        return Err(Error::UnsupportedArchitecture(format!("bert: {} is an embedding model (use `lamina embed`)", folder.display())));
    }
    let model = load_model(&path, precision)?;
    let tokenizer = load_tokenizer(&path)?;
    Ok((model, tokenizer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_ids_are_told_apart_from_paths() {
        assert!(looks_like_hub_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(!looks_like_hub_id("./models/x"));
        assert!(!looks_like_hub_id("models/x.gguf"));
        assert!(!looks_like_hub_id("/abs/path"));
        assert!(!looks_like_hub_id("a/b/c"));
    }

    #[test]
    fn local_folders_load_with_their_tokenizer_json() {
        // The hub path ends in a local folder; that folder kind is what tests can exercise.
        let dir = lamina_core::registry::default_embedding_model_dir().unwrap();
        let tok = load_tokenizer(&dir).unwrap();
        assert_eq!(tok.encode("hello world", false).unwrap().len(), 2);
    }
}
