//! Our server passes server conformance in-process (`Server::start`), in the
//! upsession dialect and in the outlook and onedrive dialects
//! (`Config::with_dialect`). As a separate `upsession serve` process it is checked
//! in `crates/cli/tests/conformance.rs`, where cargo builds the binary under test.
//!
//! Another storage or transport gets the same check with one line:
//! `server::check_async(&server::Config::for_local(base_url, token, &limits)).await`.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use std::time::Duration;

use upsession_conformance::server::{self, Config};
use upsession_conformance::{Report, Rule};
use upsession_core::{Dialect, Limits};
use upsession_testbed::kit::{TOKEN, TestServer};

fn limits() -> Limits {
    Limits::default()
        .with_min_size(1)
        .with_max_size(150_000_000)
        .with_max_fragment(1024)
}

/// Checks our server in this process, in `dialect` with `limits`, under the check
/// configuration `check` makes of the default one for it. The report.
async fn check_in_process(
    dialect: Dialect,
    limits: Limits,
    check: impl FnOnce(Config) -> Config,
) -> Report {
    let running = TestServer::start_with(|c| {
        c.with_limits(limits.clone())
            .with_dialect(dialect.clone())
            .with_timeouts(Duration::from_secs(10), Duration::from_secs(5))
    })
    .await;
    let default = Config::for_local(running.base(), TOKEN, &limits).with_dialect(dialect);
    let config = check(default);
    let report = server::check_async(&config)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    println!("{report}");
    running.shutdown().await;
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_process_passes() {
    let mut cases = 0;
    let report = check_in_process(Dialect::UPSESSION, limits(), |config| {
        cases = config.cases;
        config
    })
    .await;
    // Measured: every case ran and opened at least one session on our server.
    assert_eq!(report.cases, cases, "{report}");
    assert!(report.sessions >= u64::from(cases), "{report}");
}

/// The dialect runs' share of the default: 150 cases by default
/// (`UPSESSION_CONFORMANCE_CASES` / 500 × 150).
fn dialect_cases(default: Config) -> Config {
    let cases = (u64::from(default.cases) * 150 / 500).max(1) as u32;
    default.with_cases(cases)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_the_outlook_dialect_passes() {
    let report = check_in_process(Dialect::OUTLOOK, limits(), dialect_cases).await;
    assert!(report.checks[&Rule::ClosedRanges] > 0, "{report}");
    assert!(report.checks[&Rule::AttachmentBytes] > 0, "{report}");
}

/// The outlook dialect as the docs' example writes it: PascalCase properties, `"0-"`
/// then bare ranges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_the_outlook_docs_example_forms_passes() {
    let docs = Dialect::OUTLOOK
        .with_casing(upsession_core::dialect::Casing::Pascal)
        .with_range_forms(upsession_core::dialect::RangeForms::Outlook);
    let report = check_in_process(docs, limits(), dialect_cases).await;
    assert!(!report.checks.contains_key(&Rule::ClosedRanges), "{report}");
    assert!(report.checks[&Rule::AttachmentBytes] > 0, "{report}");
}

/// OneDrive's fragments are multiples of 320 KiB: two of them at most, files of up
/// to three fragments.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_server_in_the_onedrive_dialect_passes() {
    let limits = limits().with_max_fragment(2 * 320 * 1024);
    let fragment = limits.max_fragment;
    let report = check_in_process(Dialect::ONEDRIVE, limits, |default| {
        // The check's own largest file (within the server's): up to three fragments.
        dialect_cases(default.with_sizes(1, 3 * fragment, fragment))
    })
    .await;
    for rule in [Rule::FragmentMultiple, Rule::Replay, Rule::ConcurrentPut] {
        assert!(
            report.checks.get(&rule).is_some_and(|n| *n > 0),
            "{rule}: {report}"
        );
    }
    assert!(!report.checks.contains_key(&Rule::ClosedRanges), "{report}");
}

#[test]
fn the_checks_are_send() {
    fn send<T: Send>(_: &T) {}
    let config = Config::for_local("http://127.0.0.1:9/v1.0", TOKEN, &limits());
    send(&server::check_async(&config));
}
