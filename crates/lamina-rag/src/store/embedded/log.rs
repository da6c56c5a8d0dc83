//! The durable log: the batches applied since the last snapshot, one record each.
//!
//! A log file is a 16-byte header (magic, generation) followed by records:
//! `payload length: u32 | crc32 of (length bytes + payload): u32 | payload` — the payload
//! being one encoded batch ([`super::codec`]). A record is appended whole and the file is
//! fsynced before [`crate::Store::apply`] returns, so a batch is durable once applied. A
//! kill or power loss mid-append leaves a torn last record: its length runs past the end of
//! the file or its checksum fails, and it is dropped on reopen — the batch it held was never
//! reported applied, so the collection is as it was before it.

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LMLOG\0\0\x01";
pub const HEADER_LEN: u64 = 16;
const FRAME_LEN: usize = 8;

/// `log-<generation>.bin` in `dir`.
pub fn path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("log-{generation:010}.bin"))
}

/// The generation in a log file's name, if it is one.
pub fn generation_of(name: &str) -> Option<u64> {
    name.strip_prefix("log-")?.strip_suffix(".bin")?.parse().ok()
}

fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    h.update(payload);
    h.finalize()
}

/// What reading a log found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The payloads of the whole records, in order.
    pub records: Vec<Vec<u8>>,
    /// Where the last whole record ends (the header's end when there is none).
    pub valid_len: u64,
    /// The file's length; more than `valid_len` when the tail is torn.
    pub file_len: u64,
    /// Why the tail was dropped, when it was.
    pub torn: Option<String>,
}

/// Reads the log of `generation` at `path`. A missing file is an empty log (a log is created
/// on the first batch after a snapshot). A file shorter than its header is a log whose
/// creation was cut short: empty too.
pub fn read(path: &Path, generation: u64) -> std::result::Result<Scan, String> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Scan { valid_len: 0, ..Scan::default() }),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let file_len = bytes.len() as u64;
    if file_len < HEADER_LEN {
        return Ok(Scan { valid_len: 0, file_len, torn: (file_len > 0).then(|| "a cut-short log header".to_string()), ..Scan::default() });
    }
    if &bytes[..8] != MAGIC {
        return Err(format!("{} is not a lamina collection log", path.display()));
    }
    let g = u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes"));
    if g != generation {
        return Err(format!("{} holds generation {g}, not {generation}", path.display()));
    }
    let mut scan = Scan { valid_len: HEADER_LEN, file_len, ..Scan::default() };
    let mut pos = HEADER_LEN as usize;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        if rest.len() < FRAME_LEN {
            scan.torn = Some(format!("a cut-short record frame at byte {pos}"));
            break;
        }
        let len_bytes: [u8; 4] = rest[..4].try_into().expect("4 bytes");
        let len = u32::from_le_bytes(len_bytes) as usize;
        let sum = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if rest.len() - FRAME_LEN < len {
            scan.torn = Some(format!("a record at byte {pos} of {len} bytes runs past the end of the file"));
            break;
        }
        let payload = &rest[FRAME_LEN..FRAME_LEN + len];
        if checksum(len_bytes, payload) != sum {
            scan.torn = Some(format!("a record at byte {pos} fails its checksum"));
            break;
        }
        scan.records.push(payload.to_vec());
        pos += FRAME_LEN + len;
        scan.valid_len = pos as u64;
    }
    Ok(scan)
}

/// The open end of a log, for appending.
pub struct Writer {
    file: File,
    path: PathBuf,
    len: u64,
}

impl Writer {
    /// Creates the log of `generation` (replacing a cut-short one), header fsynced, and
    /// fsyncs the folder so the file's name is durable too.
    pub fn create(dir: &Path, generation: u64) -> std::io::Result<Writer> {
        let path = path(dir, generation);
        let mut file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        header.extend_from_slice(MAGIC);
        header.extend_from_slice(&generation.to_le_bytes());
        file.write_all(&header)?;
        file.sync_all()?;
        sync_dir(dir)?;
        Ok(Writer { file, path, len: HEADER_LEN })
    }

