//! Shared by the CLI's process tests: the built binary, and a real `upsession
//! serve` child process (the kit's [`Serve`]) started from it.

#![allow(dead_code, clippy::pedantic)] // each test file uses a part; test code favours brevity

use std::path::Path;
use std::process::Command;

pub(crate) use upsession_testbed::kit::Serve;

/// The built `upsession` binary.
pub(crate) fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_upsession"));
    cmd.env("RUST_LOG", "warn")
        .env_remove("UPSESSION_TOKEN")
        .env_remove("UPSESSION_BASE_URL");
    cmd
}

/// `upsession serve --listen LISTEN --data-dir DIR EXTRA...`; killed (SIGKILL)
/// when dropped.
pub(crate) fn serve(dir: &Path, listen: &str, extra: &[&str]) -> Serve {
    serve_with_env(dir, listen, extra, &[])
}

/// [`serve`] with extra environment variables.
pub(crate) fn serve_with_env(
    dir: &Path,
    listen: &str,
    extra: &[&str],
    env: &[(&str, String)],
) -> Serve {
    Serve::spawn(
        bin()
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(dir)
            .args(extra)
            .envs(env.iter().map(|(k, v)| (k, v))),
    )
}

/// `--token TOKEN --min-size 1 --max-fragment MAX`: any file, in small fragments.
pub(crate) fn small_fragments<'a>(token: &'a str, max: &'a str) -> Vec<&'a str> {
    vec!["--token", token, "--min-size", "1", "--max-fragment", max]
}

pub(crate) mod cluster;
pub(crate) mod interop;
