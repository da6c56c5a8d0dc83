//! A real Redis for the gateway's shared-state tests: Debian's `redis-server`, installed
//! with apt-get when missing (under `CI=true` a failed install fails the test, elsewhere
//! the test is skipped with a note), run on a free loopback port without persistence, and
//! killed when dropped.

use crate::serve_support::free_port;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Redis {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| std::env::split_paths(&paths).map(|d| d.join(name)).find(|p| p.is_file()))
}

/// `redis-server`, installing Debian's package when it is missing.
pub fn redis_server() -> Option<PathBuf> {
    if let Some(p) = which("redis-server") {
        return Some(p);
    }
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(["-o", "DPkg::Lock::Timeout=300"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    eprintln!("installing redis-server with apt-get");
    let _ = apt(&["install", "-y", "-q", "redis-server"]) || (apt(&["update", "-q"]) && apt(&["install", "-y", "-q", "redis-server"]));
    let found = which("redis-server");
    if found.is_none() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: could not install redis-server with apt-get");
        eprintln!("SKIPPED: redis-server is not installed and apt-get could not install it");
    }
    found
}

impl Redis {
    /// A fresh server on loopback, answering PING.
    pub fn start(binary: &std::path::Path) -> Redis {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new(binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let r = Redis { child, port, _dir: dir };
        let t0 = Instant::now();
        while !r.answers() {
            assert!(t0.elapsed() < Duration::from_secs(20), "redis-server did not start on port {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Whether it answers PING (over RESP, by hand: no client library in the tests).
    pub fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// The raw reply to one command (RESP, as text), read until the server pauses.
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
