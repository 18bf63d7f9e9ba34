//! The official Microsoft Graph JavaScript SDK uploads to `upsession serve` unchanged,
//! at its default settings.
//!
//! `tests/interop/msgraph_upload.cjs` creates a draft and an upload session and sends
//! the fragments of a 5 MB, a 33 MiB + 7 B and a 150 MB file, all through
//! `@microsoft/microsoft-graph-client` 3.0.7 (`Client`, `LargeFileUploadTask` and
//! `FileUpload` at the default 5 MiB range size), then downloads each attachment from
//! its `Location` and compares SHA-256; this test checks again from its side. It runs
//! against the default flags and `--dialect outlook`, and survives a kill -9 of the
//! server mid-upload (the SDK's own `resume()` asks the session and goes on).
//!
//! The SDK only follows an uploadUrl that starts with `https://`
//! (`GraphRequest.parsePath`), so the server runs with `--tls-cert`/`--tls-key` (a
//! certificate made here, trusted by Node through `NODE_EXTRA_CA_CERTS`). The Graph
//! routes are reached as `localhost`, a `customHosts` entry the SDK sends its token
//! to, and the uploadUrls are on `127.0.0.1`, where it sends none: as with real Graph.
//!
//! The SDK is installed with `npm ci` from `tests/interop/js/package-lock.json` into
//! `target/interop-node`, reused while a stamp holds the lock file's SHA-256. Node and
//! npm come from Debian's packages (`cargo xtask engines` installs them where
//! missing). Without them the test fails when `CI` is set and is skipped otherwise.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::interop::{
    self, Ran, SdkServer, TOKEN, check_results, files, interop_dir, run, self_signed, target_dir,
};
use sha2::{Digest, Sha256};

const NPM_TIMEOUT: Duration = Duration::from_secs(300);
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);
const TEST: &str = "the msgraph JavaScript interop test";

/// `node_modules` with the pinned SDK, or why there is none.
fn node_modules() -> Result<PathBuf, String> {
    let node = run(
        Command::new("node").arg("--version"),
        Duration::from_secs(30),
    )
    .map_err(|e| format!("cannot run node ({e}); install Debian's nodejs and npm"))?;
    let major: u32 = node
        .stdout
        .trim()
        .trim_start_matches('v')
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    if major < 18 {
        return Err(format!(
            "node {} is too old: the SDK's fetch needs 18 or later",
            node.stdout.trim()
        ));
    }
    let js = interop_dir().join("js");
    let lock_file = fs::read(js.join("package-lock.json")).expect("the lock file is readable");
    let want = format!("{:x}\n", Sha256::digest(&lock_file));
    let dir = target_dir().join("interop-node");
    let stamp = dir.join("package-lock.sha256");
    fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let lock = fs::File::create(target_dir().join("interop-node.lock"))
        .map_err(|e| format!("cannot create the install lock: {e}"))?;
    lock.lock()
        .map_err(|e| format!("cannot take the install lock: {e}"))?;
    let modules = dir.join("node_modules");
    if modules.exists() && fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(modules);
    }
    for file in ["package.json", "package-lock.json"] {
        fs::copy(js.join(file), dir.join(file)).map_err(|e| format!("cannot copy {file}: {e}"))?;
    }
    let ran = run(
        Command::new("npm")
            .args([
                "ci",
                "--ignore-scripts",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
            ])
            .current_dir(&dir),
        NPM_TIMEOUT,
    )
    .map_err(|e| format!("cannot run npm ({e}); install Debian's npm"))?;
    if !ran.ok() {
        return Err(ran.describe("`npm ci`"));
    }
    fs::write(&stamp, want).expect("the install stamp can be written");
    Ok(modules)
}

/// A TLS server for the SDK, with `extra` flags; keeps its certificate directory.
struct TlsServer {
    server: SdkServer,
    cert: PathBuf,
    pem: String,
    _dir: tempfile::TempDir,
}

impl TlsServer {
    fn start(data: &Path, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, pem) = self_signed(dir.path());
        let mut args = vec![
            "--tls-cert".to_owned(),
            cert.display().to_string(),
            "--tls-key".to_owned(),
            key.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let server = SdkServer::start(data, &args);
        assert!(
            server.base().starts_with("https://127.0.0.1:"),
            "{}",
            server.base()
        );
        Self {
            server,
            cert,
            pem,
            _dir: dir,
        }
    }

    /// The Graph base the SDK uses: the same server, reached as `localhost`.
    fn graph_base(&self) -> String {
        self.server
            .base()
            .replace("https://127.0.0.1:", "https://localhost:")
    }
}

fn script(
    modules: &Path,
    server: &TlsServer,
    flags: &[&str],
    files: &[interop::TestFile],
) -> Command {
    let mut cmd = Command::new("node");
    cmd.arg(interop_dir().join("msgraph_upload.cjs"))
        .arg(server.graph_base())
        .args(flags)
        .args(files.iter().map(|f| &f.path))
        .env("UPSESSION_TOKEN", TOKEN)
        .env("NODE_PATH", modules)
        .env("NODE_EXTRA_CA_CERTS", &server.cert);
    cmd
}

fn expect_success(ran: &Ran, what: &str) {
    eprintln!("{}", ran.describe(what));
    assert!(ran.ok(), "the SDK upload failed: {}", ran.describe(what));
}

fn uploads_at_defaults(extra: &[&str], seed: u64) {
    let modules = match node_modules() {
        Ok(m) => m,
        Err(why) => return interop::unavailable(TEST, &why),
    };
    let dir = tempfile::tempdir().unwrap();
    let server = TlsServer::start(&dir.path().join("data"), extra);
    let files = files(dir.path(), &interop::SIZES, seed);
    let ran = run(&mut script(&modules, &server, &[], &files), SCRIPT_TIMEOUT).expect("node runs");
    expect_success(&ran, "msgraph_upload.cjs");
    check_results(&ran.results(), &files, Some(&server.pem));
}

#[test]
fn graph_js_uploads_at_its_defaults_to_the_default_server() {
    uploads_at_defaults(&[], 0x6a73_0001);
}

#[test]
fn graph_js_uploads_at_its_defaults_in_the_outlook_dialect() {
    uploads_at_defaults(&["--dialect", "outlook"], 0x6a73_0002);
}

fn resumes_after_kill9(extra: &[&str], seed: u64) {
    let modules = match node_modules() {
        Ok(m) => m,
        Err(why) => return interop::unavailable(TEST, &why),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = TlsServer::start(&dir.path().join("data"), extra);
    let files = files(dir.path(), &interop::SIZES[1..2], seed);
    let mut cmd = script(&modules, &server, &["--resume"], &files);
    let ran = interop::kill_under(&mut server.server, &mut cmd, 2, SCRIPT_TIMEOUT);
    expect_success(&ran, "msgraph_upload.cjs --resume");
    let results = ran.results();
    assert_eq!(results[0]["interruptions"], 1, "{results:?}");
    check_results(&results, &files, Some(&server.pem));
}

#[test]
fn graph_js_resumes_after_a_kill9_of_the_default_server() {
    resumes_after_kill9(&[], 0x6a73_0003);
}

#[test]
fn graph_js_resumes_after_a_kill9_in_the_outlook_dialect() {
    resumes_after_kill9(&["--dialect", "outlook"], 0x6a73_0004);
}
