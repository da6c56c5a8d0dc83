//! One writer per collection: an advisory lock (`flock`) on the collection's `lock` file,
//! held from a store's first write until it is dropped. Readers take no lock. The lock goes
//! with the process: a killed writer leaves nothing to clean up.

use crate::{RagError, Result};
use std::fs::{File, OpenOptions};
use std::path::Path;

pub const FILE: &str = "lock";

/// A held writer lock; released when dropped.
#[derive(Debug)]
pub struct WriterLock {
    _file: File,
}

impl WriterLock {
    /// Takes the lock of the collection in `dir`, or fails at once with
    /// [`RagError::Locked`] when another writer holds it.
    pub fn try_take(dir: &Path, collection: &str) -> Result<WriterLock> {
        let path = dir.join(FILE);
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(|e| RagError::io(path.display(), e))?;
        #[cfg(unix)]
        {
            use rustix::fs::{flock, FlockOperation};
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => return Err(RagError::Locked(collection.to_string())),
                Err(e) => return Err(RagError::io(format!("locking {}", path.display()), e.into())),
            }
        }
        Ok(WriterLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = WriterLock::try_take(dir.path(), "c").unwrap();
        let e = WriterLock::try_take(dir.path(), "c").unwrap_err();
        assert!(matches!(e, RagError::Locked(ref c) if c == "c"), "{e}");
        drop(first);
        WriterLock::try_take(dir.path(), "c").unwrap();
    }
}
