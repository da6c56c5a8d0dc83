//! A folder of collections, one sub-folder each. Creation builds the collection in a hidden
//! temporary folder and renames it into place; deletion renames it to a hidden tombstone
//! first. Either way a crash never leaves a half collection that lists or opens; leftovers
//! are hidden (names starting with `.`) and swept when the catalog is next opened.

use super::{lock, EmbeddedOptions, EmbeddedStore, SPEC_FILE};
use crate::store::{Catalog, Store};
use crate::types::{CollectionInfo, CollectionSpec};
use crate::{RagError, Result};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

const CREATING: &str = ".creating-";
const DELETED: &str = ".deleted-";

/// Collections as folders under one root folder.
pub struct EmbeddedCatalog {
    root: PathBuf,
    options: EmbeddedOptions,
}

/// Distinguishes temporary folders made by one process.
static TEMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl EmbeddedCatalog {
    /// The catalog in `root` (created on the first [`Catalog::create`] if absent).
    pub fn open(root: &Path) -> Result<EmbeddedCatalog> {
        EmbeddedCatalog::with_options(root, EmbeddedOptions::default())
    }

    pub fn with_options(root: &Path, options: EmbeddedOptions) -> Result<EmbeddedCatalog> {
        if root.exists() && !root.is_dir() {
            return Err(RagError::InvalidInput(format!("{} is not a folder: collections live in a folder", root.display())));
        }
        let catalog = EmbeddedCatalog { root: root.to_path_buf(), options };
        catalog.sweep();
        Ok(catalog)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// [`Catalog::create`] with the concrete store type.
    pub fn create_store(&self, spec: CollectionSpec) -> Result<EmbeddedStore> {
        CollectionSpec::check_name(&spec.name)?;
        check_spec(&spec)?;
        let dir = self.root.join(&spec.name);
        if dir.exists() {
            return Err(RagError::CollectionExists(spec.name));
        }
        std::fs::create_dir_all(&self.root).map_err(|e| RagError::io(self.root.display(), e))?;
        let tmp = self.root.join(format!("{CREATING}{}-{}-{}", spec.name, std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        let built = (|| -> Result<()> {
            std::fs::create_dir(&tmp).map_err(|e| RagError::io(tmp.display(), e))?;
            let json = serde_json::to_vec_pretty(&spec).expect("a spec serialises");
            lamina_core::fs::write_bytes_atomic(&tmp.join(SPEC_FILE), &json)?;
            std::fs::write(tmp.join(lock::FILE), b"").map_err(|e| RagError::io(tmp.display(), e))?;
            super::log::sync_dir(&tmp).map_err(|e| RagError::io(tmp.display(), e))?;
            Ok(())
        })();
        if let Err(e) = built {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Renaming onto an existing (non-empty) folder fails: a racing create loses here.
        if let Err(e) = std::fs::rename(&tmp, &dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(if dir.exists() { RagError::CollectionExists(spec.name) } else { RagError::io(dir.display(), e) });
        }
        super::log::sync_dir(&self.root).map_err(|e| RagError::io(self.root.display(), e))?;
        EmbeddedStore::open(&dir, self.options)
    }

    /// [`Catalog::open`] with the concrete store type.
    pub fn open_store(&self, name: &str) -> Result<EmbeddedStore> {
        CollectionSpec::check_name(name)?;
        let dir = self.root.join(name);
        if !dir.join(SPEC_FILE).is_file() {
            return Err(RagError::UnknownCollection(name.to_string()));
        }
        EmbeddedStore::open(&dir, self.options)
    }

    /// Removes what interrupted creations and deletions left (best effort).
    fn sweep(&self) {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return };
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            let ours = name.starts_with(DELETED) || (name.starts_with(CREATING) && !creator_alive(name));
            if ours && e.path().is_dir() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

/// Whether the process named in a `.creating-NAME-PID-SEQ` folder still runs (it may be
/// creating it right now).
fn creator_alive(folder: &str) -> bool {
    let mut parts = folder.rsplit('-');
    let _seq = parts.next();
    match parts.next().and_then(|p| p.parse::<u32>().ok()) {
        Some(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

/// A spec the store can hold.
fn check_spec(spec: &CollectionSpec) -> Result<()> {
    if spec.embedding_model.trim().is_empty() {
        return Err(RagError::InvalidInput("a collection needs the name of its embedding model".into()));
    }
    if spec.dimensions == 0 {
        return Err(RagError::InvalidInput("a collection's vectors need at least one dimension".into()));
    }
    if spec.chunk_tokens == 0 || spec.chunk_overlap >= spec.chunk_tokens {
        return Err(RagError::InvalidInput(format!(
            "chunks of {} tokens overlapping by {}: the size must be at least 1 and the overlap smaller than the size",
            spec.chunk_tokens, spec.chunk_overlap
        )));
    }
    Ok(())
}

impl Catalog for EmbeddedCatalog {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    fn create(&self, spec: CollectionSpec) -> Result<Box<dyn Store>> {
        Ok(Box::new(self.create_store(spec)?))
    }

    fn open(&self, name: &str) -> Result<Box<dyn Store>> {
        Ok(Box::new(self.open_store(name)?))
    }

    fn list(&self) -> Result<Vec<CollectionInfo>> {
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(RagError::io(self.root.display(), e)),
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().map(str::to_string))
            .filter(|n| CollectionSpec::check_name(n).is_ok() && self.root.join(n).join(SPEC_FILE).is_file())
            .collect();
        names.sort();
        names.iter().map(|n| self.open_store(n)?.info()).collect()
    }

    fn delete(&self, name: &str) -> Result<()> {
        CollectionSpec::check_name(name)?;
        let dir = self.root.join(name);
        if !dir.join(SPEC_FILE).is_file() {
            return Err(RagError::UnknownCollection(name.to_string()));
        }
        // Not while a writer works on it; the lock moves with the folder and is let go after.
        let held = lock::WriterLock::try_take(&dir, name)?;
        let tomb = self.root.join(format!("{DELETED}{name}-{}-{}", std::process::id(), TEMP_SEQ.fetch_add(1, Ordering::Relaxed)));
        std::fs::rename(&dir, &tomb).map_err(|e| RagError::io(dir.display(), e))?;
        super::log::sync_dir(&self.root).map_err(|e| RagError::io(self.root.display(), e))?;
        drop(held);
        // Gone from the catalog now; a failure here leaves a hidden tombstone for the sweep.
        if let Err(e) = std::fs::remove_dir_all(&tomb) {
            tracing::warn!("removing {}: {e} (it is swept when the catalog is next opened)", tomb.display());
        }
        Ok(())
    }
}
