//! The vector index on a matrix of embeddings: build time, memory, and queries/s and
//! recall@10 (and dot products computed a query) at several search widths, against a ground truth computed elsewhere (numpy).
//! `bench/index/run.sh` drives it beside faiss.
//!
//!   index_bench BASE.npy QUERIES.npy TRUTH.npy [--threads 2] [--m 16] [--ef-construction 100] [--repeat 5]
//!               [--ef-search 16,32,64,128] [--crossover 1000,2000,5000,10000,20000]
//!
//! BASE and QUERIES: 2-D little-endian f32 (`<f4`) arrays, unit rows. TRUTH: 2-D `<i4` or
//! `<i8`, each query's exact nearest rows of BASE, best first. Prints one JSON object.

use lamina_rag::index::{HnswParams, VectorIndex};
use lamina_rag::ChunkId;
use std::time::Instant;

/// A 2-D array from a .npy file (version 1–3, C order): shape and raw little-endian values.
fn read_npy(path: &str) -> Result<(usize, usize, String, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(format!("{path}: not a .npy file"));
    }
    let (hlen, start) = if bytes[6] == 1 {
        (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10)
    } else {
        (u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize, 12)
    };
    let header = std::str::from_utf8(bytes.get(start..start + hlen).ok_or("short header")?).map_err(|e| e.to_string())?;
    let field = |name: &str| -> Option<&str> {
        let at = header.find(&format!("'{name}':"))? + name.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr").and_then(|s| s.split('\'').nth(1)).ok_or(format!("{path}: no descr"))?.to_string();
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(format!("{path}: Fortran order is not supported"));
    }
    let shape = field("shape").ok_or(format!("{path}: no shape"))?;
    let dims: Vec<usize> = shape[1..shape.find(')').ok_or("bad shape")?].split(',').filter_map(|s| s.trim().parse().ok()).collect();
    let (rows, cols) = match dims[..] {
        [r, c] => (r, c),
        [r] => (r, 1),
        _ => return Err(format!("{path}: need a 2-D array, got shape {dims:?}")),
    };
    Ok((rows, cols, descr, bytes[start + hlen..].to_vec()))
}

fn f32s(path: &str) -> Result<(usize, usize, Vec<f32>), String> {
    let (r, c, d, raw) = read_npy(path)?;
    if d != "<f4" {
        return Err(format!("{path}: need <f4, got {d}"));
    }
    Ok((r, c, raw.chunks_exact(4).take(r * c).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()))
}

fn ints(path: &str) -> Result<(usize, usize, Vec<u64>), String> {
    let (r, c, d, raw) = read_npy(path)?;
    let v: Vec<u64> = match d.as_str() {
        "<i4" => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap()) as u64).collect(),
        "<i8" => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap()) as u64).collect(),
        _ => return Err(format!("{path}: need <i4 or <i8, got {d}")),
    };
    Ok((r, c, v))
}

fn list(s: &str) -> Vec<usize> {
    s.split(',').filter_map(|x| x.trim().parse().ok()).collect()
}

fn recall(found: &[Vec<(ChunkId, f32)>], truth: &[u64], tcols: usize, k: usize) -> f64 {
    let mut hit = 0;
    for (i, f) in found.iter().enumerate() {
        let t = &truth[i * tcols..i * tcols + k];
        hit += f.iter().filter(|h| t.contains(&h.0 .0)).count();
    }
    hit as f64 / (found.len() * k) as f64
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag =
        |name: &str, default: &str| -> String { args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or(default.to_string()) };
    let files: Vec<&String> =
        args.iter().enumerate().filter(|(i, a)| !a.starts_with("--") && (*i == 0 || !args[i - 1].starts_with("--"))).map(|p| p.1).collect();
    let [base, queries, truth] = files[..] else { return Err("usage: index_bench BASE.npy QUERIES.npy TRUTH.npy [--threads N] [--m M] ...".into()) };
    let threads: usize = flag("--threads", "2").parse().map_err(|_| "--threads")?;
    let repeat: usize = flag("--repeat", "5").parse::<usize>().map_err(|_| "--repeat")?.max(1);
    let defaults = HnswParams::default();
    let params = HnswParams {
        m: flag("--m", &defaults.m.to_string()).parse().map_err(|_| "--m")?,
        ef_construction: flag("--ef-construction", &defaults.ef_construction.to_string()).parse().map_err(|_| "--ef-construction")?,
        exact_threshold: 0,
        threads,
        ..defaults
    };
    let k = 10;
    let (n, dims, data) = f32s(base)?;
    let (nq, qd, qs) = f32s(queries)?;
    let (tn, tcols, truth) = ints(truth)?;
    if qd != dims || tn != nq || tcols < k {
        return Err(format!("shapes disagree: base {n}×{dims}, queries {nq}×{qd}, truth {tn}×{tcols}"));
    }
    let ids: Vec<ChunkId> = (0..n as u64).map(ChunkId).collect();

    // Exact search against the graph at small sizes: where the graph starts to pay.
    let mut crossover = Vec::new();
    for size in list(&flag("--crossover", "1000,2000,5000,10000,20000")).into_iter().filter(|&s| s > 0 && s <= n) {
        let exact = VectorIndex::build(dims, HnswParams { exact_threshold: usize::MAX, ..params }, &ids[..size], &data[..size * dims], threads);
        let graph = VectorIndex::build(dims, params, &ids[..size], &data[..size * dims], threads);
        let time = |ix: &VectorIndex| {
            let t = Instant::now();
            let out = ix.search_batch(&qs, k, 1);
            (nq as f64 / t.elapsed().as_secs_f64(), out.len())
        };
        let (eq, _) = time(&exact);
        let (gq, _) = time(&graph);
        crossover.push(format!("{{\"vectors\": {size}, \"exact_qps_1_thread\": {eq:.0}, \"hnsw_qps_1_thread\": {gq:.0}}}"));
    }

    let t = Instant::now();
    let mut ix = VectorIndex::build(dims, params, &ids, &data, threads);
    let build_s = t.elapsed().as_secs_f64();
    let mut runs = Vec::new();
    for ef in list(&flag("--ef-search", "16,32,48,64,72,80,88,96,128")) {
        ix.set_ef_search(ef);
        ix.search_batch(&qs[..dims * nq.min(100)], k, threads); // warm
                                                                // The best of `--repeat` passes (one lasts a tenth of a second; other load on the
                                                                // machine only ever slows a pass down). Every pass gives the same results.
        let mut best = f64::INFINITY;
        let (mut found, mut dots) = (Vec::new(), 0);
        for _ in 0..repeat {
            let t = Instant::now();
            (found, dots) = ix.search_batch_counted(&qs, k, threads);
            best = best.min(t.elapsed().as_secs_f64());
        }
        let qps = nq as f64 / best;
        runs.push(format!(
            "{{\"ef_search\": {ef}, \"qps\": {qps:.0}, \"recall_at_10\": {:.4}, \"distances_per_query\": {:.0}}}",
            recall(&found, &truth, tcols, k),
            dots as f64 / nq as f64
        ));
    }
    println!(
        "{{\"vectors\": {n}, \"dims\": {dims}, \"queries\": {nq}, \"threads\": {threads}, \"m\": {}, \"ef_construction\": {}, \"build_s\": {build_s:.2}, \"bytes_per_vector\": {:.0}, \"runs\": [{}], \"crossover\": [{}]}}",
        params.m,
        params.ef_construction,
        ix.memory_bytes() as f64 / n as f64,
        runs.join(", "),
        crossover.join(", ")
    );
    Ok(())
}
