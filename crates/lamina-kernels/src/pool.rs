//! A persistent worker pool with spin-then-sleep synchronisation.
//!
//! One token of SmolLM2-135M runs ~200 small matrix products of a few microseconds each.
//! Waking threads through a channel or a rayon `par_iter` per op costs tens of
//! microseconds, comparable to the op itself, so the workers here stay alive and spin on
//! an atomic "generation" counter for a short while after each job before they sleep on a
//! condition variable. The calling thread does share 0 of every job itself.
//!
//! A job is a borrowed closure `f(thread_index, thread_count)`; [`ThreadPool::run`] returns
//! only after every worker has finished it, which is what makes lending a non-`'static`
//! closure to the workers sound.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type Job<'a> = &'a (dyn Fn(usize, usize) + Sync);

struct Shared {
    /// Incremented once per job; workers run a job when they see a new value.
    generation: AtomicUsize,
    /// Workers still busy with the current job.
    pending: AtomicUsize,
    /// The current job with its lifetime erased (valid while `pending > 0`). Written by
    /// `run` only while no worker is running a job (before the generation bump that
    /// publishes it, with release ordering); read by workers after they observe the new
    /// generation (acquire). No lock on the per-op path.
    job: UnsafeCell<Option<JobPtr>>,
    /// Workers asleep (or about to sleep) on `wake`; `run` only notifies when non-zero.
    sleepers: AtomicUsize,
    sleep_lock: Mutex<()>,
    wake: Condvar,
    shutdown: AtomicUsize,
    threads: usize,
}

#[derive(Clone, Copy)]
struct JobPtr(*const (dyn Fn(usize, usize) + Sync));
// SAFETY: the pointee is `Sync`, and `run` keeps it alive until every worker is done.
unsafe impl Send for JobPtr {}
// SAFETY: `job` is only written while no worker reads it (see the field's comment).
unsafe impl Sync for Shared {}

/// Busy-wait iterations (`pause`) before a waiting thread starts yielding its core.
/// A few microseconds: long enough to catch the next op of a token without a syscall.
const SPIN_PAUSE: usize = 1 << 10;

/// How long a worker keeps polling (yielding between polls) before it sleeps on the
/// condition variable. Yielding instead of pure spinning matters when the machine has
/// more runnable threads than cores (a build, another process): a pure spinner burns the
/// time slice that the thread it waits for needs, and throughput collapses.
const POLL_TIME: std::time::Duration = std::time::Duration::from_millis(2);

/// Thread counts whose [`ThreadPool::run_chunks`] shares live on the stack.
const INLINE_SHARES: usize = 16;

/// One thread's remaining chunks in [`ThreadPool::run_chunks`]: `front` in the low 32 bits,
/// `back` (one past the last) in the high 32, in one word so that the owner taking from the
/// front and a thief taking from the back cannot both take the last chunk. On its own cache
/// line: the owner updates it once per chunk.
#[repr(align(64))]
#[derive(Default)]
struct Share(std::sync::atomic::AtomicU64);

impl Share {
    fn pack(front: usize, back: usize) -> u64 {
        debug_assert!(front <= back && back < (1 << 31));
        front as u64 | (back as u64) << 32
    }

    /// The owner's next chunk. `front` may run past `back` (by at most one per thread):
    /// whoever sees `front >= back` finds the share empty.
    fn take_front(&self) -> Option<usize> {
        let old = self.0.fetch_add(1, Ordering::AcqRel);
        let (front, back) = (old & 0xFFFF_FFFF, old >> 32);
        (front < back).then_some(front as usize)
    }

    /// A thief's chunk, from the back.
    fn take_back(&self) -> Option<usize> {
        let mut cur = self.0.load(Ordering::Acquire);
        loop {
            let (front, back) = (cur & 0xFFFF_FFFF, cur >> 32);
            if front >= back {
                return None;
            }
            let new = front | (back - 1) << 32;
            match self.0.compare_exchange_weak(cur, new, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(back as usize - 1),
                Err(v) => cur = v,
            }
        }
    }
}

/// A fixed set of worker threads (`threads - 1` of them; the caller is the last one).
pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<()>>,
    /// A job is running; nested `run` calls execute inline instead of deadlocking.
    busy: AtomicUsize,
}

