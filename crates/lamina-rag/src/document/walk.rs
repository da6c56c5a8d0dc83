//! Paths in, the files to read out: folders expanded recursively.

use super::{not_text, sniff_file, DocKind, SkipReason};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Expands `paths` into the files to read, in a fixed order: each argument in turn, a folder's
/// entries sorted by name, recursively. Hidden entries (`.git`, `.env`, …) inside folders are
/// passed over; a path named explicitly is taken even if hidden. Symbolic links are followed,
/// but a folder is visited once (a link loop ends there), as is a file.
///
/// A file is kept when its kind is known by extension or its first bytes are text
/// ([`DocKind::from_path`]); the others come back as `Err` with the reason, as do paths that
/// cannot be read, so the caller can report them.
pub fn walk(paths: &[PathBuf]) -> Vec<Result<PathBuf, (PathBuf, SkipReason)>> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for path in paths {
        visit(path, &mut seen, &mut out);
    }
    out
}

fn visit(path: &Path, seen: &mut HashSet<PathBuf>, out: &mut Vec<Result<PathBuf, (PathBuf, SkipReason)>>) {
    let unreadable = |e: std::io::Error| (path.to_path_buf(), SkipReason::Unreadable(e.to_string()));
    // Follows links; a dangling link is an error here.
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => return out.push(Err(unreadable(e))),
    };
    let canonical = match path.canonicalize() {
        Ok(c) => c,
        Err(e) => return out.push(Err(unreadable(e))),
    };
    if !seen.insert(canonical) {
        return;
    }
    if meta.is_dir() {
        let entries: std::io::Result<Vec<PathBuf>> = std::fs::read_dir(path).and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect());
        let mut entries = match entries {
            Ok(entries) => entries.into_iter().filter(|p| !is_hidden(p)).collect::<Vec<_>>(),
            Err(e) => return out.push(Err(unreadable(e))),
        };
        entries.sort();
        for entry in entries {
            visit(&entry, seen, out);
        }
    } else if meta.is_file() {
        let kind = match DocKind::from_extension(path) {
            Some(kind) => Ok(Some(kind)),
            None => sniff_file(path),
        };
        out.push(match kind {
            Ok(Some(_)) => Ok(path.to_path_buf()),
            Ok(None) => Err((path.to_path_buf(), not_text(path))),
            Err(e) => Err(unreadable(e)),
        });
    } else {
        out.push(Err((path.to_path_buf(), SkipReason::Unreadable("not a regular file (a socket, FIFO or device)".into()))));
    }
}

fn is_hidden(path: &Path) -> bool {
    path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with('.'))
}
