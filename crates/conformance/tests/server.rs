//! Our server passes server conformance: in-process (`Server::start`) and as a
//! separate `upsession serve` process.
//!
//! Another storage or transport gets the same check with one line:
//! `server::check_async(&server::Config::for_local(base_url, token, &limits)).await`.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

use upsession_conformance::server::{self, Config};
use upsession_core::Limits;
use upsession_server_hyper::{Fsync, Server};

const TOKEN: &str = "conformance-token";

fn limits() -> Limits {
    Limits::default()
        .with_min_size(1)
        .with_max_size(150_000_000)
        .with_max_fragment(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_process_passes() {
    let dir = tempfile::tempdir().unwrap();
    let running = Server::start(
        upsession_server_hyper::Config::new(dir.path())
            .with_listen("127.0.0.1:0".parse().unwrap())
            .with_token(TOKEN)
            .with_limits(limits())
            .with_fsync(Fsync::Never)
            .with_timeouts(Duration::from_secs(10), Duration::from_secs(5)),
    )
    .await
    .unwrap();
    let base = format!("http://{}/v1.0", running.local_addr());
    let config = Config::for_local(base, TOKEN, &limits());
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    assert!(report.cases >= config.cases);
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
