//! `/v1/collections` and the `rag` extension of chat completions end to end: the real
//! `lamina serve` with the default chat model and all-MiniLM-L6-v2, an embedded store on
//! disk, raw HTTP for exact status codes and bodies, and the real `openai` Python client.

mod serve_support;

use serde_json::{json, Value};
use serve_support::{openai_python, Response, Server};
use std::process::Command;

const CHAT: &str = "smollm2-135m-instruct";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check_collections.py");

fn documents() -> Value {
    json!({"documents": [
        {"id": "zorblat", "text": "The zorblat fruit is bright purple and grows only on the island of Quenmar.", "metadata": {"topic": "food"}},
        {"id": "kestrel", "kind": "markdown", "text": "# Kestrel Observatory\n\nThe Kestrel Observatory telescope has a mirror 4.2 metres wide and was built in 1987.", "metadata": {"topic": "science"}},
        {"id": "bread", "text": "To bake sourdough bread, feed the starter the night before and bake the loaf at 230 degrees Celsius.", "metadata": {"topic": "food"}},
    ]})
}

fn with_key(key: &str) -> [(&'static str, String); 2] {
    [("Content-Type", "application/json".to_string()), ("Authorization", format!("Bearer {key}"))]
}

fn post_as(s: &Server, key: &str, path: &str, body: &Value) -> Response {
    let h = with_key(key);
    let headers: Vec<(&str, &str)> = h.iter().map(|(k, v)| (*k, v.as_str())).collect();
    s.request("POST", path, &headers, body.to_string().as_bytes())
}

fn get(s: &Server, path: &str) -> Response {
    s.request("GET", path, &[], b"")
}

/// The error's status and `param`, asserting OpenAI's error shape.
fn error(r: &Response) -> (u16, Option<String>, String) {
    let e = r.error();
    (r.status, e["param"].as_str().map(String::from), e["message"].as_str().unwrap().to_string())
}

fn sources(search: &Value) -> Vec<String> {
    search["data"].as_array().unwrap().iter().map(|h| h["source"].as_str().unwrap().to_string()).collect()
}

#[test]
fn collections_crud_search_rag_keys_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("collections");
    let keys = dir.path().join("keys.json");
    std::fs::write(&keys, r#"{"vault": ["vault-key"]}"#).unwrap();
    let location = store.to_str().unwrap();
    let s = Server::start(&[CHAT, "--ctx", "1024", "--collections", location, "--collection-keys", keys.to_str().unwrap()]);

    // Create; the name taken; bad names and bodies.
    let r = s.post_json("/v1/collections", &json!({"name": "facts", "chunk_tokens": 64, "chunk_overlap": 8}));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let c = r.json();
    assert_eq!((c["object"].as_str(), c["name"].as_str(), c["model"].as_str()), (Some("collection"), Some("facts"), Some("all-minilm-l6-v2")));
    assert_eq!((c["dimensions"].as_u64(), c["chunks"].as_u64(), c["chunk_tokens"].as_u64()), (Some(384), Some(0), Some(64)));
    let (status, _, message) = error(&s.post_json("/v1/collections", &json!({"name": "facts"})));
    assert_eq!(status, 409, "{message}");
    assert_eq!(error(&s.post_json("/v1/collections", &json!({"name": "no/slashes"}))).1.as_deref(), Some("name"));
    assert_eq!(error(&s.post_json("/v1/collections", &json!({"name": "x", "chunk_size": 5}))).0, 400);
    assert_eq!(error(&s.post_json("/v1/collections", &json!({"name": "x", "chunk_tokens": 8, "chunk_overlap": 8}))).1.as_deref(), Some("chunk_overlap"));
    assert_eq!(error(&s.post_json("/v1/collections", &json!({"name": "x", "model": "gpt-4"}))).0, 404);
    assert_eq!(error(&get(&s, "/v1/collections/nope")).0, 404);
    assert_eq!(error(&s.post_json("/v1/collections/nope/documents", &documents())).0, 404);

    // Documents: added, then unchanged; bad ones named.
    let r = s.post_json("/v1/collections/facts/documents", &documents());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let added = r.json();
    assert_eq!((added["added"].as_u64(), added["unchanged"].as_u64()), (Some(3), Some(0)), "{added}");
    assert!(added["chunks"].as_u64().unwrap() >= 3 && added["tokens"].as_u64().unwrap() > 20, "{added}");
    let again = s.post_json("/v1/collections/facts/documents", &json!({"documents": [documents()["documents"][0].clone()]})).json();
    assert_eq!((again["added"].as_u64(), again["unchanged"].as_u64(), again["chunks"].as_u64()), (Some(0), Some(1), Some(0)), "{again}");
    let bad = [
        (json!({"documents": [{"id": "a", "text": "x", "kind": "pdf"}]}), "documents[0].kind"),
        (json!({"documents": [{"id": "a", "text": 3}]}), "documents[0].text"),
        (json!({"documents": []}), "documents"),
        (json!({"documents": [{"id": "a", "text": "x", "tags": []}]}), ""),
    ];
    for (body, param) in bad {
        let (status, p, message) = error(&s.post_json("/v1/collections/facts/documents", &body));
        assert_eq!(status, 400, "{body}: {message}");
        if !param.is_empty() {
            assert_eq!(p.as_deref(), Some(param), "{body}: {message}");
        }
    }
    let docs = get(&s, "/v1/collections/facts/documents").json();
    let ids: Vec<&str> = docs["data"].as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["bread", "kestrel", "zorblat"]);
    assert_eq!(docs["data"][2]["metadata"]["topic"], "food");

    // Search finds what was added, in every mode; filters; bad requests.
    for mode in ["vector", "keyword", "hybrid"] {
        let r = s.post_json("/v1/collections/facts/search", &json!({"query": "How wide is the telescope mirror at Kestrel?", "k": 2, "mode": mode})).json();
        assert_eq!(sources(&r)[0], "kestrel", "{mode}: {r}");
        assert_eq!(r["mode"], mode);
        let top = &r["data"][0];
        assert_eq!(top["rank"], 1);
        assert!(top["text"].as_str().unwrap().contains("4.2 metres"), "{top}");
        assert_eq!(top["heading"], "Kestrel Observatory", "{top}");
        assert_eq!(top["similarity"].is_number(), mode != "keyword", "{top}");
    }
    let r = s.post_json("/v1/collections/facts/search", &json!({"query": "purple fruit on an island", "filter": {"topic": "science"}})).json();
    assert_eq!(sources(&r), ["kestrel"], "a map filter keeps only its matches: {r}");
    let cond = json!([{"op": "in", "key": "source", "values": ["bread", "zorblat"]}]);
    let r = s.post_json("/v1/collections/facts/search", &json!({"query": "purple fruit", "mode": "vector", "filter": cond})).json();
    assert_eq!(sources(&r), ["zorblat", "bread"], "{r}");
    for (body, param) in [
        (json!({"query": "x", "mode": "fuzzy"}), "mode"),
        (json!({"query": "x", "k": 0}), "k"),
        (json!({"query": " "}), "query"),
        (json!({"query": "x", "filter": [{"op": "like"}]}), "filter"),
    ] {
        assert_eq!(error(&s.post_json("/v1/collections/facts/search", &body)).1.as_deref(), Some(param), "{body}");
    }

    // Keys: the keyed collection answers only its key.
    assert_eq!(error(&s.post_json("/v1/collections", &json!({"name": "vault"}))).0, 401);
    assert_eq!(error(&post_as(&s, "wrong", "/v1/collections", &json!({"name": "vault"}))).0, 403);
    assert_eq!(post_as(&s, "vault-key", "/v1/collections", &json!({"name": "vault"})).status, 201);
    let r = post_as(&s, "vault-key", "/v1/collections/vault/documents", &json!({"documents": [{"id": "code", "text": "The vault code is 7319."}]}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(error(&s.post_json("/v1/collections/vault/search", &json!({"query": "vault code"}))).0, 401);
    assert_eq!(error(&post_as(&s, "wrong", "/v1/collections/vault/search", &json!({"query": "vault code"}))).0, 403);
    assert_eq!(sources(&post_as(&s, "vault-key", "/v1/collections/vault/search", &json!({"query": "vault code"})).json()), ["code"]);
    assert_eq!(error(&get(&s, "/v1/collections/vault/documents")).0, 401);
    let ask_vault =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "What is the vault code?"}], "max_tokens": 4, "rag": {"collection": "vault"}});
    assert_eq!(error(&s.post_json("/v1/chat/completions", &ask_vault)).0, 401, "rag on a keyed collection without its key");
    let names = |r: Response| r.json()["data"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    let h = with_key("vault-key");
    assert_eq!(names(s.request("GET", "/v1/collections", &[("Authorization", h[1].1.as_str())], b"")), ["facts", "vault"]);
    assert_eq!(names(get(&s, "/v1/collections")), ["facts"]);

    // The openai client: custom paths, rag whole and streamed, nothing relevant, keys.
    if let Some(python) = openai_python() {
        let out = Command::new(python).arg(SCRIPT).args([&s.base_url(), CHAT, "facts", "vault", "vault-key"]).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        print!("{stdout}");
        assert!(out.status.success(), "collection checks failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), s.log());
    }

    // Delete a document, then a collection.
    let r = s.request("DELETE", "/v1/collections/facts/documents/bread", &[], b"");
    assert_eq!((r.status, r.json()["deleted"].as_bool()), (200, Some(true)));
    assert_eq!(error(&s.request("DELETE", "/v1/collections/facts/documents/bread", &[], b"")).0, 404);
    let r = s.post_json("/v1/collections/facts/search", &json!({"query": "sourdough bread starter", "mode": "keyword"})).json();
    assert!(!sources(&r).contains(&"bread".to_string()), "{r}");
    assert_eq!(s.post_json("/v1/collections", &json!({"name": "scratch"})).status, 201);
    let r = s.request("DELETE", "/v1/collections/scratch", &[], b"");
    assert_eq!((r.status, r.json()["object"].as_str()), (200, Some("collection.deleted")));
    assert_eq!(error(&get(&s, "/v1/collections/scratch")).0, 404);
    assert_eq!(error(&s.request("DELETE", "/v1/collections/scratch", &[], b"")).0, 404);
    drop(s);

    // A restart keeps the collection (on disk). Served with another embedding model, it is
    // still listed and keyword search works; vector search is refused naming both models.
    let s = Server::start(&[CHAT, "--ctx", "1024", "--collections", location, "--embedding-model", CHAT]);
    let c = get(&s, "/v1/collections/facts").json();
    assert_eq!((c["sources"].as_u64(), c["model"].as_str()), (Some(2), Some("all-minilm-l6-v2")), "{c}");
    let r = s.post_json("/v1/collections/facts/search", &json!({"query": "zorblat fruit colour", "mode": "keyword"})).json();
    assert_eq!(sources(&r)[0], "zorblat", "{r}");
    let (status, _, message) = error(&s.post_json("/v1/collections/facts/search", &json!({"query": "zorblat", "mode": "vector"})));
    assert_eq!(status, 400, "{message}");
    assert!(message.contains("all-minilm-l6-v2") && message.contains(CHAT) && message.contains("384") && message.contains("576"), "{message}");
    let (status, _, message) = error(&s.post_json("/v1/collections/facts/documents", &json!({"documents": [{"id": "new", "text": "More text."}]})));
    assert_eq!(status, 400, "{message}");
    let r = s.post_json("/v1/collections", &json!({"name": "chatvectors"})).json();
    assert_eq!((r["model"].as_str(), r["dimensions"].as_u64()), (Some(CHAT), Some(576)), "new collections embed with --embedding-model: {r}");
}

#[test]
fn a_collections_database_that_is_down_is_a_503_with_the_reason() {
    // Nothing listens on port 1. Without the `postgres` feature the reason is that instead.
    let s = Server::start(&[CHAT, "--collections", "postgres://lamina:secret@127.0.0.1:1/lamina"]);
    for r in [get(&s, "/v1/collections"), s.post_json("/v1/collections", &json!({"name": "x"})), get(&s, "/v1/collections/x")] {
        let (status, _, message) = error(&r);
        assert_eq!(status, 503, "{message}");
        assert!(message.contains("127.0.0.1:1") || message.contains("PostgreSQL"), "{message}");
        assert!(!message.contains("secret"), "the password is not shown: {message}");
    }
    // The rest of the server is unaffected.
    assert_eq!(get(&s, "/v1/models").status, 200);
}
