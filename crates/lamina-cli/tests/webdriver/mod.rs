//! Headless Chromium driven through chromedriver's W3C WebDriver HTTP protocol: a
//! session, elements, key presses, scripts and screenshots, over the plain HTTP/1.1
//! client of `serve_support`. Debian's `chromium` and `chromium-driver` are installed
//! with apt-get when missing; under `CI=true` a failed install fails the test, elsewhere
//! the test is skipped with a note.

#![allow(dead_code)]

use crate::serve_support::{free_port, Connection};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The key W3C WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// WebDriver's code points for keys.
pub const ENTER: char = '\u{E007}';
pub const SHIFT: char = '\u{E008}';

/// The browser binary and its driver, installing them when missing.
pub fn chromium() -> Option<(PathBuf, PathBuf)> {
    let find = || -> Option<(PathBuf, PathBuf)> {
        let driver = which("chromedriver")?;
        // Debian's /usr/bin/chromium is a launcher script; the browser itself is beside its libraries.
        let browser = [Path::new("/usr/lib/chromium/chromium").to_path_buf()].into_iter().find(|p| p.exists()).or_else(|| which("chromium"))?;
        Some((browser, driver))
    };
    if let Some(found) = find() {
        return Some(found);
    }
    let apt =
        |args: &[&str]| Command::new("apt-get").args(args).env("DEBIAN_FRONTEND", "noninteractive").stdout(Stdio::null()).status().is_ok_and(|s| s.success());
    eprintln!("installing chromium and chromium-driver with apt-get");
    let installed = apt(&["install", "-y", "-q", "chromium", "chromium-driver"])
        || (apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "chromium", "chromium-driver"]));
    match find() {
        Some(found) if installed => Some(found),
        _ => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: could not install chromium and chromium-driver with apt-get");
            eprintln!("SKIPPED: chromium and chromium-driver are not installed and apt-get could not install them");
            None
        }
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// A WebDriver element reference.
#[derive(Clone, Debug)]
pub struct Element(String);

