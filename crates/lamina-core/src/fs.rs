//! Opening input files safely. Opening a FIFO blocks until a writer appears, and a
//! character device can stream forever, so a model or tokenizer path is checked to be a
//! regular file (symlinks followed) before anything opens it.

use crate::{Error, Result};
use std::path::Path;

/// Fails unless `path` is a regular file (or a symlink to one), with
/// [`Error::NotRegularFile`]; a path that cannot be inspected is an I/O error naming it.
pub fn check_regular_file(path: &Path) -> Result<()> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_file() {
        return Ok(());
    }
    Err(Error::NotRegularFile { path: path.to_path_buf(), kind: kind(&meta) })
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a directory";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_char_device() {
            return "a character device";
        }
        if ft.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}

/// Opens a regular file for reading (see [`check_regular_file`]).
pub fn open_regular(path: &Path) -> Result<std::fs::File> {
    check_regular_file(path)?;
    std::fs::File::open(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular file whole.
pub fn read_regular(path: &Path) -> Result<Vec<u8>> {
    check_regular_file(path)?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// Reads a regular UTF-8 text file whole.
pub fn read_regular_to_string(path: &Path) -> Result<String> {
    check_regular_file(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Writes `path` through `path.tmp-PID`: `fill` writes the temp file, which is fsynced and
/// renamed over `path`, and the folder is fsynced. A crash at any moment leaves either the
/// old file or the new one, never a truncated one. The parent folder is created if needed.
pub fn write_atomic(path: &Path, fill: impl FnOnce(&mut std::fs::File) -> Result<()>) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp);
    let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(parent) = parent {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let r = fill(&mut f).and_then(|_| f.sync_all().map_err(|e| Error::io(&tmp, e)));
    drop(f);
    if let Err(e) = r {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })?;
    // Best effort: not every platform allows opening a folder to fsync it.
    if let Ok(d) = std::fs::File::open(parent.unwrap_or(Path::new("."))) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// [`write_atomic`] of a byte string.
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    write_atomic(path, |f| f.write_all(bytes).map_err(|e| Error::io(path, e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_pass() {
        let dir = std::env::temp_dir().join(format!("lamina-fs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.txt");
        std::fs::write(&f, "x").unwrap();
        assert!(check_regular_file(&f).is_ok());
        let e = check_regular_file(&dir).unwrap_err().to_string();
        assert!(e.contains("a directory, not a regular file"), "{e}");
        assert!(matches!(check_regular_file(&dir.join("missing")), Err(Error::Io { .. })));
        #[cfg(unix)]
        {
            let e = read_regular(Path::new("/dev/zero")).unwrap_err().to_string();
            assert!(e.contains("character device"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temp() {
        let dir = std::env::temp_dir().join(format!("lamina-fs-atomic-{}", std::process::id()));
        let f = dir.join("sub").join("a.txt");
        write_bytes_atomic(&f, b"one").unwrap();
        write_bytes_atomic(&f, b"two").unwrap();
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        // A failing writer leaves the old content and no temp file.
        let e = write_atomic(&f, |_| Err(Error::Other("disk full".into()))).unwrap_err();
        assert_eq!(e.to_string(), "disk full");
        assert_eq!(std::fs::read(&f).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(f.parent().unwrap()).unwrap().count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
