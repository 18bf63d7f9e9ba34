//! What the official-SDK interop tests share: running a script under a deadline or
//! watching it line by line, the test files, killing and restarting the server
//! under an upload, checking every attachment from our side, and the OneDrive
//! scenario (one path, each conflict behaviour) with its checks.

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;
use upsession_core::quickxor::QuickXorHash;
use upsession_testbed::kit::{
    Graph, client_trusting, download, self_signed, sha256_hex, unavailable,
};

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

/// An SDK installed into `target/{name}` from the pinned file `pins`: reused while
/// the stamp `{name}/{stamp}` holds the pins' SHA-256 and `provides` (a path inside)
/// exists, else made by `install(dir)`. Returns `provides`.
pub(crate) fn install_pinned(
    name: &str,
    pins: &Path,
    stamp: &str,
    provides: PathBuf,
    install: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let pinned = fs::read(pins).unwrap_or_else(|e| panic!("{}: {e}", pins.display()));
    let want = format!("{}\n", sha256_hex(&pinned));
    let dir = target_dir().join(name);
    let stamp = dir.join(stamp);
    // Test runners start each test in its own process, at the same time: one
    // installs while the others wait on this lock, then reuse what it made.
    fs::create_dir_all(target_dir())
        .map_err(|e| format!("cannot create the target directory: {e}"))?;
    let lock = fs::File::create(target_dir().join(format!("{name}.lock")))
        .map_err(|e| format!("cannot create the install lock: {e}"))?;
    lock.lock()
        .map_err(|e| format!("cannot take the install lock: {e}"))?;
    if provides.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        eprintln!("reusing {} (its pins are unchanged)", dir.display());
        return Ok(provides);
    }
    eprintln!("installing the pinned SDK into {}", dir.display());
    install(&dir)?;
    fs::write(&stamp, want).expect("the install stamp can be written");
    Ok(provides)
}

