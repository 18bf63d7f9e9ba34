//! What the official-SDK interop tests share: running a script under a deadline or
//! watching it line by line, the test files, killing and restarting the server
//! under an upload, and checking every attachment from our side.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::Serve;

/// The bearer token the interop servers accept.
pub(crate) const TOKEN: &str = "interop-token";

/// The sizes every SDK uploads: the 5 MB, 33 MiB + 7 B and 150 MB.
pub(crate) const SIZES: [(&str, usize); 3] = [
    ("five-megabytes.bin", 5_000_000),
    ("thirty-three-mib-and-seven.bin", 33 * 1024 * 1024 + 7),
    ("hundred-fifty-megabytes.bin", 150_000_000),
];

/// The workspace's target directory (where tool installs are kept between runs).
pub(crate) fn target_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let workspace = fs::canonicalize(&workspace).unwrap_or(workspace);
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace.join(dir), // an absolute dir replaces the base
        _ => workspace.join("target"),
    }
}

/// The folder of the interop scripts.
pub(crate) fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// A tool is not usable here: a failure under CI, a skip otherwise.
pub(crate) fn unavailable(test: &str, why: &str) {
    let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    if ci {
        panic!("{test} cannot run, and CI is set: {why}");
    }
    eprintln!("SKIPPED {test}: {why}\n(with CI set this is a failure)");
}

/// A child process killed (SIGKILL) and reaped when dropped.
pub(crate) struct Reaped(pub(crate) Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How a process ended, and what it printed.
pub(crate) struct Ran {
    /// `None` when the process was killed at the timeout.
    pub(crate) status: Option<ExitStatus>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Ran {
    pub(crate) fn ok(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }

    pub(crate) fn describe(&self, what: &str) -> String {
        let how = match self.status {
            Some(s) => format!("{what} exited with {s}"),
            None => format!("{what} was killed at its deadline"),
        };
        format!(
            "{how}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout, self.stderr
        )
    }

    /// The `RESULT {json}` line's array.
    pub(crate) fn results(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix("RESULT "))
            .map(|json| serde_json::from_str(json).expect("RESULT is JSON"))
            .unwrap_or_else(|| panic!("no RESULT line: {}", self.describe("the script")))
    }
}

/// Runs `cmd` to completion or `timeout`, its output going through files (no pipe
/// can fill up and stall it).
pub(crate) fn run(cmd: &mut Command, timeout: Duration) -> std::io::Result<Ran> {
    let logs = tempfile::tempdir()?;
    let (out, err) = (logs.path().join("stdout"), logs.path().join("stderr"));
    let mut child = Reaped(
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&out)?)
            .stderr(fs::File::create(&err)?)
            .spawn()?,
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            break None; // the drop of `child` kills it
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    drop(child);
    Ok(Ran {
        status,
        stdout: String::from_utf8_lossy(&fs::read(&out)?).into_owned(),
        stderr: String::from_utf8_lossy(&fs::read(&err)?).into_owned(),
    })
}

/// A script whose stdout is read line by line as it runs.
pub(crate) struct Live {
    child: Reaped,
    lines: mpsc::Receiver<String>,
    stdout: String,
    stderr_path: PathBuf,
    _logs: tempfile::TempDir,
}

impl Live {
    pub(crate) fn spawn(cmd: &mut Command) -> Self {
        let logs = tempfile::tempdir().unwrap();
        let stderr_path = logs.path().join("stderr");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("the script starts");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child: Reaped(child),
            lines,
            stdout: String::new(),
            stderr_path,
            _logs: logs,
        }
    }

    /// Waits (at most `limit`) for the `n`-th line starting with `prefix` since the
    /// script started; returns it, or `None` if the script ended or time ran out.
    pub(crate) fn wait_for(&mut self, prefix: &str, n: usize, limit: Duration) -> Option<String> {
        let deadline = Instant::now() + limit;
        let mut seen = self
            .stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .count();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                return None;
            };
            self.stdout.push_str(&line);
            self.stdout.push('\n');
            if line.starts_with(prefix) {
                seen += 1;
                if seen >= n {
                    return Some(line);
                }
            }
        }
        None
    }

    /// Waits for the script to end (at most `limit`; then it is killed).
    pub(crate) fn finish(mut self, limit: Duration) -> Ran {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.0.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        drop(self.child);
        // The reader thread ends at EOF, once the process is gone.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.stdout.push_str(&line);
            self.stdout.push('\n');
        }
        Ran {
            status,
            stdout: self.stdout,
            stderr: fs::read_to_string(&self.stderr_path).unwrap_or_default(),
        }
    }
}

