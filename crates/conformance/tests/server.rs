//! Our server passes server conformance: in-process (`Server::start`) and as a
//! separate `upsession serve` process, in the upsession dialect, and in-process in
//! the outlook and onedrive dialects (`Config::with_dialect`).
//!
//! Another storage or transport gets the same check with one line:
//! `server::check_async(&server::Config::for_local(base_url, token, &limits)).await`.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use upsession_conformance::Rule;
use upsession_conformance::server::{self, Config};
use upsession_core::{Dialect, Limits};
use upsession_server_hyper::{Fsync, Running, Server};

const TOKEN: &str = "conformance-token";

fn limits() -> Limits {
    Limits::default()
        .with_min_size(1)
        .with_max_size(150_000_000)
        .with_max_fragment(1024)
}

/// Our server in this process, in `dialect`, with `limits`; and its base URL.
async fn start(dir: &Path, limits: Limits, dialect: Dialect) -> (Running, String) {
    let running = Server::start(
        upsession_server_hyper::Config::new(dir)
            .with_listen("127.0.0.1:0".parse().unwrap())
            .with_token(TOKEN)
            .with_limits(limits)
            .with_dialect(dialect)
            .with_fsync(Fsync::Never)
            .with_timeouts(Duration::from_secs(10), Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let base = format!("http://{}/v1.0", running.local_addr());
    (running, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_process_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (running, base) = start(dir.path(), limits(), Dialect::UPSESSION).await;
    let config = Config::for_local(base, TOKEN, &limits());
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert!(report.cases >= config.cases);
    running.shutdown().await;
}

/// Cases of the dialect runs: 150 by default (`UPSESSION_CONFORMANCE_CASES` / 500 × 150).
fn dialect_cases(default: &Config) -> u32 {
    (u64::from(default.cases) * 150 / 500).max(1) as u32
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_the_outlook_dialect_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (running, base) = start(dir.path(), limits(), Dialect::OUTLOOK).await;
    let default = Config::for_local(base, TOKEN, &limits()).with_dialect(Dialect::OUTLOOK);
    let config = default.clone().with_cases(dialect_cases(&default));
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert!(report.checks[&Rule::ClosedRanges] > 0, "{report}");
    assert!(report.checks[&Rule::AttachmentBytes] > 0, "{report}");
    running.shutdown().await;
}

/// The outlook dialect as the docs' example writes it: PascalCase properties, `"0-"`
/// then bare ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_the_outlook_docs_example_forms_passes() {
    let dir = tempfile::tempdir().unwrap();
    let docs = Dialect::OUTLOOK
        .with_casing(upsession_core::dialect::Casing::Pascal)
        .with_range_forms(upsession_core::dialect::RangeForms::Outlook);
    let (running, base) = start(dir.path(), limits(), docs.clone()).await;
    let default = Config::for_local(base, TOKEN, &limits()).with_dialect(docs);
    let config = default.clone().with_cases(dialect_cases(&default));
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert!(!report.checks.contains_key(&Rule::ClosedRanges), "{report}");
    assert!(report.checks[&Rule::AttachmentBytes] > 0, "{report}");
    running.shutdown().await;
}

/// OneDrive's fragments are multiples of 320 KiB: two of them at most, files of up
/// to three fragments.
fn onedrive_limits() -> Limits {
    let max_fragment = 2 * 320 * 1024;
    Limits::default()
        .with_min_size(1)
        .with_max_size(150_000_000)
        .with_max_fragment(max_fragment)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_the_onedrive_dialect_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (running, base) = start(dir.path(), onedrive_limits(), Dialect::ONEDRIVE).await;
    let limits = onedrive_limits();
    // The check's own largest file (within the server's): up to three fragments.
    let sizes = (1, 3 * limits.max_fragment, limits.max_fragment);
    let default = Config::for_local(base, TOKEN, &limits)
        .with_sizes(sizes.0, sizes.1, sizes.2)
        .with_dialect(Dialect::ONEDRIVE);
    let config = default.clone().with_cases(dialect_cases(&default));
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    for rule in [Rule::FragmentMultiple, Rule::Replay, Rule::ConcurrentPut] {
        assert!(
            report.checks.get(&rule).is_some_and(|n| *n > 0),
            "{rule}: {report}"
        );
    }
    assert!(!report.checks.contains_key(&Rule::ClosedRanges), "{report}");
    running.shutdown().await;
}

/// The `upsession` binary next to this test's executable (`target/{profile}/`),
/// built with `cargo build -p upsession-cli` when it is not there yet.
fn upsession_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/{profile}/deps/server-HASH
    let profile_dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let binary = profile_dir.join(format!("upsession{}", std::env::consts::EXE_SUFFIX));
    if binary.exists() {
        return binary;
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "upsession-cli"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "cargo build -p upsession-cli failed");
    assert!(binary.exists(), "{} was not built", binary.display());
    binary
}

struct Serve {
    child: Child,
    base: String,
    // Kept open for the child's life: a closed stdout must not disturb it.
    _stdout: BufReader<ChildStdout>,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data_dir: &Path) -> Serve {
    let mut child = Command::new(upsession_binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--token", TOKEN])
        .args([
            "--min-size",
            "1",
            "--max-fragment",
            "1KiB",
            "--fsync",
            "never",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the upsession binary runs");
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    // "upsession serving http://127.0.0.1:PORT/v1.0 (listening on 127.0.0.1:PORT)"
    let base = first
        .strip_prefix("upsession serving ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected banner: {first:?}"))
        .to_owned();
    assert!(
        base.starts_with("http://127.0.0.1:"),
        "unexpected banner: {first:?}"
    );
    Serve {
        child,
        base,
        _stdout: stdout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_as_a_process_passes() {
    let dir = tempfile::tempdir().unwrap();
    let serve = serve(dir.path());
    let default = Config::for_local(&serve.base, TOKEN, &limits());
    // A fifth of the in-process run (100 by default): the process adds no new logic.
    let config = default.clone().with_cases((default.cases / 5).max(1));
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    drop(serve);
}

#[test]
fn the_checks_are_send() {
    fn send<T: Send>(_: &T) {}
    let config = Config::for_local("http://127.0.0.1:9/v1.0", TOKEN, &limits());
    send(&server::check_async(&config));
}
