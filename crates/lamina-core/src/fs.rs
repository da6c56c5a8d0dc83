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
    Err(Error::NotRegularFile {
        path: path.to_path_buf(),
        kind: kind(&meta),
    })
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
        assert!(matches!(
            check_regular_file(&dir.join("missing")),
            Err(Error::Io { .. })
        ));
        #[cfg(unix)]
        {
            let e = read_regular(Path::new("/dev/zero"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("character device"), "{e}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
