//! What upsession's clients share besides their transport, so that the reqwest
//! client (async) and the ureq client (blocking) behave alike and read each other's
//! resume states.
//!
//! Decisions (what to send, what an answer means, retries) are `upsession_core`'s
//! [`Planner`](upsession_core::Planner); redaction and targets are in the core too
//! ([`upsession_core::redact`](mod@upsession_core::redact), [`upsession_core::target`]). This crate holds what
//! is not a decision but needs the file system or is the clients' common API:
//!
//! - [`Error`]: every way an upload or a request can fail, one sentence each;
//! - [`ResumeState`] files (written atomically, owner-only), [`StateStore`], and
//!   [`FileIdentity`] (size, modification time, CRC-64/NVME; SHA-256 when asked) to notice a changed file;
//! - [`ProgressEvent`]s, [`Uploaded`], [`guess_content_type`], and [`Pacing`]'s
//!   budget arithmetic ([`Window`]).
//!
//! Its file operations are blocking `std::fs` calls; it uses no async runtime.
//!
//! # Example
//!
//! A program listing the uploads either client left unfinished in a state
//! directory, and what Outlook's budget lets it send now:
//!
//! ```
//! use std::time::Instant;
//! use upsession_client_shared::{Pacing, StateStore, Window};
//!
//! # fn main() -> upsession_client_shared::Result<()> {
//! let store = StateStore::new("/var/tmp/upsession-states");
//! for (path, state) in store.list()? {
//!     match state {
//!         Ok(state) => println!(
//!             "{}: {} of {} bytes to {}",
//!             path.display(),
//!             state.acknowledged,
//!             state.file.size,
//!             state.upload_url, // shown redacted
//!         ),
//!         Err(e) => eprintln!("{}: {e}", path.display()),
//!     }
//! }
//!
//! // 150 MB per 5 minutes per mailbox: a second 100 MB fragment waits.
//! let (pacing, now) = (Pacing::outlook(), Instant::now());
//! let mut window = Window::default();
//! assert_eq!(window.reserve(now, 100_000_000, pacing.budget_bytes, pacing.window), None);
//! let later = window.reserve(now, 100_000_000, pacing.budget_bytes, pacing.window);
//! assert_eq!(later, Some(now + pacing.window));
//! # Ok(())
//! # }
//! ```

mod error;
mod hashing;
mod pacing;
mod progress;
mod resume;
mod status;
mod uploaded;

pub use error::{Error, Result, ending};
pub use hashing::{Chunk, Crc64Prefix, FileHashes, crc64_hex};
pub use pacing::{Pacing, Window};
pub use progress::{ProgressEvent, ProgressKind};
pub use resume::{
    AttachmentMeta, FileHashing, FileIdentity, ResumeState, STATE_VERSION, StateStore, hex,
};
pub use status::SessionStatus;
pub use uploaded::{Uploaded, attached, created_draft, remote_error, throttled};
pub use upsession_core::content_type::{OCTET_STREAM, guess_content_type};
