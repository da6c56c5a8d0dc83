//! Shared by the server tests: a `lamina serve` child process on a free loopback port,
//! a minimal HTTP/1.1 client (so the tests can send exactly the bytes they mean, and hang
//! up mid-stream), and the `openai` and `anthropic` Python clients in a cached venv.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    pub child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `lamina serve ARGS --port P` and waits until `/health` answers.
    pub fn start(args: &[&str]) -> Server {
        let port = free_port();
        let mut all: Vec<String> = vec!["serve".into()];
        all.extend(args.iter().map(|a| a.to_string()));
        all.extend(["--port".into(), port.to_string(), "--threads".into(), "2".into()]);
        Server::spawn(all, port)
    }

    /// Starts `lamina gateway --config CONFIG --listen 127.0.0.1:P` and waits until
    /// `/health` answers.
    pub fn gateway(config: &std::path::Path) -> Server {
        let port = free_port();
        let args = vec!["gateway".into(), "--config".into(), config.display().to_string(), "--listen".into(), format!("127.0.0.1:{port}")];
        Server::spawn(args, port)
    }

    fn spawn(args: Vec<String>, port: u16) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let child = Command::new(env!("CARGO_BIN_EXE_lamina")).args(&args).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().unwrap();
        let mut s = Server { child, port, log, _dir: dir };
        let t0 = Instant::now();
        loop {
            if let Ok(r) = s.try_request("GET", "/health", &[], b"") {
                if r.status == 200 {
                    return s;
                }
            }
            if let Some(status) = s.child.try_wait().unwrap() {
                panic!("lamina {} exited with {status}: {}", args[0], s.log());
            }
            assert!(t0.elapsed() < Duration::from_secs(120), "lamina {} did not come up: {}", args[0], s.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    pub fn request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
        self.try_request(method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log()))
    }

    pub fn try_request(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Response> {
        let mut conn = Connection::open(self.port, method, path, headers, body)?;
        let mut body = Vec::new();
        while let Some(chunk) = conn.next_chunk()? {
            body.extend(chunk);
        }
        Ok(Response { status: conn.status, headers: conn.headers, body })
    }

    pub fn post_json(&self, path: &str, json: &serde_json::Value) -> Response {
        self.request("POST", path, &[("Content-Type", "application/json")], json.to_string().as_bytes())
    }

    /// A metric's value summed over its label sets (0 when absent).
    pub fn metric(&self, name: &str) -> f64 {
        let text = String::from_utf8(self.request("GET", "/metrics", &[], b"").body).unwrap();
        text.lines().filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
    }

    /// Resident memory of the server process, bytes.
    pub fn rss(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).unwrap_or(0) * 1024
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The error body's `error` object, asserting OpenAI's shape.
    pub fn error(&self) -> serde_json::Value {
        let v = self.json();
        let e = v["error"].clone();
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()) && e["type"].is_string(), "not an OpenAI error body: {v}");
        e
    }
}

/// One HTTP/1.1 exchange, the response body read chunk by chunk.
pub struct Connection {
    reader: BufReader<TcpStream>,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    chunked: bool,
    remaining: Option<usize>,
    done: bool,
}

impl Connection {
    pub fn open(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> std::io::Result<Connection> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(300)))?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes())?;
        // A server may answer (413) before reading a large body: ignore a reset here.
        let _ = s.write_all(body);
        let mut reader = BufReader::new(s);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let status = line.split_whitespace().nth(1).and_then(|x| x.parse().ok()).ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut headers = Vec::new();
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let get = |n: &str| headers.iter().find(|(k, _): &&(String, String)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
        let chunked = get("transfer-encoding").is_some_and(|v| v.contains("chunked"));
        let remaining = get("content-length").and_then(|v| v.parse().ok());
        Ok(Connection { reader, status, headers, chunked, remaining, done: false })
    }

    /// The next piece of the body; `None` at its end.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.done {
            return Ok(None);
        }
        if self.chunked {
            let mut line = String::new();
            self.reader.read_line(&mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                self.done = true;
                return Ok(None);
            }
            let mut buf = vec![0; size + 2];
            self.reader.read_exact(&mut buf)?;
            buf.truncate(size);
            return Ok(Some(buf));
        }
        let mut buf = Vec::new();
        match self.remaining {
            Some(n) => {
                buf.resize(n, 0);
                self.reader.read_exact(&mut buf)?;
            }
            None => {
                self.reader.read_to_end(&mut buf)?;
            }
        }
        self.done = true;
        Ok(Some(buf))
    }
}

