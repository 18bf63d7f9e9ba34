//! `cargo xtask ci`: every check CI runs, in order, stopping at the first failure.
//!
//! Steps: `fmt`, `tidy`, `engines` (Garage and PostgreSQL for the cluster tests,
//! installed where missing; Garage's build, when needed, runs beside the steps
//! after it, at the lowest CPU priority), `clippy`, `test`, `deny`, `doc`,
//! `package` (each published crate packaged, and checked from its package with
//! the workspace's `rust-version`), `bench` (the `--quick` smoke run: it checks
//! the benchmark runs and its bytes verify), `torture` (20 kills), `fuzz` (5 s per
//! target, two at a time), `cluster` (what runs on Garage: the tests that waited
//! for its build, when `engines` started one, then the cluster bench's quick
//! run); a run that changes the checkout (`git status`) fails. Each prints the
//! commands it runs; at the end (also after a failure) a summary gives each
//! step's status
//! and time. `.ci/run` is nothing but this task.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::tidy;
use crate::util::{
    cargo, cargo_home, cargo_subcommand_available, display, ensure_cargo_tool, in_ci, project_root,
    run_command,
};

/// What a passing step wants the summary to mention (a fallback, a skipped part).
pub(crate) type Notes = Vec<String>;

/// A step: its name in messages and the summary, and what it does.
pub(crate) type Step = (&'static str, fn() -> Result<Notes, String>);

const STEPS: &[Step] = &[
    ("fmt", fmt),
    ("tidy", tidy_step),
    ("engines", engines_step),
    ("clippy", clippy),
    ("test", test),
    ("deny", deny),
    ("doc", doc),
    ("package", crate::publish::package),
    ("bench", bench_smoke),
    ("torture", torture_short),
    ("fuzz", fuzz_short),
    ("cluster", cluster),
];

/// Garage's build when the `engines` step started it beside the steps after it.
static GARAGE_BUILD: std::sync::Mutex<Option<crate::engines::GarageBuild>> =
    std::sync::Mutex::new(None);

/// The tests that run on Garage (nextest's filter language). They run in the
/// `cluster` step, after Garage's build when one was started, and on their own
/// (beside the other tests, a busy machine made Garage's counters lag past what
/// the tests wait for); a test that needs Garage and is not named here fails in
/// the `test` step when Garage is not built yet (UPSESSION_REQUIRE_ENGINES).
const GARAGE_TESTS: &str = "binary_id(upsession-cli::cluster) \
    | test(=store::tests::the_shared_store_passes_the_suite) \
    | test(=msgraph_core_uploads_unchanged_to_a_two_node_cluster)";

/// `cargo xtask ci`.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!("`cargo xtask ci` takes no arguments (got `{arg}`)"));
    }
    let ci = in_ci();
    if ci {
        let names: Vec<&str> = STEPS.iter().map(|(name, _)| *name).collect();
        println!("xtask ci: CI=true, running steps {}", names.join(", "));
    }

    // What the checkout looks like before: a run must leave it as it found it.
    let checkout_before = checkout_status();
    let mut results: Vec<StepResult> = Vec::new();
    let started = Instant::now();
    let mut failure = None;
    for (index, (name, step)) in STEPS.iter().enumerate() {
        println!("\n==> [{}/{}] {name}", index + 1, STEPS.len());
        let step_started = Instant::now();
        let outcome = step();
        let elapsed = step_started.elapsed();
        match outcome {
            Ok(notes) => results.push(StepResult {
                name,
                elapsed,
                failed: false,
                notes,
            }),
            Err(message) => {
                results.push(StepResult {
                    name,
                    elapsed,
                    failed: true,
                    notes: Vec::new(),
                });
                failure = Some(format!("step `{name}` failed: {message}"));
                break;
            }
        }
    }

    // A failure before the `cluster` step leaves no build running behind us.
    if let Some(build) = GARAGE_BUILD.lock().ok().and_then(|mut b| b.take()) {
        println!("xtask ci: stopping Garage's build (the run ends before its `cluster` step)");
        build.stop();
    }
    print_summary(&results, started.elapsed(), ci);
    if let Some(message) = failure {
        return Err(message);
    }
    let checkout_after = checkout_status();
    if checkout_after != checkout_before {
        return Err(format!(
            "the run changed the checkout (`git status --porcelain` before:\n{}\nafter:\n{}): \
             every step must write under target/ only",
            checkout_before.unwrap_or_default(),
            checkout_after.unwrap_or_default()
        ));
    }
    println!("xtask ci: all {} steps passed", STEPS.len());
    Ok(())
}

