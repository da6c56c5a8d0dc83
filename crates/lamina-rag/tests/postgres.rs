//! The PostgreSQL + pgvector back-end against a real server (see `pg_support`): the
//! back-end conformance suite, then what only PostgreSQL has to get right — filters as SQL,
//! full-text search, the HNSW index under a filter, and what happens when the server is
//! down or dies in the middle of a batch.

#![cfg(feature = "postgres")]

mod conformance;
mod pg_support;

use lamina_rag::store::postgres::PgCatalog;
use lamina_rag::store::{Catalog, Change, Store};
use lamina_rag::{ChunkId, CollectionSpec, Condition, Filter, Metadata, NewChunk, RagError, SourceRecord};
use serde_json::json;

const DIMS: usize = 4;

/// A unit vector whose cosine similarity to [`QUERY`] is `sim`.
fn vector(sim: f32) -> Vec<f32> {
    let rest = ((1.0 - sim * sim) / 3.0).sqrt();
    vec![sim, rest, rest, rest]
}
const QUERY: [f32; DIMS] = [1.0, 0.0, 0.0, 0.0];

fn source(key: &str, metadata: serde_json::Value) -> SourceRecord {
    let metadata: Metadata = serde_json::from_value(metadata).unwrap();
    SourceRecord { source: key.into(), content_hash: format!("sha-{key}"), bytes: 100, chunks: 0, added_at: 1_700_000_000, metadata }
}

fn chunk(text: &str, sim: f32) -> NewChunk {
    NewChunk { text: text.into(), byte_range: 10..10 + text.len() as u64, heading: Some("Top > Sub".into()), vector: vector(sim) }
}

/// Four chunks in three sources; the similarity to [`QUERY`] is each chunk's number.
fn sample() -> Vec<Change> {
    vec![
        Change::Put {
            source: source("/docs/guide.md", json!({"kind": "markdown", "year": 2024})),
            chunks: vec![chunk("Installing lamina from source needs cargo.", 0.9), chunk("The server answers chat completions.", 0.1)],
        },
        Change::Put { source: source("/docs/50%_off.txt", json!({"kind": "text", "year": "2024"})), chunks: vec![chunk("Apples and pears are fruit.", 0.5)] },
        Change::Put { source: source("/notes/todo.md", json!({"kind": "markdown"})), chunks: vec![chunk("Remember to install the database.", -0.3)] },
    ]
}

/// The texts of the chunks `store` finds for `filter`, best first.
fn texts(store: &dyn Store, hits: &[(ChunkId, f32)]) -> Vec<String> {
    let ids: Vec<ChunkId> = hits.iter().map(|h| h.0).collect();
    store.chunks(&ids).unwrap().into_iter().map(|c| c.text).collect()
}

fn vector_texts(store: &dyn Store, filter: Vec<Condition>) -> Vec<String> {
    texts(store, &store.vector_search(&QUERY, 10, &Filter(filter)).unwrap())
}

const GUIDE_1: &str = "Installing lamina from source needs cargo.";
const GUIDE_2: &str = "The server answers chat completions.";
const FRUIT: &str = "Apples and pears are fruit.";
const TODO: &str = "Remember to install the database.";

/// What the conformance suite leaves out: a spec pgvector cannot hold, and a store whose
/// collection another client deleted.
fn check_catalog(cat: &dyn Catalog) {
    assert!(matches!(cat.create(CollectionSpec::new("zero", "m", 0)), Err(RagError::InvalidInput(_))));
    assert!(matches!(cat.create(CollectionSpec::new("huge", "m", 16_001)), Err(RagError::InvalidInput(_))));
    let wide = cat.create(CollectionSpec::new("wide", "m", 3000)).unwrap();
    assert!(wide.info().unwrap().vector_index.starts_with("exact"), "pgvector's HNSW covers at most 2,000 dimensions");
    cat.delete("wide").unwrap();

    cat.create(CollectionSpec::new("cat-a", "test-model", DIMS)).unwrap();
    let mut held = cat.open("cat-a").unwrap();
    PgCatalog::connect(&cat_url(cat)).unwrap().delete("cat-a").unwrap();
    assert!(matches!(cat.open("cat-a"), Err(RagError::UnknownCollection(_))));
    assert!(matches!(held.apply(sample()), Err(RagError::UnknownCollection(n)) if n == "cat-a"), "a store whose collection was deleted");
    assert!(matches!(held.vector_search(&QUERY, 3, &Filter::default()), Err(RagError::UnknownCollection(_))));
}

