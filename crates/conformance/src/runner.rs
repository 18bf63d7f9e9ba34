//! The property-test loop shared by both checks: seeded case generation with
//! proptest, an async test per case, and proptest's shrinking driven by hand.
//!
//! proptest's own `TestRunner::run` takes a synchronous closure; our cases talk
//! HTTP, so the loop below does what `TestRunner::run_one` does (generate, test,
//! `simplify` while failing, `complicate` while passing) around an `.await`.
//!
//! Case `i` of a run with seed `s` is generated from the per-case seed
//! [`case_seed`]`(s, i)`, so any case can be replayed alone as case 0 of a run
//! whose seed is `s + i`.

use std::future::Future;
use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config as ProptestConfig, RngAlgorithm, TestRng, TestRunner};

use crate::outcome::{Failure, Report};
use crate::rule::Rule;

/// Environment variable that overrides the default number of cases.
pub const CASES_ENV: &str = "UPSESSION_CONFORMANCE_CASES";

/// Environment variable that fixes the seed (decimal or `0x` hex).
pub const SEED_ENV: &str = "UPSESSION_CONFORMANCE_SEED";

/// One case's verdict: which rule it broke, why, and the script of what happened.
#[derive(Clone, Debug)]
pub(crate) struct CaseFailure {
    pub(crate) rule: Rule,
    pub(crate) message: String,
    pub(crate) script: String,
}

/// The number of cases: `UPSESSION_CONFORMANCE_CASES` if set and valid, else `default`.
pub(crate) fn cases_from_env(default: u32) -> u32 {
    std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// The seed from `UPSESSION_CONFORMANCE_SEED`, if set and valid.
pub(crate) fn seed_from_env() -> Option<u64> {
    std::env::var(SEED_ENV).ok().and_then(|v| parse_seed(&v))
}

/// Reads a seed written in decimal or as `0x…` hex.
pub fn parse_seed(text: &str) -> Option<u64> {
    let text = text.trim();
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// SplitMix64: a tiny, well-mixed hash to derive independent seeds.
pub(crate) const fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed that case `case` of a run seeded `seed` is generated from.
pub(crate) const fn case_seed(seed: u64, case: u32) -> u64 {
    mix(seed.wrapping_add(case as u64))
}

fn runner_for(case_seed: u64) -> TestRunner {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&mix(case_seed ^ (i as u64)).to_le_bytes());
    }
    let config = ProptestConfig {
        cases: 1,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &bytes))
}

/// Runs `cases` cases of `strategy` and sums what they counted into the run's
/// [`Report`]; on the first failure shrinks it (at most `max_shrink` more runs) and
/// returns the minimal failure.
///
/// `test` gets the case value and the per-case seed (for data that is not part of
/// the value, such as file contents) and returns its counts beside its verdict.
pub(crate) async fn run<S, F, Fut>(
    strategy: &S,
    cases: u32,
    seed: u64,
    max_shrink: u32,
    mut test: F,
) -> Result<Report, Failure>
where
    S: Strategy,
    F: FnMut(S::Value, u64) -> Fut,
    Fut: Future<Output = (Report, Result<(), CaseFailure>)>,
{
    let started = Instant::now();
    let mut totals = Report::default();
    for case in 0..cases {
        let per_case = case_seed(seed, case);
        let mut tree = {
            let mut runner = runner_for(per_case);
            strategy
                .new_tree(&mut runner)
                .map_err(|e| Failure::harness(format!("cannot generate a case: {e}")))?
        };
        let (counts, verdict) = test(tree.current(), per_case).await;
        totals.absorb(&counts);
        // Counted as run, not copied from the configuration.
        totals.cases += 1;
        let Err(first) = verdict else {
            continue;
        };
        let mut best = first;
        let mut steps = 0;
        if tree.simplify() {
            while steps < max_shrink {
                steps += 1;
                match test(tree.current(), per_case).await.1 {
                    Err(failure) => {
                        best = failure;
                        if !tree.simplify() {
                            break;
                        }
                    }
                    Ok(()) => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        return Err(Failure {
            rule: best.rule,
            message: best.message,
            seed,
            case,
            case_seed: seed.wrapping_add(u64::from(case)),
            shrink_steps: steps,
            script: best.script,
        });
    }
    totals.seed = seed;
    totals.elapsed = started.elapsed();
    Ok(totals)
}

/// `with_cases` and `with_seed`, for the configurations of both checks (each has
/// `cases: u32` and `seed: Option<u64>`).
macro_rules! run_setters {
    () => {
        upsession_core::setters! {
            /// Sets the number of cases.
            with_cases(cases: u32);
        }

        /// Fixes the seed.
        #[must_use]
        pub fn with_seed(mut self, seed: u64) -> Self {
            self.seed = Some(seed);
            self
        }
    };
}
pub(crate) use run_setters;

#[cfg(test)]
mod tests {
    #![allow(clippy::pedantic)] // test code favours brevity over pedantry
    use super::*;

    #[test]
    fn a_case_replays_alone_from_its_case_seed() {
        let (seed, case) = (12345u64, 17u32);
        let alone = seed.wrapping_add(u64::from(case));
        assert_eq!(case_seed(seed, case), case_seed(alone, 0));
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed("0x2a"), Some(42));
        assert_eq!(parse_seed("nope"), None);
    }

    #[test]
    fn shrinking_finds_the_smallest_failing_value() {
        let strategy = 0u32..1000;
        let result = futures_lite_block_on(run(&strategy, 200, 7, 500, |v, _| async move {
            let verdict = if v >= 10 {
                Err(CaseFailure {
                    rule: Rule::Status,
                    message: format!("{v}"),
                    script: String::new(),
                })
            } else {
                Ok(())
            };
            (Report::default(), verdict)
        }));
        let failure = result.unwrap_err();
        assert_eq!(failure.message, "10");
    }

    fn futures_lite_block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }
}