struct StepResult {
    name: &'static str,
    elapsed: Duration,
    failed: bool,
    notes: Notes,
}

fn print_summary(results: &[StepResult], total: Duration, ci: bool) {
    println!("\nxtask ci summary:");
    for (name, _) in STEPS {
        match results.iter().find(|result| result.name == *name) {
            Some(result) => {
                let status = if result.failed { "FAILED" } else { "ok" };
                println!(
                    "  {name:<8} {status:<8} {:>8.1}s",
                    result.elapsed.as_secs_f64()
                );
                for note in &result.notes {
                    println!("           note: {note}");
                }
            }
            None => println!("  {name:<8} not run"),
        }
    }
    println!("  {:<17} {:>8.1}s", "total", total.as_secs_f64());
    if ci {
        let ran: Vec<&str> = results.iter().map(|result| result.name).collect();
        println!("xtask ci: steps run: {}", ran.join(", "));
    }
}

fn fmt() -> Result<Notes, String> {
    run_command(cargo().args(["fmt", "--all", "--", "--check"]))?;
    Ok(Vec::new())
}

fn tidy_step() -> Result<Notes, String> {
    tidy::tidy()?;
    Ok(Vec::new())
}

fn clippy() -> Result<Notes, String> {
    run_command(
        cargo().args("clippy --workspace --all-targets --locked -- -D warnings".split(' ')),
    )?;
    // The client-only CLI compiles other code paths (features off): linted too.
    run_command(cargo().args(
        "clippy -p upsession-cli --no-default-features --features client --locked -- -D warnings"
            .split(' '),
    ))?;
    Ok(Vec::new())
}

fn engines_step() -> Result<Notes, String> {
    let (notes, build) = crate::engines::start(true)?;
    *GARAGE_BUILD
        .lock()
        .map_err(|_| "the Garage build's lock is poisoned")? = build;
    Ok(notes)
}

/// cargo-nextest when it is installed, plain `cargo test` otherwise. The engines
/// step ran first, so the cluster tests must find Garage and PostgreSQL.
fn test() -> Result<Notes, String> {
    let cargo = || {
        let mut c = cargo();
        c.env("UPSESSION_REQUIRE_ENGINES", "1")
            .env("UPSESSION_GARAGE", crate::engines::garage_binary());
        c
    };
    if cargo_subcommand_available("nextest") {
        let mut run = cargo();
        run.args(
            "nextest run --workspace --locked --no-fail-fast"
                .split(' ')
                .chain(["--test-threads", TEST_THREADS]),
        );
        run.args(["-E", &format!("not ({GARAGE_TESTS})")]);
        run_command(&mut run)?;
        // nextest does not run doctests.
        run_command(cargo().args(["test", "--workspace", "--doc", "--locked"]))?;
        Ok(vec![
            "the tests that run on Garage run in step `cluster`".into(),
        ])
    } else {
        // Garage first: plain `cargo test` cannot leave its tests for later.
        let build = GARAGE_BUILD
            .lock()
            .map_err(|_| "the Garage build's lock is poisoned")?
            .take();
        if let Some(build) = build {
            println!("{}", build.wait()?);
        }
        // `cargo test` runs the doctests too.
        run_command(cargo().args(["test", "--workspace", "--locked"]))?;
        Ok(vec![
            "cargo-nextest is not installed, so the tests ran under `cargo test`".to_owned(),
        ])
    }
}

/// Tests run at once. Most of them wait on sockets, child processes and disks
/// (one test at a time per core left a core idle for half the run on 2 cores).
const TEST_THREADS: &str = "4";

