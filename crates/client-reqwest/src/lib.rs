//! Large attachments for Outlook messages and events through Microsoft Graph upload
//! sessions, on reqwest: the engine of the `upsession` CLI's `upload`, `resume`,
//! `status` and `cancel`, and a library for any Rust program that needs it.
//!
//! # What it does
//!
//! - Opens an upload session (`createUploadSession`) on a message, an event or an
//!   event through the calendar view, in `/me` or another user's mailbox, on Graph
//!   v1.0, beta or any Graph-compatible server, with the full `AttachmentItem`
//!   (name, size, content type, inline and content id); or continues a session from
//!   its uploadUrl.
//! - Streams the file in fragments (3,932,160 bytes by default) straight from disk,
//!   or from any `AsyncRead + AsyncSeek` source, without reading it into memory.
//!   Fragments of one upload go one at a time; [`Client::upload_many`] runs several
//!   files at once under a concurrency limit (Outlook allows 4 concurrent requests
//!   per app and mailbox), and [`Pacing`] keeps to Outlook's documented budget of
//!   150 MB per 5 minutes per mailbox: on by default for Microsoft Graph's hosts,
//!   off for others ([`ClientBuilder::pacing`], [`ClientBuilder::without_pacing`]).
//! - Attaches files under 3 MB ([`SMALL_FILE_LIMIT`]) with one plain
//!   `POST …/attachments` (base64 `contentBytes`), as Graph wants them: the same
//!   call ([`Client::upload_file`]) and the same result for any size.
//! - Cancels a running upload on request ([`UploadOptions::cancel_on`] with a
//!   [`CancellationToken`]): the session is deleted, the resume state removed, and
//!   the call returns [`Error::Cancelled`].
//! - Fails at once, naming the URL and the cause, when the first request cannot
//!   reach the server ([`Error::Unreachable`]); later failures are retried.
//! - Settles a doubtful end (the final fragment's answer lost, or a `5xx`) with
//!   evidence: it asks the session, then the item's attachments, and reports
//!   neither success nor "start again" without one or the other.
//! - Saves a [`ResumeState`] atomically as soon as the session exists and as
//!   fragments are acknowledged, so that [`Client::resume`] can continue after
//!   Ctrl-C, a crash or a reboot, refusing a changed file or an expired session
//!   with a clear error.
//! - Reports progress to a callback and/or a `Stream` ([`ProgressSink`]): bytes
//!   as the connection takes them ([`ProgressKind::Sent`], several times per
//!   fragment) and as the server acknowledges them; a resumed upload's progress
//!   starts where the session was.
//! - Asks a session's status ([`Client::status`]) and cancels it ([`Client::cancel`]).
//!
//! # What it does not do
//!
//! **It decides nothing.** What to send next, what an answer means, whether and
//! when to retry, when to give up: all of that is `upsession_core`'s
//! [`Planner`](upsession_core::Planner). This crate makes the requests the planner
//! asks for, hands back each answer (status, headers, whole body) or transport
//! error, sleeps when told to wait, and reports the planner's events. So retries
//! (network errors, 5xx, `429`/`503` with `Retry-After` in seconds or as a date;
//! a `429` is waited out without counting as a failed attempt),
//! asking the session before re-sending after a lost answer, bounded attempts and a
//! total deadline, Graph's lenient range and time formats, all come from the core.
//!
//! It does not get tokens (bring a [`TokenProvider`]), create events, resume a
//! small file's single `POST` (there is nothing to resume), or attach an empty
//! file. Dropping an upload's future does not cancel its session: use
//! [`UploadOptions::cancel_on`].
//!
//! It needs a tokio runtime with the time driver and blocking threads (either
//! flavour); it does not start one, and uses no tokio macros or signals.
//!
//! # Security
//!
//! - An uploadUrl is a bearer credential. Its query is redacted ([`redact`],
//!   [`UploadUrl`]) in every log line (`tracing`), error message, progress event and
//!   `Debug` output. Resume state files hold it whole, and are private to their
//!   owner.
//! - The access token is sent only with requests built from the Graph base URL
//!   (creating drafts and sessions), never to an uploadUrl.
//! - Redirects are followed only within the same scheme, host and port; a redirect
//!   elsewhere fails the request.
//! - https uses rustls.
//!
//! # Upload a file to a message
//!
//! ```no_run
//! use upsession_client_reqwest::{Client, ProgressKind, Target, UploadOptions};
//!
//! # async fn run() -> Result<(), upsession_client_reqwest::Error> {
//! let client = Client::builder()
//!     .token(std::env::var("UPSESSION_TOKEN").unwrap_or_default())
//!     .state_dir("/var/tmp/upsession-states") // enables resume
//!     .build()?;
//!
//! // Attach to an existing message, or create a draft first.
//! let message = client.create_draft("Quarterly report").await?;
//! let options = UploadOptions::new()
//!     .content_type("application/pdf")
//!     .on_progress(|event| {
//!         if let ProgressKind::Acknowledged { acknowledged, total } = event.kind {
//!             eprintln!("{}: {acknowledged}/{total}", event.label);
//!         }
//!     });
//! let uploaded = client.upload_file(&message, "report.pdf", options).await?;
//! println!("{:?} at {:?}", uploaded.attachment_id, uploaded.location);
//!
//! // Several files at once (4 by default), to an event this time.
//! let event = Target::event("AAMkAGI2...");
//! for result in client
//!     .upload_many(&event, [("a.zip", UploadOptions::new()), ("b.zip", UploadOptions::new())])
//!     .await
//! {
//!     match result {
//!         Ok(done) => println!("{} uploaded", done.name),
//!         Err(e) => eprintln!("{e}"),
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Resume
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use upsession_client_reqwest::{Client, Error, ProgressSink, StateStore};
//!
//! # async fn run() -> Result<(), Error> {
//! // No token is needed: resuming only talks to the uploadUrl.
//! let client = Client::builder().build()?;
//! let (progress, mut events) = ProgressSink::channel();
//! tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         eprintln!("{event}");
//!     }
//! });
//!
//! // One upload, from its state file…
//! match client.resume("/var/tmp/upsession-states/report_pdf.1f2e3d4c5b6a7988.json", &progress).await {
//!     Ok(done) => println!("done: {:?}", done.location),
//!     Err(Error::FileChanged { path, .. }) => eprintln!("{} changed; upload it again", path.display()),
//!     Err(Error::SessionExpired { .. }) => eprintln!("the session expired; upload it again"),
//!     Err(e) => eprintln!("{e}"),
//! }
//!
//! // …or every unfinished upload in a state directory.
//! let store = StateStore::new("/var/tmp/upsession-states");
//! for (state_file, result) in client.resume_all(&store, &progress).await? {
//!     println!("{}: {}", state_file.display(), if result.is_ok() { "done" } else { "failed" });
//! }
//! # Ok(())
//! # }
//! ```

