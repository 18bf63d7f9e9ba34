//! The `upsession` binary as a user runs it: a real `serve` child process on a free
//! port, real files, `upload`, `resume`, `status`, `cancel`, exit codes and output.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Serve, bin};
use serde_json::Value;
use upsession_testbed::kit::{Graph, crc64_hex, download, seeded_file, sha256_hex};

const TOKEN: &str = "cli-token";

fn serve(dir: &Path, extra: &[&str]) -> Serve {
    let mut args = vec!["--token", TOKEN, "--fsync", "never"];
    args.extend_from_slice(extra);
    common::serve(dir, "127.0.0.1:0", &args)
}

fn file(dir: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    seeded_file(dir, name, len, seed).0
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("the binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `upsession upload` against `server`, with its own state directory.
fn upload(server: &Serve, state: &Path) -> Command {
    let mut cmd = bin();
    cmd.args([
        "upload",
        "--base-url",
        &server.base,
        "--token",
        TOKEN,
        "--state-dir",
    ])
    .arg(state);
    cmd
}

/// Waits (bounded) until an upload has saved a resumable state (its session
/// exists), then kills the upload process. False if it finished first or never
/// saved one.
fn kill_once_resumable(child: &mut std::process::Child, state: &Path) -> bool {
    for _ in 0..1500 {
        std::thread::sleep(Duration::from_millis(10));
        let progressed = std::fs::read_dir(state)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            // State files only: a `.upsession-*.tmp` being written is not one yet.
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                !name.starts_with('.') && name.ends_with(".json")
            })
            .any(|e| {
                std::fs::read_to_string(e.path())
                    .ok()
                    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                    // Resumable once the session exists (progress in the state
                    // is informational, written at most once a second).
                    .is_some_and(|v| v["uploadUrl"].as_str().is_some_and(|u| !u.is_empty()))
            });
        if progressed {
            child.kill().unwrap();
            let _ = child.wait();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// Asserts that the attachment at `location` holds exactly the file at `path`.
async fn assert_uploaded(location: &str, path: &Path, what: &str) {
    let stored = download(&reqwest::Client::new(), location, TOKEN).await;
    let file = std::fs::read(path).unwrap();
    assert_eq!(sha256_hex(&stored), sha256_hex(&file), "{what}");
}

/// A server taking 200 MB, and an upload of a seeded file `name` of `len` bytes
/// from `seed` in 64 KiB fragments to it, killed once it saved a resumable state
/// (bounded wait): (its directory, the server, the file, the state directory).
fn interrupted_upload(
    name: &str,
    len: usize,
    seed: u64,
) -> (tempfile::TempDir, Serve, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--max-size", "200MB"]);
    let file = file(dir.path(), name, len, seed);
    let state = dir.path().join("state");
    let mut child = upload(&server, &state)
        .args(["--draft", name, "--chunk-size", "64KiB"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Only a state that is saved (not a file being written) can be resumed.
    assert!(
        kill_once_resumable(&mut child, &state),
        "the upload finished or never saved its state first"
    );
    (dir, server, file, state)
}

#[tokio::test]
async fn the_banner_upload_line_works_as_printed() {
    let dir = tempfile::tempdir().unwrap();
    // A start that fails (the port is taken) keeps no token it never showed.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = run(bin()
        .args(["serve", "--fsync", "never", "--listen"])
        .arg(taken.local_addr().unwrap().to_string())
        .arg("--data-dir")
        .arg(dir.path().join("data")));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("cannot listen"));
    assert!(!dir.path().join("data/token").exists());
    drop(taken);
    // No --token: the server generates one, prints it once and stores it.
    let server = common::serve(
        &dir.path().join("data"),
        "127.0.0.1:0",
        &["--fsync", "never"],
    );
    // Not on PATH here (as after `cargo run`): the line names the binary itself.
    let line = server
        .banner
        .iter()
        .find(|l| l.contains(" upload FILE "))
        .expect("an upload line");
    assert!(
        line.trim_start().starts_with('/'),
        "an absolute path: {line}"
    );
    assert!(
        server.banner.iter().any(|l| l.contains("generated token")),
        "{:?}",
        server.banner
    );
    let f = file(dir.path(), "quick start.bin", 3_500_000, 1);
    let state = dir.path().join("state");
    // Run as printed: only the placeholder FILE is filled in.
    let command = line
        .trim()
        .replacen("FILE", &format!("'{}'", f.display()), 1);
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(format!("{command} --state-dir '{}'", state.display())));
    assert!(
        out.status.success(),
        "{command}\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("attachment ") && stdout.contains("http://127.0.0.1:"),
        "{stdout}"
    );
    // The stored token is private.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.path().join("data/token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test]
async fn several_files_upload_and_json_output_parses() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let files: Vec<PathBuf> = (0..3)
        .map(|i| {
            file(
                dir.path(),
                &format!("f{i}.bin"),
                3_000_000 + i * 777_777,
                i as u64,
            )
        })
        .collect();
    let out = run(upload(&server, &dir.path().join("state"))
        .args(["--draft", "several", "--json"])
        .args(&files));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3);
    for (line, f) in lines.iter().zip(&files) {
        assert_eq!(line["file"], f.display().to_string());
        assert_uploaded(line["location"].as_str().unwrap(), f, "").await;
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(line["crc64"], crc64_hex(&bytes), "{line}");
        assert!(line["sha256"].is_null(), "not asked for: {line}");
    }
    // Not a terminal: plain lines, no escape codes anywhere.
    assert!(
        !out.stderr.contains(&0x1b) && !out.stdout.contains(&0x1b),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_upload_killed_mid_way_resumes_with_the_exact_bytes() {
    let (_dir, _server, big, state) = interrupted_upload("big.bin", 120_000_000, 9);

    let mut resume = bin();
    resume.args(["resume", "--json", "--state-dir"]).arg(&state);
    let out = run(&mut resume);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_uploaded(
        line["location"].as_str().unwrap(),
        &big,
        "resumed upload is byte-exact",
    )
    .await;
    let out = run(&mut resume);
    assert!(out.status.success());
    assert!(
        text(&out.stderr).contains("nothing to resume"),
        "finished uploads leave no state: {}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn a_file_name_that_is_not_utf8_uploads() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    // Latin-1 "café.bin": a file name Linux allows and UTF-8 does not.
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.bin");
    let path = dir.path().join(name);
    std::fs::write(&path, vec![7u8; 3_100_000]).unwrap();
    let out = run(upload(&server, &dir.path().join("state"))
        .args(["--draft", "x", "--json"])
        .arg(&path));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["size"], 3_100_000);
}

#[tokio::test]
async fn status_and_cancel_of_an_upload_url() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let url = &Graph::new(&server.base, TOKEN)
        .open_session(5_000_000)
        .await;
    let out = run(bin().args(["status", url]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("0-4999999"),
        "{}",
        text(&out.stdout)
    );
    let out = run(bin().args(["status", "--json", url]));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["nextExpectedRanges"][0], "0-4999999");
    // A closed stdout (`| head -c0`) is no reason to panic.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = bin()
        .args(["status", url])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    let out = run(bin().args(["cancel", url]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(bin().args(["status", url]));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(
        !err.contains("authtoken="),
        "the credential is never printed: {err}"
    );
}

#[test]
fn a_second_serve_on_a_data_directory_in_use_names_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = serve(&data, &[]);
    let mut second = bin()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            TOKEN,
            "--data-dir",
        ])
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a second server that started would never exit by itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second `serve` on the same data directory kept running");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one sentence: {err}");
    assert!(err.contains("in use"), "{err}");
    assert!(err.contains(&format!("pid {}", first.pid())), "{err}");
    // The first still serves, and after a kill -9 the directory is free again.
    first.kill9();
    serve(&data, &[]).kill9();
}

