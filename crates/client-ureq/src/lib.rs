//! Large attachments for Outlook messages and events through Microsoft Graph upload
//! sessions, **blocking**, on ureq: for programs that run no async runtime (build
//! tools, CLIs, plugins, scripts, FFI hosts).
//!
//! It behaves as `upsession-client-reqwest` does, because both only carry out what
//! `upsession_core`'s [`Planner`](upsession_core::Planner) decides (what to send,
//! what an answer means, retries with `Retry-After`, a doubtful end settled by the
//! session and then the item's attachments) and share the rest
//! (`upsession_client_shared`: errors, resume state files, progress events,
//! pacing):
//!
//! - creates an upload session (or, below [`SMALL_FILE_LIMIT`], attaches the file
//!   with one `POST`), and streams fragments from a file or any `Read + Seek`,
//!   never the whole file in memory;
//! - keeps to Outlook's mailbox budget on Microsoft Graph's hosts ([`Pacing`]);
//! - saves a [`ResumeState`] as soon as the session exists; [`Client::resume`]
//!   continues after a restart, from a state written by either client;
//! - reports progress to a callback ([`UploadOptions::on_progress`]);
//! - cancels from another thread ([`CancelToken`]): the session is deleted, the
//!   state removed, and the call returns [`Error::Cancelled`];
//! - shows an uploadUrl only redacted ([`UploadUrl`]) in errors, logs and `Debug`.
//!
//! No tokio, futures or async HTTP crate is in its dependency graph (`cargo xtask
//! tidy` checks it). Redirects are not followed: a redirect could carry a
//! credential elsewhere, so it reaches the planner as the answer it is.
//!
//! # Upload a file to a new draft
//!
//! ```no_run
//! use std::thread;
//! use std::time::Duration;
//! use upsession_client_ureq::{CancelToken, Client, Error, ProgressKind, UploadOptions};
//!
//! fn main() -> Result<(), Error> {
//!     let client = Client::builder()
//!         .token(std::env::var("UPSESSION_TOKEN").unwrap_or_default())
//!         .state_dir("/var/tmp/upsession-states") // enables resume
//!         .build()?;
//!     let message = client.create_draft("Quarterly report")?;
//!
//!     // Another thread may stop the upload, e.g. on a "Stop" button.
//!     let cancel = CancelToken::new();
//!     let stop = cancel.clone();
//!     thread::spawn(move || {
//!         thread::sleep(Duration::from_secs(600));
//!         stop.cancel();
//!     });
//!
//!     let options = UploadOptions::new()
//!         .content_type("application/pdf")
//!         .cancel_on(cancel)
//!         .on_progress(|event| {
//!             if let ProgressKind::Acknowledged { acknowledged, total } = event.kind {
//!                 eprintln!("{}: {acknowledged}/{total}", event.label);
//!             }
//!         });
//!     match client.upload_file(&message, "report.pdf", &options) {
//!         Ok(done) => println!("{:?} at {:?}", done.attachment_id, done.location),
//!         Err(Error::Cancelled) => eprintln!("cancelled; the session is deleted"),
//!         Err(e) => eprintln!("{e}"),
//!     }
//!
//!     // After a crash or a reboot: continue every saved upload.
//!     for (state_file, _) in client.state_store().map(|s| s.list()).transpose()?.unwrap_or_default() {
//!         match client.resume(&state_file, &UploadOptions::new()) {
//!             Ok(done) => println!("{} done", done.name),
//!             Err(e) => eprintln!("{}: {e}", state_file.display()),
//!         }
//!     }
//!     Ok(())
//! }
//! ```

mod cancel;
mod client;
mod pump;
mod transport;
mod upload;

pub use cancel::CancelToken;
pub use client::{Client, ClientBuilder, GRAPH_V1, SMALL_FILE_LIMIT};
pub use upload::UploadOptions;
pub use upsession_client_shared::{
    AttachmentMeta, Error, FileIdentity, Pacing, ProgressEvent, ProgressKind, Result, ResumeState,
    STATE_VERSION, StateStore, Uploaded,
};
pub use upsession_core::drive::{ConflictBehavior, DriveItem};
/// The core's upload errors and planner settings, as used in this crate's API.
pub use upsession_core::planner::{PlannerConfig, Retry, UploadError};
pub use upsession_core::redact::{RedactedUrl, UploadUrl, redact};
pub use upsession_core::target::{DriveFile, Target, User};
