//! `lamina index` end to end: the real binary, the real all-MiniLM-L6-v2, files on disk.
//! Bad input (empty, binary, undecodable files; an unknown collection; a model of another
//! dimension), re-adding unchanged and changed files, and kill -9 in the middle of `add`.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn lamina(root: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lamina"));
    c.arg("index").args(args).arg("--collections").arg(root).env_remove("LAMINA_COLLECTIONS");
    c
}

fn run(root: &Path, args: &[&str]) -> Output {
    lamina(root, args).stdin(Stdio::null()).output().unwrap()
}

fn ok(root: &Path, args: &[&str]) -> (String, String) {
    let out = run(root, args);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned());
    assert!(out.status.success(), "lamina index {args:?} failed:\n{stderr}");
    (stdout, stderr)
}

fn fails(root: &Path, args: &[&str], needles: &[&str]) -> String {
    let out = run(root, args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "lamina index {args:?} should fail");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: "), "{stderr}");
    for n in needles {
        assert!(last.contains(n), "`{n}` missing from: {last}");
    }
    last.to_string()
}

/// (added, replaced, unchanged, skipped) from `add`'s summary line.
fn counts(stdout: &str) -> (usize, usize, usize, usize) {
    let line = stdout.lines().last().expect("a summary line");
    let nums: Vec<usize> = line.split(':').next().unwrap().split(',').map(|part| part.split_whitespace().next().unwrap().parse().unwrap()).collect();
    (nums[0], nums[1], nums[2], nums[3])
}

fn info(root: &Path, name: &str) -> Value {
    serde_json::from_str(&ok(root, &["info", name, "--json"]).0).unwrap()
}