mod auth;
mod client;
mod error;
mod pacing;
mod progress;
mod resume;
mod source;
mod transport;
mod upload;

pub use auth::{BoxError, StaticToken, TokenProvider};
pub use client::{
    Client, ClientBuilder, DEFAULT_CONCURRENCY, GRAPH_BETA, GRAPH_V1, SMALL_FILE_LIMIT,
    SessionStatus,
};
pub use error::{Error, Result};
pub use pacing::Pacing;
pub use progress::{ProgressEvent, ProgressKind, ProgressSink, ProgressStream};
pub use resume::{AttachmentMeta, FileIdentity, ResumeState, STATE_VERSION, StateStore};
pub use upload::{Source, UploadOptions, Uploaded};
pub use upsession_client_shared::{OCTET_STREAM, guess_content_type};
pub use upsession_core::drive::{ConflictBehavior, DriveItem};
pub use upsession_core::redact::{RedactedUrl, UploadUrl, redact};
pub use upsession_core::target::{DriveFile, Target, User};

/// Cancels uploads given it ([`UploadOptions::cancel_on`]): tokio-util's token,
/// re-exported so that no other dependency is needed.
pub use tokio_util::sync::CancellationToken;
pub use upsession_core::RemoteError;
/// The core's upload errors and planner settings, as used in this crate's API.
pub use upsession_core::planner::{DEFAULT_FRAGMENT_SIZE, PlannerConfig, Retry, UploadError};

/// Compile-time checks that the public futures can be spawned on a multi-threaded
/// runtime.
#[cfg(test)]
#[allow(dead_code, clippy::pedantic)] // test code favours brevity over pedantry
mod send_checks {
    use super::*;
    use std::path::PathBuf;

    fn send<T: Send>(_: T) {}

    fn futures_are_send(c: &Client, t: &Target, s: &StateStore, p: &ProgressSink, u: &UploadUrl) {
        send(c.create_draft("x"));
        send(c.upload_file(t, "x", UploadOptions::new()));
        send(c.upload_reader(t, std::io::Cursor::new(Vec::new()), 1, UploadOptions::new()));
        send(c.continue_upload(u, std::io::Cursor::new(Vec::new()), 1, UploadOptions::new()));
        send(c.upload_many(t, Vec::<(PathBuf, UploadOptions)>::new()));
        send(c.resume("x", p));
        send(c.resume_all(s, p));
        send(c.status(u));
        send(c.cancel(u));
        send(c.clone());
    }
}
