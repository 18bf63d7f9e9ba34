//! What crates.io users get: the `msrv` and `package` steps of `cargo xtask ci`,
//! which `cargo xtask publish-check` runs alone.
//!
//! - `msrv`: the published crates (libraries and the CLI, normal dependencies
//!   only, as `cargo install` or a dependent builds them) check with the Rust the
//!   root `Cargo.toml`'s `rust-version` promises, installed through rustup when
//!   missing, in `target/msrv` so the stable build's cache stays as it is.
//! - `package`: `cargo package` of every published crate, each package then built
//!   on its own against the others as packaged (cargo's temporary local
//!   registry), in `target/package-verify`, which keeps the dependencies' builds
//!   from one run to the next.
//!
//! The published crates are the workspace members whose manifest does not say
//! `publish = false`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::ci::{Notes, Step};
use crate::manifest;
use crate::util::{cargo, cargo_home, project_root, run_command, target_dir};

/// `cargo xtask publish-check [msrv|package]`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let steps: &[Step] = match args {
        [] => &[("msrv", msrv), ("package", package)],
        [one] if one == "msrv" => &[("msrv", msrv)],
        [one] if one == "package" => &[("package", package)],
        _ => {
            return Err(format!(
                "`cargo xtask publish-check` takes `msrv`, `package` or nothing (got `{}`)",
                args.join(" ")
            ));
        }
    };
    for (name, step) in steps {
        println!("\n==> {name}");
        for note in step()? {
            println!("note: {note}");
        }
    }
    Ok(())
}

/// A published workspace member.
pub(crate) struct Published {
    /// Its package name.
    pub(crate) name: String,
    /// Its folder, relative to the root (`crates/core`).
    pub(crate) dir: String,
    /// Its `Cargo.toml`.
    pub(crate) manifest: String,
}

/// The published workspace members, in the members' order.
pub(crate) fn published_members(root: &Path) -> Result<Vec<Published>, String> {
    let workspace = read(&root.join("Cargo.toml"))?;
    let members = manifest::strings(&workspace, "workspace", "members")
        .ok_or("the root Cargo.toml has no `[workspace] members`")?;
    let mut published = Vec::new();
    for dir in members {
        let path = root.join(&dir).join("Cargo.toml");
        let text = read(&path)?;
        if manifest::value(&text, "package", "publish").as_deref() == Some("false") {
            continue;
        }
        let name = manifest::value(&text, "package", "name")
            .ok_or_else(|| format!("{} has no `[package] name`", path.display()))?;
        published.push(Published {
            name,
            dir,
            manifest: text,
        });
    }
    Ok(published)
}

/// The published workspace members' package names, in the members' order.
pub(crate) fn published(root: &Path) -> Result<Vec<String>, String> {
    Ok(published_members(root)?
        .into_iter()
        .map(|member| member.name)
        .collect())
}

/// The workspace's `rust-version` (`[workspace.package]` in the root Cargo.toml).
pub(crate) fn rust_version(root: &Path) -> Result<String, String> {
    let workspace = read(&root.join("Cargo.toml"))?;
    let version = manifest::value(&workspace, "workspace.package", "rust-version")
        .ok_or("the root Cargo.toml has no `rust-version` in `[workspace.package]`")?;
    if is_rust_version(&version) {
        Ok(version)
    } else {
        Err(format!(
            "the root Cargo.toml's rust-version `{version}` is not a Rust version (1.89 or 1.89.0)"
        ))
    }
}

