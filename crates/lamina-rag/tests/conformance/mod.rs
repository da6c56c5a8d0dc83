//! The contract every collection back-end keeps, as one suite over `&dyn Catalog`: the
//! embedded store runs it (tests/embedded.rs) and so does PostgreSQL (tests/postgres.rs).
//! Vectors are built by hand, so no model is needed: [`TableEmbedder`] gives each query the
//! vector the test chose for it, and the expected results follow from those vectors.
//!
//! Each check takes a `prefix` for its collection names, so back-ends whose catalogs are
//! shared (one database) can run the checks side by side.

#![allow(dead_code)]

use lamina_rag::embed::EmbedKind;
use lamina_rag::store::{Catalog, Change, Store};
use lamina_rag::{search, ChunkId, CollectionSpec, Condition, Filter, Metadata, NewChunk, RagError, SearchMode, SearchRequest, SourceRecord, TextEmbedder};
use serde_json::json;

pub const MODEL: &str = "table-model";
pub const DIMS: usize = 4;

/// Unit vectors along, and between, the axes of a 4-d space.
pub fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; DIMS];
    v[i] = 1.0;
    v
}

pub fn unit(v: &[f32]) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / n).collect()
}

/// An embedder that looks texts up in a table the test wrote: the queries' vectors are the
/// test's choice, so which chunk is nearest is known without a model.
pub struct TableEmbedder {
    pub model: String,
    pub dims: usize,
    pub table: Vec<(&'static str, Vec<f32>)>,
}

impl TableEmbedder {
    pub fn new(table: Vec<(&'static str, Vec<f32>)>) -> TableEmbedder {
        TableEmbedder { model: MODEL.into(), dims: DIMS, table }
    }
}

impl TextEmbedder for TableEmbedder {
    fn model_id(&self) -> &str {
        &self.model
    }
    fn dimensions(&self) -> usize {
        self.dims
    }
    fn max_tokens(&self) -> usize {
        512
    }
    fn embed(&self, texts: &[&str], _kind: EmbedKind) -> lamina_rag::Result<Vec<Vec<f32>>> {
        texts
            .iter()
            .map(|t| self.table.iter().find(|(k, _)| k == t).map(|(_, v)| v.clone()).ok_or_else(|| RagError::Embed(format!("no vector for `{t}`"))))
            .collect()
    }
}

pub fn spec(name: &str) -> CollectionSpec {
    CollectionSpec::new(name, MODEL, DIMS)
}

pub fn source(key: &str, hash: &str, meta: &[(&str, serde_json::Value)]) -> SourceRecord {
    let metadata: Metadata = meta.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    SourceRecord { source: key.into(), content_hash: hash.into(), bytes: 100, chunks: 0, added_at: 1_700_000_000, metadata }
}

pub fn chunk(text: &str, start: u64, heading: Option<&str>, vector: Vec<f32>) -> NewChunk {
    NewChunk { text: text.into(), byte_range: start..start + text.len() as u64, heading: heading.map(str::to_string), vector }
}

/// The three sources most checks start from:
/// - `/docs/guide.md` (kind markdown, lang en): a volcano chunk along axis 0, a glacier chunk along axis 1;
/// - `/docs/notes.txt` (kind text, lang en): a desert chunk along axis 2;
/// - `/other/faq.md` (kind markdown, lang fr): a river chunk along axis 3.
pub fn corpus() -> Vec<Change> {
    vec![
        Change::Put {
            source: source("/docs/guide.md", "aa11", &[("kind", json!("markdown")), ("lang", json!("en"))]),
            chunks: vec![
                chunk("Volcano eruptions throw ash high into the sky.", 0, Some("Fire"), axis(0)),
                chunk("A glacier moves slowly down the valley.", 48, Some("Ice"), axis(1)),
            ],
        },
        Change::Put {
            source: source("/docs/notes.txt", "bb22", &[("kind", json!("text")), ("lang", json!("en"))]),
            chunks: vec![chunk("The desert is dry and hot at noon.", 0, None, axis(2))],
        },
        Change::Put {
            source: source("/other/faq.md", "cc33", &[("kind", json!("markdown")), ("lang", json!("fr"))]),
            chunks: vec![chunk("The river floods the plain every spring.", 0, Some("Water"), axis(3))],
        },
    ]
}

fn texts(store: &dyn Store, ids: &[ChunkId]) -> Vec<String> {
    store.chunks(ids).unwrap().into_iter().map(|c| c.text).collect()
}

fn first_words(hits: &[lamina_rag::Hit]) -> Vec<String> {
    hits.iter().map(|h| h.chunk.text.split_whitespace().next().unwrap_or("").to_string()).collect()
}

/// Create, open, list, delete, and their errors.
pub fn catalog_lifecycle(catalog: &dyn Catalog, prefix: &str) {
    let a = format!("{prefix}-life-a");
    let b = format!("{prefix}-life-b");
    for n in [&a, &b] {
        let _ = catalog.delete(n);
    }
    let store = catalog.create(spec(&a)).unwrap();
    assert_eq!(store.spec(), &spec(&a));
    let info = store.info().unwrap();
    assert_eq!((info.sources, info.chunks), (0, 0));
    drop(store);
    catalog.create(CollectionSpec { chunk_tokens: 100, chunk_overlap: 10, ..spec(&b) }).unwrap();

    assert!(matches!(catalog.create(spec(&a)), Err(RagError::CollectionExists(n)) if n == a));
    assert!(matches!(catalog.open(&format!("{prefix}-life-missing")), Err(RagError::UnknownCollection(_))));
    assert!(matches!(catalog.open("bad name/x"), Err(RagError::InvalidName(_))));
    assert!(matches!(catalog.create(spec("../escape")), Err(RagError::InvalidName(_))));

    let listed: Vec<_> = catalog.list().unwrap().into_iter().filter(|i| i.spec.name.starts_with(&format!("{prefix}-life-"))).collect();
    assert_eq!(listed.iter().map(|i| i.spec.name.as_str()).collect::<Vec<_>>(), vec![a.as_str(), b.as_str()], "listed by name");
    assert_eq!((listed[1].spec.chunk_tokens, listed[1].spec.chunk_overlap), (100, 10), "the spec is kept");
    assert_eq!(catalog.open(&b).unwrap().spec().chunk_tokens, 100);

    catalog.delete(&a).unwrap();
    assert!(matches!(catalog.open(&a), Err(RagError::UnknownCollection(_))));
    assert!(matches!(catalog.delete(&a), Err(RagError::UnknownCollection(_))));
    assert!(!catalog.list().unwrap().iter().any(|i| i.spec.name == a));
    // The name is free again.
    catalog.create(spec(&a)).unwrap();
    for n in [&a, &b] {
        catalog.delete(n).unwrap();
    }
}

/// Puts, replacements, removals, and what the store reports of them.
pub fn apply_replace_remove(catalog: &dyn Catalog, prefix: &str) {
    let name = format!("{prefix}-apply");
    let _ = catalog.delete(&name);
    let mut store = catalog.create(spec(&name)).unwrap();
    store.apply(corpus()).unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.sources, info.chunks), (3, 4));
    let keys: Vec<_> = store.sources().unwrap().into_iter().map(|s| s.source).collect();
    assert_eq!(keys, vec!["/docs/guide.md", "/docs/notes.txt", "/other/faq.md"], "ordered by key");
    let guide = store.source("/docs/guide.md").unwrap().unwrap();
    assert_eq!((guide.content_hash.as_str(), guide.bytes, guide.chunks, guide.added_at), ("aa11", 100, 2, 1_700_000_000));
    assert_eq!(guide.metadata.get("lang"), Some(&json!("en")));
    assert!(store.source("/nowhere").unwrap().is_none());