pub struct Browser {
    driver: Child,
    port: u16,
    session: String,
    log: PathBuf,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a loopback port and a headless Chromium session of
    /// `width`×`height` pixels.
    pub fn start(browser: &Path, driver: &Path, width: u32, height: u32) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let log = profile.path().join("chromedriver.log");
        let child = Command::new(driver)
            .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into(), format!("--log-path={}", log.display())])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver.display()));
        let mut b = Browser { driver: child, port, session: String::new(), log, _profile: profile };
        let t0 = Instant::now();
        while !b.raw("GET", "/status", None).is_ok_and(|v| v["value"]["ready"] == json!(true)) {
            assert!(t0.elapsed() < Duration::from_secs(20), "chromedriver did not come up: {}", b.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", b._profile.path().join("profile").display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": browser, "args": args},
            "timeouts": {"script": 30000, "pageLoad": 30000, "implicit": 0},
        }}});
        let v = b.raw("POST", "/session", Some(&caps)).unwrap_or_else(|e| panic!("new session: {e}\n{}", b.log()));
        b.session = v["value"]["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}\n{}", b.log())).to_string();
        b
    }

    pub fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text[text.len().saturating_sub(4000)..].to_string()
    }

    fn raw(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let headers: &[(&str, &str)] = if body.is_empty() { &[] } else { &[("Content-Type", "application/json; charset=utf-8")] };
        let mut c = Connection::open(self.port, method, path, headers, body.as_bytes()).map_err(|e| e.to_string())?;
        let mut bytes = Vec::new();
        while let Some(chunk) = c.next_chunk().map_err(|e| e.to_string())? {
            bytes.extend(chunk);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| format!("{method} {path}: status {}, not JSON ({e})", c.status))?;
        if c.status != 200 {
            return Err(format!("{method} {path}: status {}: {}", c.status, v["value"]));
        }
        Ok(v)
    }

    /// A session command's `value`; panics with WebDriver's error message otherwise.
    pub fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let body = (method == "POST").then_some(&body);
        let full = format!("/session/{}{path}", self.session);
        match self.raw(method, &full, body) {
            Ok(mut v) => v["value"].take(),
            Err(e) => panic!("{e}"),
        }
    }

    pub fn goto(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    pub fn find(&self, css: &str) -> Element {
        let v = self.cmd("POST", "/element", json!({"using": "css selector", "value": css}));
        Element(v[ELEMENT].as_str().unwrap_or_else(|| panic!("no element {css}: {v}")).to_string())
    }

    pub fn click(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/click", e.0), json!({}));
    }

    /// Types `text` into the element as key presses (`ENTER` presses Enter).
    pub fn type_into(&self, e: &Element, text: &str) {
        self.cmd("POST", &format!("/element/{}/value", e.0), json!({ "text": text }));
    }

    pub fn clear(&self, e: &Element) {
        self.cmd("POST", &format!("/element/{}/clear", e.0), json!({}));
    }

    pub fn text(&self, e: &Element) -> String {
        self.cmd("GET", &format!("/element/{}/text", e.0), json!({})).as_str().unwrap_or_default().to_string()
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn exec(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/sync", json!({"script": script, "args": args}))
    }

    /// Runs `script`, which calls `arguments[arguments.length - 1]` with its result.
    pub fn exec_async(&self, script: &str, args: Value) -> Value {
        self.cmd("POST", "/execute/async", json!({"script": script, "args": args}))
    }

    /// Presses `modifier` while typing `key` (e.g. Shift+Enter), with the focus where it is.
    pub fn chord(&self, modifier: char, key: char) {
        let (m, k) = (modifier.to_string(), key.to_string());
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": [
            {"type": "keyDown", "value": m}, {"type": "keyDown", "value": k}, {"type": "keyUp", "value": k}, {"type": "keyUp", "value": m},
        ]}]});
        self.cmd("POST", "/actions", actions);
        self.cmd("DELETE", "/actions", json!({}));
    }

    /// Emulates a `prefers-color-scheme` (Chromium's DevTools command, through chromedriver).
    pub fn color_scheme(&self, scheme: &str) {
        let features = json!([{"name": "prefers-color-scheme", "value": scheme}]);
        self.cmd("POST", "/goog/cdp/execute", json!({"cmd": "Emulation.setEmulatedMedia", "params": {"features": features}}));
    }

    pub fn set_window(&self, width: u32, height: u32) {
        self.cmd("POST", "/window/rect", json!({"width": width, "height": height}));
    }

    /// The page as a PNG.
    pub fn screenshot(&self) -> Vec<u8> {
        let b64 = self.cmd("GET", "/screenshot", json!({}));
        base64_decode(b64.as_str().expect("screenshot is base64 text"))
    }

    /// Polls `f` until it returns `Some`, failing after `timeout` with `what`.
    pub fn wait_for<T>(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
        let t0 = Instant::now();
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(t0.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.raw("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Standard base64 (the screenshot's encoding), ignoring whitespace.
pub fn base64_decode(s: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {:?}", c as char),
    };
    let digits: Vec<u8> = s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for group in digits.chunks(4) {
        let n = group.iter().enumerate().fold(0u32, |acc, (i, &d)| acc | (d as u32) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..group.len()]);
    }
    out
}

/// Width and height of a PNG, checking its signature, its IHDR chunk's CRC and that it
/// ends with IEND.
pub fn png_size(png: &[u8]) -> Result<(u32, u32), String> {
    const SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
    if png.len() < 8 + 25 + 12 || !png.starts_with(SIGNATURE) {
        return Err(format!("not a PNG ({} bytes)", png.len()));
    }
    let ihdr = &png[8..8 + 25];
    if &ihdr[4..8] != b"IHDR" || ihdr[..4] != 13u32.to_be_bytes() {
        return Err("the first chunk is not IHDR".into());
    }
    if crc32(&ihdr[4..21]) != u32::from_be_bytes(ihdr[21..25].try_into().unwrap()) {
        return Err("IHDR's CRC does not match".into());
    }
    if &png[png.len() - 8..png.len() - 4] != b"IEND" {
        return Err("the file does not end with IEND".into());
    }
    let (w, h) = (u32::from_be_bytes(ihdr[8..12].try_into().unwrap()), u32::from_be_bytes(ihdr[12..16].try_into().unwrap()));
    Ok((w, h))
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[test]
fn base64_and_png_checks_read_known_bytes() {
    assert_eq!(base64_decode("aGVsbG8gd29ybGQ="), b"hello world");
    assert_eq!(base64_decode("YQ=="), b"a");
    assert_eq!(base64_decode("YWI="), b"ab");
    // A 1×1 8-bit RGBA header and its CRC-32 (1f15c489) as every PNG encoder writes them.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00\x1f\x15\xc4\x89".to_vec();
    png.extend(b"\x00\x00\x00\x00IEND\xae\x42\x60\x82");
    assert_eq!(png_size(&png), Ok((1, 1)));
    assert_eq!(crc32(b"IEND"), 0xAE42_6082);
    png[20] = 9;
    assert!(png_size(&png).is_err());
}
