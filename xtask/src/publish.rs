//! What crates.io users get: the `package` step of `cargo xtask ci`, which
//! `cargo xtask publish-check` runs alone.
//!
//! `cargo package --locked --no-verify` of every published crate (its metadata,
//! its file list, the manifest as published), then the packages themselves,
//! unpacked side by side and patched to depend on each other, are compiled
//! (`cargo check`) with the Rust the root `Cargo.toml`'s `rust-version` promises
//! (installed through rustup when missing), in `target/package-verify`: one
//! compile checks both that the packages build from what they ship and the
//! minimal Rust. All together first, then the core alone (the one crate whose
//! optional features the others turn on).
//!
//! Not cargo's own verification, which would also catch a crate that uses a
//! dependency's feature only another of ours turns on (unified here): it builds
//! each package with its own feature
//! set, so hyper, reqwest, aws-lc and the rest were compiled four times each
//! (378 builds, 3 to 4 minutes on 2 cores cold); a check of them together
//! compiles each dependency's metadata once.
//!
//! The published crates are the workspace members whose manifest does not say
//! `publish = false`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::ci::Notes;
use crate::manifest;
use crate::util::{cargo, project_root, run_command, target_dir};

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

/// The `package` step: the published crates packaged, and checked from their
/// packages with the toolchain `rust-version` names.
pub(crate) fn package() -> Result<Notes, String> {
    let root = project_root();
    let version = rust_version(&root)?;
    let names = published(&root)?;
    let dir = target_dir().join("package-verify");
    ensure_toolchain(&version)?;
    forget_packages(&dir)?;
    run_command(
        cargo()
            // The working tree is packaged as it is; whether it is committed
            // matters when publishing, not here.
            .args(["package", "--locked", "--allow-dirty", "--no-verify"])
            .arg("--target-dir")
            .arg(&dir)
            .args(package_args(&names)),
    )?;
    let unpacked = dir.join("unpacked");
    let _ = fs::remove_dir_all(&unpacked);
    fs::create_dir_all(&unpacked)
        .map_err(|err| format!("could not create {}: {err}", unpacked.display()))?;
    let mut members = Vec::new();
    for name in &names {
        let crate_file = find_package(&dir.join("package"), name)?;
        // `-m`: the files get the time of unpacking, so cargo never takes a
        // changed package for the one it checked before.
        run_command(
            Command::new("tar")
                .arg("-xzmf")
                .arg(&crate_file)
                .arg("-C")
                .arg(&unpacked),
        )?;
        let folder = crate_file
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .ok_or_else(|| format!("{} has no name", crate_file.display()))?;
        members.push((name.clone(), folder));
    }
    fs::write(unpacked.join("Cargo.toml"), package_workspace(&members))
        .map_err(|err| format!("could not write the packages' workspace: {err}"))?;
    // The workspace's versions of every dependency (cargo drops what the
    // packages do not use).
    fs::copy(root.join("Cargo.lock"), unpacked.join("Cargo.lock"))
        .map_err(|err| format!("could not copy Cargo.lock: {err}"))?;
    let check = |args: &[&str]| {
        run_command(
            toolchain_cargo(&version)
                .current_dir(&unpacked)
                .env("CARGO_INCREMENTAL", "0")
                .args(["check", "--target-dir"])
                .arg(dir.join("target"))
                .args(args),
        )
    };
    check(&["--workspace"])?;
    check(&["-p", "upsession-core"])?;
    Ok(vec![format!(
        "{} crates packaged, and checked from their packages with Rust {version}, \
         the rust-version (cache in {})",
        names.len(),
        dir.display()
    )])
}

/// The `.crate` of `name` that `cargo package` wrote into `packages`.
fn find_package(packages: &Path, name: &str) -> Result<std::path::PathBuf, String> {
    fs::read_dir(packages)
        .map_err(|err| format!("could not list {}: {err}", packages.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.extension().is_some_and(|ext| ext == "crate")
                && path
                    .file_stem()
                    .is_some_and(|stem| is_package_of(&stem.to_string_lossy(), name))
        })
        .ok_or_else(|| format!("cargo package wrote no package of {name}"))
}

/// The manifest of a workspace holding the unpacked packages (`(name, folder)`),
/// each dependency between them resolved to its unpacked folder.
fn package_workspace(members: &[(String, String)]) -> String {
    let mut manifest = String::from(
        "# Written by `cargo xtask publish-check`.\n[workspace]\nresolver = \"3\"\nmembers = [\n",
    );
    for (_, folder) in members {
        let _ = writeln!(manifest, "    \"{folder}\",");
    }
    manifest.push_str("]\n\n[patch.crates-io]\n");
    for (name, folder) in members {
        let _ = writeln!(manifest, "{name} = {{ path = \"{folder}\" }}");
    }
    manifest
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

/// Whether a package file's stem (`upsession-core-0.1.0`) is a version of
/// `package` (`upsession-core`, not `upsession`).
fn is_package_of(stem: &str, package: &str) -> bool {
    stem.strip_prefix(package)
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
    fn packages_are_matched_by_whole_name() {
        assert!(is_package_of("upsession-core-0.1.0", "upsession-core"));
        assert!(is_package_of("upsession-cli-2.0.0-rc.1", "upsession-cli"));
        assert!(!is_package_of("upsession-core-0.1.0", "upsession"));
        assert!(!is_package_of(
            "upsession-client-shared-0.1.0",
            "upsession-client"
        ));
        assert!(!is_package_of("upsession-core", "upsession-core"));
    }

    #[test]
    fn the_packages_workspace_patches_each_to_its_folder() {
        let manifest = package_workspace(&[
            ("upsession-core".into(), "upsession-core-0.1.0".into()),
            ("upsession-cli".into(), "upsession-cli-0.1.0".into()),
        ]);
        assert!(
            manifest.contains(
                "members = [\n    \"upsession-core-0.1.0\",\n    \"upsession-cli-0.1.0\",\n]"
            ),
            "{manifest}"
        );
        assert!(
            manifest.contains("upsession-core = { path = \"upsession-core-0.1.0\" }"),
            "{manifest}"
        );
    }
}