/// Batches, records, vector and keyword search with filters.
fn check_contents(cat: &dyn Catalog) {
    let mut store = cat.create(CollectionSpec::new("contents", "test-model", DIMS)).unwrap();
    store.apply(sample()).unwrap();

    let info = store.info().unwrap();
    assert_eq!((info.sources, info.chunks), (3, 4));
    assert!(info.stored_bytes.unwrap() > 0);
    let keys: Vec<String> = store.sources().unwrap().into_iter().map(|s| s.source).collect();
    assert_eq!(keys, ["/docs/50%_off.txt", "/docs/guide.md", "/notes/todo.md"], "byte order of the keys");
    let guide = store.source("/docs/guide.md").unwrap().unwrap();
    assert_eq!(guide.chunks, 2);
    assert_eq!((guide.content_hash.as_str(), guide.bytes, guide.added_at), ("sha-/docs/guide.md", 100, 1_700_000_000));
    assert_eq!(guide.metadata["year"], json!(2024));
    assert!(store.source("/docs/none.md").unwrap().is_none());

    // Vector search: similarity = cosine, best first.
    let hits = store.vector_search(&QUERY, 10, &Filter::default()).unwrap();
    let sims: Vec<f32> = hits.iter().map(|h| h.1).collect();
    for (got, want) in sims.iter().zip([0.9, 0.5, 0.1, -0.3]) {
        assert!((got - want).abs() < 1e-5, "similarities {sims:?}");
    }
    assert_eq!(texts(store.as_ref(), &hits), [GUIDE_1, FRUIT, GUIDE_2, TODO]);
    assert_eq!(store.vector_search(&QUERY, 2, &Filter::default()).unwrap().len(), 2);
    assert!(store.vector_search(&QUERY, 0, &Filter::default()).unwrap().is_empty());
    assert!(matches!(store.vector_search(&[1.0, 0.0], 3, &Filter::default()), Err(RagError::InvalidInput(_))));

    // Records come back in the order asked, without the ids that are not there.
    let records = store.chunks(&[hits[2].0, ChunkId(999_999), hits[0].0]).unwrap();
    assert_eq!(records.iter().map(|c| c.text.as_str()).collect::<Vec<_>>(), [GUIDE_2, GUIDE_1]);
    assert_eq!(records[1].source, "/docs/guide.md");
    assert_eq!(records[1].byte_range, 10..10 + GUIDE_1.len() as u64);
    assert_eq!(records[1].heading.as_deref(), Some("Top > Sub"));
    assert_eq!(records[1].metadata["kind"], json!("markdown"));

    // Filters, on the source key and on metadata (compared as JSON).
    let s = |k: &str, v: serde_json::Value| Condition::Eq { key: k.into(), value: v };
    let prefix = |k: &str, p: &str| Condition::Prefix { key: k.into(), prefix: p.into() };
    assert_eq!(vector_texts(store.as_ref(), vec![prefix("source", "/docs/")]), [GUIDE_1, FRUIT, GUIDE_2]);
    assert_eq!(vector_texts(store.as_ref(), vec![prefix("source", "/docs/50%_")]), [FRUIT]);
    assert!(vector_texts(store.as_ref(), vec![prefix("source", "/docs/_")]).is_empty(), "`_` is no wildcard");
    assert!(vector_texts(store.as_ref(), vec![prefix("source", "%")]).is_empty(), "`%` is no wildcard");
    assert_eq!(vector_texts(store.as_ref(), vec![s("source", json!("/notes/todo.md"))]), [TODO]);
    assert_eq!(vector_texts(store.as_ref(), vec![s("year", json!(2024))]), [GUIDE_1, GUIDE_2]);
    assert_eq!(vector_texts(store.as_ref(), vec![s("year", json!("2024"))]), [FRUIT]);
    assert_eq!(vector_texts(store.as_ref(), vec![Condition::Ne { key: "year".into(), value: json!(2024) }]), [FRUIT, TODO], "absent passes `!=`");
    assert_eq!(vector_texts(store.as_ref(), vec![Condition::In { key: "kind".into(), values: vec![json!("text"), json!("pdf")] }]), [FRUIT]);
    assert_eq!(vector_texts(store.as_ref(), vec![Condition::In { key: "source".into(), values: vec![json!("/notes/todo.md"), json!(7)] }]), [TODO]);
    assert_eq!(vector_texts(store.as_ref(), vec![prefix("kind", "mark"), s("year", json!(2024))]), [GUIDE_1, GUIDE_2]);
    assert_eq!(vector_texts(store.as_ref(), vec![prefix("year", "20")]), [FRUIT], "the string \"2024\", not the number 2024");
    assert!(vector_texts(store.as_ref(), vec![s("kind", json!("x'; DROP TABLE lamina_collections; --"))]).is_empty());

    // Keyword search: English stemming, any word counts, more words rank higher.
    let kw = |q: &str, f: Vec<Condition>| texts(store.as_ref(), &store.keyword_search(q, 10, &Filter(f)).unwrap());
    assert_eq!(kw("install cargo", vec![]), [GUIDE_1, TODO]);
    assert_eq!(kw("installs", vec![prefix("source", "/notes/")]), [TODO]);
    assert_eq!(kw("fruits?", vec![]), [FRUIT]);
    assert!(kw("the and of", vec![]).is_empty(), "stop words only");
    assert!(kw("'; DROP TABLE x; -- & | !", vec![]).is_empty());
    assert!(kw("  ", vec![]).is_empty());
    let scored = store.keyword_search("install cargo", 10, &Filter::default()).unwrap();
    assert!(scored[0].1 > scored[1].1 && scored[1].1 > 0.0, "{scored:?}");

    // Put replaces a source's chunks; ids are never reused; Remove drops a source.
    let old_ids: Vec<ChunkId> = hits.iter().map(|h| h.0).collect();
    store.apply(vec![Change::Put { source: source("/docs/guide.md", json!({"kind": "markdown"})), chunks: vec![chunk("Rewritten guide.", 0.7)] }]).unwrap();
    let hits = store.vector_search(&QUERY, 10, &Filter::default()).unwrap();
    assert_eq!(texts(store.as_ref(), &hits), ["Rewritten guide.", FRUIT, TODO]);
    assert!(hits[0].0 > *old_ids.iter().max().unwrap(), "ids only grow");
    assert_eq!(store.chunks(&old_ids).unwrap().len(), 2, "the replaced chunks are gone");
    store.apply(vec![Change::Remove { source: "/notes/todo.md".into() }, Change::Remove { source: "/never/added".into() }]).unwrap();
    assert_eq!(store.info().unwrap().chunks, 2);

    // A bad batch is refused whole.
    let bad = vec![
        Change::Put { source: source("/new/ok.md", json!({})), chunks: vec![chunk("fine", 0.2)] },
        Change::Put { source: source("/new/bad.md", json!({})), chunks: vec![NewChunk { vector: vec![1.0, 0.0], ..chunk("short", 0.0) }] },
    ];
    assert!(matches!(store.apply(bad), Err(RagError::InvalidInput(_))));
    let nul = vec![Change::Put { source: source("/new/nul.md", json!({})), chunks: vec![chunk("a\0b", 0.2)] }];
    assert!(matches!(store.apply(nul), Err(RagError::InvalidInput(_))));
    assert!(store.source("/new/ok.md").unwrap().is_none());

    // What was committed is there for a new connection.
    let again = PgCatalog::connect(&cat_url(cat)).unwrap();
    let reopened = again.open("contents").unwrap();
    assert_eq!(reopened.info().unwrap().chunks, 2);
    assert_eq!(texts(reopened.as_ref(), &reopened.vector_search(&QUERY, 10, &Filter::default()).unwrap()), ["Rewritten guide.", FRUIT]);
    cat.delete("contents").unwrap();
}

