//! The sans-IO core of upsession: Microsoft Graph upload sessions as deterministic
//! state machines.
//!
//! **This crate does no I/O and never reads a clock.** It opens no socket and no
//! file, spawns nothing, and takes every time (`now`) and every random seed as an
//! argument. Adapters (`upsession-server-hyper`, `upsession-client-reqwest`, a test's
//! virtual clock) move the bytes and keep the time; this crate decides.
//!
//! ```text
//!            HTTP adapter (hyper, reqwest, a test)          storage adapter
//!   request ──► headers, now ──► Session::handle_put ──► PutDecision::Write ──► write bytes
//!                                                                                  │
//!   response ◄── Dialect::answer ◄── Answer ◄── Session::commit(now, ticket) ◄──────┘
//!
//!   Planner::next(now) ──► Action::Put(range) ──► PUT ──► Planner::handle_response(now, response)
//! ```
//!
//! What lives where:
//!
//! - [`range`]: half-open [`ByteRange`] and [`RangeSet`], the arithmetic of
//!   `nextExpectedRanges`.
//! - [`header`]: the only module that reads and writes Graph's inclusive range
//!   strings ([`ContentRange`], `nextExpectedRanges` entries).
//! - [`session`]: the server's [`Session`] state machine and its persisted snapshot.
//! - [`planner`]: the client's [`Planner`]: what to send, what answers mean, retries.
//! - [`wire`]: Graph's JSON bodies (serde lives here and on snapshots only).
//! - [`error`]: every refusal, each with one HTTP status and one Graph code.
//! - [`respond`]: answers and errors rendered as `http::Response`s; [`dialect`]: how
//!   upsession, Outlook and OneDrive differ, as data.
//! - [`route`]: Graph's URL space: request paths parsed into routes, client paths written.
//! - [`drive`]: OneDrive's drive-item upload request, conflict renaming and
//!   `driveItem` body; [`quickxor`]: its QuickXorHash, taken as bytes stream in.
//! - [`quota`]: what each caller may hold open (sessions, declared bytes).
//! - [`throttle`]: Graph's per-app, per-mailbox limits; [`fault`]: seeded fault plans
//!   for the test double.
//! - [`redact`](mod@redact): uploadUrls kept out of logs and errors ([`UploadUrl`]); [`target`]:
//!   the item and mailbox a client attaches to.
//! - [`identity`]: who is calling (tokens, tokens files, JWTs with the `jwt`
//!   feature) and which mailbox a route names for them; a failed-guess budget.
//! - [`time`]: RFC 3339 and HTTP dates; [`timer`]: a deadline table for session stores.
//!
//! # Example: a client and a server, in memory
//!
//! The adapters' loop without their I/O: the [`Planner`] says what to send, the
//! [`Session`] decides each request from its headers, and every answer goes back
//! to the planner. A real adapter sends the requests, stores the bytes between
//! `handle_put` and `commit`, and sleeps on [`Action::Wait`].
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use upsession_core::{Action, Dialect, Limits, Planner, PlannerConfig, PutDecision, Session};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! const SIZE: u64 = 10_000_000;
//! let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000); // time is an argument
//! let location = "https://example.invalid/v1.0/me/messages/m1/attachments/a1";
//! let mut planner = Planner::new(SIZE, PlannerConfig::default());
//! let mut session = Session::open(now, SIZE, &Limits::default())?;
//! loop {
//!     let response = match planner.next(now) {
//!         Action::CreateSession => Dialect::UPSESSION.created(
//!             "https://example.invalid/up/1?sig=s3cret",
//!             session.expires_at(),
//!             &session.next_expected(),
//!         ),
//!         Action::Put(range) => {
//!             let header = range.to_string(); // "bytes 0-3932159/10000000"
//!             let decision = session.handle_put(now, Some(&header), Some(range.range().len()))?;
//!             let PutDecision::Write(ticket) = decision else { unreachable!("no re-sends here") };
//!             // A server stores the fragment's bytes at ticket.range() here.
//!             let answer = session.commit(now, ticket)?;
//!             Dialect::UPSESSION.answer(&answer, location)
//!         }
//!         Action::Done(done) => {
//!             assert_eq!(done.location.as_deref(), Some(location));
//!             break;
//!         }
//!         other => unreachable!("no faults in this example: {other:?}"),
//!     };
//!     planner.handle_response(now, &response);
//! }
//! # Ok(())
//! # }
//! ```

pub mod content_type;
pub mod credential;
pub mod dialect;
pub mod download;
pub mod drive;
pub mod error;
pub mod fault;
pub mod header;
pub mod identity;
pub mod planner;
pub mod quickxor;
pub mod quota;
pub mod range;
pub mod redact;
pub mod respond;
pub mod route;
pub mod session;
pub mod setters;
pub mod target;
pub mod throttle;
pub mod time;
pub mod timer;
pub mod wire;

pub use dialect::Dialect;
pub use error::{GraphError, RemoteError};
pub use header::ContentRange;
pub use planner::{Action, Planner, PlannerConfig};
pub use range::{ByteRange, RangeSet};
pub use redact::{RedactedUrl, UploadUrl, redact};
pub use session::{Answer, Limits, PutDecision, Session};
