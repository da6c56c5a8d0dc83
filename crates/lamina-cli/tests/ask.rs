//! `lamina ask` end to end: a collection of small documents, each holding one distinct fact,
//! embedded with the real all-MiniLM-L6-v2; the real binary answers with the default chat
//! model and cites the document that holds the answer. A question none of them answers
//! gets "I don't know" without the chat model being loaded. `--rerank` reorders the hits with
//! the chat model and keeps the right source first.

use lamina_rag::embed::{EmbedKind, EngineEmbedder, TextEmbedder};
use lamina_rag::store::{open_catalog, Change};
use lamina_rag::{CollectionSpec, NewChunk, SourceRecord};
use serde_json::Value;
use std::process::Command;
use std::sync::Arc;

const DOCS: &[(&str, &str, Option<&str>)] = &[
    ("zorbium.md", "Zorbium is a blue metal mined only near the town of Kestrel Falls. The melting point of zorbium is 1234 degrees Celsius.", Some("Zorbium")),
    ("bakery.txt", "The Halloway bakery on Mill Street opens at six in the morning and is known for its rye bread with caraway seeds.", None),
    ("river.txt", "The river Ossel flows 212 kilometres from the Dunmoor hills to the northern sea, passing through three lakes.", None),
    ("chess.txt", "Marta Lindqvist won the Ostrava chess open in 1987 with a queen's gambit in the final round.", None),
    ("garden.md", "In a cold climate, plant tomato seedlings outdoors only after the last frost, usually in late May.", Some("Tomatoes")),
];

/// A collection `facts` in `dir`, one chunk per document, made through the library.
fn make_collection(dir: &std::path::Path) {
    let pool = Arc::new(lamina_kernels::ThreadPool::new(2));
    let embedder = lamina_engine::resolve::load_embedder(None, lamina_model::Precision::Native, pool, None, &mut |m| eprintln!("{m}")).unwrap();
    let e = EngineEmbedder { model_id: lamina_core::registry::DEFAULT_EMBEDDING_MODEL.into(), embedder: Arc::new(embedder) };
    let catalog = open_catalog(dir.to_str().unwrap()).unwrap();
    let mut store = catalog.create(CollectionSpec::new("facts", e.model_id(), e.dimensions())).unwrap();
    let texts: Vec<&str> = DOCS.iter().map(|d| d.1).collect();
    let vectors = e.embed(&texts, EmbedKind::Passage).unwrap();
    let changes = DOCS
        .iter()
        .zip(vectors)
        .map(|((name, text, heading), vector)| Change::Put {
            source: SourceRecord {
                source: format!("/docs/{name}"),
                content_hash: String::new(),
                bytes: text.len() as u64,
                chunks: 1,
                added_at: 0,
                metadata: Default::default(),
            },
            chunks: vec![NewChunk { text: text.to_string(), byte_range: 0..text.len() as u64, heading: heading.map(str::to_string), vector }],
        })
        .collect();
    store.apply(changes).unwrap();
}

fn ask(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .arg("ask")
        .args(args)
        .args(["--collections", dir.to_str().unwrap(), "--threads", "2"])
        .env_remove("LAMINA_COLLECTIONS")
        .output()
        .unwrap()
}

#[test]
fn ask_cites_the_document_that_holds_the_answer_and_knows_when_none_does() {
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    make_collection(dir.path());

    let out = ask(dir.path(), &["facts", "What is the melting point of zorbium?", "--json", "--temperature", "0", "-n", "40"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nothing_relevant"], false);
    assert_eq!(v["hits"][0]["source"], "/docs/zorbium.md", "retrieval ranks the document with the fact first: {v}");
    let first = &v["citations"][0];
    assert_eq!((first["n"].as_u64(), first["source"].as_str(), first["heading"].as_str()), (Some(1), Some("/docs/zorbium.md"), Some("Zorbium")));
    assert_eq!(first["byte_range"]["end"].as_u64(), Some(DOCS[0].1.len() as u64));
    let answer = v["answer"].as_str().unwrap();
    assert!(answer.contains("1234") || answer.contains("1,234"), "the answer gives the fact: {answer:?}");
    // Every source the answer cites is one the prompt held.
    let n = v["citations"].as_array().unwrap().len() as u64;
    assert!(v["cited"].as_array().unwrap().iter().all(|c| (1..=n).contains(&c.as_u64().unwrap())), "{v}");

    // Text output: the streamed answer, then the sources as path:bytes a–b (heading).
    let out = ask(dir.path(), &["facts", "What is the melting point of zorbium?", "--temperature", "0", "-n", "40"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let zorbium = format!("/docs/zorbium.md:bytes 0–{} (Zorbium)", DOCS[0].1.len());
    assert!(text.contains(&format!("[1] {zorbium}")), "{text}");

    // Reranked by the chat model: the same first source, every used hit with its reranker
    // score, and the answer still from the right document.
    let out = ask(
        dir.path(),
        &["facts", "When should tomato seedlings go outdoors in a cold climate?", "--rerank", "--json", "--temperature", "0", "-n", "30", "-k", "2"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hits = v["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 2, "-k 2 after reranking 5 candidates: {v}");
    assert_eq!(hits[0]["source"], "/docs/garden.md", "{v}");
    assert!(hits.iter().all(|h| h["rerank_score"].is_number()), "{v}");

    // Off topic: nothing passes the threshold, and the chat model (here one that does not
    // exist) is never loaded.
    let out = ask(dir.path(), &["facts", "Who painted the Mona Lisa?", "/nonexistent/chat-model.gguf", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["nothing_relevant"], true, "{v}");
    assert!(v["answer"].as_str().unwrap().starts_with("I don't know"), "{v}");
    assert!(v["hits"][0]["similarity"].as_f64().unwrap() < lamina_rag::answer::DEFAULT_THRESHOLD as f64);

    // The same question with the threshold off does call the model: the bogus path is an error.
    let out = ask(dir.path(), &["facts", "Who painted the Mona Lisa?", "/nonexistent/chat-model.gguf", "--threshold", "-1"]);
    assert!(!out.status.success());

    // Bad input: an unknown collection, an empty question, a threshold out of range.
    for (args, want) in [
        (&["nope", "q"][..], "no collection named `nope`"),
        (&["facts", " "][..], "the question is empty"),
        (&["facts", "q", "--threshold", "2"][..], "between -1 and 1"),
        (&["facts", "q", "--rerank", "1"][..], "at least 2 candidates"),
        (&["facts", "q", "--rerank", "--rerank-weight", "1.5"][..], "between 0 and 1"),
    ] {
        let out = ask(dir.path(), args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{args:?}: {err}");
    }
}
