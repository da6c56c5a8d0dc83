//! One memory check for every large allocation whose size comes from user input (a model
//! shape, a batch, a context window): estimate first, then refuse with a readable error
//! instead of letting the allocator abort the process.

use crate::{Error, Result};

/// Memory the system can give this process without swapping: `MemAvailable` from
/// `/proc/meminfo`, in bytes. `None` where it is not known (not Linux).
pub fn available_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib.saturating_mul(1024))
}

/// Refuses `bytes` for `what` (a phrase naming the allocation and the sizes it comes
/// from, e.g. "the KV cache for 1 sequence × 4096 tokens") when it exceeds the available
/// memory. Passes when the available memory is unknown.
pub fn check_fits(what: &str, bytes: u64) -> Result<()> {
    match available_bytes() {
        Some(available) => check_fits_in(what, bytes, available),
        None => Ok(()),
    }
}

/// [`check_fits`] against a given amount of available memory.
pub fn check_fits_in(what: &str, bytes: u64, available: u64) -> Result<()> {
    if bytes > available {
        return Err(Error::OutOfMemory { what: what.to_string(), needed: bytes, available });
    }
    Ok(())
}

/// `1.5 GiB`, `320.0 MiB`, `12 KiB`, `17 bytes`.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if b >= KIB * KIB * KIB * KIB {
        format!("{:.1} TiB", b / (KIB * KIB * KIB * KIB))
    } else if b >= KIB * KIB * KIB {
        format!("{:.1} GiB", b / (KIB * KIB * KIB))
    } else if b >= KIB * KIB {
        format!("{:.1} MiB", b / (KIB * KIB))
    } else if b >= KIB {
        format!("{:.0} KiB", b / KIB)
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_available_is_read_in_kib() {
        let text = "MemTotal:       16303716 kB\nMemFree:         1234 kB\nMemAvailable:    8000000 kB\n";
        assert_eq!(parse_mem_available(text), Some(8_192_000_000));
        assert_eq!(parse_mem_available("MemTotal: 5 kB\n"), None);
    }

    #[test]
    fn too_large_is_a_typed_error_naming_the_sizes() {
        assert!(check_fits_in("a small buffer", 1 << 20, 1 << 30).is_ok());
        let e = check_fits_in("the KV cache for 8 sequences × 4096 tokens", 3 << 30, 1 << 30).unwrap_err();
        assert!(matches!(e, Error::OutOfMemory { needed, available, .. } if needed == 3 << 30 && available == 1 << 30));
        assert_eq!(e.to_string(), "the KV cache for 8 sequences × 4096 tokens needs 3.0 GiB but only 1.0 GiB of memory is available");
        // u64::MAX bytes can never fit, whatever this machine has.
        assert!(check_fits("everything", u64::MAX).is_err() || available_bytes().is_none());
    }

    #[test]
    fn sizes_are_printed_in_binary_units() {
        assert_eq!(human_bytes(17), "17 bytes");
        assert_eq!(human_bytes(12 * 1024), "12 KiB");
        assert_eq!(human_bytes(320 << 20), "320.0 MiB");
        assert_eq!(human_bytes(25_600_000_000), "23.8 GiB");
        assert_eq!(human_bytes(800 << 40), "800.0 TiB");
    }
}
