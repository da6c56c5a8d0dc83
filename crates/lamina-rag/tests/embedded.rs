//! The embedded store: the back-end conformance suite, then what only a folder of files
//! has to get right — a torn log tail, snapshot plus log replay, compaction, the writer
//! lock, and leftovers of interrupted creations and deletions.

mod conformance;

use conformance::{axis, chunk, corpus, source, spec};
use lamina_rag::store::embedded::{EmbeddedCatalog, EmbeddedOptions};
use lamina_rag::store::{Catalog, Change, Store};
use lamina_rag::{Filter, RagError};
use std::path::{Path, PathBuf};

#[test]
fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let catalog = EmbeddedCatalog::open(&root).unwrap();
    conformance::run_all(&catalog, &|| Box::new(EmbeddedCatalog::open(&root).unwrap()), "emb");
}

#[test]
fn conformance_suite_with_a_checkpoint_after_every_batch() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let opts = EmbeddedOptions { checkpoint_min_bytes: 0, ..EmbeddedOptions::default() };
    let catalog = EmbeddedCatalog::with_options(&root, opts).unwrap();
    conformance::run_all(&catalog, &|| Box::new(EmbeddedCatalog::with_options(&root, opts).unwrap()), "snap");
}

fn logs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()).filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("log-")).collect();
    v.sort();
    v
}

fn put(key: &str, text: &str, v: Vec<f32>) -> Change {
    Change::Put { source: source(key, &format!("h-{text}"), &[]), chunks: vec![chunk(text, 0, None, v)] }
}

fn keys(store: &dyn Store) -> Vec<String> {
    store.sources().unwrap().into_iter().map(|s| s.source).collect()
}

#[test]
fn a_torn_last_record_is_dropped_and_the_log_goes_on_after_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::open(dir.path()).unwrap();
    let mut store = catalog.create_store(spec("torn")).unwrap();
    store.apply(vec![put("/a", "alpha", axis(0))]).unwrap();
    let log = logs(store.dir()).pop().unwrap();
    let after_first = std::fs::metadata(&log).unwrap().len();
    store.apply(vec![put("/b", "beta", axis(1)), put("/c", "gamma", axis(2))]).unwrap();
    drop(store);
    let full = std::fs::read(&log).unwrap();

    // A kill part-way through writing the second batch: every cut loses that batch whole.
    for cut in [after_first + 1, after_first + 8, (after_first + full.len() as u64) / 2, full.len() as u64 - 1] {
        std::fs::write(&log, &full[..cut as usize]).unwrap();
        let store = catalog.open_store("torn").unwrap();
        assert_eq!(keys(&store), vec!["/a"], "cut at {cut}");
    }
    // Garbage after the last record (a torn frame whose length runs off the end).
    let mut garbage = full.clone();
    garbage.extend_from_slice(&[0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
    std::fs::write(&log, &garbage).unwrap();
    let mut store = catalog.open_store("torn").unwrap();
    assert_eq!(keys(&store), vec!["/a", "/b", "/c"]);
    // A reader does not repair; the writer cuts the tail before appending.
    assert_eq!(std::fs::metadata(&log).unwrap().len(), garbage.len() as u64);
    store.apply(vec![put("/d", "delta", axis(3))]).unwrap();
    drop(store);
    let store = catalog.open_store("torn").unwrap();
    assert_eq!(keys(&store), vec!["/a", "/b", "/c", "/d"]);
    let hit = store.keyword_search("delta", 1, &Filter::default()).unwrap();
    assert_eq!(store.chunks(&[hit[0].0]).unwrap()[0].text, "delta");
}

#[test]
fn a_snapshot_and_the_log_after_it_replay_to_the_same_state() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::open(dir.path()).unwrap();
    let mut store = catalog.create_store(spec("snap")).unwrap();
    store.apply(corpus()).unwrap();
    store.compact().unwrap();
    let d = store.dir().to_path_buf();
    assert!(d.join("snapshot.bin").is_file());
    assert_eq!(logs(&d).len(), 1, "the old log is gone");
    store.apply(vec![Change::Remove { source: "/other/faq.md".into() }, put("/late", "Late addition after the snapshot", axis(3))]).unwrap();
    let want_sources = store.sources().unwrap();
    let want_hits = store.vector_search(&axis(3), 5, &Filter::default()).unwrap();
    drop(store);

    let store = catalog.open_store("snap").unwrap();
    assert_eq!(store.sources().unwrap(), want_sources);
    let hits = store.vector_search(&axis(3), 5, &Filter::default()).unwrap();
    assert_eq!(hits, want_hits);
    assert_eq!(store.chunks(&[hits[0].0]).unwrap()[0].text, "Late addition after the snapshot");
    // The corpus took ids 1-4 and the removed source's id 4 is not handed out again.
    assert_eq!(hits[0].0 .0, 5, "ids continue after the snapshot's");
}

