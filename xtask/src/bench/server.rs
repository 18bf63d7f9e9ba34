//! The processes a bench run measures: each contender (`sink`, `upsession serve`,
//! rustus, with and without fsync) started on 127.0.0.1 and stopped on drop.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The bearer token every server is started with and `loadgen` sends.
pub(super) const TOKEN: &str = "bench-token";

/// A started server process (`upsession serve` or `sink`).
pub(super) struct Server {
    child: Child,
    pub(super) base: String,
    _stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Server {
    /// Spawns the server; its stdout is piped (and kept open while it runs) when
    /// its banner is to be read, and discarded otherwise, so it never blocks on a
    /// full pipe.
    fn spawn(
        cmd: &mut Command,
        banner: bool,
    ) -> Result<(Child, Option<BufReader<std::process::ChildStdout>>), String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(if banner {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let stdout = child.stdout.take().map(BufReader::new);
        Ok((child, stdout))
    }

    /// Spawns a server that prints its banner (`upsession serving {base} ...`) and
    /// reads its base URL from it.
    fn start(mut cmd: Command) -> Result<Self, String> {
        let (child, stdout) = Self::spawn(&mut cmd, true)?;
        let mut stdout = stdout.ok_or("no stdout")?;
        let mut first = String::new();
        stdout.read_line(&mut first).map_err(|e| e.to_string())?;
        let base = first
            .strip_prefix("upsession serving ")
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| format!("unexpected banner: {first:?}"))?
            .to_owned();
        Ok(Self {
            child,
            base,
            _stdout: Some(stdout),
        })
    }

    /// The server's process id.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A server that prints no banner: started on `port`, ready once it accepts.
    fn start_on_port(mut cmd: Command, port: u16, base: String) -> Result<Self, String> {
        let (mut child, stdout) = Self::spawn(&mut cmd, false)?;
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let started = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
            if started.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                return Err(format!("nothing listened on {addr} within 20 s"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Self {
            child,
            base,
            _stdout: stdout,
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
/// One server measured.
pub(super) enum Contender {
    Sink,
    SinkFsync,
    Ours,
    OursFsync,
    Rustus,
    RustusFsync,
}

impl Contender {
    /// Its name in the table.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Sink => "sink",
            Self::SinkFsync => "sink --fsync",
            Self::Ours => "upsession",
            Self::OursFsync => "upsession --fsync always",
            Self::Rustus => "rustus",
            Self::RustusFsync => "rustus --force-fsync",
        }
    }

    /// Whether it is rustus, which speaks tus rather than Graph.
    pub(super) fn is_rustus(self) -> bool {
        matches!(self, Self::Rustus | Self::RustusFsync)
    }

    /// Starts it on the data directory `dir`. `rustus`: the rustus binary, needed
    /// for the rustus contenders only.
    pub(super) fn start_with(
        self,
        bin: &Path,
        rustus: Option<&Path>,
        dir: &Path,
    ) -> Result<Server, String> {
        if !self.is_rustus() {
            return self.start(bin, dir);
        }
        let rustus = rustus.ok_or("rustus is not installed")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let (data, info) = (dir.join("data"), dir.join("info"));
        for d in [&data, &info] {
            fs::create_dir_all(d).map_err(|e| e.to_string())?;
        }
        let mut cmd = Command::new(rustus);
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--data-dir")
            .arg(&data)
            .arg("--info-dir")
            .arg(&info)
            // Its default 256 KiB body limit refuses 4 MiB fragments.
            .args(["--max-body-size", "8388608", "--log-level", "warn"]);
        if self == Self::RustusFsync {
            // A bool that takes a value (structopt with `env`).
            cmd.args(["--force-fsync", "true"]);
        }
        Server::start_on_port(cmd, port, format!("http://127.0.0.1:{port}/files"))
    }

    /// Starts a contender that is not rustus.
    pub(super) fn start(self, bin: &Path, dir: &Path) -> Result<Server, String> {
        let mut cmd;
        match self {
            Self::Rustus | Self::RustusFsync => {
                return Err("rustus starts through start_with".into());
            }
            Self::Sink | Self::SinkFsync => {
                cmd = Command::new(bin.join("sink"));
                cmd.args(["--listen", "127.0.0.1:0", "--dir"]).arg(dir);
                if self == Self::SinkFsync {
                    cmd.arg("--fsync");
                }
            }
            Self::Ours | Self::OursFsync => {
                cmd = Command::new(bin.join("upsession"));
                cmd.args([
                    "serve",
                    "--listen",
                    "127.0.0.1:0",
                    "--token",
                    TOKEN,
                    "--data-dir",
                ])
                .arg(dir);
                cmd.args([
                    "--fsync",
                    if self == Self::OursFsync {
                        "always"
                    } else {
                        "never"
                    },
                ]);
                // Capacity is measured, not the per-token policy: 10,000 idle
                // sessions and the grid's 1 GiB files are in bounds.
                cmd.args(["--min-size", "1", "--max-size", "2GiB"])
                    .args(["--max-sessions-per-token", "1000000"])
                    .env("RUST_LOG", "warn");
            }
        }
        Server::start(cmd)
    }
}