/// The HNSW index with a selective filter still returns `k` results (iterative scan), and
/// finds nearly all of the true nearest ones.
fn check_filtered_hnsw(cat: &dyn Catalog) {
    const N: usize = 3000;
    const D: usize = 16;
    let mut store = cat.create(CollectionSpec::new("hnsw", "test-model", D)).unwrap();
    assert!(store.info().unwrap().vector_index.contains("hnsw"));
    // A deterministic spread of unit vectors (xorshift), in 30 sources of 100 chunks.
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let mut all: Vec<(String, Vec<f32>)> = Vec::new();
    let mut batch = Vec::new();
    for s in 0..30 {
        let key = format!("/src/{s:02}");
        let mut chunks = Vec::new();
        for i in 0..N / 30 {
            let mut v: Vec<f32> = (0..D).map(|_| next()).collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            all.push((key.clone(), v.clone()));
            chunks.push(NewChunk { text: format!("chunk {i} of {key}"), byte_range: 0..1, heading: None, vector: v });
        }
        batch.push(Change::Put { source: source(&key, json!({ "group": s % 10 })), chunks });
    }
    store.apply(batch).unwrap();
    let query = all[17].1.clone();
    for (filter, accepts) in [
        (Filter::default(), Box::new(|_: &str| true) as Box<dyn Fn(&str) -> bool>),
        (Filter(vec![Condition::Eq { key: "source".into(), value: json!("/src/07") }]), Box::new(|k: &str| k == "/src/07")),
    ] {
        let hits = store.vector_search(&query, 20, &filter).unwrap();
        assert_eq!(hits.len(), 20, "k results with a 1/30 filter");
        let mut exact: Vec<(f32, usize)> =
            all.iter().enumerate().filter(|(_, (k, _))| accepts(k)).map(|(i, (_, v))| (v.iter().zip(&query).map(|(a, b)| a * b).sum(), i)).collect();
        exact.sort_by(|a, b| b.0.total_cmp(&a.0));
        let threshold = exact[19].0;
        let found = hits.iter().filter(|h| h.1 >= threshold - 1e-5).count();
        assert!(found >= 18, "recall@20 {found}/20 (filter {filter:?})");
        assert!(hits.windows(2).all(|w| w[0].1 >= w[1].1), "best first");
        let records = store.chunks(&hits.iter().map(|h| h.0).collect::<Vec<_>>()).unwrap();
        assert!(records.iter().all(|r| accepts(&r.source)));
    }
    cat.delete("hnsw").unwrap();
}

