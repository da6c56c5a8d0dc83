//! The prefix cache on disk, so that a restarted server keeps its cached prompts.
//!
//! One file per model and block shape: a header (magic, version, the model's
//! fingerprint, the block shape), then each cached block as its [`BlockHash`] and its key
//! and value bytes (layer by layer), most valuable first, then a SHA-256 of everything before it. Written
//! atomically (temp file, fsync, rename), so a kill at any moment leaves the previous file
//! or the new one. Loading checks the magic, version, fingerprint, shape, sizes and
//! checksum before it places a single block; a file that fails any check is refused with
//! the reason, and the cache starts empty.

use super::{BlockHash, BlockPool};
use lamina_core::{Error, Result};
use lamina_model::{KvDtype, KvShape, PagedKv};
use sha2::{Digest, Sha256};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

const MAGIC: &[u8; 8] = b"LAMINAKV";
const VERSION: u32 = 1;

fn shape_bytes(s: &KvShape) -> [u8; 17] {
    let mut b = [0u8; 17];
    for (i, v) in [s.num_layers, s.kv_heads, s.head_dim, s.block_size].into_iter().enumerate() {
        b[i * 4..i * 4 + 4].copy_from_slice(&(v as u32).to_le_bytes());
    }
    b[16] = match s.dtype {
        KvDtype::F32 => 0,
        KvDtype::F16 => 1,
    };
    b
}

fn header(fingerprint: &str, shape: &KvShape, count: u64) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&VERSION.to_le_bytes());
    h.extend_from_slice(&(fingerprint.len() as u32).to_le_bytes());
    h.extend_from_slice(fingerprint.as_bytes());
    h.extend_from_slice(&shape_bytes(shape));
    h.extend_from_slice(&count.to_le_bytes());
    h
}

/// Writes the pool's cached blocks (at most `limit`, most valuable first) to `path`.
/// Returns how many were written.
pub fn save(path: &Path, fingerprint: &str, kv: &PagedKv, pool: &BlockPool) -> Result<usize> {
    let blocks = pool.ready_blocks();
    lamina_core::fs::write_atomic(path, |f| {
        let io = |e: std::io::Error| Error::io(path, e);
        let mut w = BufWriter::new(f);
        let mut sum = Sha256::new();
        let mut put = |w: &mut BufWriter<&mut std::fs::File>, bytes: &[u8]| -> Result<()> {
            sum.update(bytes);
            w.write_all(bytes).map_err(io)
        };
        put(&mut w, &header(fingerprint, &kv.shape, blocks.len() as u64))?;
        let mut bytes = Vec::with_capacity(kv.block_bytes_size());
        for &(b, hash) in &blocks {
            put(&mut w, &hash.0.to_le_bytes())?;
            kv.block_bytes(b as usize, &mut bytes);
            put(&mut w, &bytes)?;
        }
        w.write_all(&sum.finalize()).map_err(io)?;
        w.flush().map_err(io)
    })?;
    Ok(blocks.len())
}