    /// Opens an existing log to append after its last whole record, cutting off a torn tail.
    pub fn open(path: &Path, valid_len: u64) -> std::io::Result<Writer> {
        let mut file = OpenOptions::new().write(true).open(path)?;
        if file.metadata()?.len() != valid_len {
            file.set_len(valid_len)?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::Start(valid_len))?;
        Ok(Writer { file, path: path.to_path_buf(), len: valid_len })
    }

    /// Bytes in the file, header included.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and waits until it is on disk. On failure the file is cut back to
    /// where it was, so a half-written record never precedes the next one.
    pub fn append(&mut self, payload: &[u8]) -> std::io::Result<()> {
        let len = u32::try_from(payload.len()).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("a batch of {} bytes is over the 4 GiB a record holds", payload.len()))
        })?;
        let len_bytes = len.to_le_bytes();
        let mut rec = Vec::with_capacity(FRAME_LEN + payload.len());
        rec.extend_from_slice(&len_bytes);
        rec.extend_from_slice(&checksum(len_bytes, payload).to_le_bytes());
        rec.extend_from_slice(payload);
        let r = self.file.write_all(&rec).and_then(|_| self.file.sync_data());
        if let Err(e) = r {
            let _ = self.file.set_len(self.len).and_then(|_| self.file.seek(SeekFrom::Start(self.len))).and_then(|_| self.file.sync_all());
            return Err(e);
        }
        self.len += rec.len() as u64;
        Ok(())
    }
}

/// Makes renames and new names in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_a_torn_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = Writer::create(dir.path(), 3).unwrap();
        w.append(b"first").unwrap();
        w.append(b"").unwrap();
        w.append(b"third record").unwrap();
        let full = w.len();
        drop(w);
        let p = path(dir.path(), 3);
        let scan = read(&p, 3).unwrap();
        assert_eq!(scan.records, vec![b"first".to_vec(), Vec::new(), b"third record".to_vec()]);
        assert_eq!((scan.valid_len, scan.file_len, scan.torn), (full, full, None));
        // Every cut inside the last record drops exactly that record.
        let bytes = std::fs::read(&p).unwrap();
        let third_at = full - (FRAME_LEN as u64 + 12);
        for cut in third_at + 1..full {
            std::fs::write(&p, &bytes[..cut as usize]).unwrap();
            let scan = read(&p, 3).unwrap();
            assert_eq!(scan.records.len(), 2, "cut at {cut}");
            assert_eq!(scan.valid_len, third_at);
            assert!(scan.torn.is_some());
        }
        // A flipped byte in the payload fails the checksum.
        let mut bad = bytes.clone();
        *bad.last_mut().unwrap() ^= 1;
        std::fs::write(&p, &bad).unwrap();
        assert!(read(&p, 3).unwrap().torn.unwrap().contains("checksum"));
        // Reopening for append cuts the tail, and the next record follows the good ones.
        let mut w = Writer::open(&p, third_at).unwrap();
        w.append(b"again").unwrap();
        let scan = read(&p, 3).unwrap();
        assert_eq!(scan.records.last().unwrap(), b"again");
        assert_eq!(scan.records.len(), 3);
        assert!(scan.torn.is_none());
        // The wrong generation, a foreign file, a missing one.
        assert!(read(&p, 4).unwrap_err().contains("generation 3"));
        std::fs::write(&p, b"0123456789abcdefgh").unwrap();
        assert!(read(&p, 3).unwrap_err().contains("not a lamina collection log"));
        assert_eq!(read(&path(dir.path(), 9), 9).unwrap().records.len(), 0);
    }

    #[test]
    fn names_carry_the_generation() {
        let p = path(Path::new("/x"), 42);
        assert_eq!(generation_of(p.file_name().unwrap().to_str().unwrap()), Some(42));
        assert_eq!(generation_of("snapshot.bin"), None);
    }
}