/// source → (chunks, content hash)
fn sources(info: &Value) -> BTreeMap<String, (u64, String)> {
    info["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["source"].as_str().unwrap().to_string(), (s["chunks"].as_u64().unwrap(), s["content_hash"].as_str().unwrap().to_string())))
        .collect()
}

fn hits(stdout: &str) -> Vec<Value> {
    stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn canonical(p: &Path) -> String {
    p.canonicalize().unwrap().to_string_lossy().into_owned()
}

#[test]
fn add_search_replace_remove_and_bad_input() {
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("collections");
    let docs = tmp.path().join("docs");
    std::fs::create_dir_all(docs.join("more")).unwrap();
    let volcano = docs.join("volcano.md");
    std::fs::write(&volcano, "# Volcanoes\n\n## Eruptions\n\nMagma rises through the crust and erupts as lava and ash.\n").unwrap();
    let bread = docs.join("more/bread.txt");
    std::fs::write(&bread, "Knead the dough, let it rise for an hour, then bake the loaf in a hot oven.\n").unwrap();
    let tides = docs.join("tides.html");
    std::fs::write(&tides, "<html><head><title>Tides</title><script>var x = 1;</script></head><body><h1>Tides</h1><p>The moon's gravity pulls the oceans into high and low tides.</p></body></html>").unwrap();
    std::fs::write(docs.join("empty.txt"), "").unwrap();
    std::fs::write(docs.join("blob.txt"), [0x7f, b'E', b'L', b'F', 0, 0, 1, 2, 0, 3]).unwrap();
    std::fs::write(docs.join("latin1.txt"), b"caf\xe9 au lait\n").unwrap();
    let d = docs.to_str().unwrap();
    let r = root.as_path();

    // Unknown collection.
    fails(r, &["search", "kb", "anything"], &["no collection named `kb`", "lamina index add"]);
    fails(r, &["info", "kb"], &["no collection named `kb`"]);
    fails(r, &["add", "bad/name", d], &["invalid collection name"]);

    let (out, err) = ok(r, &["add", "kb", d, "--meta", "team=geo", "-t", "2"]);
    assert_eq!(counts(&out), (3, 0, 0, 3), "{out}\n{err}");
    assert!(err.contains("empty.txt: empty"), "{err}");
    assert!(err.contains("blob.txt: binary"), "{err}");
    assert!(err.contains("latin1.txt: not UTF-8: invalid byte at offset 3"), "{err}");
    let i = info(r, "kb");
    assert_eq!(i["spec"]["embedding_model"], "all-minilm-l6-v2");
    assert_eq!(i["spec"]["dimensions"], 384);
    let s = sources(&i);
    assert_eq!(s.keys().cloned().collect::<Vec<_>>(), {
        let mut v = vec![canonical(&volcano), canonical(&bread), canonical(&tides)];
        v.sort();
        v
    });
    assert_eq!(i["chunks"].as_u64().unwrap(), s.values().map(|v| v.0).sum::<u64>());
    assert!(i["stored_bytes"].as_u64().unwrap() > 3 * 384 * 4);

    // Search: each mode finds the file that holds the answer.
    let v = hits(&ok(r, &["search", "kb", "how do I bake bread at home", "-k", "3", "--mode", "vector", "--json"]).0);
    assert_eq!(v[0]["source"], canonical(&bread), "{v:?}");
    assert!(v[0]["similarity"].as_f64().unwrap() > 0.3);
    let v = hits(&ok(r, &["search", "kb", "gravity", "--mode", "keyword", "--json"]).0);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0]["source"], canonical(&tides));
    assert!(!v[0]["text"].as_str().unwrap().contains("var x"), "scripts are dropped");
    assert_eq!(v[0]["metadata"]["title"], "Tides");
    assert_eq!(v[0]["metadata"]["team"], "geo");
    let v = hits(&ok(r, &["search", "kb", "lava erupting from a mountain", "--json"]).0);
    assert_eq!(v[0]["source"], canonical(&volcano));
    assert!(v[0]["heading"].as_str().unwrap().starts_with("Volcanoes"), "{:?}", v[0]);
    let v = hits(&ok(r, &["search", "kb", "lava erupting from a mountain", "--filter", "kind=text", "--json"]).0);
    assert!(v.iter().all(|h| h["source"] == canonical(&bread)) && !v.is_empty(), "{v:?}");
    let (plain, _) = ok(r, &["search", "kb", "ocean tides", "-k", "1"]);
    assert!(plain.starts_with(" 1. ") && plain.contains(&format!("{}:0-", canonical(&tides))), "{plain}");
    // Reranked by the default chat model: every hit rescored, the answer still first, -k kept.
    let v = hits(&ok(r, &["search", "kb", "how do I bake bread at home", "-k", "2", "--rerank", "3", "--json"]).0);
    assert_eq!(v.len(), 2, "{v:?}");
    assert_eq!(v[0]["source"], canonical(&bread), "{v:?}");
    assert!(v.iter().all(|h| h["rerank_score"].is_number()), "{v:?}");
    fails(r, &["search", "kb", "x", "--rerank", "0"], &["at least 2 candidates"]);

    // Unchanged files are not added again; a changed one replaces its chunks.
    let (out, _) = ok(r, &["add", "kb", d]);
    assert_eq!(counts(&out), (0, 0, 3, 3));
    std::fs::write(&bread, "Sourdough needs a starter of wild yeast fed with flour and water.\n").unwrap();
    let (out, _) = ok(r, &["add", "kb", d]);
    assert_eq!(counts(&out), (0, 1, 2, 3));
    assert!(hits(&ok(r, &["search", "kb", "knead", "--mode", "keyword", "--json"]).0).is_empty(), "the old chunks are gone");
    let v = hits(&ok(r, &["search", "kb", "sourdough", "--mode", "keyword", "--json"]).0);
    assert_eq!(v[0]["source"], canonical(&bread));
    assert_ne!(sources(&info(r, "kb"))[&canonical(&bread)].1, s[&canonical(&bread)].1);

    // A model whose vectors differ: the chat model's 576 dimensions against MiniLM's 384.
    fails(r, &["add", "kb", bread.to_str().unwrap(), "--model", "smollm2-135m-instruct"], &["`kb`", "384", "all-minilm-l6-v2", "smollm2-135m-instruct", "576"]);
    fails(r, &["add", "kb", d, "--chunk-tokens", "50"], &["--chunk-tokens 200"]);
    fails(r, &["add", "kb2", d, "--chunk-tokens", "1000"], &["longer than the 256 tokens"]);
    fails(r, &["add", "kb", d, "--meta", "kind=x"], &["reserved"]);
    fails(r, &["search", "kb", "x", "--filter", "nonsense"], &["expected key=value"]);
    fails(r, &["search", "kb", "   "], &["the query is empty"]);

    // rm: a folder removes what is under it; a path with nothing stored is an error.
    let (out, _) = ok(r, &["rm", "kb", docs.join("more").to_str().unwrap()]);
    assert!(out.contains(&canonical(&bread)) && out.contains("1 sources removed"), "{out}");
    fails(r, &["rm", "kb", docs.join("more").to_str().unwrap()], &["holds nothing at"]);
    assert_eq!(sources(&info(r, "kb")).len(), 2);

    // list and drop.
    let (out, _) = ok(r, &["list", "--json"]);
    let listed: Vec<Value> = hits(&out);
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0]["spec"]["name"].as_str(), listed[0]["sources"].as_u64()), (Some("kb"), Some(2)));
    let (out, _) = ok(r, &["drop", "kb"]);
    assert!(out.contains("dropped collection `kb`"));
    assert!(ok(r, &["list", "--json"]).0.trim().is_empty());
    fails(r, &["drop", "kb"], &["no collection named `kb`"]);
}

