//! README.md's commands, run in order as a newcomer would type them, so that the
//! page cannot go stale: every `sh` block of its "Quick start" and "The first hour"
//! sections, and its Rust block checked against the example it quotes.
//!
//! The commands run in bash in a scratch directory, with a scratch `HOME` (so
//! `~/.local/share/upsession` is the server's default data directory there) and
//! a `cargo` of the test's own first on `PATH`: `cargo run --release -p
//! upsession-cli -- ARGS` runs the built binary with ARGS, `cargo install --locked
//! --path crates/cli` puts it in `~/.cargo/bin` (on `PATH`, and empty until then),
//! and `cargo xtask ci` is left to CI, which runs it through `.ci/run` (checked
//! here). A block that ends with a `serve` command starts that server in the
//! background in place of the one before (as Ctrl-C and a new command would);
//! `127.0.0.1:8080` becomes a free port everywhere (`UPSESSION_LISTEN` for the
//! servers).

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::Serve;

/// The README's fenced blocks of `lang` between the headings `from` and `to`.
fn blocks(readme: &str, lang: &str, from: &str, to: &str) -> Vec<String> {
    let start = readme.find(from).unwrap_or_else(|| panic!("no {from:?}"));
    let end = readme[start..].find(to).map_or(readme.len(), |i| start + i);
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = &readme[start..end];
    while let Some(i) = rest.find(&fence) {
        let body = &rest[i + fence.len()..];
        let close = body.find("```").expect("a closed block");
        out.push(body[..close].to_owned());
        rest = &body[close..];
    }
    out
}

/// The `cargo` the README's commands meet (see the module's comment).
const CARGO_SHIM: &str = r#"#!/usr/bin/env bash
case "$*" in
  "run --release -p upsession-cli -- "*) shift 5; exec "$UPSESSION_BIN" "$@" ;;
  "install --locked --path crates/cli")
    test -f "$UPSESSION_REPO/crates/cli/Cargo.toml" || { echo "no crates/cli" >&2; exit 1; }
    mkdir -p "$HOME/.cargo/bin" && ln -sf "$UPSESSION_BIN" "$HOME/.cargo/bin/upsession" ;;
  "xtask ci") echo "left to CI (.ci/run)" ;;
  *) echo "the README test has no stand-in for: cargo $*" >&2; exit 1 ;;
esac
"#;

/// Where the commands run: a scratch home, directory and `PATH`.
struct Shell {
    root: tempfile::TempDir,
    path: String,
    port: u16,
}

impl Shell {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let shims = root.path().join("shims");
        for dir in ["home", "work", "tmp", "shims"] {
            fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        let cargo = shims.join("cargo");
        fs::write(&cargo, CARGO_SHIM).unwrap();
        fs::set_permissions(&cargo, fs::Permissions::from_mode(0o755)).unwrap();
        // The system's tools (bash, curl, jq, head), but no cargo or upsession
        // of this machine's own.
        let system = std::env::var("PATH").unwrap_or_default();
        let system = system
            .split(':')
            .filter(|d| !Path::new(d).join("cargo").exists())
            .filter(|d| !Path::new(d).join("upsession").exists())
            .collect::<Vec<_>>()
            .join(":");
        let home_bin = root.path().join("home/.cargo/bin");
        let path = format!("{}:{}:{system}", shims.display(), home_bin.display());
        let port = upsession_testbed::free_port().unwrap();
        Self { root, path, port }
    }

    /// `bash -c SCRIPT` in the scratch directory, with the README's port moved.
    fn command(&self, script: &str) -> Command {
        let script = script.replace("127.0.0.1:8080", &format!("127.0.0.1:{}", self.port));
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(format!("set -euo pipefail\n{script}"))
            .current_dir(self.root.path().join("work"))
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", self.root.path().join("home"))
            .env("TMPDIR", self.root.path().join("tmp"))
            .env("UPSESSION_BIN", env!("CARGO_BIN_EXE_upsession"))
            .env("UPSESSION_REPO", repo())
            .env("UPSESSION_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Runs `script` to its end; its output.
    fn run(&self, script: &str) -> String {
        let out = self.command(script).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "README block failed ({}):\n{script}\nstdout:\n{stdout}\nstderr:\n{stderr}",
            out.status
        );
        stdout
    }
}

/// The repository's root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `line` starts a server: `upsession serve …` in either form.
fn is_serve(line: &str) -> bool {
    let line = line.trim_start();
    line.starts_with("upsession serve")
        || line.starts_with("cargo run --release -p upsession-cli -- serve")
}

#[test]
fn every_command_of_the_readme_runs_as_written() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let mut sh = blocks(&readme, "sh", "## Quick start", "## The first hour");
    sh.extend(blocks(&readme, "sh", "## The first hour", "\n## "));
    assert!(sh.len() >= 7, "the README lost its commands: {sh:#?}");
    let shell = Shell::new();
    for tool in ["curl", "jq"] {
        if !shell
            .command(&format!("command -v {tool}"))
            .status()
            .unwrap()
            .success()
        {
            let why = format!("{tool} is not installed (`cargo xtask engines` installs it)");
            return upsession_testbed::kit::unavailable("the README test", &why);
        }
    }
    let mut server: Option<Serve> = None;
    let mut outputs = String::new();
    for block in &sh {
        // The block's last command, its continuation lines joined.
        let joined = block.replace("\\\n", " ");
        let lines: Vec<&str> = joined.lines().filter(|l| !l.trim().is_empty()).collect();
        let (last, before) = lines.split_last().expect("a command");
        if is_serve(last) {
            if !before.is_empty() {
                outputs.push_str(&shell.run(&before.join("\n")));
            }
            drop(server.take()); // the one before stops, as with Ctrl-C
            let started = Serve::spawn(&mut shell.command(&format!("exec {last}")));
            assert_eq!(started.addr, format!("127.0.0.1:{}", shell.port));
            server = Some(started);
        } else {
            assert!(
                server.is_some() || block.contains("xtask"),
                "no server for:\n{block}"
            );
            outputs.push_str(&shell.run(block));
        }
    }
    // What the blocks said: the CLI's attachment lines, the curl upload's 201
    // and listing, and the double's request history (the first PUT met a 503).
    for expected in [
        "report.bin: attachment ",
        "HTTP/1.1 201 Created",
        "\"name\": \"report.bin\"",
        "\"status\": 503",
        "bob gets 404",
        "left to CI",
    ] {
        assert!(outputs.contains(expected), "no {expected:?} in:\n{outputs}");
    }
}

#[test]
fn the_readme_test_command_is_what_ci_runs() {
    let ci = fs::read_to_string(repo().join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "exec cargo xtask ci"),
        ".ci/run must run the README's test command:\n{ci}"
    );
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let quick = blocks(&readme, "sh", "## Quick start", "## The first hour");
    assert_eq!(quick.last().map(|b| b.trim()), Some("cargo xtask ci"));
}

#[test]
fn the_readme_embedding_code_is_the_example_that_runs() {
    let readme = fs::read_to_string(repo().join("README.md")).unwrap();
    let rust = blocks(&readme, "rust", "## The first hour", "\n## ");
    let example = fs::read_to_string(repo().join("crates/server-hyper/examples/embed.rs")).unwrap();
    assert_eq!(rust.len(), 1, "{rust:#?}");
    assert!(
        example.contains(&rust[0]),
        "README's Rust block is not crates/server-hyper/examples/embed.rs (which a test runs)"
    );
}