/// cargo-deny, installed first if needed. Licences, bans and sources are checked
/// in one run; advisories in a second, because only they need a network fetch
/// (of the RustSec advisory database, a git clone from github.com).
///
/// Does the advisory fetch work here? Checked 2026-11-25 with cargo-deny 0.20.2:
/// no. In this project's build sandbox (and on its CI) only the crates.io, PyPI,
/// Debian and npm registries are reachable and github.com does not even resolve,
/// so the clone fails ("failed to fetch advisory database ... Could not resolve
/// host: github.com"), there is no cached copy either, and the advisories are
/// skipped with a note. Where github.com is reachable they run in full.
///
/// Also checked then, with a fake local database holding an advisory against a
/// crate in our Cargo.lock: a failed refresh of an existing copy fails the online
/// run too ("failed to fetch latest changes"), and the `--offline` retry against
/// that copy reports `error[vulnerability]` and fails this step, as it must.
/// `git status --porcelain` of the checkout (`None` outside a git checkout).
fn checkout_status() -> Option<String> {
    git_out(&project_root(), &["status", "--porcelain"])
}

/// `cargo xtask deny`: the `deny` step alone.
pub(crate) fn deny_task(args: &[String]) -> Result<(), String> {
    if let Some(arg) = args.first() {
        return Err(format!(
            "`cargo xtask deny` takes no arguments (got `{arg}`)"
        ));
    }
    for note in deny()? {
        println!("{note}");
    }
    Ok(())
}

/// The cargo-deny release CI installs when it is missing.
const CARGO_DENY_VERSION: &str = "0.20.2";

fn deny() -> Result<Notes, String> {
    ensure_cargo_tool("deny", "cargo-deny", CARGO_DENY_VERSION)?;

    run_command(deny_command().args(["check", "licenses", "bans", "sources"]))?;

    let Some(bundle) = advisory_bundle() else {
        // No snapshot: the live database, or a failure (never a silent pass).
        return match advisories(&[])? {
            Advisories::Passed => {
                // cargo-deny fetched the database, or used its cached copy when
                // the fetch was not due: say which copy, by its date.
                let date = git_out(&default_database(), &["show", "-s", "--format=%cs", "HEAD"])
                    .unwrap_or_else(|| "unknown date".into());
                let note = format!(
                    "no RustSec snapshot at {} (or in UPSESSION_ADVISORY_DB): advisories \
                     checked against cargo-deny's own copy of the database, of {date}",
                    project_root().join(SNAPSHOT).display()
                );
                println!("note: {note}");
                Ok(vec![note])
            }
            Advisories::Unfetchable => Err(format!(
                "advisories could not be checked: there is no RustSec snapshot at {} \
                 (or in UPSESSION_ADVISORY_DB) and the live database cannot be fetched",
                project_root().join(SNAPSHOT).display()
            )),
        };
    };
    let (date, days) = install_snapshot(&bundle)?;
    // `--offline` also stops crate downloads: fetch them first.
    run_command(cargo().args(["fetch", "--locked"]))?;
    match advisories(&["--offline"])? {
        Advisories::Passed => {}
        Advisories::Unfetchable => {
            return Err(format!(
                "cargo-deny could not read the RustSec snapshot from {}",
                bundle.display()
            ));
        }
    }
    let mut note = format!(
        "advisories checked offline against the RustSec snapshot of {date} ({days} days old)"
    );
    if days > 90 {
        note.push_str(": advisories published since are not known to this check");
    }
    println!("note: {note}");
    Ok(vec![note])
}

/// Where the offline RustSec snapshot lives, beside the checkout.
const SNAPSHOT: &str = "../shared/advisory-db/advisory-db.bundle";

/// The RustSec snapshot (a git bundle): `UPSESSION_ADVISORY_DB`, else [`SNAPSHOT`].
fn advisory_bundle() -> Option<PathBuf> {
    let path = std::env::var_os("UPSESSION_ADVISORY_DB")
        .map_or_else(|| project_root().join(SNAPSHOT), PathBuf::from);
    path.is_file().then_some(path)
}