impl ThreadPool {
    /// A pool that runs each job on `threads` threads (at least 1), the caller included.
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            sleepers: AtomicUsize::new(0),
            sleep_lock: Mutex::new(()),
            wake: Condvar::new(),
            shutdown: AtomicUsize::new(0),
            threads,
        });
        let handles = (1..threads)
            .map(|index| {
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("lamina-worker-{index}"))
                    .spawn(move || worker_loop(shared, index))
                    .expect("failed to spawn a worker thread")
            })
            .collect();
        ThreadPool { shared, handles, busy: AtomicUsize::new(0) }
    }

    pub fn threads(&self) -> usize {
        self.shared.threads
    }

    /// Runs `f(i, n)` for every thread index `i` in `0..n` and waits for all of them.
    pub fn run(&self, f: &(dyn Fn(usize, usize) + Sync)) {
        let n = self.shared.threads;
        if n == 1 || self.busy.swap(1, Ordering::Acquire) == 1 {
            // Single thread, or called from inside a job: run every share here.
            if n == 1 {
                f(0, 1);
            } else {
                for i in 0..n {
                    f(i, n);
                }
            }
            return;
        }
        // SAFETY: erase the lifetime; we wait below until no worker can touch it.
        let ptr: JobPtr = JobPtr(unsafe { std::mem::transmute::<Job<'_>, Job<'static>>(f) });
        // SAFETY: every worker finished the previous job (pending was 0), and none reads
        // `job` before it sees the generation bump below.
        unsafe { *self.shared.job.get() = Some(ptr) };
        self.shared.pending.store(n - 1, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        // Wake sleepers (a lock and a futex call, so only when someone sleeps); spinning
        // workers see the generation change by themselves. SeqCst on both counters pairs
        // with the worker's increment-then-check in `worker_loop`.
        if self.shared.sleepers.load(Ordering::SeqCst) != 0 {
            let _g = self.shared.sleep_lock.lock().unwrap();
            self.shared.wake.notify_all();
        }
        f(0, n);
        let mut spins = 0usize;
        while self.shared.pending.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < SPIN_PAUSE {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        // SAFETY: no worker is running the job any more.
        unsafe { *self.shared.job.get() = None };
        self.busy.store(0, Ordering::Release);
    }

    /// Runs `f(thread, range)` over `0..len` in contiguous ranges of `chunk` (the last one
    /// shorter), balancing the threads as they go. With one thread, `f(0, 0..len)` once.
    ///
    /// Why not a fixed split: the cores of a shared machine rarely run at the same speed
    /// for long (another tenant, a frequency change), and with a fixed share each the
    /// faster thread spins while the slower one finishes. Here each thread starts on its
    /// own contiguous share of the chunks, front to back (so memory-bound products keep one
    /// sequential stream per thread, which the hardware prefetchers follow), and a thread
    /// that runs out takes chunks from the *back* of the others' shares until none is left.
    /// A chunk costs one atomic operation on a cache line its owner has to itself until
    /// someone steals.
    pub fn run_chunks(&self, len: usize, chunk: usize, f: &(dyn Fn(usize, std::ops::Range<usize>) + Sync)) {
        let chunk = chunk.max(1);
        let chunks = len.div_ceil(chunk);
        let nt = self.threads();
        if chunks <= 1 || nt == 1 {
            if len > 0 {
                f(0, 0..len);
            }
            return;
        }
        // Thread `t`'s share, as (front, back) chunk indices; a fixed array for the usual
        // thread counts, so the per-op path does not allocate.
        let inline: [Share; INLINE_SHARES] = std::array::from_fn(|_| Share::default());
        let mut heap = Vec::new();
        let shares: &[Share] = if nt <= INLINE_SHARES {
            &inline[..nt]
        } else {
            heap.resize_with(nt, Share::default);
            &heap
        };
        for (t, sh) in shares.iter().enumerate() {
            let r = ThreadPool::split(chunks, t, nt, 1);
            sh.0.store(Share::pack(r.start, r.end), Ordering::Relaxed);
        }
        let run_chunk = |t: usize, c: usize| f(t, c * chunk..((c + 1) * chunk).min(len));
        self.run(&|t, nt| {
            while let Some(c) = shares[t].take_front() {
                run_chunk(t, c);
            }
            for k in 1..nt {
                let victim = &shares[(t + k) % nt];
                while let Some(c) = victim.take_back() {
                    run_chunk(t, c);
                }
            }
        });
    }

    /// Splits `0..len` into `n` near-equal contiguous ranges and returns range `i`,
    /// rounded to multiples of `align` so kernels can work on whole tiles.
    pub fn split(len: usize, i: usize, n: usize, align: usize) -> std::ops::Range<usize> {
        let align = align.max(1);
        let units = len.div_ceil(align);
        let start = (units * i / n) * align;
        let end = ((units * (i + 1) / n) * align).min(len);
        start.min(len)..end
    }
}

fn worker_loop(shared: Arc<Shared>, index: usize) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0usize;
        let mut polling_since: Option<std::time::Instant> = None;
        let generation = loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            if shared.shutdown.load(Ordering::Acquire) != 0 {
                return;
            }
            spins += 1;
            if spins < SPIN_PAUSE {
                std::hint::spin_loop();
            } else if polling_since.get_or_insert_with(std::time::Instant::now).elapsed() < POLL_TIME {
                std::thread::yield_now();
            } else {
                let guard = shared.sleep_lock.lock().unwrap();
                shared.sleepers.fetch_add(1, Ordering::SeqCst);
                if shared.generation.load(Ordering::SeqCst) == seen && shared.shutdown.load(Ordering::Acquire) == 0 {
                    let _unused = shared.wake.wait_timeout(guard, std::time::Duration::from_millis(50)).unwrap();
                } else {
                    drop(guard);
                }
                shared.sleepers.fetch_sub(1, Ordering::SeqCst);
                spins = 0;
                polling_since = None;
            }
        };
        seen = generation;
        // SAFETY: `run` wrote the job before publishing this generation and does not
        // touch it again until this worker decrements `pending`.
        let job = unsafe { *shared.job.get() };
        if let Some(JobPtr(ptr)) = job {
            // SAFETY: `run` keeps the closure alive until `pending` reaches zero.
            let f: &(dyn Fn(usize, usize) + Sync) = unsafe { &*ptr };
            f(index, shared.threads);
        }
        shared.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(1, Ordering::Release);
        {
            let _g = self.shared.sleep_lock.lock().unwrap();
            self.shared.wake.notify_all();
        }
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.shared.threads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_share_runs_once_per_job() {
        for threads in [1, 2, 3, 5] {
            let pool = ThreadPool::new(threads);
            for round in 0..200 {
                let hits: Vec<AtomicUsize> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|i, n| {
                    assert_eq!(n, threads);
                    hits[i].fetch_add(round + 1, Ordering::Relaxed);
                });
                for h in &hits {
                    assert_eq!(h.load(Ordering::Relaxed), round + 1);
                }
            }
        }
    }

    #[test]
    fn split_covers_range_without_overlap() {
        for len in [0, 1, 7, 64, 100, 577] {
            for n in 1..5 {
                for align in [1, 4, 32] {
                    let mut covered = 0;
                    let mut last = 0;
                    for i in 0..n {
                        let r = ThreadPool::split(len, i, n, align);
                        assert!(r.start >= last || r.is_empty());
                        if !r.is_empty() {
                            assert_eq!(r.start, last);
                            last = r.end;
                        }
                        covered += r.len();
                    }
                    assert_eq!(covered, len);
                }
            }
        }
    }

    #[test]
    fn chunks_cover_range_once() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for (len, chunk) in [(0, 4), (1, 4), (7, 1), (100, 7), (64, 64), (65, 64), (5, 0), (1000, 1), (20000, 1)] {
                let hits: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
                pool.run_chunks(len, chunk, &|t, r| {
                    assert!(t < threads && (r.len() <= chunk.max(1) || threads == 1) && !r.is_empty());
                    for i in r {
                        hits[i].fetch_add(1, Ordering::Relaxed);
                    }
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "len {len} chunk {chunk}");
            }
        }
    }

    #[test]
    fn slow_thread_shares_are_taken_by_the_others() {
        // Thread 1 is slow: the others must finish its share from the back, each chunk once.
        for threads in [2, 4, 20] {
            let pool = ThreadPool::new(threads);
            let len = 400;
            let hits: Vec<AtomicUsize> = (0..len).map(|_| AtomicUsize::new(0)).collect();
            let by = AtomicUsize::new(0);
            let home = ThreadPool::split(len, 1, threads, 1);
            pool.run_chunks(len, 1, &|t, r| {
                if t == 1 {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                }
                for i in r {
                    if t != 1 && home.contains(&i) {
                        by.fetch_add(1, Ordering::Relaxed);
                    }
                    hits[i].fetch_add(1, Ordering::Relaxed);
                }
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1), "{threads} threads");
            assert!(by.load(Ordering::Relaxed) > 0, "no chunk of the slow thread was taken over ({threads} threads)");
        }
    }

    #[test]
    fn nested_run_does_not_deadlock() {
        let pool = ThreadPool::new(2);
        let count = AtomicUsize::new(0);
        pool.run(&|_, _| {
            // A job that itself calls run executes inline.
            count.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(count.load(Ordering::Relaxed), 2);
    }
}
