//! `cargo xtask`: the project's task runner (the cargo-xtask pattern).
//!
//! One binary, one module per task, std only. `cargo xtask` is an alias from
//! `.cargo/config.toml` for `cargo run --package xtask --`.

mod bench;
mod ci;
mod engines;
mod fuzz;
mod manifest;
mod matrix;
mod publish;
mod tidy;
mod torture;
mod util;

use std::process::ExitCode;

const HELP: &str = "\
usage: cargo xtask <task>

tasks:
  ci      every check CI runs, in order, stopping at the first failure:
          fmt, tidy, clippy, engines, tests, cargo-deny, docs, package,
          bench --quick, torture --quick, fuzz (5 s per target)
  deny    cargo-deny alone: licences, bans, sources, and advisories offline
          against the RustSec snapshot in ../shared/advisory-db (or
          UPSESSION_ADVISORY_DB); a database that cannot be read fails
  publish-check
          the published crates' step of ci alone, package: cargo package,
          each package built with the root Cargo.toml's rust-version
          (installed through rustup if missing); in target/package-verify
  tidy    check the repository's invariants (no I/O crate or clock read in
          upsession-core, workspace lints everywhere, no machine paths, ...)
  bench   measure the server against a no-logic sink (release build);
          --quick (a smoke test: runs and verifies, no speed claims),
          --reps N, --full (1 GiB files too, 5 repetitions), --plot (SVG
          chart), --peers (rustus too), --no-cache-fairness; table in
          target/bench/latest.md;
          --cluster: 1, 2 and 3 nodes on Garage + PostgreSQL beside disk
  torture SIGKILL a real server at seeded moments under concurrent uploads and
          check nothing acknowledged is lost; --kills N (200), --seed S, --quick (20)
  fuzz    run the cargo-fuzz targets in fuzz/ (nightly flags via
          RUSTC_BOOTSTRAP=1; installs cargo-fuzz if missing), growing
          fuzz/corpus/<target>/; --time SECONDS per target (default 60),
          --runs N (stop after N executions), --sanitizer none (faster
          long runs), --target NAME, --jobs N (targets at once); fails on
          a crash and names the reproducer
  engines install what the cluster tests need, where missing: Garage (built
          from crates.io into ~/.cache/upsession) and PostgreSQL (apt-get)
  matrix  regenerate the SDK x dialect matrix in docs/PROTOCOL.md by running
          every SDK model against our server (the sdk_matrix test, rewriting)
  help    print this message
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let task = args.next();
    let rest: Vec<String> = args.collect();

    let result = match task.as_deref() {
        None | Some("help" | "-h" | "--help") => {
            print!("{HELP}");
            Ok(())
        }
        Some("ci") => ci::run(&rest),
        Some("deny") => ci::deny_task(&rest),
        Some("publish-check") => publish::run(&rest),
        Some("tidy") => tidy::run(&rest),
        Some("bench") => bench::run(&rest),
        Some("torture") => torture::run(&rest),
        Some("fuzz") => fuzz::run(&rest),
        Some("engines") => engines::run(&rest),
        Some("matrix") => matrix::run(&rest),
        // Later tasks go here: one module each
        // (declared at the top of this file), one arm here, one entry in HELP.
        Some(other) => {
            eprintln!("error: unknown task `{other}`\n");
            eprint!("{HELP}");
            return ExitCode::from(2);
        }
    };

    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
