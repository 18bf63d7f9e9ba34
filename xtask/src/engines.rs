//! `cargo xtask engines`: installs what the cluster tests, the SDK interop tests and
//! `bench --cluster` run on, where it is missing: Garage (from crates.io, built once
//! into a cache directory outside the repository), PostgreSQL, Node.js with npm
//! (for the JavaScript Graph SDK) and curl with jq (the README's commands), the
//! last three from Debian's packages.
//!
//! The first Garage build takes about 160 s on 2 cores, 270 CPU seconds (`cargo xtask ci` runs
//! it beside its other steps, at the lowest priority); later runs find it in
//! the cache (`$UPSESSION_CACHE`, default `~/.cache/upsession`, the same place
//! `upsession-testbed` looks).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::util::{cargo, run_command};

/// The Garage release the tests are written against (`upsession-testbed` names
/// the same one).
const GARAGE_VERSION: &str = "2.5.0";

/// The rustus release `cargo xtask bench --peers` measures against.
const RUSTUS_VERSION: &str = "0.5.10";

/// `cargo xtask engines`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask engines` takes no arguments (got `{arg}`)"
        ));
    }
    for note in ensure()? {
        println!("xtask engines: {note}");
    }
    Ok(())
}

/// Where Garage is (or will be) installed.
pub(crate) fn garage_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("UPSESSION_GARAGE") {
        return p.into();
    }
    garage_root().join("bin").join("garage")
}

fn garage_root() -> PathBuf {
    cache_dir().join(format!("garage-{GARAGE_VERSION}"))
}

fn rustus_root() -> PathBuf {
    cache_dir().join(format!("rustus-{RUSTUS_VERSION}"))
}

/// Where rustus is (or will be) installed.
pub(crate) fn rustus_binary() -> PathBuf {
    rustus_root().join("bin").join("rustus")
}

/// Installs rustus from crates.io into the cache, where missing (about 5 minutes).
pub(crate) fn ensure_rustus() -> Result<(), String> {
    if rustus_binary().exists() {
        return Ok(());
    }
    run_command(
        cargo()
            .args([
                "install",
                "rustus",
                "--version",
                RUSTUS_VERSION,
                "--locked",
                "--root",
            ])
            .arg(rustus_root()),
    )
}

fn cache_dir() -> PathBuf {
    std::env::var_os("UPSESSION_CACHE").map_or_else(
        || {
            std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
                .join(".cache")
                .join("upsession")
        },
        PathBuf::from,
    )
}

/// Installs whatever is missing; says what it did. Garage is built here and now
/// when missing (see [`start`] for the build that runs beside other work).
pub(crate) fn ensure() -> Result<Vec<String>, String> {
    let (mut notes, garage) = start(false)?;
    if let Some(build) = garage {
        notes.push(build.wait()?);
    }
    Ok(notes)
}

/// Installs the Debian packages that are missing, and starts Garage's build when
/// it is missing: at the lowest CPU priority when `beside` (the build then takes
/// only what the other work leaves idle; wait for it before Garage is needed),
/// else at the normal one. Says what it did.
pub(crate) fn start(beside: bool) -> Result<(Vec<String>, Option<GarageBuild>), String> {
    let mut notes = Vec::new();
    // A package that cannot be installed does not stop the other tests: the
    // ones that need it then fail loudly (UPSESSION_REQUIRE_ENGINES in CI).
    if postgres_installed() {
        notes.push("PostgreSQL: installed".to_owned());
    } else {
        notes.push(
            match apt_install(&["postgresql"], "the cluster tests need PostgreSQL") {
                Ok(()) => "PostgreSQL: installed now from Debian's packages".to_owned(),
                Err(e) => format!("PostgreSQL MISSING: {e}"),
            },
        );
    }
    if on_path("node") && on_path("npm") {
        notes.push("Node.js and npm: installed".to_owned());
    } else {
        let why = "the JavaScript SDK interop test needs Node.js and npm";
        notes.push(match apt_install(&["nodejs", "npm"], why) {
            Ok(()) => "Node.js and npm: installed now from Debian's packages".to_owned(),
            Err(e) => format!("Node.js and npm MISSING: {e}"),
        });
    }
    if on_path("curl") && on_path("jq") {
        notes.push("curl and jq: installed".to_owned());
    } else {
        let why = "the README test runs its curl and jq commands";
        notes.push(match apt_install(&["curl", "jq"], why) {
            Ok(()) => "curl and jq: installed now from Debian's packages".to_owned(),
            Err(e) => format!("curl and jq MISSING: {e}"),
        });
    }
    let garage = garage_binary();
    if garage.exists() {
        notes.push(format!("Garage {GARAGE_VERSION}: {}", garage.display()));
        return Ok((notes, None));
    }
    // Debian's libsodium and zstd spare Garage's build compiling both from
    // source (about 90 of its 590 CPU seconds); without them it still builds.
    let system_libs = pkg_config_has(&["libsodium", "libzstd"])
        || apt_install(
            &["libsodium-dev", "libzstd-dev", "pkg-config"],
            "Garage builds faster with Debian's libsodium and zstd",
        )
        .is_ok()
            && pkg_config_has(&["libsodium", "libzstd"]);
    let build = GarageBuild::start(beside, system_libs)?;
    notes.push(format!(
        "Garage {GARAGE_VERSION}: building from crates.io{} (log: {})",
        if beside {
            " beside the other steps"
        } else {
            ""
        },
        build.log.display()
    ));
    Ok((notes, Some(build)))
}