/// `1.89` or `1.89.0`: what `rust-version` and `rustup toolchain install` both take.
fn is_rust_version(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

fn read(path: &Path) -> Result<String, String> {
    fs::read_to_string(path).map_err(|err| format!("could not read {}: {err}", path.display()))
}

/// `-p NAME` for each published crate.
fn package_args(names: &[String]) -> Vec<String> {
    names
        .iter()
        .flat_map(|name| ["-p".to_owned(), name.clone()])
        .collect()
}

/// The `msrv` step: `cargo check --locked` of the published crates with the
/// toolchain `rust-version` names.
///
/// Measured on 2 cores (2026-12-07): 3 min 39 s in an empty `target/msrv`,
/// under a second when nothing changed.
pub(crate) fn msrv() -> Result<Notes, String> {
    let root = project_root();
    let version = rust_version(&root)?;
    let names = published(&root)?;
    ensure_toolchain(&version)?;
    let mut check = Command::new("rustup");
    check
        .current_dir(&root)
        .args([
            "run",
            &version,
            "cargo",
            "check",
            "--locked",
            "--target-dir",
        ])
        .arg(target_dir().join("msrv"))
        .args(package_args(&names))
        // `RUSTC`, if whoever runs xtask set it, would pick another compiler.
        .env_remove("RUSTC");
    run_command(&mut check)?;
    Ok(vec![format!(
        "{} crates checked with Rust {version}, the workspace's rust-version",
        names.len()
    )])
}

/// Installs Rust `version` with rustup (minimal profile) unless it is there.
fn ensure_toolchain(version: &str) -> Result<(), String> {
    let listed = Command::new("rustup")
        .args(["toolchain", "list"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .ok_or_else(|| {
            format!(
                "rustup is not installed, and the msrv step needs it to install Rust {version} \
                 (the workspace's rust-version): see https://rustup.rs"
            )
        })?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    if has_toolchain(&listed, version) {
        return Ok(());
    }
    println!("Rust {version} is not installed; installing it with rustup (minimal profile)");
    run_command(Command::new("rustup").args([
        "toolchain",
        "install",
        version,
        "--profile",
        "minimal",
    ]))
}

/// Whether `rustup toolchain list` shows a toolchain named `version`
/// (`1.89-x86_64-unknown-linux-gnu`, not `1.89.0-…`, which `rustup run 1.89`
/// does not take).
fn has_toolchain(listing: &str, version: &str) -> bool {
    let prefix = format!("{version}-");
    listing.lines().any(|line| {
        line.split_whitespace()
            .next()
            .and_then(|name| name.strip_prefix(&prefix))
            .is_some_and(|host| host.starts_with(|c: char| c.is_ascii_alphabetic()))
    })
}

/// The `package` step: `cargo package` of the published crates, verified.
///
/// Measured on 2 cores (2026-12-07): 3 min 4 s in an empty target directory,
/// 64 to 82 s when it holds the dependencies' builds (our seven crates are
/// built, five of them twice: as a package verified and as a dependency of
/// another).
pub(crate) fn package() -> Result<Notes, String> {
    let names = published(&project_root())?;
    let dir = target_dir().join("package-verify");
    // cargo builds a crate that depends on another of ours against the other as
    // packaged, from its temporary registry, and takes anything from a registry
    // as unchanging: a second run reuses the copy it unpacked into CARGO_HOME and
    // the build it made from it, both of the crate as it was at the first run.
    // (Checked with cargo 1.95: a function added to the core and called from
    // client-shared failed the second run's verification.) So both go first.
    forget_unpacked_copies(&names)?;
    run_command(
        cargo()
            .args(["clean", "--target-dir"])
            .arg(&dir)
            .args(package_args(&names)),
    )?;
    run_command(
        cargo()
            // Builds to check that the packages compile: no debug info, no
            // incremental state (a few hundred MB less on disk).
            .env("CARGO_INCREMENTAL", "0")
            .env("CARGO_PROFILE_DEV_DEBUG", "false")
            // The working tree is packaged as it is; whether it is committed
            // matters when publishing, not here.
            .args(["package", "--locked", "--allow-dirty", "--target-dir"])
            .arg(&dir)
            .args(package_args(&names)),
    )?;
    Ok(vec![format!(
        "{} crates packaged and each built from its package (cache in {})",
        names.len(),
        dir.display()
    )])
}

/// Removes cargo's unpacked copies of our crates (`registry/src/*/NAME-VERSION`
/// in CARGO_HOME); cargo unpacks them again from the `.crate` when needed.
fn forget_unpacked_copies(names: &[String]) -> Result<(), String> {
    let Ok(registries) = fs::read_dir(cargo_home().join("registry/src")) else {
        return Ok(());
    };
    for registry in registries.filter_map(Result::ok) {
        let Ok(entries) = fs::read_dir(registry.path()) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let dir = entry.file_name();
            let dir = dir.to_string_lossy();
            if names.iter().any(|name| is_unpacked_copy(&dir, name)) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|err| {
                    format!("could not remove the stale copy {}: {err}", path.display())
                })?;
            }
        }
    }
    Ok(())
}

/// Whether a `registry/src/*/` folder named `dir` holds a version of `package`
/// (`upsession-core-0.1.0` for `upsession-core`, not for `upsession`).
fn is_unpacked_copy(dir: &str, package: &str) -> bool {
    dir.strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|version| version.starts_with(|c: char| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_crates_are_the_members_without_publish_false() {
        let names = published(&project_root()).unwrap();
        assert!(names.contains(&"upsession-core".to_owned()), "{names:?}");
        assert!(names.contains(&"upsession-cli".to_owned()), "{names:?}");
        for private in ["xtask", "upsession-bench", "upsession-testbed"] {
            assert!(!names.contains(&private.to_owned()), "{names:?}");
        }
    }

    #[test]
    fn rust_version_comes_from_the_root_manifest() {
        assert!(is_rust_version(&rust_version(&project_root()).unwrap()));
        assert!(is_rust_version("1.89"));
        assert!(is_rust_version("1.89.0"));
        for bad in ["1", "1.89.0.1", "1.x", "stable", "1..0", ""] {
            assert!(!is_rust_version(bad), "{bad}");
        }
    }

    #[test]
    fn toolchains_are_found_by_their_exact_name() {
        let listing = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                       1.89-x86_64-unknown-linux-gnu\n1.88.0-x86_64-unknown-linux-gnu\n";
        assert!(has_toolchain(listing, "1.89"));
        assert!(has_toolchain(listing, "1.88.0"));
        assert!(!has_toolchain(listing, "1.88"));
        assert!(!has_toolchain(listing, "1.8"));
        assert!(!has_toolchain("", "1.89"));
    }

    #[test]
    fn unpacked_copies_are_matched_by_whole_name() {
        assert!(is_unpacked_copy("upsession-core-0.1.0", "upsession-core"));
        assert!(is_unpacked_copy(
            "upsession-cli-2.0.0-rc.1",
            "upsession-cli"
        ));
        assert!(!is_unpacked_copy("upsession-core-0.1.0", "upsession"));
        assert!(!is_unpacked_copy(
            "upsession-client-shared-0.1.0",
            "upsession-client"
        ));
        assert!(!is_unpacked_copy("upsession-core", "upsession-core"));
    }
}
