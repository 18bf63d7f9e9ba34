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
    /// `None` while stopped ([`Postgres::stop`]).
    child: Option<Child>,
    port: u16,
    bin: PathBuf,
    dir: tempfile::TempDir,
    /// The `-c` settings it runs with.
    settings: Vec<String>,
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
        Self::start_with(false)
    }

    /// [`Postgres::start`] that takes TLS connections only over TCP (`hostssl`
    /// in `pg_hba.conf`; `psql` here still gets in, it prefers TLS): its
    /// certificate, for `localhost` and 127.0.0.1, is signed by a CA made for
    /// the occasion, whose certificate is [`Postgres::ca_file`]. It listens on
    /// 127.0.0.2 too, an address its certificate does not name.
    ///
    /// # Errors
    /// When PostgreSQL is missing or does not start.
    pub fn start_tls() -> io::Result<Self> {
        Self::start_with(true)
    }

    /// The PEM file of the CA that signed the server's certificate (with
    /// [`Postgres::start_tls`]; a file that does not exist otherwise).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn start_with(tls: bool) -> io::Result<Self> {
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
        // 127.0.0.2 too: a loopback address its certificate does not name.
        let mut settings = vec![
            "listen_addresses=127.0.0.1,127.0.0.2",
            "max_connections=300",
        ];
        if tls {
            write_certificates(dir.path(), &data)?;
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.0/8 trust\n",
            )?;
            settings.extend([
                "ssl=on",
                "ssl_cert_file=server.crt",
                "ssl_key_file=server.key",
            ]);
        }
        let mut pg = Self {
            child: None,
            port: free_port()?,
            bin,
            dir,
            settings: settings.into_iter().map(str::to_owned).collect(),
        };
        pg.spawn()?;
        pg.create_database("upsession")?;
        Ok(pg)
    }

    /// Starts the server process on its directory and port; waits for the port.
    fn spawn(&mut self) -> io::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("postgres.log"))?;
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(self.dir.path().join("postgres.log"))
            .stderr(Stdio::null())
            .status();
        let child = as_db_user(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(self.settings.iter().flat_map(|setting| ["-c", setting]))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()?;
        self.child = Some(child);
        wait_for_port(self.port, Duration::from_secs(30))
    }

    /// Stops the server as an operator's immediate shutdown does (`SIGQUIT`):
    /// every connection is cut at once; what was committed stays.
    ///
    /// # Errors
    /// When the signal cannot be sent.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(mut child) = self.child.take() {
            run(Command::new("kill").args(["-QUIT", &child.id().to_string()]))?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts a stopped server again on the same port and data, and waits until
    /// it answers queries (after its crash recovery).
    ///
    /// # Errors
    /// When it does not answer within 30 s.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.child.is_none() {
            self.spawn()?;
        }
        let start = Instant::now();
        loop {
            match self.sql("postgres", "SELECT 1") {
                Ok(_) => return Ok(()),
                Err(e) if start.elapsed() > Duration::from_secs(30) => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
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
            if let Some(status) = self
                .child
                .as_mut()
                .map(Child::try_wait)
                .transpose()?
                .flatten()
            {
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

/// A CA certificate (PEM) that signed nothing: a client trusting it alone must
/// refuse every server.
///
/// # Errors
/// Never in practice (key generation).
pub fn unrelated_ca_pem() -> io::Result<String> {
    let failed = |e: rcgen::Error| io::Error::other(format!("test certificate: {e}"));
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().map_err(failed)?)
        .map_err(failed)?;
    Ok(ca.pem())
}

/// A CA (its certificate to `dir/ca.pem`) and the server's certificate and key
/// signed by it (to `data/server.crt` and `server.key`, the key readable by its
/// owner only, as PostgreSQL demands, and owned by `postgres` when we are root).
fn write_certificates(dir: &Path, data: &Path) -> io::Result<()> {
    let failed = |e: rcgen::Error| io::Error::other(format!("test certificate: {e}"));
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(failed)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "upsession test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().map_err(failed)?)
        .map_err(failed)?;
    let key = rcgen::KeyPair::generate().map_err(failed)?;
    let server = rcgen::CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(failed)?
        .signed_by(&key, &ca)
        .map_err(failed)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;
    std::fs::write(data.join("server.crt"), server.pem())?;
    let key_file = data.join("server.key");
    std::fs::write(&key_file, key.serialize_pem())?;
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    for file in ["server.crt", "server.key", "pg_hba.conf"] {
        let _ = Command::new("chown")
            .arg("postgres:postgres")
            .arg(data.join(file))
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