/// Garage's build from crates.io, running.
pub(crate) struct GarageBuild {
    child: std::process::Child,
    log: PathBuf,
    started: Instant,
}

/// Garage's own crates: optimised at level 0. Its data path (hashes, ciphers,
/// compression) is in dependencies, which stay at level 1; its own crates are
/// more than half of the build's CPU time.
const GARAGE_CRATES: &[&str] = &[
    "garage",
    "garage_api_admin",
    "garage_api_common",
    "garage_api_s3",
    "garage_block",
    "garage_db",
    "garage_model",
    "garage_net",
    "garage_rpc",
    "garage_table",
    "garage_util",
    "garage_web",
];

impl GarageBuild {
    fn start(beside: bool, system_libs: bool) -> Result<Self, String> {
        let log = crate::util::target_dir().join("engines/garage-build.log");
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("could not create {}: {e}", dir.display()))?;
        }
        let out = std::fs::File::create(&log)
            .map_err(|e| format!("could not create {}: {e}", log.display()))?;
        let err = out
            .try_clone()
            .map_err(|e| format!("could not open {}: {e}", log.display()))?;
        let mut command = if beside {
            // `nice` runs the cargo after it at the lowest priority, inherited by
            // every compiler process of the build.
            let cargo = cargo();
            let mut niced = Command::new("nice");
            niced.args(["-n", "19"]).arg(cargo.get_program());
            if let Some(dir) = cargo.get_current_dir() {
                niced.current_dir(dir);
            }
            niced
        } else {
            cargo()
        };
        for krate in GARAGE_CRATES {
            command.args([
                "--config",
                &format!("profile.release.package.{krate}.opt-level=0"),
            ]);
        }
        // Level 1, not 3, for the rest: the tests' loads (and the cluster bench,
        // which measures raw S3 on the same build) do not need more. Only the
        // engine the tests use (LMDB); no Consul, K8s or OpenTelemetry.
        command
            .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "1")
            .args([
                "install",
                "garage",
                "--version",
                GARAGE_VERSION,
                "--locked",
                "--no-default-features",
                "--features",
                "bundled-libs,lmdb",
                "--root",
            ])
            .arg(garage_root())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        if system_libs {
            command
                .env("SODIUM_USE_PKG_CONFIG", "1")
                .env("ZSTD_SYS_USE_PKG_CONFIG", "1");
        }
        println!("$ {}", crate::util::display(&command));
        let child = command
            .spawn()
            .map_err(|e| format!("could not start Garage's build: {e}"))?;
        Ok(Self {
            child,
            log,
            started: Instant::now(),
        })
    }

    /// Stops the build: cargo ends at once, a compiler it started ends with its
    /// crate. (The build stays in our process group, so a Ctrl-C stops it too.)
    pub(crate) fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the build to end; says how long it took, or fails with the end
    /// of its log.
    pub(crate) fn wait(mut self) -> Result<String, String> {
        let status = self
            .child
            .wait()
            .map_err(|e| format!("Garage's build did not finish: {e}"))?;
        let tail = || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(30)..].join("\n")
        };
        if !status.success() {
            return Err(format!(
                "Garage's build failed ({status}); the end of {}:\n{}",
                self.log.display(),
                tail()
            ));
        }
        Ok(format!(
            "Garage {GARAGE_VERSION}: built from crates.io in {:.0} s into {}",
            self.started.elapsed().as_secs_f64(),
            garage_binary().display()
        ))
    }
}

/// Whether pkg-config knows every one of `libraries`.
fn pkg_config_has(libraries: &[&str]) -> bool {
    Command::new("pkg-config")
        .arg("--exists")
        .args(libraries)
        .status()
        .is_ok_and(|s| s.success())
}

fn postgres_installed() -> bool {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join("bin").join("postgres").exists());
    debian
        || Command::new("sh")
            .args(["-c", "command -v initdb && command -v postgres"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Whether `program` is on the PATH.
fn on_path(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether this process runs as root.
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `apt-get install` of Debian's `packages`, as root or through `sudo` where it
/// needs no password; otherwise one sentence saying what to install. `why` says
/// who needs them.
fn apt_install(packages: &[&str], why: &str) -> Result<(), String> {
    let sudo = if is_root() {
        false
    } else if Command::new("sudo")
        .args(["-n", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        true
    } else {
        return Err(format!(
            "{why}: install it as root (Debian: `sudo apt-get install {}`), then run again",
            packages.join(" ")
        ));
    };
    let apt = |args: &[&str]| {
        let mut c = if sudo {
            let mut c = Command::new("sudo");
            c.args(["-n", "apt-get"]);
            c
        } else {
            Command::new("apt-get")
        };
        c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend_from_slice(packages);
    if run_command(&mut apt(&install)).is_ok() {
        return Ok(());
    }
    // A fresh machine may have no package lists yet.
    run_command(&mut apt(&["update"]))?;
    run_command(&mut apt(&install)).map_err(|e| {
        format!(
            "{e}; {why} (Debian: apt-get install {})",
            packages.join(" ")
        )
    })
}