    // The chunks come back as stored: text, byte range, heading, source metadata.
    let hit = store.vector_search(&axis(1), 1, &Filter::default()).unwrap();
    let rec = &store.chunks(&[hit[0].0]).unwrap()[0];
    assert_eq!(rec.text, "A glacier moves slowly down the valley.");
    assert_eq!((rec.byte_range.clone(), rec.heading.as_deref(), rec.source.as_str()), (48..87, Some("Ice"), "/docs/guide.md"));
    assert_eq!(rec.metadata.get("kind"), Some(&json!("markdown")));
    let old_ids: Vec<ChunkId> = store.vector_search(&axis(0), 10, &Filter::default()).unwrap().into_iter().map(|h| h.0).collect();

    // Replacing a source drops its old chunks.
    let replaced = Change::Put {
        source: source("/docs/guide.md", "aa12", &[("kind", json!("markdown"))]),
        chunks: vec![chunk("Lava cools into black basalt.", 0, Some("Fire"), axis(0))],
    };
    store.apply(vec![replaced]).unwrap();
    let info = store.info().unwrap();
    assert_eq!((info.sources, info.chunks), (3, 3));
    let guide = store.source("/docs/guide.md").unwrap().unwrap();
    assert_eq!((guide.content_hash.as_str(), guide.chunks), ("aa12", 1));
    assert_eq!(guide.metadata.get("lang"), None, "the new metadata replaces the old");
    let now = store.vector_search(&axis(1), 4, &Filter::default()).unwrap();
    assert!(!texts(store.as_ref(), &now.iter().map(|h| h.0).collect::<Vec<_>>()).iter().any(|t| t.contains("glacier")));
    let still: Vec<_> = store.chunks(&old_ids).unwrap().into_iter().filter(|c| c.source == "/docs/guide.md").collect();
    assert!(still.is_empty(), "old chunk ids are gone: {still:?}");
    assert!(store.keyword_search("glacier", 5, &Filter::default()).unwrap().is_empty());

