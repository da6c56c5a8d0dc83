//! How much memory the machine has free, and a check to refuse an allocation that
//! cannot fit with a readable error instead of an abort.

use crate::{Error, Result};

/// `MemAvailable` from `/proc/meminfo` in bytes (Linux); `None` elsewhere.
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Fails when `bytes` for `what` exceed the memory available now (no check where that is
/// unknown).
pub fn check_fits(what: &str, bytes: u64) -> Result<()> {
    match available_bytes() {
        Some(free) if bytes > free => Err(Error::InvalidInput(format!("{what} needs {}, but only {} of memory is available", human(bytes), human(free)))),
        _ => Ok(()),
    }
}

/// `1.5 GiB`, `312.0 MiB`, `12 KiB`.
pub fn human(bytes: u64) -> String {
    const GIB: f64 = (1u64 << 30) as f64;
    const MIB: f64 = (1u64 << 20) as f64;
    let b = bytes as f64;
    if b >= GIB {
        format!("{:.1} GiB", b / GIB)
    } else if b >= MIB {
        format!("{:.1} MiB", b / MIB)
    } else {
        format!("{} KiB", bytes.div_ceil(1024))
    }
}
