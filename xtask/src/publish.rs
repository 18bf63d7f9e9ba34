//! What crates.io users get: the `package` step of `cargo xtask ci`, which
//! `cargo xtask publish-check` runs alone.
//!
//! `cargo package --locked` of every published crate, verified: each package is
//! built on its own against the others as packaged (cargo's temporary local
//! registry), and that build is made with the Rust the root `Cargo.toml`'s
//! `rust-version` promises (cargo and rustc both; installed through rustup when
//! missing). One compile checks both what a crates.io user gets and the minimal
//! Rust: the dependencies are built once, with that Rust, in
//! `target/package-verify`, which keeps their builds from one run to the next.
//! (These were two steps, `msrv`, a `cargo check` with that Rust in `target/msrv`,
//! and `package`, with stable: each compiled every dependency from scratch.)
//!
//! Cargo packages several crates that depend on each other (through a temporary
//! local registry) from 1.90 on; with cargo 1.89, `cargo package -p a -p b`, b
//! depending on an unpublished a, fails with "no matching package named `a`
//! found". So the `rust-version` is 1.90 (the dependencies need 1.89: `crc-fast`),
//! and the step refuses an older one rather than unlocking an unstable flag.
//!
//! The published crates are the workspace members whose manifest does not say
//! `publish = false`.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::ci::Notes;
use crate::manifest;
use crate::util::{cargo_home, project_root, run_command, target_dir};

/// `cargo xtask publish-check`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask publish-check` takes no arguments (got `{arg}`): its one step, \
             package, packages the published crates and builds them with the \
             rust-version's Rust (the former msrv and package steps in one)"
        ));
    }
    println!("\n==> package");
    for note in package()? {
        println!("note: {note}");
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
            "the root Cargo.toml's rust-version `{version}` is not a Rust version (1.90 or 1.90.0)"
        ))
    }
}

/// `1.90` or `1.90.0`: what `rust-version` and `rustup toolchain install` both take.
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

/// The `package` step: `cargo package --locked` of the published crates,
/// verified, with the toolchain `rust-version` names.
///
/// Measured on 2 cores (2026-12-07), while another build shared them: 5 min 59 s
/// (twice; 5 min 32 s and 5 min 53 s of CPU) in an empty `target/package-verify`,
/// 44 to 75 s (41 to 53 s of CPU) when it holds the dependencies' builds. Then
/// only our seven crates are built, 18 times: each as the package verified, and
/// again for each package verified that depends on it, with that package's
/// features (the core six times). Before, `msrv` took 3 min 39 s cold and
/// `package` 3 min 4 s.
pub(crate) fn package() -> Result<Notes, String> {
    let root = project_root();
    let version = rust_version(&root)?;
    let names = published(&root)?;
    let dir = target_dir().join("package-verify");
    ensure_toolchain(&version)?;
    // cargo builds a crate that depends on another of ours against the other as
    // packaged, from its temporary registry, and takes anything from a registry
    // as unchanging: a second run reuses the copy it unpacked into CARGO_HOME and
    // the build it made from it, both of the crate as it was at the first run.
    // (Checked with cargo 1.95: a function added to the core and called from
    // client-shared failed the second run's verification.) So both go first,
    // and the previous run's packages with them.
    forget_unpacked_copies(&names)?;
    forget_own_builds(&dir, &names)?;
    forget_packages(&dir)?;
    if !has_package_workspace(&version) {
        return Err(format!(
            "the rust-version {version} is older than 1.90, whose cargo is the first to \
             package crates that depend on each other: raise it to 1.90 or later"
        ));
    }
    let mut package = toolchain_cargo(&version);
    run_command(
        package
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
        "{} crates packaged and each built from its package with Rust {version}, \
         the rust-version (cache in {})",
        names.len(),
        dir.display()
    )])
}

/// `rustup run VERSION cargo`, from the repository root.
fn toolchain_cargo(version: &str) -> Command {
    let mut command = Command::new("rustup");
    command
        .current_dir(project_root())
        .args(["run", version, "cargo"])
        // `RUSTC`, if whoever runs xtask set it, would pick another compiler.
        .env_remove("RUSTC");
    command
}

