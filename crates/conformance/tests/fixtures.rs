//! Each server rule is shown to fail when broken: a `FakeGraph` with one `Break`
//! fails `server::check` under exactly that rule, and the unbroken fake passes.

#![allow(clippy::pedantic)] // test code favours brevity over pedantry

use upsession_conformance::Rule;
use upsession_conformance::fake::{Break, FakeGraph, FakeOptions};
use upsession_conformance::server::{self, Config};
use upsession_core::Limits;

fn limits() -> Limits {
    Limits::default()
        .with_min_size(1)
        .with_max_size(1 << 30)
        .with_max_fragment(1024)
}

async fn check_fake(
    options: FakeOptions,
    cases: u32,
    seed: u64,
) -> Result<upsession_conformance::Report, upsession_conformance::Failure> {
    let fake = FakeGraph::start(options.with_limits(limits()))
        .await
        .unwrap();
    let config = Config::for_local(fake.base_url(), fake.token(), &limits())
        .with_cases(cases)
        .with_seed(seed);
    let result = server::check_async(&config).await;
    fake.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unbroken_fake_passes() {
    let report = check_fake(FakeOptions::default(), 300, 1)
        .await
        .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.cases, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_break_fails_its_rule() {
    let mut wrong = Vec::new();
    for (n, bug) in Break::ALL.iter().enumerate() {
        match check_fake(
            FakeOptions::default().with_break(*bug),
            500,
            1000 + n as u64,
        )
        .await
        {
            Ok(_) => wrong.push(format!("{bug:?}: passed")),
            Err(f) if f.rule == bug.rule() => {
                println!("{bug:?} caught as `{}`: {}", f.rule, f.message)
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

#[test]
fn every_server_rule_has_a_break() {
    for rule in Rule::SERVER {
        assert!(
            Break::ALL.iter().any(|b| b.rule() == *rule),
            "no break for {rule}"
        );
    }
}