/// Runs an installation step, `what`, to its end or `timeout`; `Err` says why it
/// failed.
pub(crate) fn install_step(cmd: &mut Command, timeout: Duration, what: &str) -> Result<(), String> {
    let ran = run(cmd, timeout).map_err(|e| format!("cannot run {what}: {e}"))?;
    if ran.ok() {
        Ok(())
    } else {
        Err(ran.describe(what))
    }
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

    /// [`Live::wait_for`] that must see the line; else the script is stopped and
    /// its output (`what`: when) is the panic's message.
    pub(crate) fn expect_line(
        mut self,
        prefix: &str,
        n: usize,
        limit: Duration,
        what: &str,
    ) -> Self {
        if self.wait_for(prefix, n, limit).is_none() {
            let ran = self.finish(Duration::ZERO);
            panic!("{}", ran.describe(&format!("the script ({what})")));
        }
        self
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

/// Checks a script's results against the files, and downloads each attachment from
/// its `Location` to compare again from this side.
pub(crate) fn check_results(results: &[Value], files: &[TestFile], root_pem: Option<&str>) {
    assert_eq!(results.len(), files.len(), "{results:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = root_pem.map_or_else(reqwest::Client::new, client_trusting);
    for (file, result) in files.iter().zip(results) {
        let name = file.path.display();
        assert_eq!(result["size"], file.size, "{name}");
        assert_eq!(result["sha256"], *file.sha256, "{name}");
        let location = result["location"].as_str().expect("a Location");
        let bytes = rt.block_on(download(&http, location, TOKEN));
        assert_eq!(bytes.len(), file.size, "{name}");
        assert_eq!(sha256_hex(&bytes), file.sha256, "{name}");
        eprintln!(
            "{name}: {} PUTs by the SDK, answers {}, {} after the first 201, {} interruptions",
            result["puts"], result["statuses"], result["puts_after_201"], result["interruptions"]
        );
    }
}

/// Where every SDK's drive uploads go: a folder, and a name with a space and a `#`
/// (which must be percent-encoded in a path).
pub(crate) const DRIVE_PATH: &str = "Uploads/big file #1.bin";

/// The files of the drive scenario: 150 MB, then 12 MiB + 3 B and 7 MiB + 11 B.
const DRIVE_SIZES: [(&str, usize); 3] = [
    ("hundred-fifty-megabytes.bin", 150_000_000),
    ("twelve-mib-and-three.bin", 12 * 1024 * 1024 + 3),
    ("seven-mib-and-eleven.bin", 7 * 1024 * 1024 + 11),
];

/// One upload of the drive scenario: a file of [`DRIVE_SIZES`] to [`DRIVE_PATH`]
/// under a conflict behaviour, and what it must end in.
struct DriveStep {
    file: usize,
    conflict: &'static str,
    /// The status of the answer that completes (or ends) the upload.
    status: u16,
    /// The driveItem's name, or `None` for an upload refused 409 nameAlreadyExists.
    name: Option<&'static str>,
    /// The file whose bytes the item's path (or the refused path) holds after it.
    holds: usize,
}

/// The drive scenario: a new file under `fail` (201), another to the same path
/// under `fail` (409 nameAlreadyExists at the last fragment; the first file stays),
/// `replace` (200, the same item) and `rename` (201, `name 1.ext`).
const DRIVE_STEPS: [DriveStep; 4] = [
    DriveStep {
        file: 0,
        conflict: "fail",
        status: 201,
        name: Some("big file #1.bin"),
        holds: 0,
    },
    DriveStep {
        file: 1,
        conflict: "fail",
        status: 409,
        name: None,
        holds: 0,
    },
    DriveStep {
        file: 1,
        conflict: "replace",
        status: 200,
        name: Some("big file #1.bin"),
        holds: 1,
    },
    DriveStep {
        file: 2,
        conflict: "rename",
        status: 201,
        name: Some("big file #1 1.bin"),
        holds: 2,
    },
];

/// The file's QuickXorHash (base64), by our own implementation.
fn quick_xor_file(path: &Path) -> String {
    let mut hash = QuickXorHash::new();
    hash.update(&fs::read(path).unwrap());
    hash.finish_base64()
}

/// `GET /me/drive/root:/{path}:/content`, each name percent-encoded: the bytes.
async fn drive_content(graph: &Graph, path: &str) -> Vec<u8> {
    let mut encoded = reqwest::Url::parse("http://127.0.0.1/me/drive").unwrap();
    encoded
        .path_segments_mut()
        .unwrap()
        .extend(format!("root:/{path}:/content").split('/'));
    let res = graph.request(Method::GET, encoded.path()).send().await;
    let res = res.expect("the content answers");
    assert_eq!(res.status(), 200, "GET {}", encoded.path());
    res.bytes().await.expect("the bytes arrive").to_vec()
}

/// Checks a drive script's results against [`DRIVE_STEPS`] and the files, and reads
/// what the path and the renamed file hold from this side.
fn check_drive_results(results: &[Value], files: &[TestFile], server: &SdkServer) {
    assert_eq!(results.len(), DRIVE_STEPS.len(), "{results:?}");
    let first = &results[0]["item"]["id"];
    assert!(first.is_string(), "{results:?}");
    for (step, result) in DRIVE_STEPS.iter().zip(results) {
        let file = &files[step.file];
        let what = format!("{} ({})", file.path.display(), step.conflict);
        eprintln!(
            "{what}: {} PUTs by the SDK, answers {}",
            result["puts"], result["statuses"]
        );
        assert_eq!(result["status"], step.status, "{what}: {result}");
        assert_eq!(result["size"], file.size, "{what}");
        assert_eq!(
            result["content_sha256"], *files[step.holds].sha256,
            "{what}: the bytes at the path after it"
        );
        let item = &result["item"];
        let Some(name) = step.name else {
            assert_eq!(result["error"], "nameAlreadyExists", "{what}: {result}");
            assert!(item.is_null(), "{what}: {result}");
            continue;
        };
        assert_eq!(item["name"], name, "{what}: {result}");
        assert_eq!(item["size"], file.size, "{what}");
        assert_eq!(item["parent"], "/drive/root:/Uploads", "{what}");
        assert_eq!(item["quickXorHash"], quick_xor_file(&file.path), "{what}");
        assert_eq!(item["sha256Hash"], file.sha256.to_uppercase(), "{what}");
        // Only `replace` keeps the first file's item.
        assert_eq!(item["id"] == *first, step.conflict != "rename", "{what}");
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let http = server
        .root_pem()
        .map_or_else(reqwest::Client::new, client_trusting);
    let graph = Graph::with_client(http, server.base(), TOKEN);
    for step in &DRIVE_STEPS[2..] {
        let path = format!("Uploads/{}", step.name.unwrap());
        let bytes = rt.block_on(drive_content(&graph, &path));
        let file = &files[step.holds];
        assert_eq!(bytes.len(), file.size, "{path}");
        assert_eq!(sha256_hex(&bytes), file.sha256, "{path}");
    }
}

/// The certificate of an https [`SdkServer`]; its directory lives as long.
struct Certificate {
    cert: PathBuf,
    pem: String,
    _dir: tempfile::TempDir,
}

/// `upsession serve` for an SDK: a fixed port (so a restart keeps the uploadUrls),
/// `data` for state, `extra` flags, and https with a certificate made here when
/// asked.
pub(crate) struct SdkServer {
    serve: Option<Serve>,
    data: PathBuf,
    listen: String,
    args: Vec<String>,
    tls: Option<Certificate>,
}

impl SdkServer {
    pub(crate) fn start(data: &Path, https: bool, extra: &[&str]) -> Self {
        let port = upsession_testbed::free_port().unwrap();
        let mut args: Vec<String> = ["--token", TOKEN, "--fsync", "never"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let tls = https.then(|| {
            let dir = tempfile::tempdir().unwrap();
            let (cert, key, pem) = self_signed(dir.path());
            for (flag, path) in [("--tls-cert", &cert), ("--tls-key", &key)] {
                args.extend([flag.to_owned(), path.display().to_string()]);
            }
            Certificate {
                cert,
                pem,
                _dir: dir,
            }
        });
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let mut server = Self {
            serve: None,
            data: data.to_owned(),
            listen: format!("127.0.0.1:{port}"),
            args,
            tls,
        };
        server.restart();
        let scheme = if https { "https" } else { "http" };
        let base = server.base();
        assert!(
            base.starts_with(&format!("{scheme}://127.0.0.1:")),
            "{base}"
        );
        server
    }

    /// The Graph base URL (`http(s)://127.0.0.1:PORT/v1.0`).
    pub(crate) fn base(&self) -> String {
        self.serve.as_ref().expect("running").base.clone()
    }

    /// The certificate file of an https server.
    pub(crate) fn cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|t| t.cert.as_path())
    }

    /// The certificate of an https server, as PEM.
    pub(crate) fn root_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.pem.as_str())
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
        self.serve = Some(super::serve(&self.data, &self.listen, &args));
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
    let live = Live::spawn(script).expect_line("ANSWERED", after, limit, "before the kill");
    server.kill9();
    eprintln!(
        "killed the server (kill -9) after {after} answered fragments, at {:.1?}",
        started.elapsed()
    );
    let live = live.expect_line("INTERRUPTED", 1, limit, "after the kill");
    server.restart();
    eprintln!("restarted the server at {:.1?}", started.elapsed());
    live.finish(limit.saturating_sub(started.elapsed()))
}

/// How long an SDK's upload script may take.
pub(crate) const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// An official SDK's upload script, as the interop tests drive it.
pub(crate) struct Sdk {
    /// The script's file name in `tests/interop`; it names the test in messages.
    pub(crate) script: &'static str,
    /// The drive script's file name in `tests/interop`: it takes `DRIVE_PATH
    /// FILE=CONFLICT...` after the Graph base.
    pub(crate) drive_script: &'static str,
    /// Whether the server must serve https.
    pub(crate) https: bool,
    /// Installs the SDK where missing: the program the script runs under, or why
    /// there is none.
    pub(crate) install: fn() -> Result<PathBuf, String>,
    /// The script's command: under `program`, against `server`, with `flags`, for
    /// `files`.
    pub(crate) command:
        fn(program: &Path, server: &SdkServer, flags: &[&str], files: &[TestFile]) -> Command,
    /// A script's command up to its arguments: `script` (in `tests/interop`) under
    /// `program`, against `server`'s Graph base.
    pub(crate) launch: fn(program: &Path, server: &SdkServer, script: &str) -> Command,
}

impl Sdk {
    /// The program the script runs under, or `None` once the SDK is reported
    /// [`unavailable`].
    pub(crate) fn program(&self) -> Option<PathBuf> {
        (self.install)()
            .map_err(|why| unavailable(&format!("the {} interop test", self.script), &why))
            .ok()
    }

    /// Asserts that the script succeeded, printing how it ran either way.
    pub(crate) fn expect_success(&self, ran: &Ran, what: &str) {
        eprintln!("{}", ran.describe(what));
        assert!(ran.ok(), "the SDK upload failed: {}", ran.describe(what));
    }

    /// Starts a server with `extra` flags, makes the files of `sizes` (from `seed`),
    /// runs the script (`what`) that `command` makes for them, and gives its results
    /// to `check`.
    fn runs_at_defaults(
        &self,
        extra: &[&str],
        seed: u64,
        sizes: &[(&str, usize)],
        what: &str,
        command: impl FnOnce(&Path, &SdkServer, &[TestFile]) -> Command,
        check: impl FnOnce(&[Value], &[TestFile], &SdkServer),
    ) {
        let started = Instant::now();
        let Some(program) = self.program() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let server = SdkServer::start(&dir.path().join("data"), self.https, extra);
        let files = files(dir.path(), sizes, seed);
        let ran =
            run(&mut command(&program, &server, &files), SCRIPT_TIMEOUT).expect("the script runs");
        self.expect_success(&ran, what);
        check(&ran.results(), &files, &server);
        eprintln!("whole test {:.1?}", started.elapsed());
    }

    /// The SDK at its defaults uploads the three sizes to a server started with
    /// `extra` flags.
    pub(crate) fn uploads_at_defaults(&self, extra: &[&str], seed: u64) {
        self.runs_at_defaults(
            extra,
            seed,
            &SIZES,
            self.script,
            |program, server, files| (self.command)(program, server, &[], files),
            |results, files, server| check_results(results, files, server.root_pem()),
        );
    }

    /// The SDK at its defaults runs the drive scenario ([`DRIVE_STEPS`]: 150 MB
    /// under `fail`, then a smaller file to the same path under `fail`, `replace`
    /// and `rename`) against a server started with `extra` flags.
    pub(crate) fn uploads_to_a_drive_at_defaults(&self, extra: &[&str], seed: u64) {
        self.runs_at_defaults(
            extra,
            seed,
            &DRIVE_SIZES,
            self.drive_script,
            |program, server, files| {
                let mut script = (self.launch)(program, server, self.drive_script);
                script.arg(DRIVE_PATH).args(DRIVE_STEPS.iter().map(|step| {
                    let mut arg = files[step.file].path.clone().into_os_string();
                    arg.push(format!("={}", step.conflict));
                    arg
                }));
                script
            },
            check_drive_results,
        );
    }

    /// The server is killed (SIGKILL) mid-upload of a 33 MiB + 7 B file; the
    /// script resumes with the SDK's own means once it is back. Nothing
    /// acknowledged is lost.
    pub(crate) fn resumes_after_kill9(&self, extra: &[&str], seed: u64) {
        let Some(program) = self.program() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let mut server = SdkServer::start(&dir.path().join("data"), self.https, extra);
        let files = files(dir.path(), &SIZES[1..2], seed);
        let mut script = (self.command)(&program, &server, &["--resume"], &files);
        let ran = kill_under(&mut server, &mut script, 2, SCRIPT_TIMEOUT);
        self.expect_success(&ran, &format!("{} --resume", self.script));
        let results = ran.results();
        assert_eq!(results[0]["interruptions"], 1, "{results:?}");
        check_results(&results, &files, server.root_pem());
    }
}

/// The tests every SDK gets, each named for what it shows: `SDK` uploads at its
/// defaults to the default server and in the outlook dialect, resumes after a
/// kill -9 of either, and runs the drive scenario; each with its seed.
#[allow(unused_macros)] // each test file that shares `common` uses a part
macro_rules! sdk_tests {
    ($sdk:expr; $($test:ident: $run:ident($($flag:literal),*), $seed:literal;)*) => {$(
        #[test]
        fn $test() {
            $sdk.$run(&[$($flag),*], $seed);
        }
    )*};
}
#[allow(unused_imports)]
pub(crate) use sdk_tests;