/// The URL the tests connect with (a catalog shows it without its password).
fn cat_url(cat: &dyn Catalog) -> String {
    let shown = cat.location();
    shown.replacen(&format!("{}@", pg_support::USER), &format!("{}:{}@", pg_support::USER, pg_support::PASSWORD), 1)
}

#[test]
fn the_collection_api_on_postgres() {
    let Some(server) = pg_support::start() else { return };
    let cat = PgCatalog::connect(&server.url()).unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!(cat.location(), format!("postgres://lamina@127.0.0.1:{}/postgres", server.port));
    assert_eq!(server.psql("SELECT extversion FROM pg_extension WHERE extname = 'vector'").split('.').take(2).collect::<Vec<_>>(), ["0", "8"]);
    let url = server.url();
    conformance::run_all(&cat, &|| Box::new(PgCatalog::connect(&url).unwrap()), "pg");
    check_catalog(&cat);
    check_contents(&cat);
    check_filtered_hnsw(&cat);
    // A second connect finds the schema in place and keeps what is there.
    cat.create(CollectionSpec::new("kept", "m", DIMS)).unwrap();
    let again = PgCatalog::connect(&server.url()).unwrap();
    assert_eq!(again.list().unwrap().len(), 1);
    assert_eq!(server.psql("SELECT value FROM lamina_meta WHERE key = 'schema_version'"), "1");
}

