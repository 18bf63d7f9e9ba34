//! `upsession conformance`: exit 0 when the server conforms, 1 with the minimal
//! failing script when it does not, 2 on bad usage.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::process::{Command, Output};

use upsession_conformance::fake::{Break, FakeGraph, FakeOptions};
use upsession_core::Limits;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_upsession"));
    command.arg("conformance");
    command.env_remove("UPSESSION_CONFORMANCE_CASES");
    command.env_remove("UPSESSION_CONFORMANCE_SEED");
    command
}

/// `upsession conformance server --base-url BASE --token TOKEN`.
fn server_check(base: &str, token: &str) -> Command {
    let mut command = binary();
    command.args(["server", "--base-url", base, "--token", token]);
    command
}

/// Port 9 (discard) on 127.0.0.1: nothing listens there in a test environment.
const UNREACHABLE: &str = "http://127.0.0.1:9/v1.0";

/// Runs `server` against a fake (with `bug`, if any) and returns the output.
async fn check_fake(bug: Option<Break>) -> Output {
    let mut options = FakeOptions::default()
        .with_limits(Limits::default().with_min_size(1).with_max_fragment(1024));
    if let Some(bug) = bug {
        options = options.with_break(bug);
    }
    let fake = FakeGraph::start(options).await.unwrap();
    let mut command = server_check(&fake.base_url(), fake.token());
    command.args([
        "--min-size",
        "1",
        "--max-size",
        "1GiB",
        "--max-fragment",
        "1KiB",
        "--cases",
        "100",
        "--seed",
        "3",
    ]);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    fake.shutdown().await;
    output
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conforming_server_exits_0_with_a_report() {
    let output = check_fake(None).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("conformance passed: 100 cases (seed 3)"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_server_exits_1_with_the_failing_script() {
    let output = check_fake(Some(Break::AcceptsSkip)).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("rule `out-of-order`"), "{stdout}");
    assert!(stdout.contains("curl -sS -X PUT"), "{stdout}");
    assert!(stdout.contains("?authtoken=<from step 2>"), "{stdout}");
    assert!(stdout.contains("--seed 3"), "{stdout}");
    assert!(stderr.contains("out-of-order"), "{stderr}");
}

#[test]
fn bad_usage_exits_2() {
    let missing = binary().args(["server", "--token", "t"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let sizes = server_check(UNREACHABLE, "t")
        .args(["--min-size", "10", "--max-size", "5"])
        .output()
        .unwrap();
    assert_eq!(sizes.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&sizes.stderr).contains("--min-size"));
    let url = server_check("ftp://x", "t").output().unwrap();
    assert_eq!(url.status.code(), Some(2));
}

#[test]
fn an_unreachable_server_exits_1() {
    let output = server_check(UNREACHABLE, "t")
        .args([
            "--min-size",
            "1",
            "--max-fragment",
            "1KiB",
            "--cases",
            "1",
            "--seed",
            "1",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("create-session"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_subcommand_serves_a_checkable_fake() {
    use std::io::{BufRead, BufReader};
    use upsession_conformance::server::{self, Config};

    let mut child = binary()
        .args([
            "fake",
            "--token",
            "t",
            "--max-fragment",
            "1KiB",
            "--break",
            "cancel",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // "fake Graph serving http://127.0.0.1:PORT/v1.0 (listening on 127.0.0.1:PORT)"
    let base = first.split_whitespace().nth(3).unwrap().to_owned();
    let limits = Limits::default().with_min_size(1).with_max_fragment(1024);
    let config = Config::for_local(base, "t", &limits)
        .with_cases(300)
        .with_seed(5);
    let result = server::check_async(&config).await;
    let _ = child.kill();
    let _ = child.wait();
    let failure = result.expect_err("the fake was started with --break cancel");
    assert_eq!(
        failure.rule,
        upsession_conformance::Rule::Cancel,
        "{failure}"
    );
}

/// Our own `upsession serve`, as a separate process (the binary cargo built for
/// this test, never a stale one), passes the server check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_as_a_process_passes() {
    use upsession_conformance::server::{self, Config};
    let dir = tempfile::tempdir().unwrap();
    let serve = upsession_testbed::kit::Serve::spawn(
        Command::new(env!("CARGO_BIN_EXE_upsession"))
            .args(["serve", "--listen", "127.0.0.1:0", "--token", "tok"])
            .args(["--min-size", "1", "--max-fragment", "1KiB"])
            .args(["--fsync", "never", "--data-dir"])
            .arg(dir.path())
            .env("RUST_LOG", "warn"),
    );
    let limits = Limits::default()
        .with_min_size(1)
        .with_max_size(150_000_000)
        .with_max_fragment(1024);
    let default = Config::for_local(&serve.base, "tok", &limits);
    // A fifth of the in-process run (100 by default): the process adds no new logic.
    let cases = (default.cases / 5).max(1);
    let report = server::check_async(&default.with_cases(cases))
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert_eq!(report.cases, cases, "{report}");
    assert!(report.sessions >= u64::from(cases), "{report}");
}