/// Whether the cargo of Rust `version` (`1.89`, `1.90.0`) packages crates that
/// depend on each other: 1.90 and later.
fn has_package_workspace(version: &str) -> bool {
    let mut parts = version
        .split('.')
        .map(|part| part.parse::<u64>().unwrap_or(0));
    let major = parts.next().unwrap_or(0);
    let minor = parts.next().unwrap_or(0);
    (major, minor) >= (1, 90)
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
                "rustup is not installed, and the package step needs it to install Rust {version} \
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

/// Removes cargo's fingerprints of our crates' builds in the target directory
/// `dir` (`debug/.fingerprint/NAME-HASH`), so that cargo builds them again, over
/// the same files; the dependencies' builds stay.
///
/// Not `cargo clean -p NAME`: it removes files by the names of the workspace
/// member's targets, tests included, and the server's `tests/http.rs` made it
/// remove the `http` crate's `libhttp-*.rmeta` (with cargo 1.89 and 1.95), so
/// that every run built `http` again, and then hyper, reqwest, ureq and the
/// rest of what depends on it, once per package verified.
fn forget_own_builds(dir: &Path, names: &[String]) -> Result<(), String> {
    // `debug`, and any other profile's folder.
    let Ok(profiles) = fs::read_dir(dir) else {
        return Ok(());
    };
    for profile in profiles.filter_map(Result::ok) {
        let Ok(entries) = fs::read_dir(profile.path().join(".fingerprint")) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let unit = entry.file_name();
            let unit = unit.to_string_lossy();
            if names.iter().any(|name| is_build_of(&unit, name)) {
                let path = entry.path();
                fs::remove_dir_all(&path).map_err(|err| {
                    format!("could not remove the fingerprint {}: {err}", path.display())
                })?;
            }
        }
    }
    Ok(())
}

/// Removes the previous run's packages, and the temporary registry that holds
/// them (`package/` in the target directory `dir`).
///
/// Cargo before 1.96 does not truncate a `.crate` it writes over an older one
/// in that registry (cargo #16683, fixed by #16688): when a package came out
/// smaller than at the previous run, its copy kept the old one's last bytes,
/// and the verification of a crate depending on it failed with "failed to
/// download `upsession-server-hyper v0.1.0` ... no hash listed for
/// upsession-server-hyper v0.1.0" (seen with cargo 1.89 after a change to the
/// core). Cargo makes all of it again each run, so nothing is rebuilt for this.
fn forget_packages(dir: &Path) -> Result<(), String> {
    let packages = dir.join("package");
    match fs::remove_dir_all(&packages) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(format!(
            "could not remove the previous packages in {}: {err}",
            packages.display()
        )),
        _ => Ok(()),
    }
}

/// Whether a `.fingerprint/` folder named `unit` is of a build of `package`
/// (`upsession-core-9b934867c774f572` for `upsession-core`, not for `upsession`).
fn is_build_of(unit: &str, package: &str) -> bool {
    unit.strip_prefix(package)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|hash| hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()))
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
    fn package_workspace_is_stable_from_cargo_1_90() {
        for older in ["1.89", "1.89.0", "1.84", "0.99"] {
            assert!(!has_package_workspace(older), "{older}");
        }
        for newer in ["1.90", "1.90.0", "1.95", "1.100", "2.0"] {
            assert!(has_package_workspace(newer), "{newer}");
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

    #[test]
    fn own_builds_are_matched_by_whole_name_and_hash() {
        assert!(is_build_of(
            "upsession-core-9b934867c774f572",
            "upsession-core"
        ));
        assert!(!is_build_of("upsession-core-9b934867c774f572", "upsession"));
        assert!(!is_build_of(
            "upsession-client-shared-9b934867c774f572",
            "upsession-client"
        ));
        assert!(!is_build_of("upsession-core", "upsession-core"));
        assert!(!is_build_of("upsession-core-0.1.0", "upsession-core"));
        assert!(!is_build_of("http-2c3e6e814e6a4946", "upsession-core"));
    }
}