/// Places the blocks saved in `path` into an empty pool (as many as it has never-used
/// blocks for). Returns how many were placed. Any mismatch or damage is an error that
/// names it, and then nothing is placed.
pub fn load(path: &Path, fingerprint: &str, kv: &mut PagedKv, pool: &mut BlockPool) -> Result<usize> {
    let bad = |why: String| Error::InvalidInput(format!("prefix cache {}: {why}", path.display()));
    let io = |e: std::io::Error| Error::io(path, e);
    let expect = header(fingerprint, &kv.shape, 0);
    let record = 16 + kv.block_bytes_size();
    // Pass 1: header, size and checksum, reading the file once without keeping it.
    let len = std::fs::metadata(path).map_err(io)?.len() as usize;
    let mut r = BufReader::new(lamina_core::fs::open_regular(path)?);
    let mut head = vec![0u8; expect.len()];
    r.read_exact(&mut head).map_err(|_| bad("shorter than its header".into()))?;
    if &head[..8] != MAGIC {
        return Err(bad("not a Lamina prefix-cache file".into()));
    }
    if head[8..12] != expect[8..12] {
        return Err(bad(format!("version {}, this build reads {VERSION}", u32::from_le_bytes(head[8..12].try_into().expect("4 bytes")))));
    }
    let fp_end = expect.len() - 17 - 8;
    if head[..fp_end] != expect[..fp_end] {
        return Err(bad("written for another model (fingerprint differs)".into()));
    }
    if head[fp_end..fp_end + 17] != expect[fp_end..fp_end + 17] {
        return Err(bad("written for another KV block shape".into()));
    }
    let count = u64::from_le_bytes(head[expect.len() - 8..].try_into().expect("8 bytes")) as usize;
    if count.checked_mul(record).and_then(|n| n.checked_add(expect.len() + 32)) != Some(len) {
        return Err(bad(format!("{len} bytes do not hold {count} blocks of {record}")));
    }
    let mut sum = Sha256::new();
    sum.update(&head);
    let mut buf = vec![0u8; record];
    for _ in 0..count {
        r.read_exact(&mut buf).map_err(io)?;
        sum.update(&buf);
    }
    let mut stored = [0u8; 32];
    r.read_exact(&mut stored).map_err(io)?;
    if sum.finalize()[..] != stored {
        return Err(bad("checksum mismatch (damaged file)".into()));
    }
    // Pass 2: place them, the first (most valuable) as the most recently used.
    let mut r = BufReader::new(lamina_core::fs::open_regular(path)?);
    r.read_exact(&mut head).map_err(io)?;
    let mut placed = 0;
    for i in 0..count {
        r.read_exact(&mut buf).map_err(io)?;
        let hash = BlockHash(u128::from_le_bytes(buf[..16].try_into().expect("16 bytes")));
        let Some(b) = pool.restore(hash, (count - i) as u64) else {
            if pool.free() == 0 {
                break;
            }
            continue;
        };
        kv.set_block_bytes(b as usize, &buf[16..]);
        placed += 1;
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool_with_blocks(shape: KvShape, n: usize) -> (PagedKv, BlockPool) {
        let mut kv = PagedKv::new(shape, n + 2);
        let mut pool = BlockPool::new(n + 2);
        for i in 0..n {
            let b = pool.allocate().unwrap();
            let row: Vec<f32> = (0..shape.kv_heads * shape.head_dim).map(|d| (i * 100 + d) as f32).collect();
            for l in 0..shape.num_layers {
                for o in 0..shape.block_size {
                    kv.write(l, b as usize, o, &row, &row);
                }
            }
            pool.mark_ready(b, BlockHash(1000 + i as u128));
            pool.release(b);
        }
        (kv, pool)
    }

    #[test]
    fn saved_blocks_come_back_and_damage_is_refused() {
        let shape = KvShape { num_layers: 2, kv_heads: 1, head_dim: 8, block_size: 4, dtype: KvDtype::F16 };
        let (kv, pool) = pool_with_blocks(shape, 3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.lkv");
        assert_eq!(save(&path, "model-a", &kv, &pool).unwrap(), 3);
        // Into a fresh pool: same contents under the same hashes.
        let mut kv2 = PagedKv::new(shape, 5);
        let mut pool2 = BlockPool::new(5);
        assert_eq!(load(&path, "model-a", &mut kv2, &mut pool2).unwrap(), 3);
        for (b, h) in pool.ready_blocks() {
            let super::super::Lookup::Ready(b2) = pool2.lookup(&h) else { panic!("{h:?} not restored") };
            let (mut x, mut y) = (Vec::new(), Vec::new());
            kv.block_bytes(b as usize, &mut x);
            kv2.block_bytes(b2 as usize, &mut y);
            assert_eq!(x, y);
        }
        pool2.check_invariants();
        // A pool with room for two keeps the two most recently used.
        let mut kv3 = PagedKv::new(shape, 2);
        let mut pool3 = BlockPool::new(2);
        assert_eq!(load(&path, "model-a", &mut kv3, &mut pool3).unwrap(), 2);
        let kept: Vec<BlockHash> = pool3.ready_blocks().into_iter().map(|x| x.1).collect();
        assert_eq!(kept, pool.ready_blocks().into_iter().take(2).map(|x| x.1).collect::<Vec<_>>());
        // Refusals, each naming its reason, with nothing placed.
        let refuse = |bytes: &[u8], fp: &str, shape: KvShape, want: &str| {
            let p = dir.path().join("bad.lkv");
            std::fs::write(&p, bytes).unwrap();
            let mut kv = PagedKv::new(shape, 5);
            let mut pool = BlockPool::new(5);
            let e = load(&p, fp, &mut kv, &mut pool).unwrap_err().to_string();
            assert!(e.contains(want), "{want}: {e}");
            assert_eq!(pool.cached(), 0);
        };
        let good = std::fs::read(&path).unwrap();
        refuse(&good, "model-b", shape, "another model");
        refuse(&good, "model-a", KvShape { block_size: 8, ..shape }, "block shape");
        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 1;
        refuse(&flipped, "model-a", shape, "checksum");
        refuse(&good[..good.len() - 5], "model-a", shape, "do not hold");
        refuse(b"LAMINAK", "model-a", shape, "header");
        refuse(b"GGUF\x03\x00\x00\x00 and more bytes than a header needs, many more", "model-a", shape, "not a Lamina");
    }
}
