//! Server conformance: random sequences of upload-session requests, each answer
//! judged against a reference model built from `upsession-core`.
//!
//! A case creates a draft message or event, opens an upload session, and then
//! performs up to [`Config::max_ops`] operations: next fragments of random length,
//! re-sends after a "lost" answer, the final fragment again after completion,
//! fragments that skip ahead, overlap, are too long, carry a malformed or wrong
//! `Content-Range` or a lying `Content-Length`, bodies cut off mid-way, two
//! concurrent `PUT`s of one fragment, status `GET`s, `DELETE`s, and more sessions.
//! Every answer must be the one the model (`upsession_core::session::Session` with
//! the same limits, rendered by `upsession_core::respond`) gives. At the end of a
//! case every completed attachment is fetched from `{Location}/$value` and
//! compared byte for byte.
//!
//! A server that speaks another dialect (`upsession serve --dialect outlook`) is
//! checked in it with [`Config::with_dialect`]: the model then takes the dialect's
//! fragment rules (`Limits::with_rules_of`: OneDrive's 416 on re-sent bytes and
//! 320 KiB multiples) and its rendering (`Dialect::created`, `answer`, `status`:
//! statuses, range forms, property names, `@odata.context`, Outlook REST
//! `Location`s). `closed-ranges` is judged only in a dialect that writes closed
//! ranges, `fragment-multiple` only in one with a fragment quantum
//! ([`Rule::applies_to`](crate::Rule::applies_to)).
//!
//! On a failure proptest shrinks the case to a minimal one, and the returned
//! [`Failure`] carries it as a script of curl-like lines.
//!
//! ```no_run
//! use upsession_conformance::server::{Config, check};
//!
//! let config = Config::new("http://127.0.0.1:8080/v1.0", "my-token")
//!     .with_sizes(1, 10_000_000, 1024)
//!     .with_cases(200);
//! match check(&config) {
//!     Ok(report) => println!("{report}"),
//!     Err(failure) => panic!("{failure}"),
//! }
//! ```
//!
//! Requests that must be malformed on the wire (`Content-Length` ≠ range, a body
//! cut short, a body held open during a concurrent `PUT`) are written by hand on a
//! TCP socket; they are skipped when the base URL is `https`.

mod attachments;
mod case;
mod concurrent;
mod exec;
mod http;
mod judge;
mod model;
mod ops;
mod put;
mod raw;
mod sessions;
mod shape;
mod verdict;

use std::time::Duration;

use reqwest::Url;
use upsession_core::{Dialect, Limits};

use crate::outcome::{Failure, Report};
use crate::runner::{self, cases_from_env, seed_from_env};

/// The default number of cases.
pub const DEFAULT_CASES: u32 = 500;

/// What to check and how hard.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Config {
    /// The Graph base URL, with its version segment: `http://127.0.0.1:PORT/v1.0`.
    pub base_url: String,
    /// A bearer token the server accepts.
    pub token: String,
    /// The server's smallest file for an upload session.
    pub min_size: u64,
    /// The server's largest file.
    pub max_size: u64,
    /// The server's largest fragment.
    pub max_fragment: u64,
    /// The dialect the server speaks (default [`Dialect::UPSESSION`]): its fragment
    /// rules and how its answers look.
    pub dialect: Dialect,
    /// Cases to run (default 500; `UPSESSION_CONFORMANCE_CASES` overrides the default).
    pub cases: u32,
    /// The seed of the run; random when `None` (`UPSESSION_CONFORMANCE_SEED` sets it).
    pub seed: Option<u64>,
    /// Most operations per case after the first session is opened.
    pub max_ops: usize,
    /// Most extra runs spent shrinking a failing case.
    pub max_shrink_iters: u32,
    /// Longest wait for one answer.
    pub request_timeout: Duration,
}

impl Config {
    /// A check of the server at `base_url` with the contract's default limits
    /// (files of 3 MB to 150 MB, fragments up to 4 MiB).
    ///
    /// Those limits make every case upload megabytes; a server started with small
    /// limits (see [`Config::for_local`]) is checked much faster.
    pub fn new(base_url: impl Into<String>, token: impl Into<String>) -> Self {
        Self::for_local(base_url, token, &Limits::default())
    }

