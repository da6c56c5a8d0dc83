//! The binary envelope every saved index shares: an 8-byte magic naming the structure, a
//! little-endian `u32` format version, the structure's fields, and a SHA-256 of everything
//! before it.
//!
//! Reading never trusts a length: arrays are read in bounded pieces, so memory grows only
//! with bytes that actually arrive, and a bad count ends in a truncation error rather than a
//! huge allocation. The digest is checked before the caller builds anything from the fields,
//! and the caller still checks every structural invariant (an id in range, a known flag), so
//! bad input is an error, never a panic.

use crate::{RagError, Result};
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};

/// Elements read or written per piece.
const PIECE: usize = 16 * 1024;

/// Writes fields, hashing every byte.
pub struct Writer<'a> {
    w: &'a mut dyn Write,
    hash: Sha256,
    buf: Vec<u8>,
}

impl<'a> Writer<'a> {
    pub fn new(w: &'a mut dyn Write, magic: &[u8; 8], version: u32) -> io::Result<Writer<'a>> {
        let mut out = Writer { w, hash: Sha256::new(), buf: Vec::new() };
        out.bytes(magic)?;
        out.u32(version)?;
        Ok(out)
    }

    pub fn bytes(&mut self, b: &[u8]) -> io::Result<()> {
        self.hash.update(b);
        self.w.write_all(b)
    }

    pub fn u8(&mut self, v: u8) -> io::Result<()> {
        self.bytes(&[v])
    }

    pub fn u32(&mut self, v: u32) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn u64(&mut self, v: u64) -> io::Result<()> {
        self.bytes(&v.to_le_bytes())
    }

    pub fn len(&mut self, n: usize) -> io::Result<()> {
        self.u64(n as u64)
    }

    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) -> io::Result<()> {
        self.len(s.len())?;
        self.bytes(s.as_bytes())
    }

    fn array<T: Copy, const N: usize>(&mut self, v: &[T], le: impl Fn(T) -> [u8; N]) -> io::Result<()> {
        for piece in v.chunks(PIECE) {
            let mut buf = std::mem::take(&mut self.buf);
            buf.clear();
            buf.extend(piece.iter().flat_map(|&x| le(x)));
            let r = self.bytes(&buf);
            self.buf = buf;
            r?;
        }
        Ok(())
    }

    /// Elements only; the caller writes (or implies) the count.
    pub fn u32s(&mut self, v: &[u32]) -> io::Result<()> {
        self.array(v, u32::to_le_bytes)
    }

    pub fn u64s(&mut self, v: &[u64]) -> io::Result<()> {
        self.array(v, u64::to_le_bytes)
    }

    pub fn f32s(&mut self, v: &[f32]) -> io::Result<()> {
        self.array(v, f32::to_le_bytes)
    }

    /// Writes the digest of everything so far.
    pub fn finish(self) -> io::Result<()> {
        let digest = self.hash.finalize();
        self.w.write_all(&digest)?;
        self.w.flush()
    }
}

