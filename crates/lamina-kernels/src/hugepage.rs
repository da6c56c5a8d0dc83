//! Long-lived, read-mostly buffers (the repacked weights) in memory that the operating
//! system may back with 2 MiB pages.
//!
//! Why: one decoded token streams ~96 MB of weights through the caches. With 4 KiB pages
//! that is ~24 000 pages per token, more than the TLBs hold, so every page costs a page
//! walk, and the hardware prefetchers stop at every 4 KiB boundary. Linux's transparent
//! huge pages are usually enabled only for memory that asks for them (`madvise` mode,
//! the default of Debian and Ubuntu); measured on the project's 2-core AMD EPYC, switching
//! them on took single-stream decode from 128 to 144 tok/s.
//!
//! Small buffers would each get a 4 KiB-page allocation of their own, so they are carved
//! out of shared 2 MiB-aligned regions of [`REGION_BYTES`] by a bump allocator: a region is
//! unmapped when the last buffer in it is dropped, and space is never reused (these
//! buffers live as long as a loaded model). Large buffers get a region of their own.
//! Where huge pages are unavailable (another OS, `never` mode, no anonymous mapping) the
//! buffers are still correct, just backed by ordinary pages or the heap.

use std::sync::{Arc, Mutex, Weak};

/// Size of a huge page on x86-64 and the alignment of every region.
pub const HUGE_PAGE: usize = 2 << 20;

/// Size of a shared region; buffers of at least half of it get their own.
pub const REGION_BYTES: usize = 32 << 20;

/// Types for which all-zero bytes are a valid value (what a fresh region holds).
///
/// # Safety
/// Implementors must be plain data: any bit pattern of zeros is a valid value, and the
/// type has no drop glue.
pub unsafe trait Zeroable: Copy + 'static {}
// SAFETY: plain numbers.
unsafe impl Zeroable for u8 {}
unsafe impl Zeroable for f32 {}
unsafe impl Zeroable for half::f16 {}

/// What keeps a region's memory alive.
enum Backing {
    Map(#[allow(dead_code)] memmap2::MmapMut),
    /// Where no anonymous mapping could be made.
    Heap(#[allow(dead_code)] Vec<u8>),
}

/// One anonymous mapping, aligned to [`HUGE_PAGE`], advised for huge pages.
struct Region {
    _backing: Backing,
    base: *mut u8,
    len: usize,
}
// SAFETY: the region is plain memory; the buffers that point into it are disjoint.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize) -> Region {
        let len = len.div_ceil(HUGE_PAGE) * HUGE_PAGE;
        if let Ok(mut map) = memmap2::MmapMut::map_anon(len + HUGE_PAGE) {
            let addr = map.as_mut_ptr() as usize;
            let skip = addr.next_multiple_of(HUGE_PAGE) - addr;
            #[cfg(target_os = "linux")]
            {
                // Advice only: refused where huge pages are switched off, which is fine.
                let _ = map.advise_range(memmap2::Advice::HugePage, skip, len);
            }
            // SAFETY: `skip + len <= len + HUGE_PAGE`, the mapping's length.
            let base = unsafe { map.as_mut_ptr().add(skip) };
            return Region { _backing: Backing::Map(map), base, len };
        }
        let mut heap = vec![0u8; len + 64];
        let addr = heap.as_mut_ptr() as usize;
        // SAFETY: the skip is below 64 bytes, inside the allocation.
        let base = unsafe { heap.as_mut_ptr().add(addr.next_multiple_of(64) - addr) };
        Region { _backing: Backing::Heap(heap), base, len }
    }
}

/// The shared region being filled and the bytes used in it.
static CURRENT: Mutex<Option<(Weak<Region>, usize)>> = Mutex::new(None);

/// A zero-initialised, fixed-length array of `T` in huge-page-advised memory, aligned to
/// at least 64 bytes; derefs to a slice.
pub struct HugeVec<T: Zeroable> {
    _region: Option<Arc<Region>>,
    ptr: *mut T,
    len: usize,
}
// SAFETY: a HugeVec owns its elements exclusively (ranges handed out never overlap).
unsafe impl<T: Zeroable + Send> Send for HugeVec<T> {}
unsafe impl<T: Zeroable + Sync> Sync for HugeVec<T> {}

