//! Checkpoints: a collection's whole state in one file, so reopening reads it instead of
//! replaying every batch ever applied, and replaced chunks stop taking space.
//!
//! `snapshot.bin` = magic (8 bytes) | body | body length: u64 | crc32 of body: u32, where the
//! body is the generation (the log that follows it), the next chunk id, the dimensions, and
//! every source with its chunks — ids, text, byte ranges, headings, vectors as raw
//! little-endian f32. It is written to a temporary file, fsynced and renamed into place
//! (then the folder fsynced), so a crash leaves the old snapshot or the new one.
//!
//! Beside it, `vectors.idx` saves the vector index (the HNSW graph) of the same generation,
//! so a big collection opens without rebuilding its graph. It is a cache: missing, of another
//! generation, or damaged, the index is rebuilt from the snapshot's vectors.

use super::codec::{DecodeResult, Decoder, Encoder};
use crate::index::VectorIndex;
use crate::store::MemoryState;
use crate::types::{ChunkId, CollectionSpec};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"LMSNAP\0\x01";
const INDEX_MAGIC: &[u8; 8] = b"LMSNAPIX";
const TRAILER_LEN: usize = 12;

pub fn path(dir: &Path) -> PathBuf {
    dir.join("snapshot.bin")
}

pub fn index_path(dir: &Path) -> PathBuf {
    dir.join("vectors.idx")
}

/// A snapshot read back: the state with its records and keyword index, and the vectors
/// (row-major, one row per id) its vector index is to hold.
pub struct Snapshot {
    pub generation: u64,
    pub state: MemoryState,
    pub ids: Vec<ChunkId>,
    pub vectors: Vec<f32>,
}

/// Saves `index` as the vector index of snapshot `generation`.
pub fn write_index(dir: &Path, index: &VectorIndex, generation: u64) -> lamina_core::Result<()> {
    let path = index_path(dir);
    lamina_core::fs::write_atomic(&path, |file| {
        let io = |e| lamina_core::Error::io(&path, e);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        out.write_all(INDEX_MAGIC).map_err(io)?;
        out.write_all(&generation.to_le_bytes()).map_err(io)?;
        index.write_to(&mut out).map_err(io)?;
        out.flush().map_err(io)
    })
}

/// The saved vector index of snapshot `generation`, if there is one of that generation that
/// reads whole. `Err` says why not (for the log); the caller rebuilds the index.
pub fn read_index(dir: &Path, generation: u64) -> std::result::Result<VectorIndex, String> {
    use std::io::Read;
    let path = index_path(dir);
    let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, file);
    let mut head = [0u8; 16];
    r.read_exact(&mut head).map_err(|e| format!("{}: {e}", path.display()))?;
    if &head[..8] != INDEX_MAGIC {
        return Err(format!("{} is not a saved vector index", path.display()));
    }
    let g = u64::from_le_bytes(head[8..].try_into().expect("8 bytes"));
    if g != generation {
        return Err(format!("{} is of generation {g}, the snapshot of {generation}", path.display()));
    }
    VectorIndex::read_from(&mut r).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `state` as the snapshot that log `generation` follows. Returns its size in bytes.
pub fn write(dir: &Path, state: &MemoryState, generation: u64) -> lamina_core::Result<u64> {
    let path = path(dir);
    let mut size = 0u64;
    lamina_core::fs::write_atomic(&path, |file| {
        let io = |e| lamina_core::Error::io(&path, e);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut crc = crc32fast::Hasher::new();
        let mut body_len = 0u64;
        out.write_all(MAGIC).map_err(io)?;
        let mut e = Encoder::default();
        e.u64(generation);
        e.u64(state.next_id());
        e.len(state.spec().dimensions);
        e.len(state.info(None).sources);
        for (source, ids) in state.source_chunks() {
            e.source(source);
            e.len(ids.len());
            for &id in ids {
                let (rec, vector) = state.chunk(id).expect("a source's chunks are stored");
                e.u64(id.0);
                e.str(&rec.text);
                e.u64(rec.byte_range.start);
                e.u64(rec.byte_range.end);
                e.opt_str(rec.heading.as_deref());
                e.f32s(vector);
            }
            // Written source by source: the state is not copied whole into memory.
            crc.update(&e.buf);
            body_len += e.buf.len() as u64;
            out.write_all(&e.buf).map_err(io)?;
            e.buf.clear();
        }
        crc.update(&e.buf);
        body_len += e.buf.len() as u64;
        out.write_all(&e.buf).map_err(io)?;
        out.write_all(&body_len.to_le_bytes()).map_err(io)?;
        out.write_all(&crc.finalize().to_le_bytes()).map_err(io)?;
        out.flush().map_err(io)?;
        size = MAGIC.len() as u64 + body_len + TRAILER_LEN as u64;
        Ok(())
    })?;
    Ok(size)
}