#[test]
fn a_server_that_is_down_is_a_clear_error_and_loses_nothing() {
    let Some(mut server) = pg_support::start() else { return };
    let url = server.url();
    let shown = format!("postgres://lamina@127.0.0.1:{}/postgres", server.port);
    let cat = PgCatalog::connect(&url).unwrap();
    let mut store = cat.create(CollectionSpec::new("durable", "m", DIMS)).unwrap();
    store.apply(sample()).unwrap();

    let wrong = url.replace(pg_support::PASSWORD, "wrong-password");
    let e = PgCatalog::connect(&wrong).err().expect("a wrong password is refused");
    let msg = e.to_string();
    assert!(matches!(e, RagError::Database { .. }) && msg.contains("password authentication failed") && msg.contains(&shown), "{msg}");
    assert!(!msg.contains("wrong-password"), "{msg}");

    server.stop();
    let down = |e: RagError| {
        let msg = e.to_string();
        assert!(matches!(e, RagError::Database { .. }), "{msg}");
        assert!(msg.contains(&shown) && !msg.contains(pg_support::PASSWORD), "names the URL without its password: {msg}");
        assert!(msg.contains("is the PostgreSQL server running"), "{msg}");
    };
    down(cat.list().unwrap_err());
    down(store.apply(vec![Change::Remove { source: "/docs/guide.md".into() }]).unwrap_err());
    down(store.vector_search(&QUERY, 3, &Filter::default()).unwrap_err());
    down(PgCatalog::connect(&url).err().unwrap());

    server.restart();
    // The same catalog and store connect again; everything committed is there.
    assert_eq!(cat.list().unwrap().len(), 1);
    assert_eq!(store.info().unwrap().chunks, 4);
    assert!(store.source("/docs/guide.md").unwrap().is_some(), "the batch tried while down did nothing");
    store.apply(vec![Change::Remove { source: "/docs/guide.md".into() }]).unwrap();
    assert_eq!(store.info().unwrap().chunks, 2);
}

#[test]
fn a_server_that_dies_mid_batch_keeps_exactly_the_committed_batches() {
    let Some(mut server) = pg_support::start() else { return };
    let url = server.url();
    let cat = PgCatalog::connect(&url).unwrap();
    let mut store = cat.create(CollectionSpec::new("crashy", "m", DIMS)).unwrap();
    store.apply(sample()).unwrap();

    // Between batches: a crash right after a commit keeps the batch.
    server.crash();
    server.restart();
    assert_eq!(store.info().unwrap().chunks, 4);

    // Mid-batch: another session locks one source's row, so the batch writes its first
    // source and then waits on the second; the server dies there.
    let table = server.psql("SELECT 'lamina_' || id || '_sources' FROM lamina_collections WHERE name = 'crashy'");
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let lock_url = url.clone();
    let locker = std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&lock_url, postgres::NoTls).unwrap();
        let mut tx = client.transaction().unwrap();
        tx.execute(&format!("SELECT 1 FROM \"{table}\" WHERE source = '/notes/todo.md' FOR UPDATE"), &[]).unwrap();
        locked_tx.send(()).unwrap();
        // Held until the server dies.
        let _ = tx.execute("SELECT pg_sleep(600)", &[]);
    });
    locked.recv().unwrap();
    let batch = vec![
        Change::Put { source: source("/new/first.md", json!({})), chunks: vec![chunk("written before the crash", 0.3)] },
        Change::Put { source: source("/notes/todo.md", json!({})), chunks: vec![chunk("never committed", 0.4)] },
    ];
    let writer = std::thread::spawn(move || store.apply(batch).map(|_| store));
    wait_for(&server, "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND application_name = 'lamina'");
    server.crash();
    let e = writer.join().unwrap().err().expect("the batch fails when the server dies");
    assert!(matches!(e, RagError::Database { .. }), "{e}");
    locker.join().unwrap();

    server.restart();
    let store = PgCatalog::connect(&url).unwrap().open("crashy").unwrap();
    let keys: Vec<String> = store.sources().unwrap().into_iter().map(|s| s.source).collect();
    assert_eq!(keys, ["/docs/50%_off.txt", "/docs/guide.md", "/notes/todo.md"], "nothing of the failed batch");
    assert_eq!(texts(store.as_ref(), &store.vector_search(&QUERY, 10, &Filter::default()).unwrap()), [GUIDE_1, FRUIT, GUIDE_2, TODO]);
}

/// Waits until `sql` (a count) is positive.
fn wait_for(server: &pg_support::PgServer, sql: &str) {
    let t0 = std::time::Instant::now();
    while server.psql(sql) == "0" {
        assert!(t0.elapsed().as_secs() < 60, "timed out waiting for `{sql}`");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}
