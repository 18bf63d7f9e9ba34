//! What a check returns: a [`Report`] when every case passed, a [`Failure`] with the
//! minimal failing case otherwise.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::rule::Rule;

/// A passed check: what was exercised, and how often each rule was checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// Cases run (all passed).
    pub cases: u32,
    /// The seed the cases were generated from; the same seed generates the same cases.
    pub seed: u64,
    /// HTTP requests made (server check) or served by the fake (client check).
    pub requests: u64,
    /// Upload sessions opened.
    pub sessions: u64,
    /// Uploads that completed (server check) or that the client reported as done
    /// (client check).
    pub completed: u64,
    /// Uploads the client reported as failed, each with a reason (client check).
    pub declined: u64,
    /// Fragment bytes sent (server check) or file bytes offered (client check).
    pub bytes: u64,
    /// How many answers or outcomes were judged under each rule.
    pub checks: BTreeMap<Rule, u64>,
    /// Wall-clock time of the whole check.
    pub elapsed: Duration,
}

impl Report {
    /// Counts one judgement under `rule`.
    pub(crate) fn checked(&mut self, rule: Rule) {
        *self.checks.entry(rule).or_default() += 1;
    }

    /// Adds another report's counts to this one.
    pub(crate) fn absorb(&mut self, other: &Self) {
        self.requests += other.requests;
        self.sessions += other.sessions;
        self.completed += other.completed;
        self.declined += other.declined;
        self.bytes += other.bytes;
        for (rule, n) in &other.checks {
            *self.checks.entry(*rule).or_default() += n;
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance passed: {} cases (seed {}) in {:.1} s",
            self.cases,
            self.seed,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(
            f,
            "  {} requests, {} sessions, {} completed, {} declined, {} bytes",
            self.requests, self.sessions, self.completed, self.declined, self.bytes
        )?;
        writeln!(f, "  judgements per rule:")?;
        for (rule, n) in &self.checks {
            writeln!(f, "    {:<28} {n}", rule.name())?;
        }
        Ok(())
    }
}

/// A failed check: the rule broken, the minimal failing case as a script, and how
/// to replay it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Failure {
    /// The rule the implementation broke ([`Rule::Harness`] if the checker could not run).
    pub rule: Rule,
    /// What was expected and what came instead, at which step.
    pub message: String,
    /// The seed of the whole run.
    pub seed: u64,
    /// Index of the first failing case (0-based).
    pub case: u32,
    /// The seed that generates that case as case 0: `--seed {case_seed} --cases 1`
    /// replays it alone.
    pub case_seed: u64,
    /// Shrinking steps taken to reach the minimal case.
    pub shrink_steps: u32,
    /// The minimal failing case: one curl-like line per request with its answer, or
    /// (client check) the case and the fake server's log.
    pub script: String,
}

impl Failure {
    /// A failure of the checker itself, not of the implementation.
    pub(crate) fn harness(message: impl Into<String>) -> Self {
        Self {
            rule: Rule::Harness,
            message: message.into(),
            seed: 0,
            case: 0,
            case_seed: 0,
            shrink_steps: 0,
            script: String::new(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rule == Rule::Harness {
            return write!(f, "the conformance check could not run: {}", self.message);
        }
        writeln!(
            f,
            "conformance FAILED: rule `{}`: {}",
            self.rule,
            self.rule.summary()
        )?;
        writeln!(f, "  {}", self.message)?;
        writeln!(
            f,
            "  first failing case: {} (seed {}); shrunk in {} steps",
            self.case, self.seed, self.shrink_steps
        )?;
        writeln!(
            f,
            "  replay the whole run with --seed {}, or this case alone with --seed {} --cases 1",
            self.seed, self.case_seed
        )?;
        writeln!(f)?;
        write!(f, "{}", self.script)
    }
}

impl std::error::Error for Failure {}