/// Server-sent events of a streamed request, as JSON values (`[DONE]` as the string
/// "[DONE]"), read until the stream ends or `stop` returns true for an event.
pub fn stream_events(port: u16, path: &str, body: &serde_json::Value, mut stop: impl FnMut(&serde_json::Value) -> bool) -> (u16, Vec<serde_json::Value>) {
    let mut c = Connection::open(port, "POST", path, &[("Content-Type", "application/json")], body.to_string().as_bytes()).unwrap();
    let mut decoder = lamina_api::SseDecoder::new();
    let mut events = Vec::new();
    while let Some(chunk) = c.next_chunk().unwrap() {
        for e in decoder.feed(&chunk) {
            let v = if e.is_done() { serde_json::Value::String("[DONE]".into()) } else { serde_json::from_str(&e.data).unwrap() };
            let halt = stop(&v);
            events.push(v);
            if halt {
                return (c.status, events);
            }
        }
    }
    (c.status, events)
}

/// The text of choice `index` of a chat stream's events.
pub fn stream_text(events: &[serde_json::Value], index: u64) -> String {
    events
        .iter()
        .filter_map(|e| e["choices"].as_array())
        .flatten()
        .filter(|c| c["index"].as_u64() == Some(index))
        .filter_map(|c| c["delta"]["content"].as_str().or(c["text"].as_str()))
        .collect()
}

/// A Python with the `openai` client, in a venv cached under `~/.cache/lamina-ref/`.
/// `None` (with a note) when it cannot be set up outside CI; under `CI=true` a failure
/// to set it up fails the test.
pub fn openai_python() -> Option<PathBuf> {
    venv_python(&[("openai", "3.57.0")])
}

/// [`openai_python`] with the `anthropic` client too, in the same venv.
pub fn anthropic_python() -> Option<PathBuf> {
    venv_python(&[("openai", "3.57.0"), ("anthropic", "2.10.0")])
}

/// The cached venv's Python with each `(package, version)` installed at that version.
fn venv_python(packages: &[(&str, &str)]) -> Option<PathBuf> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    let venv = home.join(".cache/lamina-ref/openai-venv");
    let python = venv.join("bin/python");
    let has = |p: &PathBuf, (name, version): (&str, &str)| {
        Command::new(p)
            .args(["-c", &format!("import {name}, sys; sys.exit(0 if {name}.__version__ == '{version}' else 1)")])
            .status()
            .is_ok_and(|s| s.success())
    };
    let missing: Vec<(&str, &str)> = packages.iter().copied().filter(|&p| !has(&python, p)).collect();
    if missing.is_empty() {
        return Some(python);
    }
    let setup = || -> Result<(), String> {
        let run = |c: &mut Command| c.status().map_err(|e| e.to_string()).and_then(|s| if s.success() { Ok(()) } else { Err(format!("{c:?} failed")) });
        if !python.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        let specs: Vec<String> = missing.iter().map(|(n, v)| format!("{n}=={v}")).collect();
        run(Command::new(&python).args(["-m", "pip", "install", "-q"]).args(&specs))
    };
    match setup() {
        Ok(()) if packages.iter().all(|&p| has(&python, p)) => Some(python),
        r => {
            let names: Vec<&str> = missing.iter().map(|(n, _)| *n).collect();
            let why = r.err().unwrap_or_else(|| format!("{} did not import", names.join(", ")));
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: could not install the Python clients: {why}");
            eprintln!("SKIPPED: the Python clients {names:?} could not be installed ({why})");
            None
        }
    }
}

/// `python` (a venv's) with `package==version` installed too; `None` (with a note) when
/// it cannot be installed outside CI, as for [`openai_python`].
pub fn with_package(python: &PathBuf, package: &str, version: &str) -> Option<PathBuf> {
    let has = || {
        Command::new(python)
            .args(["-c", &format!("import importlib.metadata as m, sys; sys.exit(0 if m.version('{package}') == '{version}' else 1)")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if has() {
        return Some(python.clone());
    }
    let installed = Command::new(python).args(["-m", "pip", "install", "-q", &format!("{package}=={version}")]).status().is_ok_and(|s| s.success());
    if installed && has() {
        return Some(python.clone());
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: could not install {package}=={version}");
    eprintln!("SKIPPED: {package} could not be installed into the test venv");
    None
}