/// A test file: its path, SHA-256 and size.
pub(crate) struct TestFile {
    pub(crate) path: PathBuf,
    pub(crate) sha256: String,
    pub(crate) size: usize,
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Random files of `sizes` in `dir`, the same for a seed.
pub(crate) fn files(dir: &Path, sizes: &[(&str, usize)], seed: u64) -> Vec<TestFile> {
    let mut rng = fastrand::Rng::with_seed(seed);
    sizes
        .iter()
        .map(|&(name, size)| {
            let mut data = vec![0u8; size];
            rng.fill(&mut data);
            let path = dir.join(name);
            fs::write(&path, &data).unwrap();
            TestFile {
                path,
                sha256: sha256_hex(&data),
                size,
            }
        })
        .collect()
}

/// An HTTP client that trusts `root_pem` (a test's self-signed certificate).
pub(crate) fn http_client(root_pem: Option<&str>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(pem) = root_pem {
        builder =
            builder.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap());
    }
    builder.build().unwrap()
}

/// Checks a script's results against the files, and downloads each attachment from
/// its `Location` to compare again from this side.
pub(crate) fn check_results(results: &[Value], files: &[TestFile], root_pem: Option<&str>) {
    assert_eq!(results.len(), files.len(), "{results:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = http_client(root_pem);
    for (file, result) in files.iter().zip(results) {
        let name = file.path.display();
        assert_eq!(result["size"], file.size, "{name}");
        assert_eq!(result["sha256"], *file.sha256, "{name}");
        let location = result["location"].as_str().expect("a Location");
        let bytes = rt.block_on(super::download(&http, location, TOKEN));
        assert_eq!(bytes.len(), file.size, "{name}");
        assert_eq!(sha256_hex(&bytes), file.sha256, "{name}");
        eprintln!(
            "{name}: {} PUTs by the SDK, answers {}, {} after the first 201, {} interruptions",
            result["puts"], result["statuses"], result["puts_after_201"], result["interruptions"]
        );
    }
}

/// A self-signed certificate for 127.0.0.1 and localhost in `dir`: (cert path, key
/// path, cert PEM).
pub(crate) fn self_signed(dir: &Path) -> (PathBuf, PathBuf, String) {
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    fs::write(&cert_path, cert.pem()).unwrap();
    fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    (cert_path, key_path, cert.pem())
}

/// `upsession serve` for an SDK: a fixed port (so a restart keeps the uploadUrls),
/// `data` for state, and `extra` flags.
pub(crate) struct SdkServer {
    pub(crate) serve: Option<Serve>,
    data: PathBuf,
    listen: String,
    args: Vec<String>,
}

impl SdkServer {
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Self {
        let port = upsession_testbed::free_port().unwrap();
        let mut args: Vec<String> = ["--token", TOKEN, "--fsync", "never"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut server = Self {
            serve: None,
            data: data.to_owned(),
            listen: format!("127.0.0.1:{port}"),
            args,
        };
        server.restart();
        server
    }

    /// The Graph base URL (`http(s)://127.0.0.1:PORT/v1.0`).
    pub(crate) fn base(&self) -> String {
        self.serve.as_ref().expect("running").base.clone()
    }

    /// kill -9: no shutdown, no flush; what was answered must be on disk already.
    pub(crate) fn kill9(&mut self) {
        if let Some(serve) = self.serve.take() {
            serve.kill9();
        }
    }

    /// Starts it (again) on the same port and data directory.
    pub(crate) fn restart(&mut self) {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.serve = Some(Serve::start(&self.data, &self.listen, &args));
    }
}

/// Runs an upload script that the server is killed under: after the `after`-th
/// answered fragment (`ANSWERED` line) the server gets a kill -9, and it is started
/// again once the script says `INTERRUPTED`. Returns how the script ended.
pub(crate) fn kill_under(
    server: &mut SdkServer,
    script: &mut Command,
    after: usize,
    limit: Duration,
) -> Ran {
    let started = Instant::now();
    let mut live = Live::spawn(script);
    let answered = live.wait_for("ANSWERED", after, limit);
    assert!(
        answered.is_some(),
        "{}",
        live.finish(Duration::ZERO)
            .describe("the script (before the kill)")
    );
    server.kill9();
    eprintln!(
        "killed the server (kill -9) after {after} answered fragments, at {:.1?}",
        started.elapsed()
    );
    let interrupted = live.wait_for("INTERRUPTED", 1, limit);
    assert!(
        interrupted.is_some(),
        "{}",
        live.finish(Duration::ZERO)
            .describe("the script (after the kill)")
    );
    server.restart();
    eprintln!("restarted the server at {:.1?}", started.elapsed());
    live.finish(limit.saturating_sub(started.elapsed()))
}
