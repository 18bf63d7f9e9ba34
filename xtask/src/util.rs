//! Helpers shared by the tasks: where the repository is, how to call cargo,
//! how to run a command and say what failed.

use std::env;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root: the parent of the `xtask/` folder.
///
/// `cargo run` and `cargo test` both set `CARGO_MANIFEST_DIR` at run time; the
/// value baked in at compile time covers running the binary directly.
pub(crate) fn project_root() -> PathBuf {
    let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest_dir
        .parent()
        .map_or_else(|| manifest_dir.clone(), Path::to_path_buf)
}

/// A `cargo` command run from the repository root.
///
/// Uses the `CARGO` variable (set by cargo for `cargo run`/`cargo test`) so the
/// same toolchain runs every step, falling back to `cargo` on `PATH`.
pub(crate) fn cargo() -> Command {
    let program = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(program);
    command.current_dir(project_root());
    command
}

/// Whether `cargo <subcommand> --version` works, i.e. the subcommand is installed.
pub(crate) fn cargo_subcommand_available(subcommand: &str) -> bool {
    cargo()
        .args([subcommand, "--version"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Runs `command` with inherited stdio; an error names the command and its exit status.
pub(crate) fn run_command(command: &mut Command) -> Result<(), String> {
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})"))
    }
}

/// A command as a user would type it: changed environment first, then the
/// program's file name (not the full path from `CARGO`), then the arguments.
pub(crate) fn display(command: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            parts.push(format!(
                "{}=\"{}\"",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    let program = Path::new(command.get_program());
    let program = program.file_name().unwrap_or(program.as_os_str());
    parts.push(program.to_string_lossy().into_owned());
    parts.extend(
        command
            .get_args()
            .map(|arg| arg.to_string_lossy().into_owned()),
    );
    parts.join(" ")
}

/// `CI` is set to something true (GitHub Actions, GitLab and most others set `CI=true`).
pub(crate) fn in_ci() -> bool {
    env::var("CI").is_ok_and(|value| {
        let value = value.trim();
        !value.is_empty() && value != "0" && !value.eq_ignore_ascii_case("false")
    })
}

/// The cargo profile a tool's programs are built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Profile {
    /// Optimised: what measurements need.
    Release,
    /// The profile the tests already built: CI's quick runs only check that
    /// everything runs, so they build no second profile.
    Dev,
}

impl Profile {
    /// [`Profile::Dev`] for a quick run, else [`Profile::Release`].
    pub(crate) fn for_run(quick: bool) -> Self {
        if quick { Self::Dev } else { Self::Release }
    }

    /// The folder of the target directory its programs go to.
    fn dir(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Dev => "debug",
        }
    }
}

/// `cargo build --locked` of `targets` (target flags: `--bins`, `--example NAME`)
/// of `packages` in `profile`; returns the directory the programs are in (under
/// `CARGO_TARGET_DIR` when set).
///
/// In [`Profile::Dev`] the whole workspace is selected (less xtask, which has no
/// dependencies), as in the tests' build: cargo unifies dependency features over
/// the packages selected, so `-p a -p b` would build many dependencies a second
/// time with other features (41 s cold for the bench tools).
pub(crate) fn build(
    profile: Profile,
    packages: &[&str],
    targets: &[&str],
) -> Result<PathBuf, String> {
    let mut cmd = cargo();
    cmd.args(["build", "--locked"]);
    match profile {
        Profile::Release => {
            cmd.arg("--release");
            for package in packages {
                cmd.args(["-p", package]);
            }
        }
        Profile::Dev => {
            // `--tests` (built already) keeps the dev-dependencies in the
            // feature unification, as in the tests' build: without it tower,
            // reqwest and the rest were built again with fewer features.
            cmd.args(["--workspace", "--exclude", "xtask", "--tests"]);
        }
    }
    run_command(cmd.args(targets))?;
    Ok(target_dir().join(profile.dir()))
}

/// Builds `upsession` and the bench tools in `profile`; returns their directory.
pub(crate) fn tool_binaries(profile: Profile) -> Result<PathBuf, String> {
    build(profile, &["upsession-cli", "upsession-bench"], &["--bins"])
}

/// Cargo's target directory: `CARGO_TARGET_DIR` when set, else `target/`.
pub(crate) fn target_dir() -> PathBuf {
    env::var_os("CARGO_TARGET_DIR").map_or_else(|| project_root().join("target"), PathBuf::from)
}

/// Cargo's home: `CARGO_HOME` when set, else `~/.cargo`.
pub(crate) fn cargo_home() -> PathBuf {
    env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    )
}

/// Installs `krate` at `version` (`cargo install --locked`) unless `cargo
/// {subcommand}` already runs.
pub(crate) fn ensure_cargo_tool(
    subcommand: &str,
    krate: &str,
    version: &str,
) -> Result<(), String> {
    if cargo_subcommand_available(subcommand) {
        return Ok(());
    }
    println!(
        "{krate} is not installed; installing {version} with `cargo install --locked` \
         (this takes a few minutes)"
    );
    run_command(cargo().args(["install", "--locked", krate, "--version", version]))
}
