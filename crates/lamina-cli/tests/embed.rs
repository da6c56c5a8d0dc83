//! `lamina embed` and `POST /v1/embeddings` end to end: the real binary, the real
//! all-MiniLM-L6-v2, and the real `openai` Python client.

mod serve_support;

use serde_json::Value;
use serve_support::{openai_python, Server};
use std::io::Write;
use std::process::{Command, Stdio};

const REF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/reference/minilm_embeddings.jsonl");

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    dot / (a.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt() * b.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt())
}

/// Reference texts (one line each, so none with a newline) and their vectors.
fn reference() -> Vec<(String, Vec<f32>)> {
    std::fs::read_to_string(REF)
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (v["text"].as_str().unwrap().to_string(), v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect())
        })
        .collect()
}

fn embed(args: &[&str], stdin: &str) -> std::process::Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lamina"))
        .arg("embed")
        .args(args)
        .args(["--threads", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command that fails before reading its input closes the pipe: that is its answer.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

#[test]
fn jsonl_from_stdin_and_npy_from_a_file() {
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let cases = reference();
    let input: String = cases.iter().map(|(t, _)| format!("{t}\n")).collect();
    // JSONL, f32 path, small batches: one object per line, in order, matching the reference.
    let out = embed(&["--precision", "f32", "--batch", "3"], &input);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<Value> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), cases.len());
    for (i, (line, (text, want))) in lines.iter().zip(&cases).enumerate() {
        assert_eq!(line["index"], i);
        let got: Vec<f32> = line["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
        assert!(cosine(&got, want) >= 0.9999, "{text:?}");
    }

    // npy, native path, from a file: header, shape and values.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("in.txt");
    std::fs::write(&file, &input).unwrap();
    let npy = dir.path().join("out.npy");
    let out = embed(&[file.to_str().unwrap(), "--format", "npy", "-o", npy.to_str().unwrap()], "");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let bytes = std::fs::read(&npy).unwrap();
    assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
    let hlen = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + hlen) % 64, 0, "the data starts 64-byte aligned");
    let header = std::str::from_utf8(&bytes[10..10 + hlen]).unwrap();
    assert!(header.starts_with(&format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({}, 384), }}", cases.len())), "{header}");
    assert!(header.ends_with('\n'));
    let data: Vec<f32> = bytes[10 + hlen..].chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(data.len(), cases.len() * 384);
    for (row, (text, want)) in data.chunks_exact(384).zip(&cases) {
        assert!(cosine(row, want) >= 0.999, "{text:?}");
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2, "no temporary file left beside the output");

    // npy needs a file; a missing input file is named.
    let out = embed(&["--format", "npy"], "x\n");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("--output"));
    let out = embed(&["all-minilm-l6-v2", "/nonexistent/input.txt"], "");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("/nonexistent/input.txt"));
}

#[test]
fn the_openai_client_gets_embeddings_and_errors() {
    let Some(python) = openai_python() else { return };
    lamina_core::registry::default_embedding_model_dir().unwrap();
    let server = Server::start(&["chat=smollm2-135m-instruct", "embed=all-minilm-l6-v2", "--ctx", "512"]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai/check_embeddings.py");
    let out = Command::new(python).arg(script).args([&server.base_url(), "embed", "chat", REF]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}");
    assert!(out.status.success(), "embedding checks failed:\n{stdout}\n{}\nserver log:\n{}", String::from_utf8_lossy(&out.stderr), server.log());
    assert!(stdout.contains("all checks passed"));
    // The embedding model is refused by the chat endpoint, by name.
    let r = server.post_json("/v1/chat/completions", &serde_json::json!({"model": "embed", "messages": [{"role": "user", "content": "hi"}]}));
    assert_eq!(r.status, 400);
    assert!(r.error()["message"].as_str().unwrap().contains("/v1/embeddings"));
}