    // Within one batch, changes apply in order.
    store
        .apply(vec![
            Change::Put { source: source("/tmp/x", "1", &[]), chunks: vec![chunk("first version", 0, None, axis(2))] },
            Change::Remove { source: "/tmp/x".into() },
            Change::Put { source: source("/tmp/x", "3", &[]), chunks: vec![chunk("third version", 0, None, axis(2))] },
        ])
        .unwrap();
    assert_eq!(store.source("/tmp/x").unwrap().unwrap().content_hash, "3");
    let k = store.keyword_search("version", 5, &Filter::default()).unwrap();
    assert_eq!(texts(store.as_ref(), &k.iter().map(|h| h.0).collect::<Vec<_>>()), vec!["third version"]);

    // Removal, also of what is absent.
    store.apply(vec![Change::Remove { source: "/docs/notes.txt".into() }, Change::Remove { source: "/never/there".into() }]).unwrap();
    assert!(store.source("/docs/notes.txt").unwrap().is_none());
    assert!(store.keyword_search("desert", 5, &Filter::default()).unwrap().is_empty());
    // A source with no chunks is still a source (an empty batch is a no-op).
    store.apply(vec![Change::Put { source: source("/empty", "e", &[]), chunks: vec![] }]).unwrap();
    store.apply(vec![]).unwrap();
    assert_eq!(store.source("/empty").unwrap().unwrap().chunks, 0);
    let info = store.info().unwrap();
    assert_eq!((info.sources, info.chunks), (4, 3));
    drop(store);
    catalog.delete(&name).unwrap();
}

