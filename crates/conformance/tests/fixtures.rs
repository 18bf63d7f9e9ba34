//! Each server rule is shown to fail when broken: a `FakeGraph` with one `Break`
//! fails `server::check` under exactly that rule, and the unbroken fake passes, in
//! every dialect. A fake that speaks a dialect with one of its properties changed
//! fails the check in that dialect under the rule that property belongs to.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use http::StatusCode;
use upsession_conformance::Rule;
use upsession_conformance::fake::{Break, FakeGraph, FakeOptions, Quirks};
use upsession_conformance::server::{self, Config};
use upsession_core::Dialect;
use upsession_core::Limits;
use upsession_core::dialect::{Casing, LocationStyle, RangeForm, RangeForms};

/// Fragments of 1 KiB; OneDrive's are two of its 320 KiB quanta.
fn limits(dialect: &Dialect) -> Limits {
    let max_fragment = match dialect.fragment_quantum {
        Some(quantum) => 2 * quantum,
        None => 1024,
    };
    Limits::default()
        .with_min_size(1)
        .with_max_size(1 << 30)
        .with_max_fragment(max_fragment)
}

/// Checks, in `checked`, a fake that speaks `spoken` (they differ when a test
/// changes one property of the dialect the fake speaks).
async fn check_fake_in(
    checked: &Dialect,
    spoken: Dialect,
    options: FakeOptions,
    cases: u32,
    seed: u64,
) -> Result<upsession_conformance::Report, upsession_conformance::Failure> {
    let limits = limits(checked);
    let fake = FakeGraph::start(
        options
            .with_limits(limits.clone())
            .with_quirks(Quirks::dialect(spoken)),
    )
    .await
    .unwrap();
    let mut config = Config::for_local(fake.base_url(), fake.token(), &limits)
        .with_dialect(checked.clone())
        .with_cases(cases)
        .with_seed(seed);
    if checked.fragment_quantum.is_some() {
        // Files of up to three fragments keep the large-fragment runs quick.
        config = config.with_sizes(1, 3 * limits.max_fragment, limits.max_fragment);
    }
    let result = server::check_async(&config).await;
    fake.shutdown().await;
    result
}

async fn check_fake(
    options: FakeOptions,
    cases: u32,
    seed: u64,
) -> Result<upsession_conformance::Report, upsession_conformance::Failure> {
    check_fake_in(
        &Dialect::UPSESSION,
        Dialect::UPSESSION,
        options,
        cases,
        seed,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unbroken_fake_passes() {
    let report = check_fake(FakeOptions::default(), 300, 1)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.cases, 300);
    assert!(report.requests > 300, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unbroken_fake_passes_in_the_other_dialects() {
    for dialect in [Dialect::OUTLOOK, Dialect::ONEDRIVE] {
        let report = check_fake_in(&dialect, dialect.clone(), FakeOptions::default(), 100, 2)
            .await
            .unwrap_or_else(|f| panic!("{}: {f}", dialect.name));
        assert_eq!(report.cases, 100);
        assert!(report.requests > 100, "{}: {report}", dialect.name);
    }
}

/// The first dialect in which `rule` is judged.
fn dialect_of(rule: Rule) -> Dialect {
    Dialect::ALL
        .into_iter()
        .find(|d| rule.applies_to(d))
        .expect("every rule applies in some dialect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_break_fails_its_rule() {
    let mut wrong = Vec::new();
    for (n, bug) in Break::ALL.iter().enumerate() {
        let dialect = dialect_of(bug.rule());
        match check_fake_in(
            &dialect,
            dialect.clone(),
            FakeOptions::default().with_break(*bug),
            500,
            1000 + n as u64,
        )
        .await
        {
            Ok(_) => wrong.push(format!("{bug:?}: passed")),
            Err(f) if f.rule == bug.rule() => {
                println!(
                    "{bug:?} caught as `{}` ({} dialect): {}",
                    f.rule, dialect.name, f.message
                )
            }
            Err(f) => wrong.push(format!(
                "{bug:?}: failed `{}` instead of `{}`\n{f}",
                f.rule,
                bug.rule()
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// A fake speaking `dialect` with one property changed is caught under `rule`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_property_is_judged() {
    type Change = fn(&mut Dialect);
    let docs = Dialect::OUTLOOK.with_range_forms(RangeForms::Outlook);
    // One row a case: (dialect, what is changed, the change, the rule that catches it).
    #[rustfmt::skip]
    let cases: [(Dialect, &str, Change, Rule); 14] = [
        (Dialect::OUTLOOK, "bare ranges after a fragment", |d| d.ranges = RangeForm::Bare, Rule::ClosedRanges),
        (Dialect::OUTLOOK, "open ranges on creation", |d| d.created_ranges = RangeForm::Open, Rule::ClosedRanges),
        (Dialect::OUTLOOK, "PascalCase properties", |d| d.casing = Casing::Pascal, Rule::ProgressShape),
        (Dialect::OUTLOOK, "no @odata.context", |d| d.odata_context = false, Rule::CreateSession),
        (Dialect::OUTLOOK, "a Graph Location", |d| d.location = LocationStyle::Graph, Rule::Completion),
        (Dialect::ONEDRIVE, "201 on creation", |d| d.create_status = StatusCode::CREATED, Rule::CreateSession),
        (Dialect::ONEDRIVE, "200 to a fragment", |d| d.progress_status = StatusCode::OK, Rule::NextFragment),
        (Dialect::ONEDRIVE, "bare ranges", |d| d.ranges = RangeForm::Bare, Rule::ProgressShape),
        (Dialect::ONEDRIVE, "re-sends answered", |d| d.reject_resend = false, Rule::Replay),
        (Dialect::ONEDRIVE, "fragments of any length", |d| d.fragment_quantum = None, Rule::FragmentMultiple),
        (Dialect::UPSESSION, "open ranges", |d| d.ranges = RangeForm::Open, Rule::ClosedRanges),
        (Dialect::UPSESSION, "200 on creation", |d| d.create_status = StatusCode::OK, Rule::CreateSession),
        (docs.clone(), "closed ranges after a fragment where the docs' forms are asked for", |d| d.ranges = RangeForm::Closed, Rule::ProgressShape),
        (docs.clone(), "closed ranges on creation where the docs' forms are asked for", |d| d.created_ranges = RangeForm::Closed, Rule::CreateSession),
    ];
    let mut wrong = Vec::new();
    for (n, (dialect, change, apply, rule)) in cases.into_iter().enumerate() {
        let mut spoken = dialect.clone();
        apply(&mut spoken);
        match check_fake_in(
            &dialect,
            spoken,
            FakeOptions::default(),
            300,
            2000 + n as u64,
        )
        .await
        {
            Ok(_) => wrong.push(format!("{} with {change}: passed", dialect.name)),
            Err(f) if f.rule == rule => {
                println!(
                    "{} with {change} caught as `{}`: {}",
                    dialect.name, f.rule, f.message
                )
            }
            Err(f) => wrong.push(format!(
                "{} with {change}: failed `{}` instead of `{rule}`\n{f}",
                dialect.name, f.rule
            )),
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn every_server_rule_has_a_break() {
    for rule in Rule::SERVER {
        assert!(
            Break::ALL.iter().any(|b| b.rule() == *rule),
            "no break for {rule}"
        );
    }
}
