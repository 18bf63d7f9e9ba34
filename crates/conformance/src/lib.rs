//! Conformance checks for Microsoft Graph-style upload sessions: does a server
//! answer every fragment as Graph's contract (and `docs/PROTOCOL.md`) says, and does
//! a client survive Graph's quirks and a bad network without ever claiming an
//! upload it did not finish?
//!
//! Both checks are property tests: proptest generates cases from a seed, each case
//! runs over real HTTP on 127.0.0.1 (or any URL), every answer is judged, and a
//! failing case is shrunk to a minimal one and returned as a replayable script.
//!
//! ```text
//!                     proptest cases (seeded)          reference model
//!   server::check ──► open, PUT next, re-send, skip, ──► upsession_core::Session
//!                     overlap, too long, bad header,     + respond: the answer
//!                     cut body, concurrent, GET, DELETE    each request must get
//!                               │ HTTP                          │
//!                               ▼                               ▼
//!                     the server under test ─── answers ──► judged per Rule
//!
//!   client::check ──► size, quirks, fault schedule ──► fake::FakeGraph (core Session,
//!                               │                      Dialect, Faults, Breaks)
//!                               ▼                               ▲
//!                     the caller's upload closure ──── HTTP ────┘
//!                     ⇒ success with the exact bytes, or a failure that says why
//! ```
//!
//! - [`server`]: [`server::check`] / [`server::check_async`] with a
//!   [`server::Config`]. Checking a new server (another storage, another
//!   transport) is one line in a test:
//!   `server::check_async(&server::Config::for_local(base_url, token, &limits)).await`;
//!   a server in the outlook or onedrive dialect is checked in it with
//!   [`server::Config::with_dialect`].
//! - [`client`]: [`client::check`] runs the caller's upload code against
//!   [`fake::FakeGraph`] for each case.
//! - [`fake`]: the fault-injecting Graph-like server, also useful on its own
//!   (`upsession conformance fake`).
//! - [`sdk`]: sans-IO models of the official SDKs' large-file upload tasks (Python,
//!   JavaScript, .NET, Java, Go, PHP), each written from its source at a named
//!   commit, a driver that runs one against a real server, and the SDK × dialect
//!   matrix generated into `docs/PROTOCOL.md` (`cargo xtask matrix`).
//! - [`Rule`]: every behaviour checked, by stable name; a [`Failure`] names the one
//!   broken, a [`Report`] counts how often each was judged.
//!
//! Knobs: `UPSESSION_CONFORMANCE_CASES` ([`CASES_ENV`]) overrides the default number
//! of cases (500); `UPSESSION_CONFORMANCE_SEED` ([`SEED_ENV`]) fixes the seed. A
//! failure prints the seed of the run and the seed that replays the failing case
//! alone.
//!
//! `docs/CONFORMANCE.md` lists the rules with the Graph behaviour each encodes.
//!
//! # Example: check a running server
//!
//! A server started with small limits is checked quickly
//! (`upsession serve --min-size 1 --max-fragment 64KiB --token t`):
//!
//! ```no_run
//! use upsession_conformance::server::{self, Config};
//! use upsession_core::Limits;
//!
//! let limits = Limits::default().with_min_size(1).with_max_fragment(64 * 1024);
//! let config = Config::for_local("http://127.0.0.1:8080/v1.0", "t", &limits).with_cases(100);
//! match server::check(&config) {
//!     Ok(report) => println!("{report}"),
//!     // The rule broken, the seed, and the shrunk case as a script.
//!     Err(failure) => panic!("{failure}"),
//! }
//! ```

pub mod client;
pub mod fake;
pub mod outcome;
pub mod rule;
mod runner;
pub mod sdk;
pub mod server;

pub use outcome::{Failure, Report};
pub use rule::Rule;
pub use runner::{CASES_ENV, SEED_ENV, parse_seed};