#[tokio::test]
async fn each_failure_is_one_sentence_with_its_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--max-size", "4MB"]);
    let f = file(dir.path(), "f.bin", 3_500_000, 5);
    let big = file(dir.path(), "big.bin", 5_000_000, 6);
    let state = dir.path().join("state");
    let check = |cmd: &mut Command, code: i32, needle: &str| {
        let out = run(cmd);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "stderr: {err}");
        assert!(
            err.to_lowercase().contains(needle),
            "expected {needle:?} in {err:?}"
        );
        assert!(
            !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
            "{err}"
        );
        // Beside plain progress lines (stderr is not a terminal here), one error.
        let errors = err.lines().filter(|l| l.starts_with("upsession:")).count();
        assert_eq!(errors, 1, "one sentence: {err}");
    };
    check(
        upload(&server, &state)
            .args(["--message", "AAMk-unknown"])
            .arg(&f),
        1,
        "not found",
    );
    check(
        bin()
            .args([
                "upload",
                "--base-url",
                &server.base,
                "--token",
                "wrong",
                "--draft",
                "x",
            ])
            .arg(&f),
        1,
        "access token was refused",
    );
    check(
        upload(&server, &state).args(["--draft", "x"]).arg(&big),
        1,
        "exceeds the maximum",
    );
    check(
        bin()
            .args([
                "upload",
                "--base-url",
                "http://127.0.0.1:9/v1.0",
                "--token",
                "t",
                "--draft",
                "x",
            ])
            .arg(&f),
        1,
        "cannot reach",
    );
    // https to a plain-http server: the TLS layer is named, not "is it running".
    check(
        bin()
            .args(["upload", "--base-url"])
            .arg(server.base.replacen("http://", "https://", 1))
            .args(["--token", "t", "--draft", "x"])
            .arg(&f),
        1,
        "tls handshake failed",
    );
    check(
        upload(&server, &state)
            .args(["--draft", "x"])
            .arg(dir.path().join("missing.bin")),
        1,
        "not a readable file",
    );
    // Bad usage: exit 2.
    check(upload(&server, &state).arg(&f), 2, "required");
    check(
        upload(&server, &state)
            .args(["--draft", "x", "--inline"])
            .arg(&f),
        2,
        "content-id",
    );
    check(bin().args(["status"]), 2, "required");
    check(&mut bin(), 2, "name a command: serve, upload");
    check(bin().args(["serve", "--frob"]), 2, "upsession serve --help");
    check(
        bin().args(["serve", "--min-size", "5MB", "--max-size", "4MB"]),
        2,
        "--min-size",
    );
    check(
        bin().args(["serve", "--public-url", "ftp://x"]),
        2,
        "--public-url",
    );
    check(
        upload(&server, &state)
            .args(["--draft", "x", "--chunk-size", "0"])
            .arg(&f),
        2,
        "chunk size",
    );
    check(
        bin()
            .args([
                "upload",
                "--base-url",
                "nope",
                "--token",
                "t",
                "--draft",
                "x",
            ])
            .arg(&f),
        2,
        "--base-url",
    );
    check(
        upload(&server, &state)
            .args(["--draft", "x", "--name", "n"])
            .arg(&f)
            .arg(&big),
        2,
        "--name",
    );
    // Shared storage: both flags or neither, and a database that cannot be
    // reached is one sentence, not a hang.
    let serve_with = |extra: &[&str]| {
        let mut cmd = bin();
        cmd.args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--token",
            "t",
            "--data-dir",
        ])
        .arg(dir.path().join("shared"))
        .args(extra)
        // Credentials given, so the S3 client never looks for a cloud's instance
        // credentials (a request off this machine).
        .env("AWS_ACCESS_KEY_ID", "GK0")
        .env("AWS_SECRET_ACCESS_KEY", "0");
        cmd
    };
    check(
        &mut serve_with(&["--store", "s3://bucket"]),
        2,
        "needs --meta",
    );
    check(
        &mut serve_with(&["--meta", "postgres://127.0.0.1:1/x"]),
        2,
        "shared --store",
    );
    check(&mut serve_with(&["--store", "ftp://x"]), 2, "not a store");
    check(
        &mut serve_with(&[
            "--store",
            "s3://bucket?endpoint=http://127.0.0.1:1",
            "--meta",
            "postgres://upsession@127.0.0.1:1/upsession",
        ]),
        1,
        "postgresql",
    );
}