/// Reads the snapshot in `dir`: its generation and the state it holds, or `None` when the
/// collection has none yet. A damaged file is an error (in words), never a panic.
pub fn read(dir: &Path, spec: &CollectionSpec) -> std::result::Result<Option<Snapshot>, String> {
    let path = path(dir);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if bytes.len() < MAGIC.len() + TRAILER_LEN || &bytes[..8] != MAGIC {
        return Err(format!("{} is not a lamina snapshot", path.display()));
    }
    let (body, trailer) = bytes[8..].split_at(bytes.len() - 8 - TRAILER_LEN);
    let body_len = u64::from_le_bytes(trailer[..8].try_into().expect("8 bytes"));
    let sum = u32::from_le_bytes(trailer[8..].try_into().expect("4 bytes"));
    if body_len != body.len() as u64 || crc32fast::hash(body) != sum {
        return Err(format!("{} fails its checksum (a damaged file)", path.display()));
    }
    decode(body, spec).map(Some).map_err(|e| format!("{}: {}", path.display(), e.0))
}

fn decode(body: &[u8], spec: &CollectionSpec) -> DecodeResult<Snapshot> {
    let mut d = Decoder::new(body);
    let generation = d.u64()?;
    let next_id = d.u64()?;
    let dims = d.u64()?;
    if dims != spec.dimensions as u64 {
        return Err(super::codec::DecodeError(format!("{dims}-dimensional vectors in a {}-dimensional collection", spec.dimensions)));
    }
    let mut state = MemoryState::new(spec.clone());
    let (mut ids, mut vectors) = (Vec::new(), Vec::new());
    let n = d.len(8)?;
    for _ in 0..n {
        let source = d.source()?;
        let k = d.len(8 * 4 + 1 + spec.dimensions * 4)?;
        let mut chunks = Vec::with_capacity(k);
        for _ in 0..k {
            let id = ChunkId(d.u64()?);
            let mut c = d.chunk(spec.dimensions)?;
            if id.0 >= next_id {
                return Err(super::codec::DecodeError(format!("chunk id {} is past the next id {next_id}", id.0)));
            }
            ids.push(id);
            vectors.append(&mut c.vector);
            chunks.push((id, c));
        }
        state.restore_records(source, chunks);
    }
    d.finish()?;
    state.reserve_ids(next_id);
    Ok(Snapshot { generation, state, ids, vectors })
}

/// The chunks of a restored state are [`NewChunk`]s again (for tests comparing states).
#[cfg(test)]
pub fn chunks_of(state: &MemoryState) -> Vec<(String, ChunkId, crate::types::NewChunk)> {
    let mut out = Vec::new();
    for (s, ids) in state.source_chunks() {
        for &id in ids {
            let (r, v) = state.chunk(id).unwrap();
            out.push((
                s.source.clone(),
                id,
                crate::types::NewChunk { text: r.text.clone(), byte_range: r.byte_range.clone(), heading: r.heading.clone(), vector: v.to_vec() },
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;
    use crate::types::{NewChunk, SourceRecord};

    fn state() -> MemoryState {
        let mut s = MemoryState::new(CollectionSpec::new("t", "m", 3));
        let src = |k: &str| SourceRecord { source: k.into(), content_hash: "h".into(), bytes: 3, chunks: 0, added_at: 1, metadata: Default::default() };
        let ch = |t: &str, v: [f32; 3]| NewChunk { text: t.into(), byte_range: 0..t.len() as u64, heading: Some("H".into()), vector: v.to_vec() };
        s.apply(vec![
            Change::Put { source: src("a"), chunks: vec![ch("one", [1.0, 0.0, 0.0]), ch("two", [0.0, 1.0, 0.0])] },
            Change::Put { source: src("b"), chunks: vec![ch("three", [0.0, 0.0, 1.0])] },
        ]);
        s.apply(vec![Change::Remove { source: "b".into() }]);
        s
    }

    #[test]
    fn a_snapshot_round_trips_ids_and_all() {
        let dir = tempfile::tempdir().unwrap();
        let s = state();
        let size = write(dir.path(), &s, 7).unwrap();
        assert_eq!(size, std::fs::metadata(path(dir.path())).unwrap().len());
        let snap = read(dir.path(), s.spec()).unwrap().unwrap();
        assert_eq!(snap.generation, 7);
        let mut back = snap.state;
        back.set_vector_index(VectorIndex::build(3, Default::default(), &snap.ids, &snap.vectors, 1)).unwrap();
        assert_eq!(chunks_of(&back), chunks_of(&s));
        assert_eq!(back.sources(), s.sources());
        assert_eq!(back.next_id(), 4, "the removed chunk's id is not reused");
    }

    #[test]
    fn a_damaged_snapshot_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = state();
        write(dir.path(), &s, 1).unwrap();
        let p = path(dir.path());
        let good = std::fs::read(&p).unwrap();
        for at in [0, 9, good.len() / 2, good.len() - 1] {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            std::fs::write(&p, &bad).unwrap();
            assert!(read(dir.path(), s.spec()).is_err(), "flip at {at}");
        }
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        assert!(read(dir.path(), s.spec()).is_err());
        std::fs::write(&p, &good).unwrap();
        let e = read(dir.path(), &CollectionSpec::new("t", "m", 4)).err().expect("refused");
        assert!(e.contains("3-dimensional vectors"), "{e}");
        assert!(read(tempfile::tempdir().unwrap().path(), s.spec()).unwrap().is_none());
    }
}