/// Reads fields, hashing every byte; errors name `what` (the structure being read).
pub struct Reader<'a> {
    r: &'a mut dyn Read,
    hash: Sha256,
    what: &'static str,
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    /// Checks the magic and returns the reader and the format version found.
    pub fn new(r: &'a mut dyn Read, what: &'static str, magic: &[u8; 8]) -> Result<(Reader<'a>, u32)> {
        let mut rd = Reader { r, hash: Sha256::new(), what, buf: Vec::new() };
        let mut m = [0u8; 8];
        rd.fill(&mut m)?;
        if &m != magic {
            return Err(rd.corrupt("it does not start with the expected header (not a saved index of this kind)"));
        }
        let version = rd.u32()?;
        Ok((rd, version))
    }

    pub fn corrupt(&self, reason: impl Into<String>) -> RagError {
        RagError::CorruptIndex { index: self.what, reason: reason.into() }
    }

    fn fill(&mut self, b: &mut [u8]) -> Result<()> {
        match self.r.read_exact(b) {
            Ok(()) => {
                self.hash.update(&*b);
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.corrupt("it is truncated")),
            Err(e) => Err(RagError::io(format!("reading the saved {} index", self.what), e)),
        }
    }

    pub fn u8(&mut self) -> Result<u8> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    pub fn u32(&mut self) -> Result<u32> {
        let mut b = [0u8; 4];
        self.fill(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    pub fn u64(&mut self) -> Result<u64> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// A count, refused above `max` (what the caller's structure can hold).
    pub fn len(&mut self, max: usize, of: &str) -> Result<usize> {
        let n = self.u64()?;
        if n > max as u64 {
            return Err(self.corrupt(format!("{of} count {n} is out of range (at most {max})")));
        }
        Ok(n as usize)
    }

    pub fn string(&mut self, max: usize) -> Result<String> {
        let n = self.len(max, "string length")?;
        let mut out = Vec::new();
        self.pieces(n, 1, |b| out.extend_from_slice(b))?;
        String::from_utf8(out).map_err(|_| self.corrupt("a string is not UTF-8"))
    }

    /// Reads `n` elements of `size` bytes in bounded pieces, handing each piece's bytes on.
    fn pieces(&mut self, n: usize, size: usize, mut each: impl FnMut(&[u8])) -> Result<()> {
        let mut left = n;
        let mut buf = std::mem::take(&mut self.buf);
        while left > 0 {
            let take = left.min(PIECE);
            buf.resize(take * size, 0);
            let r = self.fill(&mut buf);
            if r.is_err() {
                self.buf = buf;
                return r;
            }
            each(&buf);
            left -= take;
        }
        self.buf = buf;
        Ok(())
    }

    pub fn u32s(&mut self, n: usize) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(n.min(PIECE));
        self.pieces(n, 4, |b| out.extend(b.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().unwrap()))))?;
        Ok(out)
    }

    pub fn u64s(&mut self, n: usize) -> Result<Vec<u64>> {
        let mut out = Vec::with_capacity(n.min(PIECE));
        self.pieces(n, 8, |b| out.extend(b.chunks_exact(8).map(|c| u64::from_le_bytes(c.try_into().unwrap()))))?;
        Ok(out)
    }

    pub fn f32s(&mut self, n: usize) -> Result<Vec<f32>> {
        let mut out = Vec::with_capacity(n.min(PIECE));
        self.pieces(n, 4, |b| out.extend(b.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap()))))?;
        Ok(out)
    }

    /// Reads the stored digest and compares it with the bytes read.
    pub fn finish(self) -> Result<()> {
        let Reader { r, hash, what, .. } = self;
        let mut stored = [0u8; 32];
        match r.read_exact(&mut stored) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(RagError::CorruptIndex { index: what, reason: "it is truncated".into() }),
            Err(e) => return Err(RagError::io(format!("reading the saved {what} index"), e)),
        }
        if hash.finalize().as_slice() != stored {
            return Err(RagError::CorruptIndex { index: what, reason: "its checksum does not match (the file was damaged)".into() });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"TESTFMT\0";

    fn sample() -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, MAGIC, 3).unwrap();
        w.str("héllo").unwrap();
        w.len(40_000).unwrap();
        w.f32s(&(0..40_000).map(|i| i as f32 * 0.5).collect::<Vec<_>>()).unwrap();
        w.u64s(&[7, u64::MAX]).unwrap();
        w.finish().unwrap();
        out
    }

    fn read(bytes: &[u8]) -> Result<(String, Vec<f32>, Vec<u64>)> {
        let mut r: &[u8] = bytes;
        let (mut rd, version) = Reader::new(&mut r, "test", MAGIC)?;
        if version != 3 {
            return Err(rd.corrupt(format!("version {version}")));
        }
        let s = rd.string(100)?;
        let n = rd.len(1 << 20, "value")?;
        let f = rd.f32s(n)?;
        let u = rd.u64s(2)?;
        rd.finish()?;
        Ok((s, f, u))
    }

    #[test]
    fn fields_round_trip_and_damage_is_reported() {
        let bytes = sample();
        let (s, f, u) = read(&bytes).unwrap();
        assert_eq!(s, "héllo");
        assert_eq!(f.len(), 40_000);
        assert_eq!(f[39_999], 19_999.5);
        assert_eq!(u, vec![7, u64::MAX]);
        // Every truncation point and a flipped bit anywhere are errors, not panics.
        for cut in [0, 5, 12, 20, 1000, bytes.len() - 1] {
            let e = read(&bytes[..cut]).unwrap_err();
            assert!(matches!(e, RagError::CorruptIndex { .. }), "cut at {cut}: {e}");
        }
        for at in [0, 9, 13, 30, 100_000, bytes.len() - 3] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x10;
            assert!(matches!(read(&bad), Err(RagError::CorruptIndex { .. })), "flip at {at}");
        }
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating_it() {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, MAGIC, 3).unwrap();
        w.len(u64::MAX as usize).unwrap();
        w.finish().unwrap();
        let mut r: &[u8] = &out;
        let (mut rd, _) = Reader::new(&mut r, "test", MAGIC).unwrap();
        assert!(rd.len(1 << 20, "value").is_err());
        // Within the limit but past the data: a truncation error after reading what is there.
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out, MAGIC, 3).unwrap();
        w.len(1 << 40).unwrap();
        w.finish().unwrap();
        let mut r: &[u8] = &out;
        let (mut rd, _) = Reader::new(&mut r, "test", MAGIC).unwrap();
        let n = rd.len(usize::MAX, "value").unwrap();
        let e = rd.f32s(n).unwrap_err();
        assert!(e.to_string().contains("truncated"), "{e}");
    }
}