/// The one state file in `state`: (its name as `resume --list` shows it, its
/// uploadUrl).
fn only_state(state: &Path) -> (String, String) {
    let files: Vec<PathBuf> = std::fs::read_dir(state)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let json: Value = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
    let name = files[0].file_stem().unwrap().to_string_lossy().into_owned();
    (name, json["uploadUrl"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn resume_lists_and_discards_an_upload_that_cannot_go_on() {
    let (_dir, server, f, state) = interrupted_upload("stuck.bin", 60_000_000, 11);
    let (name, url) = only_state(&state);
    let out = run(bin().args(["resume", "--list", "--state-dir"]).arg(&state));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let listed = text(&out.stdout);
    assert!(listed.starts_with(&format!("{name}: ")), "{listed}");
    assert!(
        listed.contains("stuck.bin") && !listed.contains("authtoken"),
        "{listed}"
    );
    let out = run(bin()
        .args(["resume", "--list", "--json", "--state-dir"])
        .arg(&state));
    let json: Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(json["state"], name.as_str());
    assert_eq!(json["size"], 60_000_000);
    // Changed since: every `resume` fails, and says how to get out.
    let mut data = std::fs::read(&f).unwrap();
    data[0] ^= 0xff;
    std::fs::write(&f, data).unwrap();
    let out = run(bin().args(["resume", "--state-dir"]).arg(&state));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("changed") && err.contains(&format!("--discard {name}")),
        "{err}"
    );
    // Discarded: the state is gone and so is the session on the server.
    let out = run(bin()
        .args(["resume", "--discard", &name, "--state-dir"])
        .arg(&state));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("cancelled"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(std::fs::read_dir(&state).unwrap().flatten().count(), 0);
    let gone = reqwest::get(&url).await.unwrap().status();
    assert_eq!(gone, 404, "the session was deleted on {}", server.base);
    let out = run(bin().args(["resume", "--state-dir"]).arg(&state));
    assert!(
        out.status.success(),
        "nothing left to fail: {}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn status_and_cancel_take_a_state_name_or_a_url_on_stdin() {
    let (_dir, _server, _f, state) = interrupted_upload("named.bin", 60_000_000, 12);
    let (name, url) = only_state(&state);
    let out = run(bin().args(["status", &name, "--state-dir"]).arg(&state));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("next expected ranges"),
        "{}",
        text(&out.stdout)
    );
    // The credential through stdin: never on the command line.
    let mut child = bin()
        .args(["status", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(url.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["nextExpectedRanges"][0].is_string(), "{json}");
    assert!(json["expirationDateTime"].is_string(), "{json}");
    let out = run(bin().args(["cancel", &name, "--state-dir"]).arg(&state));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_dir(&state).unwrap().flatten().count(),
        0,
        "the state went with the session"
    );
    let out = run(bin().args(["status", &name, "--state-dir"]).arg(&state));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("resume --list"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn resume_refuses_connection_flags_it_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    for flag in ["--base-url", "--user"] {
        let out = run(bin()
            .args(["resume", flag, "x", "--state-dir"])
            .arg(dir.path()));
        assert_eq!(out.status.code(), Some(2), "{flag}");
        assert!(
            text(&out.stderr).contains("server and in the mailbox its state names"),
            "{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn ctrl_c_exits_130_and_says_the_upload_can_be_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--max-size", "200MB"]);
    let f = file(dir.path(), "sigint.bin", 120_000_000, 13);
    let state = dir.path().join("state");
    let child = upload(&server, &state)
        .args(["--draft", "sigint", "--chunk-size", "64KiB"])
        .arg(&f)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Once a state is saved (bounded wait), Ctrl-C.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read_dir(&state).map_or(true, |d| {
        d.flatten()
            .all(|e| e.file_name().to_string_lossy().starts_with('.'))
    }) && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(
        err.contains("saved") && err.contains("upsession resume"),
        "{err}"
    );
    let errors = err.lines().filter(|l| l.starts_with("upsession:")).count();
    assert_eq!(errors, 1, "one sentence: {err}");
}

#[tokio::test]
async fn the_sha256_is_taken_when_asked_beside_the_crc64() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    // A session upload and a small file's one POST.
    let files = [
        file(dir.path(), "big.bin", 3_300_000, 21),
        file(dir.path(), "small.bin", 1000, 22),
    ];
    let out = run(upload(&server, &dir.path().join("state"))
        .args(["--draft", "sha", "--json", "--sha256"])
        .args(&files));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2);
    for (line, f) in lines.iter().zip(&files) {
        let bytes = std::fs::read(f).unwrap();
        assert_eq!(line["sha256"], sha256_hex(&bytes), "{line}");
        assert_eq!(line["crc64"], crc64_hex(&bytes), "{line}");
    }
    // In text, the SHA-256 closes the line.
    let out = run(upload(&server, &dir.path().join("state"))
        .args(["--draft", "sha", "--sha256"])
        .arg(&files[0]));
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let bytes = std::fs::read(&files[0]).unwrap();
    let sha = format!(", SHA-256 {}", sha256_hex(&bytes));
    assert!(
        text(&out.stdout).trim_end().ends_with(&sha),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn json_output_reports_failed_files_too() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--max-size", "4MB"]);
    let good = file(dir.path(), "good.bin", 3_200_000, 14);
    let big = file(dir.path(), "big.bin", 5_000_000, 15);
    let out = run(upload(&server, &dir.path().join("state"))
        .args(["--draft", "mixed", "--json"])
        .arg(&good)
        .arg(&big));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0]["error"].is_null() && lines[0]["attachmentId"].is_string());
    assert_eq!(lines[1]["file"], big.display().to_string());
    assert!(
        lines[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("exceeds")),
        "{}",
        lines[1]
    );
    assert!(lines[1]["attachmentId"].is_null() && lines[1]["location"].is_null());
}

#[tokio::test]
async fn verbose_shows_the_clients_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &[]);
    let url = Graph::new(&server.base, TOKEN)
        .open_session(5_000_000)
        .await;
    let quiet = run(bin().args(["status", &url]));
    assert!(!text(&quiet.stderr).contains("GET session status"));
    let out = run(bin().env_remove("RUST_LOG").args(["-v", "status", &url]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("GET session status"), "{err}");
    assert!(!err.contains("authtoken="), "redacted: {err}");
}

#[tokio::test]
async fn serve_limits_the_sessions_and_declared_bytes_of_one_token() {
    let dir = tempfile::tempdir().unwrap();
    let limits = [
        "--max-sessions-per-token",
        "1",
        "--max-declared-bytes-per-token",
        "8MB",
    ];
    let server = serve(&dir.path().join("data"), &limits);
    let graph = Graph::new(&server.base, TOKEN);
    let item = format!("/me/messages/{}", graph.draft().await);
    let first = graph.upload_session(&item, "a", 3_000_000).await;
    let second = upsession_testbed::kit::attachment("b", 3_000_000);
    let (status, body) = graph.create_session(&item, second.clone()).await;
    assert_eq!(status, 429, "{body}");
    let out = run(bin().args(["cancel", &first]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let big = upsession_testbed::kit::attachment("c", 8_000_001);
    let (status, body) = graph.create_session(&item, big).await;
    assert_eq!(status, 507, "{body}");
    assert_eq!(graph.create_session(&item, second).await.0, 201);
    for bad in [
        ["--max-sessions-per-token", "0"],
        ["--max-declared-bytes-per-token", "lots"],
    ] {
        let out = run(bin().arg("serve").args(bad));
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {}", text(&out.stderr));
    }
}

#[tokio::test]
async fn one_command_attaches_a_small_and_a_large_file() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--max-size", "150MB"]);
    let small = file(dir.path(), "note.txt", 1024, 21);
    let large = file(dir.path(), "large.bin", 149_000_000, 22);
    let out = run(upload(&server, &dir.path().join("state"))
        .args(["--draft", "both", "--json"])
        .arg(&small)
        .arg(&large));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, f) in lines.iter().zip([&small, &large]) {
        assert_uploaded(line["location"].as_str().unwrap(), f, "exact").await;
    }
    assert_eq!(lines[0]["size"], 1024);
    assert_eq!(lines[1]["size"], 149_000_000);
}

#[tokio::test]
async fn drive_uploads_take_each_conflict_behaviour_and_resume_after_a_kill() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&dir.path().join("data"), &["--max-size", "200MB"]);
    let first = file(dir.path(), "r.bin", 5_000_000, 11);
    let state = dir.path().join("state");
    let drive_upload = |f: &Path, conflict: &str| {
        let out = run(upload(&server, &state)
            .args(["--drive", "docs/r.bin", "--conflict", conflict, "--json"])
            .arg(f));
        let line: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out, line)
    };
    let (out, made) = drive_upload(&first, "fail");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(made["driveItem"]["name"], "r.bin");
    assert_eq!(
        made["driveItem"]["parentReference"]["path"],
        "/drive/root:/docs"
    );
    let graph = Graph::new(server.base.clone(), TOKEN);
    let read = |path: &str| {
        let url = graph.url(path);
        async move {
            let res = reqwest::Client::new()
                .get(&url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "GET {url}");
            res.bytes().await.unwrap().to_vec()
        }
    };
    let bytes = read("/me/drive/root:/docs/r.bin:/content").await;
    assert_eq!(
        sha256_hex(&bytes),
        sha256_hex(&std::fs::read(&first).unwrap())
    );
    // fail: one clear sentence, a non-zero exit.
    let (out, _) = drive_upload(&first, "fail");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("nameAlreadyExists"),
        "{}",
        text(&out.stderr)
    );
    // rename: beside it; replace: the same item, new bytes.
    let other = file(dir.path(), "other.bin", 1000, 12);
    let (out, renamed) = drive_upload(&other, "rename");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(renamed["driveItem"]["name"], "r 1.bin");
    let (out, replaced) = drive_upload(&other, "replace");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(replaced["driveItem"]["id"], made["driveItem"]["id"]);
    let bytes = read(
        "/me/drive/items/{id}/content"
            .replace("{id}", made["driveItem"]["id"].as_str().unwrap())
            .as_str(),
    )
    .await;
    assert_eq!(bytes, std::fs::read(&other).unwrap());
    // Killed mid-way, resumed: byte-exact, hashes checked by the client (in a
    // state directory of its own: the refused upload's state is still there,
    // though its session was deleted).
    let state = dir.path().join("state2");
    let big = file(dir.path(), "big.bin", 60_000_000, 13);
    let mut child = upload(&server, &state)
        .args(["--drive", "media/", "--chunk-size", "320KiB"])
        .arg(&big)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        kill_once_resumable(&mut child, &state),
        "the upload finished first"
    );
    let mut resume = bin();
    resume.args(["resume", "--json", "--state-dir"]).arg(&state);
    let out = run(&mut resume);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    let line: Value = serde_json::from_str(text(&out.stdout).lines().next().unwrap()).unwrap();
    assert_eq!(line["driveItem"]["name"], "big.bin");
    let bytes = read("/me/drive/root:/media/big.bin:/content").await;
    assert_eq!(
        sha256_hex(&bytes),
        sha256_hex(&std::fs::read(&big).unwrap())
    );
}

/// What `--json` printed: one JSON object per line of stdout.
fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}