#[test]
fn replacing_a_file_over_and_over_does_not_grow_the_folder() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::with_options(dir.path(), EmbeddedOptions { checkpoint_min_bytes: 64 << 10, ..EmbeddedOptions::default() }).unwrap();
    let mut store = catalog.create_store(spec("churn")).unwrap();
    let text = "x".repeat(2000);
    let version = |i: usize| Change::Put {
        source: source("/f", &format!("v{i}"), &[]),
        chunks: (0..10).map(|j| chunk(&format!("{text} {i} {j}"), 0, None, axis(j % 4))).collect(),
    };
    store.apply(vec![version(0)]).unwrap();
    let one_version = store.info().unwrap().stored_bytes.unwrap();
    let mut most = 0;
    for i in 1..400 {
        store.apply(vec![version(i)]).unwrap();
        most = most.max(store.info().unwrap().stored_bytes.unwrap());
    }
    // 400 versions of ~20 KB are 8 MB written; live data is one version.
    assert!(most < 64 * 1024 + 8 * one_version + 64 * 1024, "the folder grew to {most} bytes (one version: {one_version})");
    assert!(logs(store.dir()).len() == 1);
    let hash = store.source("/f").unwrap().unwrap().content_hash;
    assert_eq!(hash, "v399");
    drop(store);
    let store = catalog.open_store("churn").unwrap();
    assert_eq!(store.info().unwrap().chunks, 10);
    assert_eq!(store.source("/f").unwrap().unwrap().content_hash, "v399");
}

#[test]
fn one_writer_at_a_time_and_readers_alongside() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::open(dir.path()).unwrap();
    let mut a = catalog.create_store(spec("locked")).unwrap();
    a.apply(vec![put("/a", "alpha", axis(0))]).unwrap();
    let mut b = catalog.open_store("locked").unwrap();
    assert_eq!(keys(&b), vec!["/a"], "a reader opens while the writer holds the lock");
    let e = b.apply(vec![put("/b", "beta", axis(1))]).unwrap_err();
    assert!(matches!(e, RagError::Locked(ref n) if n == "locked"), "{e}");
    assert!(e.to_string().contains("another process"), "{e}");
    assert!(matches!(catalog.delete("locked"), Err(RagError::Locked(_))), "no deleting under a writer");
    a.apply(vec![put("/c", "gamma", axis(2))]).unwrap();
    drop(a);
    // The lock is free: b catches up with what a wrote since b opened, then writes.
    b.apply(vec![put("/b", "beta", axis(1))]).unwrap();
    assert_eq!(keys(&b), vec!["/a", "/b", "/c"]);
    drop(b);
    assert_eq!(keys(&catalog.open_store("locked").unwrap()), vec!["/a", "/b", "/c"]);
    // An empty batch takes the lock without writing.
    let mut c = catalog.open_store("locked").unwrap();
    c.apply(vec![]).unwrap();
    assert!(matches!(catalog.open_store("locked").unwrap().apply(vec![]), Err(RagError::Locked(_))));
    drop(c);
    catalog.delete("locked").unwrap();
}

#[test]
fn a_damaged_collection_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::open(dir.path()).unwrap();
    let mut store = catalog.create_store(spec("broken")).unwrap();
    store.apply(corpus()).unwrap();
    store.compact().unwrap();
    let snap = store.dir().join("snapshot.bin");
    drop(store);
    let mut bytes = std::fs::read(&snap).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    std::fs::write(&snap, &bytes).unwrap();
    let e = catalog.open_store("broken").err().expect("a damaged snapshot is refused");
    assert!(matches!(e, RagError::Corrupt { ref collection, .. } if collection == "broken"), "{e}");
    assert!(e.to_string().contains("checksum"), "{e}");
    std::fs::write(dir.path().join("broken").join("spec.json"), b"{not json").unwrap();
    assert!(matches!(catalog.open_store("broken"), Err(RagError::Corrupt { .. })));
}