/// xorshift64*: the kill delays, reproducible from the seed.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Small files of one to a few chunks each (at 32-token chunks).
fn write_corpus(dir: &Path, n: usize) -> Vec<PathBuf> {
    let topics = ["rivers", "mountains", "bread", "engines", "violins", "comets", "gardens", "bridges"];
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| {
            let topic = topics[i % topics.len()];
            let mut text = format!("# Note {i} on {topic}\n\n");
            for s in 0..(1 + i % 4) {
                text.push_str(&format!("Paragraph {s} of note {i}: facts about {topic}, numbered {}, with a few more words to fill the line.\n\n", i * 7 + s));
            }
            let p = dir.join(format!("note-{i:03}.md"));
            std::fs::write(&p, text).unwrap();
            p
        })
        .collect()
}

#[test]
fn kill_minus_nine_during_add_leaves_only_whole_files() {
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let docs = tmp.path().join("docs");
    let files = write_corpus(&docs, 160);
    let d = docs.to_str().unwrap();
    let chunking = ["--chunk-tokens", "32", "--chunk-overlap", "4", "-t", "2"];

    // A clean index of the same files: what every complete file must look like.
    let clean_root = tmp.path().join("clean");
    let t0 = Instant::now();
    let (out, _) = ok(&clean_root, &[&["add", "clean", d][..], &chunking].concat());
    let clean_secs = t0.elapsed().as_secs_f64();
    assert_eq!(counts(&out), (160, 0, 0, 0));
    let clean = sources(&info(&clean_root, "clean"));
    assert_eq!(clean.len(), 160);
    assert!(clean.values().any(|v| v.0 > 1), "some files have several chunks");

    // The collection exists (one file in it) before the kills; that run's time is mostly
    // the start (loading the model).
    let root = tmp.path().join("crash");
    let t0 = Instant::now();
    ok(&root, &[&["add", "crash", files[0].to_str().unwrap()][..], &chunking].concat());
    let start_secs = t0.elapsed().as_secs_f64().min(clean_secs);

    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let mut partial_rounds = 0;
    let mut last = 1;
    // The time a whole add takes past its start, as far as we know: the clean run's at
    // first (its caches were cold, so it may be long), less each time an add finishes
    // before its kill.
    let mut work = (clean_secs - start_secs).max(0.1);
    for round in 0..10 {
        if partial_rounds >= 2 {
            break;
        }
        // A random point of what is left to do: the start, then a share of the files to go.
        let left = (clean.len() - last) as f64 / clean.len() as f64;
        let delay = Duration::from_secs_f64(0.8 * start_secs + work * left * (0.1 + 0.8 * rng.next_f64()));
        let mut child =
            lamina(&root, &[&["add", "crash", d, "--commit-every", "3"][..], &chunking].concat()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        std::thread::sleep(delay);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();

        // It opens, answers, and every source in it is whole.
        let i = info(&root, "crash");
        let got = sources(&i);
        for (src, v) in &got {
            assert_eq!(Some(v), clean.get(src), "round {round} (killed after {delay:?}, {status}): {src} differs from a clean index");
        }
        assert_eq!(i["chunks"].as_u64().unwrap(), got.values().map(|v| v.0).sum::<u64>(), "no stray chunks");
        assert!(got.len() >= last, "committed files stay committed");
        eprintln!("round {round}: killed after {delay:?} ({status}): {} of {} files committed", got.len(), clean.len());
        if got.len() > last && got.len() < clean.len() {
            partial_rounds += 1;
        }
        let v = hits(&ok(&root, &["search", "crash", "facts about comets", "-k", "3", "--json"]).0);
        assert!(!v.is_empty() && v.iter().all(|h| clean.contains_key(h["source"].as_str().unwrap())));
        last = got.len();
        if status.success() {
            // It finished first: the rest took less than the delay.
            work = work.min((delay.as_secs_f64() - 0.8 * start_secs).max(0.05) / left.max(1e-3));
        }
        if last == clean.len() && partial_rounds < 2 {
            // Nothing left to interrupt: start the collection again.
            std::fs::remove_dir_all(&root).unwrap();
            ok(&root, &[&["add", "crash", files[0].to_str().unwrap()][..], &chunking].concat());
            last = 1;
        }
    }
    assert!(partial_rounds >= 1, "no kill landed in the middle of an add (clean run: {clean_secs:.1} s, start {start_secs:.1} s)");

    // A rerun finishes the rest and does not embed the committed files again.
    let before = sources(&info(&root, "crash")).len();
    let (out, _) = ok(&root, &[&["add", "crash", d][..], &chunking].concat());
    assert_eq!(counts(&out), (160 - before, 0, before, 0));
    assert_eq!(sources(&info(&root, "crash")), clean);
}
