//! The vector index against exact search at a size where the HNSW graph answers.
//!
//! Data: synthetic, not real MiniLM vectors (embedding 50,000 texts would take minutes of CI).
//! It is shaped like sentence embeddings: a seeded mixture of 100 Gaussian clusters in 384
//! dimensions, each cluster spread along 32 directions of its own (embeddings lie near a
//! low-dimensional surface) plus isotropic noise, every vector L2-normalised. The benchmark
//! (`bench/index/run.sh`) measures the same index on real MiniLM vectors.

use lamina_rag::index::{HnswParams, VectorIndex};
use lamina_rag::ChunkId;
use std::collections::HashSet;
use std::sync::OnceLock;

const DIMS: usize = 384;
const N: usize = 50_000;
const QUERIES: usize = 100;

struct Gauss(u64);
impl Gauss {
    fn uniform(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        ((self.0 >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
    /// Box–Muller.
    fn next(&mut self) -> f32 {
        let (u, v) = (self.uniform(), self.uniform());
        ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
    }
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// `n` vectors, row-major.
fn clustered(n: usize, seed: u64) -> Vec<f32> {
    const CLUSTERS: usize = 100;
    const SPREAD: usize = 32;
    let mut g = Gauss(0x9E37_79B9_7F4A_7C15);
    let centres: Vec<f32> = (0..CLUSTERS * DIMS).map(|_| g.next()).collect();
    let axes: Vec<f32> = (0..CLUSTERS * SPREAD * DIMS).map(|_| g.next() * 0.6).collect();
    let mut g = Gauss(seed);
    let mut out = Vec::with_capacity(n * DIMS);
    for _ in 0..n {
        // Uneven cluster sizes: a skewed pick.
        let c = ((g.uniform().powi(2)) * CLUSTERS as f64) as usize % CLUSTERS;
        let mut v: Vec<f32> = centres[c * DIMS..(c + 1) * DIMS].iter().map(|x| x + 0.5 * g.next()).collect();
        for a in 0..SPREAD {
            let w = g.next();
            let axis = &axes[(c * SPREAD + a) * DIMS..(c * SPREAD + a + 1) * DIMS];
            v.iter_mut().zip(axis).for_each(|(x, y)| *x += w * y);
        }
        normalise(&mut v);
        out.extend(v);
    }
    out
}

struct Fixture {
    data: Vec<f32>,
    queries: Vec<f32>,
    index: VectorIndex,
}

/// One 50,000-vector index shared by the tests (built once, on 2 threads as CI has).
fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let data = clustered(N, 1);
        let queries = clustered(QUERIES, 2);
        let ids: Vec<ChunkId> = (0..N as u64).map(|i| ChunkId(i + 1)).collect();
        let t = std::time::Instant::now();
        let index = VectorIndex::build(DIMS, HnswParams::default(), &ids, &data, 2);
        eprintln!("built {N} vectors in {:.1} s: {}", t.elapsed().as_secs_f64(), index.describe());
        Fixture { data, queries, index }
    })
}

fn query(f: &Fixture, i: usize) -> &[f32] {
    &f.queries[i * DIMS..(i + 1) * DIMS]
}

/// Every base row's similarity to query `i` by a plain f64 dot product: the truth, computed
/// without the index (once per query, shared by the tests).
fn sims(f: &Fixture, i: usize) -> &[f64] {
    static S: OnceLock<Vec<OnceLock<Vec<f64>>>> = OnceLock::new();
    let all = S.get_or_init(|| (0..QUERIES).map(|_| OnceLock::new()).collect());
    all[i].get_or_init(|| {
        let q = query(f, i);
        f.data.chunks_exact(DIMS).map(|v| v.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum()).collect()
    })
}

/// The exact top k of query `i` among the rows (ids) `keep` passes.
fn truth(f: &Fixture, i: usize, k: usize, keep: &dyn Fn(u64) -> bool) -> Vec<u64> {
    let mut all: Vec<(f64, u64)> = sims(f, i).iter().enumerate().map(|(r, s)| (*s, r as u64 + 1)).filter(|p| keep(p.1)).collect();
    all.sort_by(|a, b| b.0.total_cmp(&a.0));
    all.into_iter().take(k).map(|p| p.1).collect()
}

fn recall(found: &[(ChunkId, f32)], truth: &[u64]) -> usize {
    let t: HashSet<u64> = truth.iter().copied().collect();
    found.iter().filter(|h| t.contains(&h.0 .0)).count()
}

#[test]
fn hnsw_recall_at_10_is_at_least_0_95_on_50000_vectors() {
    let f = fixture();
    assert!(f.index.describe().starts_with("hnsw"), "{}", f.index.describe());
    let mut hit = 0;
    let batch = f.index.search_batch(&f.queries, 10, 2);
    for (i, got) in batch.iter().enumerate() {
        assert_eq!(got.len(), 10);
        assert!(got.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        assert_eq!(got, &f.index.search(query(f, i), 10, &|_| true), "batch and single search agree");
        hit += recall(got, &truth(f, i, 10, &|_| true));
    }
    let r = hit as f64 / (10 * QUERIES) as f64;
    eprintln!("recall@10 {r:.4}");
    assert!(r >= 0.95, "recall@10 {r}");
}

#[test]
fn a_selective_filter_still_returns_the_true_top_k() {
    let f = fixture();
    // 1 row in 97 passes: ~515 rows, far too few for the graph's search to reach.
    let keep = |id: u64| id.is_multiple_of(97);
    for i in 0..20 {
        let got = f.index.search(query(f, i), 10, &|c| keep(c.0));
        let want = truth(f, i, 10, &keep);
        assert_eq!(got.iter().map(|h| h.0 .0).collect::<Vec<_>>(), want, "query {i}");
    }
    // A broad filter (half the rows) goes through the graph and still finds nearly all.
    let half = |id: u64| id.is_multiple_of(2);
    let mut hit = 0;
    for i in 0..50 {
        let got = f.index.search(query(f, i), 10, &|c| half(c.0));
        assert!(got.iter().all(|h| half(h.0 .0)));
        hit += recall(&got, &truth(f, i, 10, &half));
    }
    assert!(hit as f64 / 500.0 >= 0.95, "filtered recall {}", hit as f64 / 500.0);
}

#[test]
fn removed_vectors_are_never_returned_and_the_round_trip_is_identical() {
    let f = fixture();
    let mut bytes = Vec::new();
    f.index.write_to(&mut bytes).unwrap();
    let mut ix = VectorIndex::read_from(&mut &bytes[..]).unwrap();
    for i in 0..QUERIES {
        assert_eq!(ix.search(query(f, i), 10, &|_| true), f.index.search(query(f, i), 10, &|_| true), "query {i} after reload");
    }
    // Remove every query's current top 3 (tombstones: the graph still routes through them).
    let mut removed = HashSet::new();
    for i in 0..50 {
        for h in f.index.search(query(f, i), 3, &|_| true) {
            if removed.insert(h.0 .0) {
                assert!(ix.remove(h.0));
            }
        }
    }
    assert_eq!(ix.len(), N - removed.len());
    let mut hit = 0;
    for i in 0..50 {
        let got = ix.search(query(f, i), 10, &|_| true);
        assert!(got.iter().all(|h| !removed.contains(&h.0 .0)), "a removed vector came back");
        hit += recall(&got, &truth(f, i, 10, &|id| !removed.contains(&id)));
    }
    assert!(hit as f64 / 500.0 >= 0.95, "recall after removals {}", hit as f64 / 500.0);
    // A vector added after the build is linked in and found.
    let v = clustered(1, 99);
    ix.insert(ChunkId(1_000_000), &v);
    assert_eq!(ix.search(&v, 1, &|_| true)[0].0, ChunkId(1_000_000));
    let mut again = Vec::new();
    ix.write_to(&mut again).unwrap();
    let back = VectorIndex::read_from(&mut &again[..]).unwrap();
    assert_eq!(back.search(&v, 5, &|_| true), ix.search(&v, 5, &|_| true));
    // Damage anywhere in the saved graph is refused.
    let mut bad = again.clone();
    let at = bad.len() - 5000;
    bad[at] ^= 0x40;
    assert!(VectorIndex::read_from(&mut &bad[..]).is_err());
}