impl<T: Zeroable> HugeVec<T> {
    /// `len` zeros, in a shared region when small (for buffers that live as long as the
    /// model: their space is not reused before the whole region is freed).
    pub fn zeroed(len: usize) -> HugeVec<T> {
        HugeVec::alloc(len, false)
    }

    /// `len` zeros in a region of their own, unmapped when this buffer is dropped: for
    /// buffers that are replaced while the program runs (a KV cache that grows).
    pub fn zeroed_alone(len: usize) -> HugeVec<T> {
        HugeVec::alloc(len, true)
    }

    fn alloc(len: usize, alone: bool) -> HugeVec<T> {
        let bytes = len.checked_mul(std::mem::size_of::<T>()).expect("HugeVec size overflows");
        assert!(std::mem::align_of::<T>() <= 64, "HugeVec aligns to 64 bytes at most");
        if bytes == 0 {
            return HugeVec { _region: None, ptr: std::ptr::without_provenance_mut(64), len };
        }
        let (region, offset) = if alone || bytes >= REGION_BYTES / 2 {
            (Arc::new(Region::new(bytes)), 0)
        } else {
            let mut cur = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
            let need = bytes.next_multiple_of(64);
            let reuse = cur.as_ref().and_then(|(w, used)| {
                let r = w.upgrade()?;
                (used + need <= r.len).then_some((r, *used))
            });
            let (r, at) = match reuse {
                Some(x) => x,
                None => (Arc::new(Region::new(REGION_BYTES)), 0),
            };
            *cur = Some((Arc::downgrade(&r), at + need));
            (r, at)
        };
        // SAFETY: `offset + bytes <= region.len`; the range is handed out once, and a fresh
        // mapping (or the zeroed heap fallback) holds zeros, valid for `T: Zeroable`.
        let ptr = unsafe { region.base.add(offset) } as *mut T;
        HugeVec { _region: Some(region), ptr, len }
    }

    /// A copy of `src`.
    pub fn from_slice(src: &[T]) -> HugeVec<T> {
        let mut v = HugeVec::zeroed(src.len());
        v.copy_from_slice(src);
        v
    }
}

impl<T: Zeroable> std::ops::Deref for HugeVec<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points at `len` initialised elements owned by this buffer.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl<T: Zeroable> std::ops::DerefMut for HugeVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl<T: Zeroable + std::fmt::Debug> std::fmt::Debug for HugeVec<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HugeVec(len {})", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_aligned_and_disjoint() {
        let mut bufs: Vec<HugeVec<u8>> = [1usize, 100, 4096, 70_000, REGION_BYTES / 2 + 3, 5, 0].iter().map(|&n| HugeVec::zeroed(n)).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            assert!(b.iter().all(|&x| x == 0));
            assert_eq!(b.as_ptr() as usize % 64, 0);
            b.fill(i as u8 + 1);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(b.iter().all(|&x| x == i as u8 + 1), "buffer {i} was overwritten by another");
        }
    }

    #[test]
    fn regions_fill_then_roll_over_and_survive_their_neighbours() {
        // More small buffers than one region holds: the allocator moves on to a new one,
        // and dropping buffers never disturbs the others.
        let n = REGION_BYTES / (1 << 20) + 3;
        let mut bufs: Vec<HugeVec<f32>> = (0..n).map(|_| HugeVec::zeroed((1 << 20) / 4)).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            b.fill(i as f32);
        }
        bufs.retain(|b| (b[0] as usize).is_multiple_of(2));
        let later = HugeVec::<f32>::from_slice(&[7.0; 1000]);
        for b in &bufs {
            assert!(b.iter().all(|&x| x == b[0]));
        }
        assert!(later.iter().all(|&x| x == 7.0));
    }
}