#[test]
fn interrupted_creations_and_deletions_leave_nothing_that_lists() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::open(dir.path()).unwrap();
    catalog.create_store(spec("kept")).unwrap();
    // What a crash mid-create (by a process now gone) and mid-delete leave behind.
    let half = dir.path().join(".creating-half-4000000000-0");
    std::fs::create_dir(&half).unwrap();
    std::fs::write(half.join("spec.json"), serde_json::to_vec(&spec("half")).unwrap()).unwrap();
    let tomb = dir.path().join(".deleted-gone-1-0");
    std::fs::create_dir(&tomb).unwrap();
    std::fs::write(tomb.join("spec.json"), serde_json::to_vec(&spec("gone")).unwrap()).unwrap();
    // A folder without a spec is not a collection either.
    std::fs::create_dir(dir.path().join("stray")).unwrap();
    let names = |c: &EmbeddedCatalog| c.list().unwrap().into_iter().map(|i| i.spec.name).collect::<Vec<_>>();
    assert_eq!(names(&catalog), vec!["kept"]);
    assert!(matches!(catalog.open("stray"), Err(RagError::UnknownCollection(_))));
    let reopened = EmbeddedCatalog::open(dir.path()).unwrap();
    assert!(!half.exists() && !tomb.exists(), "swept on open");
    assert_eq!(names(&reopened), vec!["kept"]);
    // A file where the root should be is refused with a message.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(EmbeddedCatalog::open(&file).err().unwrap().to_string().contains("not a folder"));
    // Specs the store cannot hold.
    for bad in [lamina_rag::CollectionSpec { dimensions: 0, ..spec("z") }, lamina_rag::CollectionSpec { chunk_overlap: 200, ..spec("z") }] {
        assert!(matches!(catalog.create(bad), Err(RagError::InvalidInput(_))));
    }
    assert!(names(&catalog).iter().all(|n| n != "z"));
}

#[test]
fn stored_bytes_are_the_bytes_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::open(dir.path()).unwrap();
    let mut store = catalog.create_store(spec("sized")).unwrap();
    store.apply(corpus()).unwrap();
    let on_disk: u64 = std::fs::read_dir(store.dir()).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert_eq!(store.info().unwrap().stored_bytes, Some(on_disk));
    assert!(on_disk > 4 * 4 * 4, "the vectors at least");
}

/// Unit vectors from a seeded generator.
fn random_unit(seed: &mut u64) -> Vec<f32> {
    let v: Vec<f32> = (0..conformance::DIMS)
        .map(|_| {
            *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((*seed >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    conformance::unit(&v)
}

#[test]
fn the_vector_graph_is_saved_with_the_snapshot_and_rebuilt_when_stale_or_damaged() {
    let dir = tempfile::tempdir().unwrap();
    let catalog = EmbeddedCatalog::with_options(dir.path(), EmbeddedOptions { threads: 2, ..EmbeddedOptions::default() }).unwrap();
    let mut store = catalog.create_store(spec("graph")).unwrap();
    // 12,000 vectors: past the 10,000 below which search is exact, so a graph is built.
    let mut seed = 7u64;
    let mut stored = Vec::new();
    for s in 0..120 {
        let chunks: Vec<_> = (0..100)
            .map(|c| {
                let v = random_unit(&mut seed);
                stored.push(v.clone());
                chunk(&format!("chunk {c} of source {s}"), 0, None, v)
            })
            .collect();
        store.apply(vec![Change::Put { source: source(&format!("/s/{s:03}"), "h", &[]), chunks }]).unwrap();
    }
    assert!(store.info().unwrap().vector_index.starts_with("hnsw"), "{}", store.info().unwrap().vector_index);
    store.compact().unwrap();
    let d = store.dir().to_path_buf();
    let queries: Vec<Vec<f32>> = (0..20).map(|_| random_unit(&mut seed)).collect();
    let want: Vec<_> = queries.iter().map(|q| store.vector_search(q, 10, &Filter::default()).unwrap()).collect();
    drop(store);

    // Saved and read back: the same graph, the same answers.
    let store = catalog.open_store("graph").unwrap();
    assert!(store.vector_index_loaded());
    assert!(store.info().unwrap().vector_index.starts_with("hnsw"));
    for (q, w) in queries.iter().zip(&want) {
        assert_eq!(&store.vector_search(q, 10, &Filter::default()).unwrap(), w);
    }
    drop(store);

    // Damaged, missing or of an older snapshot: rebuilt from the snapshot's vectors.
    let idx = d.join("vectors.idx");
    let good = std::fs::read(&idx).unwrap();
    let mut bad = good.clone();
    let at = bad.len() / 3;
    bad[at] ^= 0x10;
    std::fs::write(&idx, &bad).unwrap();
    let check = |store: &lamina_rag::store::EmbeddedStore| {
        assert!(!store.vector_index_loaded());
        assert_eq!(store.info().unwrap().chunks, 12_000);
        // A stored vector finds its own chunk first.
        for i in [0, 4_321, 11_999] {
            let top = store.vector_search(&stored[i], 1, &Filter::default()).unwrap();
            assert!((top[0].1 - 1.0).abs() < 1e-5, "vector {i}: {top:?}");
        }
    };
    check(&catalog.open_store("graph").unwrap());
    std::fs::remove_file(&idx).unwrap();
    check(&catalog.open_store("graph").unwrap());
    std::fs::write(&idx, &good).unwrap();
    let mut store = catalog.open_store("graph").unwrap();
    assert!(store.vector_index_loaded());
    store.compact().unwrap();
    drop(store);
    std::fs::write(&idx, &good).unwrap();
    check(&catalog.open_store("graph").unwrap());
}