/// `git -C dir ARGS`'s output, trimmed, when it succeeds.
fn git_out(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Puts the snapshot where cargo-deny reads the default database
/// (`$CARGO_HOME/advisory-dbs/advisory-db-3157b0e258782691`), unless a copy as new
/// or newer is there; returns its date and age in days.
fn install_snapshot(bundle: &Path) -> Result<(String, u64), String> {
    let db = default_database();
    let time_of = |rev: &str| -> Option<u64> {
        git_out(&db, &["show", "-s", "--format=%ct", rev])?
            .parse()
            .ok()
    };
    let git = || {
        let mut git = Command::new("git");
        git.arg("-C").arg(&db);
        git
    };
    if time_of("HEAD").is_none() {
        let _ = std::fs::remove_dir_all(&db);
        let mut clone = Command::new("git");
        run_command(
            clone
                .args(["-c", "init.defaultBranch=main", "clone", "-q"])
                .arg(bundle)
                .arg(&db),
        )?;
    } else {
        // Refreshed from the bundle only when the bundle is newer.
        run_command(git().args(["fetch", "-q"]).arg(bundle).arg("main"))?;
        if time_of("FETCH_HEAD") > time_of("HEAD") {
            run_command(git().args(["reset", "-q", "--hard", "FETCH_HEAD"]))?;
        }
    }
    let when = time_of("HEAD").ok_or("the advisory database has no commit")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let date = git_out(&db, &["show", "-s", "--format=%cs", "HEAD"]).unwrap_or_default();
    Ok((date, now.saturating_sub(when) / 86_400))
}

/// Where cargo-deny keeps the default advisory database (its folder name is a
/// hash of the database's URL).
fn default_database() -> PathBuf {
    cargo_home().join("advisory-dbs/advisory-db-3157b0e258782691")
}

/// `cargo deny` with the options every check uses.
fn deny_command() -> Command {
    let mut command = cargo();
    command.args(["deny", "--all-features", "--locked"]);
    command
}

enum Advisories {
    Passed,
    /// The database could not be fetched (or opened), so nothing was checked.
    Unfetchable,
}

/// Runs `cargo deny check advisories`. Its output is captured (then echoed) to
/// tell a database that cannot be fetched, which is not a finding, from a real
/// finding, which fails the step.
fn advisories(extra: &[&str]) -> Result<Advisories, String> {
    let mut command = deny_command();
    command
        .args(extra)
        .args(["--color", "never", "check", "advisories"]);
    let shown = display(&command);
    println!("$ {shown}");
    let output = command
        .output()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    print!("{stdout}");
    eprint!("{stderr}");
    if output.status.success() {
        return Ok(Advisories::Passed);
    }
    if is_unfetchable_database(&format!("{stdout}\n{stderr}")) {
        return Ok(Advisories::Unfetchable);
    }
    Err(format!("`{shown}` failed ({})", output.status))
}

/// Whether failed `cargo deny check advisories` output means "the database could
/// not be fetched or opened" rather than "an advisory matched".
///
/// Both must hold: cargo-deny logged a database error, and it reported no
/// diagnostic at all (findings are printed as `error[vulnerability]: ...`,
/// `warning[unmaintained]: ...` and so on, which never happens without a database).
fn is_unfetchable_database(output: &str) -> bool {
    const DATABASE_ERRORS: &[&str] = &[
        "failed to fetch advisory database",
        "failed to fetch database",
        "failed to open advisory database",
        "failed to load advisory database",
        "failed to get 'FETCH_HEAD' metadata",
        // `--offline` with a cached copy older than `maximum-db-staleness`.
        "repository is stale",
    ];
    let database_error = DATABASE_ERRORS.iter().any(|error| output.contains(error));
    let has_diagnostic = output.lines().any(|line| {
        let line = line.trim_start();
        ["error[", "warning[", "note[", "help["]
            .iter()
            .any(|severity| line.starts_with(severity))
    });
    database_error && !has_diagnostic
}

fn doc() -> Result<Notes, String> {
    run_command(
        cargo()
            .env("RUSTDOCFLAGS", "-D warnings")
            .args("doc --workspace --no-deps --locked".split(' ')),
    )?;
    Ok(Vec::new())
}

fn fuzz_short() -> Result<Notes, String> {
    // The committed corpus is read, not grown: a CI run leaves the checkout clean.
    // No AddressSanitizer: the fuzzed core has no `unsafe` (the workspace denies
    // it), and the build without it is the cheaper one; two targets at a time, one per core.
    crate::fuzz::run(
        &[
            "--time",
            "5",
            "--keep-corpus",
            "--sanitizer",
            "none",
            "--jobs",
            "2",
        ]
        .map(str::to_owned),
    )?;
    Ok(vec![
        "fuzz ran 5 s per target, two at a time, without AddressSanitizer; \
         `cargo xtask fuzz` runs 60 s each, with it"
            .to_owned(),
    ])
}

fn torture_short() -> Result<Notes, String> {
    crate::torture::run(&["--quick".to_owned()])?;
    Ok(Vec::new())
}

fn bench_smoke() -> Result<Notes, String> {
    crate::bench::run(&["--quick".to_owned()])?;
    Ok(vec![
        "bench ran in --quick mode: it checks that it runs, not speed".to_owned(),
    ])
}

/// What runs on Garage, once its build (when the `engines` step started one)
/// is done: the tests named in [`GARAGE_TESTS`], the crash torture of two nodes
/// on it, then the cluster bench's quick run.
fn cluster() -> Result<Notes, String> {
    let mut notes = Vec::new();
    let build = GARAGE_BUILD
        .lock()
        .map_err(|_| "the Garage build's lock is poisoned")?
        .take();
    if let Some(build) = build {
        let built = build.wait()?;
        println!("{built}");
        notes.push(built);
    }
    // Without nextest, `cargo test` in the `test` step ran them.
    if cargo_subcommand_available("nextest") {
        run_command(
            cargo()
                .env("UPSESSION_REQUIRE_ENGINES", "1")
                .env("UPSESSION_GARAGE", crate::engines::garage_binary())
                .args(["nextest", "run", "--workspace", "--locked"])
                .args(["--no-fail-fast", "--test-threads", TEST_THREADS])
                .args(["-E", GARAGE_TESTS]),
        )?;
    }
    crate::torture::run(&[
        "--quick".to_owned(),
        "--kills".to_owned(),
        "12".to_owned(),
        "--cluster".to_owned(),
        "2".to_owned(),
    ])?;
    notes.push(
        "the crash torture ran on two nodes sharing PostgreSQL and Garage (12 kills)".to_owned(),
    );
    crate::bench::run(&["--quick".to_owned(), "--cluster".to_owned()])?;
    notes.push("the cluster bench ran in --quick mode".to_owned());
    Ok(notes)
}

#[cfg(test)]
mod tests {
    use super::is_unfetchable_database;

    #[test]
    fn unreachable_advisory_database_is_not_a_finding() {
        let output = "2026-11-25 06:22:15 [ERROR] failed to fetch advisory database \
                      https://github.com/RustSec/advisory-db with cli: failed to clone\n\
                      fatal: unable to access 'https://github.com/RustSec/advisory-db/': \
                      Could not resolve host: github.com\n";
        assert!(is_unfetchable_database(output));
        let offline = "2026-11-25 06:22:15 [ERROR] failed to get 'FETCH_HEAD' metadata: \
                       failed to get HEAD timestamp\n";
        assert!(is_unfetchable_database(offline));
    }

    #[test]
    fn advisory_finding_fails_even_next_to_a_database_error() {
        let finding = "error[vulnerability]: Use-after-free in foo\n  \
                       ┌─ Cargo.lock:4:1\nadvisories FAILED\n";
        assert!(!is_unfetchable_database(finding));
        let both = format!("[ERROR] failed to fetch advisory database x\n{finding}");
        assert!(!is_unfetchable_database(&both));
        assert!(!is_unfetchable_database(
            "error: could not find `Cargo.toml`\n"
        ));
    }
}