/// Vector, keyword and hybrid search through the crate's `search()`, with filters.
pub fn search_modes_and_filters(catalog: &dyn Catalog, prefix: &str) {
    let name = format!("{prefix}-search");
    let _ = catalog.delete(&name);
    let mut store = catalog.create(spec(&name)).unwrap();
    store.apply(corpus()).unwrap();
    let embedder = TableEmbedder::new(vec![
        ("hot mountains", unit(&[1.0, 0.0, 0.6, 0.0])),
        ("glacier", axis(1)),
        ("river", axis(3)),
        ("desert", unit(&[0.0, 0.0, 0.0, 1.0])),
    ]);
    let req = |q: &str, k: usize, mode: SearchMode| SearchRequest::new(q, k, mode);

    // Vector: nearest by cosine, best first, with the similarity.
    let hits = search(store.as_ref(), &embedder, &req("hot mountains", 3, SearchMode::Vector)).unwrap();
    assert_eq!(hits.len(), 3);
    assert_eq!(first_words(&hits)[..2], ["Volcano", "The"], "the chunks with a positive cosine are ahead of the orthogonal ones");
    assert!((hits[0].score - 1.0 / 1.36f32.sqrt()).abs() < 1e-4, "cosine of the query and axis 0: {}", hits[0].score);
    assert!((hits[1].score - 0.6 / 1.36f32.sqrt()).abs() < 1e-4);
    assert!(hits[1].chunk.text.contains("desert"));
    assert_eq!((hits[0].vector_rank, hits[0].keyword_rank), (Some(1), None));
    assert!(hits.windows(2).all(|w| w[0].score >= w[1].score));

    // Keyword: the one chunk holding the word.
    let hits = search(store.as_ref(), &embedder, &req("glacier", 5, SearchMode::Keyword)).unwrap();
    assert_eq!(hits.len(), 1);
    assert!(hits[0].chunk.text.contains("glacier"));
    assert_eq!((hits[0].keyword_rank, hits[0].similarity), (Some(1), None));
    assert!(search(store.as_ref(), &embedder, &req("xylophone", 5, SearchMode::Keyword)).unwrap().is_empty());

    // Hybrid: "desert" is the river chunk's vector (axis 3) but the desert chunk's word;
    // both come first, each ranked first by one side.
    let hits = search(store.as_ref(), &embedder, &req("desert", 2, SearchMode::Hybrid)).unwrap();
    let mut got: Vec<_> = hits.iter().map(|h| h.chunk.text.clone()).collect();
    got.sort();
    assert_eq!(got, vec!["The desert is dry and hot at noon.", "The river floods the plain every spring."]);
    let river = hits.iter().find(|h| h.chunk.text.contains("river")).unwrap();
    assert_eq!(river.vector_rank, Some(1));
    let desert = hits.iter().find(|h| h.chunk.text.contains("desert")).unwrap();
    assert_eq!(desert.keyword_rank, Some(1));

    // Filters: on metadata, on the source's prefix, combined; k bounds the answer.
    let mut r = req("hot mountains", 10, SearchMode::Vector);
    r.filter = Filter(vec![Condition::Eq { key: "kind".into(), value: json!("text") }]);
    let hits = search(store.as_ref(), &embedder, &r).unwrap();
    assert_eq!(hits.iter().map(|h| h.chunk.source.as_str()).collect::<Vec<_>>(), vec!["/docs/notes.txt"]);
    r.filter = Filter(vec![Condition::Prefix { key: "source".into(), prefix: "/docs/".into() }]);
    let hits = search(store.as_ref(), &embedder, &r).unwrap();
    assert_eq!(hits.len(), 3);
    assert!(hits.iter().all(|h| h.chunk.source.starts_with("/docs/")));
    r.filter = Filter(vec![Condition::Eq { key: "kind".into(), value: json!("markdown") }, Condition::Ne { key: "lang".into(), value: json!("fr") }]);
    let hits = search(store.as_ref(), &embedder, &r).unwrap();
    assert_eq!(hits.iter().map(|h| h.chunk.source.as_str()).collect::<Vec<_>>(), vec!["/docs/guide.md", "/docs/guide.md"]);
    r.filter = Filter(vec![Condition::In { key: "lang".into(), values: vec![json!("fr"), json!("de")] }]);
    assert_eq!(search(store.as_ref(), &embedder, &r).unwrap().len(), 1);
    let mut kf = req("river", 5, SearchMode::Keyword);
    kf.filter = Filter(vec![Condition::Eq { key: "lang".into(), value: json!("en") }]);
    assert!(search(store.as_ref(), &embedder, &kf).unwrap().is_empty(), "the filter applies to keyword search too");
    kf.mode = SearchMode::Hybrid;
    assert!(search(store.as_ref(), &embedder, &kf).unwrap().iter().all(|h| h.chunk.metadata.get("lang") == Some(&json!("en"))));
    assert_eq!(search(store.as_ref(), &embedder, &req("hot mountains", 2, SearchMode::Vector)).unwrap().len(), 2);

    // A model that is not the collection's is refused, naming both.
    let other = TableEmbedder { model: "other-model".into(), dims: 3, table: vec![("glacier", vec![0.0, 1.0, 0.0])] };
    let e = search(store.as_ref(), &other, &req("glacier", 3, SearchMode::Vector)).unwrap_err();
    assert!(matches!(e, RagError::DimensionMismatch { expected: 4, got: 3, .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(MODEL) && msg.contains("other-model"), "{msg}");
    drop(store);
    catalog.delete(&name).unwrap();
}

/// A batch with one bad vector is refused whole, and nothing changes.
pub fn bad_batch_changes_nothing(catalog: &dyn Catalog, prefix: &str) {
    let name = format!("{prefix}-badbatch");
    let _ = catalog.delete(&name);
    let mut store = catalog.create(spec(&name)).unwrap();
    store.apply(corpus()).unwrap();
    let before = (store.info().unwrap().chunks, store.sources().unwrap());
    let batch = vec![
        Change::Remove { source: "/docs/notes.txt".into() },
        Change::Put { source: source("/new/ok", "n1", &[]), chunks: vec![chunk("fine", 0, None, axis(0))] },
        Change::Put { source: source("/new/bad", "n2", &[]), chunks: vec![chunk("three dims", 0, None, vec![1.0, 0.0, 0.0])] },
    ];
    let e = store.apply(batch).unwrap_err();
    assert!(matches!(e, RagError::InvalidInput(_) | RagError::DimensionMismatch { .. }), "{e}");
    assert_eq!((store.info().unwrap().chunks, store.sources().unwrap()), before, "nothing of the batch is applied");
    let nan = vec![Change::Put { source: source("/new/nan", "n3", &[]), chunks: vec![chunk("nan", 0, None, vec![f32::NAN, 0.0, 0.0, 0.0])] }];
    assert!(store.apply(nan).is_err());
    drop(store);
    // Nor after reopening.
    let store = catalog.open(&name).unwrap();
    assert_eq!((store.info().unwrap().chunks, store.sources().unwrap()), before);
    drop(store);
    catalog.delete(&name).unwrap();
}

/// What was applied is there after reopening through a fresh catalog, ids and all.
pub fn reopen_round_trip(catalog: &dyn Catalog, reopen: &dyn Fn() -> Box<dyn Catalog>, prefix: &str) {
    let name = format!("{prefix}-reopen");
    let _ = catalog.delete(&name);
    let mut store = catalog.create(spec(&name)).unwrap();
    store.apply(corpus()).unwrap();
    store
        .apply(vec![Change::Put {
            source: source("/docs/notes.txt", "bb23", &[("kind", json!("text"))]),
            chunks: vec![chunk("Dunes shift in the wind.", 5, None, axis(2))],
        }])
        .unwrap();
    let q = unit(&[0.3, 0.2, 0.9, 0.1]);
    let before_hits = store.vector_search(&q, 10, &Filter::default()).unwrap();
    let before_kw = store.keyword_search("the", 10, &Filter::default()).unwrap();
    let before_sources = store.sources().unwrap();
    let ids: Vec<_> = before_hits.iter().map(|h| h.0).collect();
    let before_chunks = store.chunks(&ids).unwrap();
    drop(store);

    let again = reopen();
    let store = again.open(&name).unwrap();
    assert_eq!(store.spec(), &spec(&name));
    assert_eq!(store.sources().unwrap(), before_sources);
    let hits = store.vector_search(&q, 10, &Filter::default()).unwrap();
    assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), ids, "same chunks, same ids, same order");
    for (a, b) in hits.iter().zip(&before_hits) {
        assert!((a.1 - b.1).abs() < 1e-5);
    }
    assert_eq!(store.chunks(&ids).unwrap(), before_chunks);
    let kw: Vec<_> = store.keyword_search("the", 10, &Filter::default()).unwrap().into_iter().map(|h| h.0).collect();
    assert_eq!(kw, before_kw.iter().map(|h| h.0).collect::<Vec<_>>());
    let info = store.info().unwrap();
    assert_eq!((info.sources, info.chunks), (3, 4));
    drop(store);
    again.delete(&name).unwrap();
}

/// Every check, in turn.
pub fn run_all(catalog: &dyn Catalog, reopen: &dyn Fn() -> Box<dyn Catalog>, prefix: &str) {
    catalog_lifecycle(catalog, prefix);
    apply_replace_remove(catalog, prefix);
    search_modes_and_filters(catalog, prefix);
    bad_batch_changes_nothing(catalog, prefix);
    reopen_round_trip(catalog, reopen, prefix);
}
