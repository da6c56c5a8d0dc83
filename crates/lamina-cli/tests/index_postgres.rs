//! `lamina index` on PostgreSQL + pgvector end to end: the real binary, the real
//! all-MiniLM-L6-v2, a real PostgreSQL 16 with pgvector (started by `pg_support`, shared with
//! lamina-rag's tests), selected by a `postgres://` URL in `--collections`. Then the server
//! goes down: a clear error naming the URL without its password, and nothing lost.

#[path = "../../lamina-rag/tests/pg_support/mod.rs"]
mod pg_support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(url: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
        .arg("index")
        .args(args)
        .args(["--collections", url])
        .env_remove("LAMINA_COLLECTIONS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn ok(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    assert!(out.status.success(), "lamina index {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The last stderr line of a command that must fail, without a panic.
fn fails(url: &str, args: &[&str]) -> String {
    let out = run(url, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "lamina index {args:?} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("error: "), "{stderr}");
    last
}

/// (added, replaced, unchanged, skipped) from `add`'s summary line.
fn counts(stdout: &str) -> (usize, usize, usize, usize) {
    let line = stdout.lines().last().expect("a summary line");
    let nums: Vec<usize> = line.split(':').next().unwrap().split(',').map(|part| part.split_whitespace().next().unwrap().parse().unwrap()).collect();
    (nums[0], nums[1], nums[2], nums[3])
}

fn hits(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn canonical(p: &Path) -> String {
    p.canonicalize().unwrap().to_string_lossy().into_owned()
}

#[test]
fn index_commands_on_postgres() {
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let Some(mut server) = pg_support::start() else { return };
    let url = server.url();
    let shown = format!("postgres://{}@127.0.0.1:{}/postgres", pg_support::USER, server.port);
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    let volcano = docs.join("volcano.md");
    std::fs::write(&volcano, "# Volcanoes\n\n## Eruptions\n\nMagma rises through the crust and erupts as lava and ash.\n").unwrap();
    let bread = docs.join("bread.txt");
    std::fs::write(&bread, "Knead the dough, let it rise for an hour, then bake the loaf in a hot oven.\n").unwrap();
    let tides = docs.join("tides.html");
    std::fs::write(
        &tides,
        "<html><head><title>Tides</title></head><body><h1>Tides</h1><p>The moon's gravity pulls the oceans into high and low tides.</p></body></html>",
    )
    .unwrap();
    std::fs::write(docs.join("empty.txt"), "").unwrap();
    let d = docs.to_str().unwrap();

    let last = fails(&url, &["search", "kb", "anything"]);
    assert!(last.contains("no collection named `kb`"), "{last}");
    let out = ok(&url, &["add", "kb", d, "--meta", "team=geo", "-t", "2"]);
    assert_eq!(counts(&out), (3, 0, 0, 1), "{out}");

    let info: Value = serde_json::from_str(&ok(&url, &["info", "kb", "--json"])).unwrap();
    assert!(info["vector_index"].as_str().unwrap().contains("pgvector hnsw"), "{info}");
    assert_eq!((info["spec"]["dimensions"].as_u64(), info["source_count"].as_u64()), (Some(384), Some(3)));
    assert_eq!(info["location"], shown.as_str(), "shown without the password");
    assert!(info["stored_bytes"].as_u64().unwrap() > 3 * 384 * 4);
    assert_eq!(server.psql("SELECT spec->>'embedding_model' FROM lamina_collections WHERE name = 'kb'"), "all-minilm-l6-v2", "the catalog is in the database");

    // Each mode finds the file that holds the answer.
    let v = hits(&ok(&url, &["search", "kb", "how do I bake bread at home", "-k", "3", "--mode", "vector", "--json"]));
    assert_eq!(v[0]["source"], canonical(&bread), "{v:?}");
    assert!(v[0]["similarity"].as_f64().unwrap() > 0.3);
    let v = hits(&ok(&url, &["search", "kb", "gravity", "--mode", "keyword", "--json"]));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        (&v[0]["source"], &v[0]["metadata"]["title"], &v[0]["metadata"]["team"]),
        (&Value::from(canonical(&tides)), &Value::from("Tides"), &Value::from("geo"))
    );
    let v = hits(&ok(&url, &["search", "kb", "lava erupting from a mountain", "--json"]));
    assert_eq!(v[0]["source"], canonical(&volcano), "{v:?}");
    assert!(v[0]["heading"].as_str().unwrap().starts_with("Volcanoes"), "{:?}", v[0]);
    let v = hits(&ok(&url, &["search", "kb", "lava erupting from a mountain", "--filter", "kind=text", "--json"]));
    assert!(!v.is_empty() && v.iter().all(|h| h["source"] == canonical(&bread)), "{v:?}");

    // Unchanged files are not added again; list; rm.
    assert_eq!(counts(&ok(&url, &["add", "kb", d])), (0, 0, 3, 1));
    let listed = hits(&ok(&url, &["list", "--json"]));
    assert_eq!(listed.iter().map(|c| c["spec"]["name"].as_str().unwrap()).collect::<Vec<_>>(), ["kb"]);
    assert!(ok(&url, &["rm", "kb", bread.to_str().unwrap()]).contains("1 sources removed"));

    // The server goes down: every command fails with the URL, without the password.
    server.stop();
    for args in [&["search", "kb", "ocean tides"][..], &["add", "kb", d], &["list"]] {
        let last = fails(&url, args);
        assert!(last.contains(&shown) && !last.contains(pg_support::PASSWORD), "{args:?}: {last}");
        assert!(last.contains("is the PostgreSQL server running"), "{args:?}: {last}");
    }
    server.restart();
    let info: Value = serde_json::from_str(&ok(&url, &["info", "kb", "--json"])).unwrap();
    assert_eq!(info["source_count"].as_u64(), Some(2), "nothing lost, nothing half-added: {info}");
    let v = hits(&ok(&url, &["search", "kb", "ocean tides", "-k", "1", "--json"]));
    assert_eq!(v[0]["source"], canonical(&tides));
    assert!(ok(&url, &["drop", "kb"]).contains("dropped collection `kb`"));
    assert_eq!(server.psql("SELECT count(*) FROM lamina_collections"), "0");
}