    /// A check of a server running with `limits` (the usual way to check a server
    /// started by a test): `Config::for_local(running.base_url(), token, &limits)`.
    pub fn for_local(
        base_url: impl Into<String>,
        token: impl Into<String>,
        limits: &Limits,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            token: token.into(),
            min_size: limits.min_size,
            max_size: limits.max_size,
            max_fragment: limits.max_fragment,
            dialect: Dialect::UPSESSION,
            cases: cases_from_env(DEFAULT_CASES),
            seed: seed_from_env(),
            max_ops: 24,
            max_shrink_iters: 256,
            request_timeout: Duration::from_secs(30),
        }
    }

    crate::runner::run_setters!();

    upsession_core::setters! {
        /// Sets the server's size limits.
        with_sizes(min_size: u64, max_size: u64, max_fragment: u64);
    }

    upsession_core::setters! {
        /// Sets the most operations per case.
        with_max_ops(max_ops: usize);
        /// Checks the server in `dialect` (as `upsession serve --dialect` or
        /// `upsession_server_hyper::Config::with_dialect` set it). The sizes stay as
        /// they are: give the server's own maximum fragment (for OneDrive's dialect a
        /// multiple of 320 KiB).
        with_dialect(dialect: Dialect);
    }

    /// The limits of the reference model, with the dialect's fragment rules.
    fn limits(&self) -> Limits {
        Limits::default()
            .with_min_size(self.min_size)
            .with_max_size(self.max_size)
            .with_max_fragment(self.max_fragment)
            .with_rules_of(&self.dialect)
    }

    /// File sizes are `min_size + 0..=span`: at most four fragments beyond the minimum.
    fn span(&self) -> u64 {
        let cap = self
            .min_size
            .saturating_add(self.max_fragment.saturating_mul(4))
            .min(self.max_size);
        cap.saturating_sub(self.min_size)
    }

    fn validate(&self) -> Result<Url, String> {
        let url = Url::parse(self.base_url.trim_end_matches('/'))
            .map_err(|e| format!("base URL `{}` is not a URL: {e}", self.base_url))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(format!("base URL `{}` must be http(s)", self.base_url));
        }
        if self.max_fragment == 0 {
            return Err("the maximum fragment must be at least 1 byte".into());
        }
        if let Some(quantum) = self.dialect.fragment_quantum
            && self.max_fragment < quantum
        {
            return Err(format!(
                "the {} dialect takes fragments in multiples of {quantum} bytes: the maximum \
                 fragment ({}) must be at least that",
                self.dialect.name, self.max_fragment
            ));
        }
        if self.min_size > self.max_size || self.max_size == 0 {
            return Err(format!(
                "the minimum size {} is above the maximum size {}",
                self.min_size, self.max_size
            ));
        }
        Ok(url)
    }
}

/// Runs the check on its own tokio runtime (blocking). Inside async code use
/// [`check_async`].
pub fn check(config: &Config) -> Result<Report, Failure> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::harness(format!("cannot start a tokio runtime: {e}")))?;
    runtime.block_on(check_async(config))
}

/// Runs the check. See the [module documentation](self).
pub async fn check_async(config: &Config) -> Result<Report, Failure> {
    let base = config.validate().map_err(Failure::harness)?;
    let seed = config.seed.unwrap_or_else(|| fastrand::u64(..));
    // One connection per request: no answer depends on connection reuse.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .http1_only()
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(config.request_timeout)
        .timeout(config.request_timeout)
        .build()
        .map_err(|e| Failure::harness(format!("cannot build the HTTP client: {e}")))?;
    let odd_lengths = crate::Rule::FragmentMultiple.applies_to(&config.dialect);
    let strategy = ops::cases(config.span(), config.max_ops, odd_lengths);
    let (client, base) = (&client, &base);
    runner::run(
        &strategy,
        config.cases,
        seed,
        config.max_shrink_iters,
        |case, case_seed| async move {
            let mut exec = exec::Exec::new(config, client, base.clone(), case_seed);
            let outcome = exec.run(&case).await;
            (exec.stats, outcome)
        },
    )
    .await
}
