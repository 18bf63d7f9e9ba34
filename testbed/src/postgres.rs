//! A throwaway PostgreSQL server.

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{free_port, run, wait_for_port};

/// A PostgreSQL server in a temporary directory on a loopback port, with a
/// database `upsession` owned by the trust-authenticated user `upsession`.
#[derive(Debug)]
pub struct Postgres {
    child: Child,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
}

/// Where `initdb` and `postgres` are: `$UPSESSION_PG_BIN`, else Debian's newest
/// `/usr/lib/postgresql/*/bin`, else `PATH`.
fn bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("UPSESSION_PG_BIN") {
        return Ok(dir.into());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, p)| p.join("postgres").exists())
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    let found = run(Command::new("sh").args(["-c", "command -v initdb"]))
        .map_err(|_| {
            io::Error::new(
                io::ErrorKind::NotFound,
                "PostgreSQL is not installed (Debian: apt-get install postgresql); `cargo xtask engines` installs it",
            )
        })?;
    Ok(Path::new(found.trim())
        .parent()
        .unwrap_or(Path::new("/"))
        .to_path_buf())
}

/// PostgreSQL refuses to run as root: then run it as the `postgres` user.
fn as_db_user(program: &Path) -> Command {
    // Root is uid 0, read from /proc (no libc needed).
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--",
        ])
        .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Initialises and starts a server; waits until it answers.
    ///
    /// # Errors
    /// When PostgreSQL is missing or does not start.
    pub fn start() -> io::Result<Self> {
        let bin = bin_dir()?;
        let dir = tempfile::Builder::new().prefix("upsession-pg-").tempdir()?;
        // The server runs as `postgres` when we are root: let it own its directory.
        let _ = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status();
        let data = dir.path().join("data");
        run(as_db_user(&bin.join("initdb"))
            .args([
                "-A",
                "trust",
                "-U",
                "upsession",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data))?;
        let port = free_port()?;
        let log = std::fs::File::create(dir.path().join("postgres.log"))?;
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir.path().join("postgres.log"))
            .stderr(Stdio::null())
            .status();
        let child = as_db_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=300",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        let mut pg = Self {
            child,
            port,
            bin,
            dir,
        };
        wait_for_port(port, Duration::from_secs(30))?;
        pg.create_database("upsession")?;
        Ok(pg)
    }

    /// Creates another database (retrying while the server finishes starting).
    ///
    /// # Errors
    /// When `psql` fails for 30 s.
    pub fn create_database(&mut self, name: &str) -> io::Result<()> {
        let start = Instant::now();
        loop {
            let psql = self.bin.join("psql");
            let psql = if psql.exists() { psql } else { "psql".into() };
            let result = run(Command::new(psql)
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", "upsession", "-d", "postgres", "-q", "-c"])
                .arg(format!("CREATE DATABASE \"{name}\"")));
            match result {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
            if let Some(status) = self.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "PostgreSQL exited ({status}); see {}",
                    self.dir.path().join("postgres.log").display()
                )));
            }
        }
    }

    /// Runs one SQL statement on `db` with `psql` (a test reaching around the
    /// server, to stand for a crash between two of its steps); what it printed.
    ///
    /// # Errors
    /// When `psql` fails.
    pub fn sql(&self, db: &str, statement: &str) -> io::Result<String> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() { psql } else { "psql".into() };
        run(Command::new(psql)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", "upsession", "-d", db, "-q", "-t", "-c"])
            .arg(statement))
    }

    /// `postgres://upsession@127.0.0.1:PORT/DB`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://upsession@127.0.0.1:{}/{db}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
