//! The embedded store's binary encoding: little-endian integers, length-prefixed UTF-8
//! strings, vectors as raw little-endian f32, and a batch of [`Change`]s as one unit. Every
//! read is bounds-checked: a bad length is an error, never a panic or a huge allocation.

use crate::store::Change;
use crate::types::{NewChunk, SourceRecord};

/// A decoding failure, in words (the caller names the file).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError(pub String);

pub type DecodeResult<T> = std::result::Result<T, DecodeError>;

const PUT: u8 = 1;
const REMOVE: u8 = 2;

/// Appends values to a byte buffer.
#[derive(Default)]
pub struct Encoder {
    pub buf: Vec<u8>,
}

impl Encoder {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn len(&mut self, n: usize) {
        self.u64(n as u64);
    }
    pub fn str(&mut self, s: &str) {
        self.len(s.len());
        self.buf.extend_from_slice(s.as_bytes());
    }
    pub fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }
    /// The values only: the reader knows how many (the collection's dimensions).
    pub fn f32s(&mut self, v: &[f32]) {
        self.buf.reserve(v.len() * 4);
        for x in v {
            self.buf.extend_from_slice(&x.to_le_bytes());
        }
    }
    pub fn source(&mut self, s: &SourceRecord) {
        // Metadata is free-form JSON; the record is small, so all of it goes as JSON.
        let json = serde_json::to_string(s).expect("a SourceRecord serialises");
        self.str(&json);
    }
    pub fn chunk(&mut self, c: &NewChunk) {
        self.str(&c.text);
        self.u64(c.byte_range.start);
        self.u64(c.byte_range.end);
        self.opt_str(c.heading.as_deref());
        self.f32s(&c.vector);
    }
    pub fn batch(&mut self, changes: &[Change]) {
        self.len(changes.len());
        for c in changes {
            match c {
                Change::Put { source, chunks } => {
                    self.u8(PUT);
                    self.source(source);
                    self.len(chunks.len());
                    for ch in chunks {
                        self.chunk(ch);
                    }
                }
                Change::Remove { source } => {
                    self.u8(REMOVE);
                    self.str(source);
                }
            }
        }
    }
}

/// Reads values back from a byte slice.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Decoder<'a> {
        Decoder { buf, pos: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        if n > self.remaining() {
            return Err(DecodeError(format!("{n} bytes wanted at offset {}, {} left", self.pos, self.remaining())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u8(&mut self) -> DecodeResult<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn u64(&mut self) -> DecodeResult<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8 bytes")))
    }
    /// A count of items each at least `min_item_bytes` long: checked against what is left,
    /// so a corrupt count cannot make the caller allocate.
    pub fn len(&mut self, min_item_bytes: usize) -> DecodeResult<usize> {
        let n = self.u64()?;
        if n.saturating_mul(min_item_bytes.max(1) as u64) > self.remaining() as u64 {
            return Err(DecodeError(format!("a count of {n} at offset {} is more than the data holds", self.pos - 8)));
        }
        Ok(n as usize)
    }
    pub fn str(&mut self) -> DecodeResult<&'a str> {
        let n = self.len(1)?;
        let at = self.pos;
        std::str::from_utf8(self.take(n)?).map_err(|e| DecodeError(format!("invalid UTF-8 at offset {at}: {e}")))
    }
    pub fn opt_str(&mut self) -> DecodeResult<Option<&'a str>> {
        match self.u8()? {
            0 => Ok(None),
            1 => Ok(Some(self.str()?)),
            t => Err(DecodeError(format!("bad option tag {t} at offset {}", self.pos - 1))),
        }
    }
    pub fn f32s(&mut self, n: usize) -> DecodeResult<Vec<f32>> {
        let bytes = self.take(n.checked_mul(4).ok_or_else(|| DecodeError("vector length overflows".into()))?)?;
        Ok(bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes"))).collect())
    }
    pub fn source(&mut self) -> DecodeResult<SourceRecord> {
        let at = self.pos;
        serde_json::from_str(self.str()?).map_err(|e| DecodeError(format!("bad source record at offset {at}: {e}")))
    }
    pub fn chunk(&mut self, dims: usize) -> DecodeResult<NewChunk> {
        let text = self.str()?.to_string();
        let (start, end) = (self.u64()?, self.u64()?);
        let heading = self.opt_str()?.map(str::to_string);
        let vector = self.f32s(dims)?;
        Ok(NewChunk { text, byte_range: start..end, heading, vector })
    }
    pub fn batch(&mut self, dims: usize) -> DecodeResult<Vec<Change>> {
        let n = self.len(9)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            match self.u8()? {
                PUT => {
                    let source = self.source()?;
                    let k = self.len(8 * 3 + 1 + dims * 4)?;
                    let mut chunks = Vec::with_capacity(k);
                    for _ in 0..k {
                        chunks.push(self.chunk(dims)?);
                    }
                    out.push(Change::Put { source, chunks });
                }
                REMOVE => out.push(Change::Remove { source: self.str()?.to_string() }),
                t => return Err(DecodeError(format!("bad change tag {t} at offset {}", self.pos - 1))),
            }
        }
        Ok(out)
    }
    /// Fails unless everything was read.
    pub fn finish(&self) -> DecodeResult<()> {
        if self.remaining() != 0 {
            return Err(DecodeError(format!("{} unexpected bytes at the end", self.remaining())));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn batch() -> Vec<Change> {
        let mut metadata = crate::types::Metadata::new();
        metadata.insert("kind".into(), json!("markdown"));
        let source = SourceRecord { source: "/a/b.md".into(), content_hash: "ab12".into(), bytes: 10, chunks: 2, added_at: 7, metadata };
        let chunks = vec![
            NewChunk { text: "héllo".into(), byte_range: 0..6, heading: Some("A > B".into()), vector: vec![1.0, -0.5] },
            NewChunk { text: String::new(), byte_range: 6..6, heading: None, vector: vec![0.0, f32::MIN_POSITIVE] },
        ];
        vec![Change::Put { source, chunks }, Change::Remove { source: "/gone".into() }]
    }

    fn same(a: &[Change], b: &[Change]) -> bool {
        format!("{a:?}") == format!("{b:?}")
    }

    #[test]
    fn a_batch_round_trips() {
        let mut e = Encoder::default();
        e.batch(&batch());
        let mut d = Decoder::new(&e.buf);
        let back = d.batch(2).unwrap();
        d.finish().unwrap();
        assert!(same(&back, &batch()));
    }

    #[test]
    fn every_truncation_and_a_huge_count_are_errors() {
        let mut e = Encoder::default();
        e.batch(&batch());
        for cut in 0..e.buf.len() {
            let mut d = Decoder::new(&e.buf[..cut]);
            assert!(d.batch(2).is_err(), "cut at {cut}");
        }
        let mut huge = Encoder::default();
        huge.u64(u64::MAX / 2);
        assert!(Decoder::new(&huge.buf).batch(2).unwrap_err().0.contains("more than the data holds"));
        let mut bad_tag = Encoder::default();
        bad_tag.len(1);
        bad_tag.u8(9);
        bad_tag.buf.extend_from_slice(&[0; 16]);
        assert!(Decoder::new(&bad_tag.buf).batch(2).unwrap_err().0.contains("bad change tag 9"));
    }
}
